# shellcheck shell=bash
# Shared by the hamirror-*.sh scripts; sourced, never run.
#
# Two ideas live here:
#  * targetcli batches: one targetcli process per batch (each start costs seconds
#    on a slow machine), the batch shown when DRY_RUN=1 instead of run;
#  * the LUN's identity: what a host uses to recognise "the same disk" (unit
#    serial, from which LIO derives the NAA id; vendor/product/revision; block
#    size; every LUN number and ACL mapping that exports it). It is read from
#    configfs, because targetcli cannot show all of it, and re-applied when one
#    backstore replaces another (hamirror-remove.sh, hamirror-putback.sh).

CFS=/sys/kernel/config/target
PROG=${0##*/}
DRY_RUN=${DRY_RUN:-0}
# Host-visible SCSI behaviour copied from the old backstore to the new one, when
# the new backend supports it (a mismatch is reported, not fatal).
COPIED_ATTRIBUTES=(emulate_tpu emulate_tpws emulate_caw emulate_3pc)

die() { echo "$PROG: error: $*" >&2; exit 1; }
# Line tests that read all of stdin: `grep -q` quits at the first match, and under
# pipefail the writer's SIGPIPE then fails the whole test.
has_line() { grep -xF -- "$1" >/dev/null; }
has_prefix() { awk -v p="$1" 'index($0, p) == 1 { found = 1 } END { exit !found }'; }
note() { echo "$PROG: $*" >&2; }

need_root() { [ "$(id -u)" = 0 ] || die "run as root (targetcli and configfs need it)"; }

need_lio() {
  command -v targetcli >/dev/null || die "targetcli not found: apt-get install targetcli-fb"
  if [ ! -d "$CFS/core" ]; then
    modprobe target_core_mod 2>/dev/null || true
    mountpoint -q /sys/kernel/config || mount -t configfs configfs /sys/kernel/config 2>/dev/null || true
  fi
  [ -d "$CFS/core" ] || die "LIO is not available: modprobe target_core_mod and mount configfs on /sys/kernel/config"
}

# LIO writes persistent-reservation and ALUA state under its database root; on
# Debian that is /etc/rtslib-fb-target, which ships without pr/ and alua/, and
# every PERSISTENT RESERVE OUT then fails.
ensure_lio_state_dirs() {
  local root
  for root in /etc/rtslib-fb-target "$(cat "$CFS/dbroot" 2>/dev/null || true)"; do
    [ -n "$root" ] && mkdir -p "$root/pr" "$root/alua"
  done
}

# tcli_batch: runs the targetcli commands read from stdin, in one process.
# targetcli carries on after a failed command and still exits 0, so every caller
# checks the outcome in configfs afterwards.
tcli_batch() {
  local batch
  batch=$(cat)
  if [ "$DRY_RUN" = 1 ]; then
    printf '%s\n' "$batch" | sed 's/^/  targetcli> /'
    return 0
  fi
  printf 'set global color_mode=false\nset global auto_save_on_exit=false\n%s\nexit\n' "$batch" \
    | targetcli 2>&1 | tcli_filter
}

# Drops targetcli's banner, the echo of our two settings, and the "/> " prompts
# that batch mode still prints.
tcli_filter() {
  awk '{ sub(/^(\/[^ >]*> )+/, "") }
       $0 == "" || /^targetcli shell version|^Copyright 2011|^For help on commands|^Parameter (color_mode|auto_save_on_exit) is now/ { next }
       { print "  targetcli: " $0 }'
}

# ------------------------------------------------------------ storage objects ---

# Every configfs directory of a storage object called NAME (one per backstore type).
so_dirs() {
  local d
  for d in "$CFS"/core/*_*/"$1"; do
    [ -d "$d/wwn" ] && echo "$d"
  done
  return 0
}

so_config() {   # the user backstore's dev_config, e.g. hamirror/leg=...;leg=...
  if [ -r "$1/attrib/dev_config" ]; then
    cat "$1/attrib/dev_config"
  else
    sed -n 's/.*Config: \([^ ]*\).*/\1/p' "$1/info"
  fi
}

# The backstore type as targetcli names it: user:hamirror, block, fileio...
so_kind() {
  local hba=${1%/*}
  hba=${hba##*/}
  case ${hba%_*} in
    user) local cfg; cfg=$(so_config "$1"); echo "user:${cfg%%/*}" ;;
    iblock) echo block ;;
    fileio) echo fileio ;;
    rd_mcp) echo ramdisk ;;
    pscsi) echo pscsi ;;
    *) echo "${hba%_*}" ;;
  esac
}

so_tcli_path() { echo "/backstores/$(so_kind "$1")/${1##*/}"; }
# The targetcli command deleting the backstore at a /backstores/KIND/NAME path.
so_delete_cmd() { echo "${1%/*} delete ${1##*/}"; }

# TCMU (user:) backstores are passthrough devices: no block_size attribute, only
# hw_block_size, which is what hosts see.
so_block_size() {
  if [ -r "$1/attrib/block_size" ]; then cat "$1/attrib/block_size"; else cat "$1/attrib/hw_block_size"; fi
}

so_serial() { sed -n 's/^T10 VPD Unit Serial Number: *//p' "$1/wwn/vpd_unit_serial"; }

# Size in bytes as LIO reports it to hosts: (last LBA + 1) * block size is not in
# configfs, so use the backend's own view.
so_size() {
  local d=$1 dev
  case $(so_kind "$d") in
    block)
      dev=$(cat "$d/udev_path")
      blockdev --getsize64 "$dev" ;;
    user:*)
      cat "$d/attrib/dev_size" ;;
    *)  # "Size: N" in the backend's info line ("SectorSize: 512" is not it)
      sed -n 's/.*[[:space:]]Size: \([0-9]*\).*/\1/p' "$d/info" | head -n 1 ;;
  esac
}

# find_so NAME [KIND]: the one storage object NAME (of KIND if given), or die.
find_so() {
  local name=$1 kind=${2:-} d found=()
  while read -r d; do
    [ -n "$d" ] || continue
    [ -z "$kind" ] || [ "$(so_kind "$d")" = "$kind" ] && found+=("$d")
  done < <(so_dirs "$name")
  case ${#found[@]} in
    1) echo "${found[0]}" ;;
    0) die "no ${kind:-} backstore named '$name' (targetcli ls /backstores)" ;;
    *) die "several backstores are named '$name' ($(for d in "${found[@]}"; do so_kind "$d"; done | xargs)); remove the spare one first" ;;
  esac
}

# ------------------------------------------------------------- fabrics ---
# configfs and targetcli spell fabrics and FC/IB addresses differently (rtslib's
# to_fabric_wwn/from_fabric_wwn): 21:00:00:24:ff:31:4c:48 in configfs is
# naa.21000024ff314c48 in targetcli.

tcli_fabric() { [ "$1" = fc ] && echo tcm_fc || echo "$1"; }

tcli_wwn() {
  local fabric=$1 w=$2
  case $fabric in
    qla2xxx|efct|fc) echo "naa.${w//:/}" ;;
    srpt) [[ $w == 0x* ]] && echo "ib.${w#0x}" || echo "$w" ;;
    *) echo "$w" ;;
  esac
}

# The reverse, for looking a targetcli address up in configfs.
cfs_wwn() {
  local fabric=$1 w=$2
  case $fabric in
    qla2xxx|efct|fc) w=${w#naa.}; sed 's/../&:/g; s/:$//' <<< "$w" ;;
    srpt) [[ $w == ib.* ]] && echo "0x${w#ib.}" || echo "$w" ;;
    *) echo "$w" ;;
  esac
}

# targetcli hides the TPG level of fabrics that have only one TPG per target.
tcli_tpg() {
  local fabric=$1 wwn=$2 tpgt=$3 path
  path="/$(tcli_fabric "$fabric")/$(tcli_wwn "$fabric" "$wwn")"
  case $fabric in
    iscsi|vhost|xen-pvscsi) echo "$path/tpg$tpgt" ;;
    *) echo "$path" ;;
  esac
}

# exports_of DIR: one line "fabric wwn tpgt lun" per fabric LUN backed by DIR.
exports_of() {
  local target=$1 link lundir tpgdir
  for link in "$CFS"/*/*/tpgt_*/lun/lun_*/*; do
    [ -L "$link" ] || continue
    [ "$(readlink -f "$link")" = "$target" ] || continue
    lundir=${link%/*}
    tpgdir=${lundir%/lun/*}
    echo "$(basename "$(dirname "$(dirname "$tpgdir")")") $(basename "$(dirname "$tpgdir")") ${tpgdir##*tpgt_} ${lundir##*lun_}"
  done
  return 0
}

# mappings_of FABRIC WWN TPGT LUN: one line "initiator mapped_lun write_protect"
# per ACL that maps that TPG LUN.
mappings_of() {
  local tpgdir=$CFS/$1/$2/tpgt_$3 link mdir
  local lundir=$tpgdir/lun/lun_$4
  for link in "$tpgdir"/acls/*/lun_*/*; do
    [ -L "$link" ] || continue
    [ "$(readlink -f "$link")" = "$(readlink -f "$lundir")" ] || continue
    mdir=${link%/*}
    echo "$(basename "$(dirname "$mdir")") ${mdir##*lun_} $(cat "$mdir/write_protect")"
  done
  return 0
}

# -------------------------------------------------------------- identity ---

# identity_load DIR: reads into ID_* what the replacement must reproduce.
identity_load() {
  local d=$1 e a
  ID_NAME=${d##*/}
  ID_SERIAL=$(so_serial "$d")
  [ -n "$ID_SERIAL" ] || die "backstore $ID_NAME has no unit serial; cannot keep its identity"
  ID_VENDOR=$(cat "$d/wwn/vendor_id" 2>/dev/null || true)
  ID_PRODUCT=$(cat "$d/wwn/product_id" 2>/dev/null || true)
  ID_REVISION=$(cat "$d/wwn/revision" 2>/dev/null || true)
  if [[ $(so_kind "$d") == user:* ]]; then
    # tcmu-runner answers INQUIRY itself, with constants (1.5.4, scsi.c), and
    # leaves these configfs strings empty.
    ID_VENDOR=LIO-ORG ID_PRODUCT="TCMU device" ID_REVISION=0002
  fi
  ID_COMPANY=$(cat "$d/wwn/company_id" 2>/dev/null || true)
  ID_BLOCK_SIZE=$(so_block_size "$d")
  ID_SIZE=$(so_size "$d")
  declare -gA ID_ATTR=()
  for a in "${COPIED_ATTRIBUTES[@]}"; do
    [ -r "$d/attrib/$a" ] && ID_ATTR[$a]=$(cat "$d/attrib/$a")
  done
  ID_EXPORTS=()
  ID_MAPPINGS=()
  while read -r e; do
    [ -n "$e" ] || continue
    ID_EXPORTS+=("$e")
    while read -r a; do
      [ -n "$a" ] && ID_MAPPINGS+=("$e $a")
    done < <(mappings_of $e)
  done < <(exports_of "$d")
  return 0
}

identity_show() {
  echo "  unit serial (wwn): $ID_SERIAL"
  echo "  inquiry:           '$ID_VENDOR' '$ID_PRODUCT' '$ID_REVISION'${ID_COMPANY:+, company_id $ID_COMPANY}"
  echo "  size, block size:  $ID_SIZE bytes, $ID_BLOCK_SIZE"
  local e m
  for e in "${ID_EXPORTS[@]}"; do
    set -- $e
    echo "  exported:          $(tcli_tpg "$1" "$2" "$3")/luns/lun$4"
  done
  for m in "${ID_MAPPINGS[@]}"; do
    set -- $m
    echo "  mapped:            $(tcli_tpg "$1" "$2" "$3")/acls/$(tcli_wwn "$1" "$5") lun $6 -> lun$4 (write_protect=$7)"
  done
}

# Batch lines that delete every LUN of the identity (ACL mappings go with them).
identity_unexport_batch() {
  local e
  for e in "${ID_EXPORTS[@]}"; do
    set -- $e
    echo "$(tcli_tpg "$1" "$2" "$3")/luns delete lun=$4"
  done
}

# Batch lines that export backstore PATH exactly where the identity was exported.
identity_export_batch() {
  local so=$1 e m
  for e in "${ID_EXPORTS[@]}"; do
    set -- $e
    echo "$(tcli_tpg "$1" "$2" "$3")/luns create $so lun=$4 add_mapped_luns=false"
  done
  for m in "${ID_MAPPINGS[@]}"; do
    set -- $m
    echo "$(tcli_tpg "$1" "$2" "$3")/acls/$(tcli_wwn "$1" "$5") create mapped_lun=$6 tpg_lun_or_backstore=$4 write_protect=$7"
  done
}

# Batch lines for the new backstore's attributes (before it is exported).
identity_attribute_batch() {
  local so=$1 a
  echo "$so set attribute block_size=$ID_BLOCK_SIZE"
  for a in "${!ID_ATTR[@]}"; do
    echo "$so set attribute $a=${ID_ATTR[$a]}"
  done
}

# The INQUIRY strings have no targetcli command: written to configfs directly,
# which LIO allows only while the backstore is not exported.
identity_apply_inquiry() {
  local d=$1 attr v
  [[ $(so_kind "$d") != user:* ]] || return 0   # tcmu-runner's own INQUIRY applies
  while read -r attr v; do
    [ -n "$v" ] && [ -w "$d/wwn/$attr" ] || continue
    [ "$(cat "$d/wwn/$attr")" = "$v" ] && continue
    if [ "$DRY_RUN" = 1 ]; then
      echo "  configfs> echo '$v' > $d/wwn/$attr"
    else
      printf '%s' "$v" > "$d/wwn/$attr" || note "warning: could not set $attr='$v'"
    fi
  done <<EOF
vendor_id $ID_VENDOR
product_id $ID_PRODUCT
revision $ID_REVISION
company_id $ID_COMPANY
EOF
}

# identity_verify DIR: 0 when DIR now carries the identity; else says what differs.
identity_verify() {
  local d=$1 ok=0 e a
  [ "$(so_serial "$d")" = "$ID_SERIAL" ] || { note "unit serial is $(so_serial "$d"), expected $ID_SERIAL"; ok=1; }
  [ "$(so_block_size "$d")" = "$ID_BLOCK_SIZE" ] \
    || { note "block size is $(so_block_size "$d"), expected $ID_BLOCK_SIZE"; ok=1; }
  [ -z "$ID_PRODUCT" ] || [[ $(so_kind "$d") == user:* ]] \
    || [ "$(cat "$d/wwn/product_id" 2>/dev/null)" = "$ID_PRODUCT" ] \
    || note "warning: product id is '$(cat "$d/wwn/product_id")', was '$ID_PRODUCT'"
  for a in "${!ID_ATTR[@]}"; do
    [ -r "$d/attrib/$a" ] || continue   # a user: backstore leaves these to its handler
    [ "$(cat "$d/attrib/$a")" = "${ID_ATTR[$a]}" ] \
      || note "warning: attribute $a is $(cat "$d/attrib/$a"), was ${ID_ATTR[$a]} (not supported by this backstore?)"
  done
  local now; now=$(exports_of "$d" | sort)
  for e in "${ID_EXPORTS[@]}"; do
    grep -qxF "$e" <<< "$now" || { note "LUN not re-created: $e"; ok=1; }
  done
  for e in "${ID_MAPPINGS[@]}"; do
    set -- $e
    mappings_of "$1" "$2" "$3" "$4" | has_line "$5 $6 $7" || { note "ACL mapping not re-created: $e"; ok=1; }
  done
  return $ok
}

# ------------------------------------------------------------- hamirror ---

# The volume name hamirrorctl knows a cfgstring by: `name=`, else the stem of
# the first metadata file (the handler's rule); TOML files are read likewise.
volume_name_of() {
  python3 - "$1" <<'PY'
import os, sys
cfg = sys.argv[1]
if cfg.startswith("hamirror/"):
    cfg = cfg[len("hamirror/"):]
path = cfg.split(";")[0]
if path.startswith("/"):
    import tomllib
    with open(path, "rb") as f:
        t = tomllib.load(f)
    name, meta = t.get("name", ""), t.get("metadata") or t.get("meta") or []
    if isinstance(meta, str):
        meta = [meta]
else:
    kv = dict(p.split("=", 1) for p in cfg.split(";") if "=" in p)
    name, meta = kv.get("name", ""), [m for m in kv.get("meta", "").split(",") if m]
if not name and meta:
    name = os.path.splitext(os.path.basename(meta[0]))[0]
print(name)
PY
}

# die_refused WHAT NAME VOLUME: tcmu-runner refused a configfs write (dev_size,
# dev_config); the kernel only passes on an errno, so show the handler's reason
# from the runner's log if it can be read.
die_refused() {
  local log=/var/log/tcmu-runner.log reason
  reason=$( [ -r "$log" ] && grep -e "${3:-$2}: " -e "$2" "$log" | grep -F "refused" | tail -n 1 || true)
  die "tcmu-runner refused $1${reason:+: $reason}" "${reason:-(its log, $log or journalctl -u tcmu-runner, says why)}"
}

# leg_sync_state VOLUME LEG_PATH: prints the leg's state (in_sync, faulted...)
# from `hamirrorctl status VOLUME --json`; fails with a message if it cannot.
leg_sync_state() {
  local json
  command -v hamirrorctl >/dev/null || { note "hamirrorctl not found: cannot check that the leg is in sync"; return 1; }
  json=$(hamirrorctl status "$1" --json) || { note "hamirrorctl status $1 failed"; return 1; }
  printf '%s' "$json" | python3 -c "$LEG_STATE_PY" "$2"
}

# `.legs[i].state` is a string, or an object with a `state` field.
LEG_STATE_PY='
import json, os, sys
want = os.path.realpath(sys.argv[1])
legs = json.load(sys.stdin).get("legs", [])
for leg in legs:
    if os.path.realpath(leg.get("path", "")) == want:
        st = leg.get("state")
        print(st.get("state") if isinstance(st, dict) else st)
        sys.exit(0)
sys.exit("%s is not a leg of this volume; its legs are: %s"
         % (sys.argv[1], ", ".join(l.get("path", "?") for l in legs)))
'

# ------------------------------------------------------- replacing a backstore ---

# bytes SIZE: targetcli's size syntax (1024-based K/M/G/T, optional B) in bytes.
bytes() {
  local s=${1%[bB]} mult=1
  case $s in
    *[kK]) mult=1024 ;;
    *[mM]) mult=$((1024 ** 2)) ;;
    *[gG]) mult=$((1024 ** 3)) ;;
    *[tT]) mult=$((1024 ** 4)) ;;
  esac
  s=${s%[kKmMgGtT]}
  [[ $s =~ ^[0-9]+$ ]] || die "bad size '$1': give bytes or a number with K, M, G or T"
  echo $((s * mult))
}

# check_cfgstring CFG: what LIO and rtslib would refuse, said up front.
check_cfgstring() {
  local cfg=$1
  [ -n "$cfg" ] || die "empty cfgstring"
  [[ $cfg != *:* ]] || die "the cfgstring may not contain ':' (rtslib refuses it); use /dev/disk/by-id names without ':' or a TOML file"
  # rtslib hands dev_config to LIO through the backstore's control file, which
  # LIO splits at every ','; the handler would get the text up to the first comma.
  [[ $cfg != *,* ]] || die "the cfgstring may not contain ',': LIO's control file splits options at commas," \
    "so hamirror would only see '${cfg%%,*}'. Repeat the key (leg=/dev/a;leg=/dev/b) or pass a TOML file's path."
  [[ $cfg != *[[:space:]]* ]] || die "the cfgstring may not contain spaces (targetcli cannot pass them)"
  [ $(( ${#cfg} + 9 )) -le 255 ] \
    || die "'hamirror/' + cfgstring is $(( ${#cfg} + 9 )) bytes; LIO keeps at most 255: put the settings in a TOML file and pass its path"
}

# The legs of a cfgstring, one per line, in order: from `leg=` items inline,
# or from the TOML file's [[legs]] tables (path = "...").
cfg_legs() {
  python3 - "${1#hamirror/}" <<'PY'
import sys
cfg = sys.argv[1]
path = cfg.split(";")[0]
if path.startswith("/"):
    import tomllib
    with open(path, "rb") as f:
        legs = tomllib.load(f).get("legs", [])
    legs = [l["path"] if isinstance(l, dict) else l for l in legs]
else:
    legs = [p.split("=", 1)[1] for p in cfg.split(";") if p.startswith("leg=")]
for leg in legs:
    print(leg)
PY
}

# replace_backstore OLD_DIR NEW_KIND CREATE_BATCH UNDO_BATCH [RECHECK_FN]
# Swaps the backstore behind a LUN identity loaded with identity_load:
#   1. unexport the old backstore (hosts see the LUN go away);
#   2. RECHECK_FN, now that no host I/O can arrive; on failure re-export, stop;
#   3. delete the old backstore and run CREATE_BATCH, which must create one of
#      NEW_KIND named like the old; on failure UNDO_BATCH re-creates the old one;
#   4. re-apply the identity and export the new backstore exactly as before.
replace_backstore() {
  local old=$1 kind=$2 create=$3 undo=$4 recheck=${5:-} new
  local name=${old##*/} old_path old_kind
  old_path=$(so_tcli_path "$old")
  old_kind=$(so_kind "$old")

  note "unexporting $old_path"
  identity_unexport_batch | tcli_batch
  if [ "$DRY_RUN" != 1 ] && [ -n "$(exports_of "$old")" ]; then
    die "could not unexport $old_path; nothing else was changed:"$'\n'"$(exports_of "$old")"
  fi
  if [ -n "$recheck" ] && [ "$DRY_RUN" != 1 ] && ! "$recheck"; then
    note "re-exporting $old_path unchanged"
    identity_export_batch "$old_path" | tcli_batch
    identity_verify "$old" || die "re-export incomplete; fix by hand (see above)"
    die "stopped before any backstore was replaced"
  fi

  note "replacing $old_path by /backstores/$kind/$name"
  { so_delete_cmd "$old_path"; printf '%s\n' "$create"
    [[ $kind == user:* ]] || echo "/backstores/$kind/$name set attribute emulate_model_alias=0"
    [[ $kind == user:* ]] || identity_attribute_batch "/backstores/$kind/$name"
  } | tcli_batch
  if [ "$DRY_RUN" = 1 ]; then
    new=$CFS/core/NEW/$name
  elif ! new=$(find_so "$name" "$kind" 2>/dev/null); then
    note "creating /backstores/$kind/$name failed; restoring $old_path"
    printf '%s\n' "$undo" | tcli_batch
    old=$(find_so "$name" "$old_kind")
    identity_apply_inquiry "$old"
    identity_export_batch "$(so_tcli_path "$old")" | tcli_batch
    identity_verify "$old" || die "the restore is incomplete; fix by hand (see above)"
    die "$old_path was restored and re-exported; nothing changed"
  fi

  identity_apply_inquiry "$new"
  note "exporting /backstores/$kind/$name as before"
  identity_export_batch "/backstores/$kind/$name" | tcli_batch
  [ "$DRY_RUN" = 1 ] && return 0
  identity_verify "$new" || die "the new backstore is not exported exactly as before (see above)"
}

# A cfgstring without its one-shot `;source=N` (putback's instruction to rebuild
# from leg N must not be repeated by a later re-creation).
cfg_without_source() { sed -E 's/(^|;)source=[0-9]+//; s/(^|;)source_token=[^;]*//; s/^;//' <<< "$1"; }
