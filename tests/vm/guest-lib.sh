# shellcheck shell=bash
# Helpers for the scenarios, sourced inside the guest before each scenario runs
# (autorun.sh does it; a scenario never sources this itself).
#
# Result protocol on the console, parsed by run.sh on the host; one line each:
#   SCENARIO-START <name>
#   PASS: <what held>            FAIL: <what did not>          SKIP: <why>
#   FIGURE: <name>=<value> <unit>
#   SCENARIO-DONE rc=<n> scenario=<name>
# Any command that fails outside `if`, `||`, `check` or `expect_fail` is a FAIL
# with its location, and ends the scenario (set -E -e and the ERR trap below).
set -Eeuo pipefail

export HOME=/root
# HM_EXTRA_PATH: where the scripts are when running on a real host (demo.sh).
export PATH=${HM_EXTRA_PATH:+$HM_EXTRA_PATH:}/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
# Without udev, dmsetup must create /dev/mapper/<name> itself (LIO-VM.md §7.5).
export DM_DISABLE_UDEV=1

export HM_SHARE=/usr/local/share/hamirror   # scenarios find their data here
# The package's admin scripts (autorun.sh installs hamirror with dpkg -i; the
# package links them into /usr/sbin, so scenarios call them by name).
export HM_SCRIPTS=/usr/share/hamirror/targetcli-scripts
HM_STATE=/run/hamirror-test          # survives between helper calls and subshells
HM_LEGS=${HM_LEGS:-/tmp/legs}        # leg images: tmpfs, like the initramfs root
HANDLER_DIR=/usr/lib/x86_64-linux-gnu/tcmu-runner
RUNNER_LOG=/var/log/tcmu-runner.log
SCENARIO=${SCENARIO:-unnamed}
mkdir -p "$HM_STATE" "$HM_LEGS"

# No udev, so nothing is autoloaded: without sd_mod a LUN has no /dev/sdX, without
# loop losetup finds no free device (LIO-VM.md §7.1).
modprobe -a target_core_user tcm_loop target_core_iblock target_core_file sd_mod sg loop \
  dm_mod dm_delay dm_flakey ext4 iscsi_target_mod iscsi_tcp

# ---------------------------------------------------------------- results ---

# Result lines go to fd 7, the console as it was when this file was sourced, so
# that they are neither captured by $(...) nor hidden by a caller's redirection.
exec 7>&1
pass() { echo "PASS: $*" >&7; }
fail() { echo "FAIL: $*" >&7; echo "$*" >> "$HM_STATE/failures"; }
skip() { echo "SKIP: $*" >&7; }
figure() { echo "FIGURE: $1=$2 ${3:-}" >&7; }

# check DESCRIPTION CMD... : PASS or FAIL on CMD's exit status; never aborts.
check() {
  local what=$1; shift
  if "$@"; then pass "$what"; else fail "$what (rc=$?: $*)"; fi
}

# expect_fail DESCRIPTION CMD... : PASS when CMD fails.
expect_fail() {
  local what=$1; shift
  if "$@"; then fail "$what (unexpectedly succeeded: $*)"; else pass "$what"; fi
}

# must DESCRIPTION CMD... : like check, but the scenario cannot go on without it.
must() {
  local what=$1; shift
  if "$@"; then pass "$what"; else fail "$what (rc=$?: $*)"; exit 1; fi
}

# wait_for SECONDS DESCRIPTION CMD... : polls CMD every 0.2 s; 1 on timeout.
wait_for() {
  local secs=$1 what=$2; shift 2
  local deadline=$(( $(date +%s) + secs ))
  until "$@"; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
      echo "timed out after ${secs}s waiting for: $what" >&2
      return 1
    fi
    sleep 0.2
  done
}

# Seconds since an epoch stamp taken with `now`, to one decimal.
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

on_failure_dump() {
  echo "----- BEGIN-DUMP tcmu-runner.log -----"
  tail -n 400 "$RUNNER_LOG" 2>/dev/null || echo "(no $RUNNER_LOG)"
  [ -s /var/log/tcmu-runner.stdout ] && { echo "-- runner stdout/stderr --"; tail -n 50 /var/log/tcmu-runner.stdout; }
  echo "----- END-DUMP tcmu-runner.log -----"
  echo "----- BEGIN-DUMP dmesg -----"
  dmesg | tail -n 200
  echo "----- END-DUMP dmesg -----"
  echo "----- BEGIN-DUMP state -----"
  dmsetup table 2>&1 || true
  losetup -a 2>&1 || true
  find /sys/kernel/config/target -maxdepth 6 -type l -printf '%p -> %l\n' 2>/dev/null | grep -v /alua/ || true
  echo "----- END-DUMP state -----"
}

# finish RC: the scenario's verdict, on exit whatever the cause.
finish() {
  local rc=$1 nfail=0
  trap - ERR EXIT
  set +e
  [ -f "$HM_STATE/failures" ] && nfail=$(wc -l < "$HM_STATE/failures")
  if [ "$rc" -eq 143 ]; then
    fail "scenario terminated (SIGTERM: per-scenario timeout of ${HAMIRROR_SCENARIO_TIMEOUT:-?} s?)"
    nfail=$((nfail + 1))
  elif [ "$rc" -ne 0 ] && [ "$nfail" -eq 0 ]; then
    fail "scenario exited with status $rc"
    nfail=1
  fi
  [ "$nfail" -gt 0 ] && [ "$rc" -eq 0 ] && rc=1
  [ "$rc" -ne 0 ] && on_failure_dump >&7 2>&1
  touch "$HM_STATE/done-$SCENARIO"
  echo "SCENARIO-DONE rc=$rc scenario=$SCENARIO" >&7
  exit "$rc"
}

# Only the scenario's own shell reports: a failing command inside $(...) or <(...)
# surfaces there anyway, through the command that used its output.
on_error() {
  [ "$BASHPID" = "$HM_MAIN_PID" ] || return 0
  fail "unexpected failure (rc=$1) at $2: $3"
}

scenario_begin() {
  SCENARIO=$1
  HM_MAIN_PID=$BASHPID
  rm -f "$HM_STATE/failures"
  echo "SCENARIO-START $SCENARIO" >&7
  trap 'on_error $? "${BASH_SOURCE[0]##*/}:$LINENO" "$BASH_COMMAND"' ERR
  trap 'finish $?' EXIT
  # A timeout's SIGTERM must still produce the verdict and the dumps.
  trap 'exit 143' TERM
}

# ----------------------------------------------------------- tcmu-runner ---

runner_pid() { pidof tcmu-runner 2>/dev/null | awk '{ print $1 }'; }

# The runner is ready once it owns its D-Bus name: only then are user:<handler>
# backstores visible to targetcli and its netlink unblocked (LIO-VM.md §3, §7.8).
runner_ready() {
  dbus-send --system --print-reply --dest=org.freedesktop.DBus /org/freedesktop/DBus \
    org.freedesktop.DBus.NameHasOwner string:org.kernel.TCMUService1 2>/dev/null \
    | grep 'boolean true' >/dev/null
}

start_runner() {
  local t0; t0=$(now)
  if [ -n "$(runner_pid)" ]; then echo "tcmu-runner already running"; return 0; fi
  tcmu-runner ${TCMU_RUNNER_ARGS:-} >> /var/log/tcmu-runner.stdout 2>&1 &
  echo $! > "$HM_STATE/runner.pid"
  if ! wait_for 30 "tcmu-runner to own org.kernel.TCMUService1" runner_ready; then
    fail "tcmu-runner did not become ready"
    return 1
  fi
  echo "tcmu-runner ready in $(elapsed "$t0") s (pid $(runner_pid))"
}

runner_gone() { [ -z "$(runner_pid)" ]; }

stop_runner() {
  local pid; pid=$(runner_pid)
  [ -n "$pid" ] || return 0
  kill -TERM "$pid"
  wait_for 20 "tcmu-runner to exit" runner_gone
}

kill9_runner() {
  local pid; pid=$(runner_pid)
  [ -n "$pid" ] || { echo "tcmu-runner is not running" >&2; return 1; }
  kill -9 "$pid"
  wait_for 10 "tcmu-runner to die" runner_gone
}

handler_installed() { [ -e "$HANDLER_DIR/handler_hamirror.so" ]; }

# For scenarios that test hamirror itself: missing handler is a failure, loudly.
require_handler() {
  if ! handler_installed; then
    fail "handler_hamirror.so is not in the guest: the hamirror package did not install (see PACKAGE- lines at the start of the boot log)"
    exit 1
  fi
}

# Everything tcmu-runner logged since the mark, for grepping a scenario's own run.
runner_log_mark() { wc -l < "$RUNNER_LOG" 2>/dev/null || echo 0; }
runner_log_since() { tail -n +"$(( $1 + 1 ))" "$RUNNER_LOG" 2>/dev/null; }

# ----------------------------------------------------------------- targetcli ---

# tcli: one targetcli batch from stdin (each start costs ~3 s under TCG). targetcli
# keeps going after a failed command and still exits 0, so callers verify the
# result in configfs.
tcli() {
  { echo "set global color_mode=false"; echo "set global auto_save_on_exit=false"
    cat; echo "exit"; } | targetcli | _strip_prompts
}
# In batch mode targetcli still prints its "/> " prompts, and the last one has no
# newline: it would glue itself to the next PASS line.
_strip_prompts() {
  awk '{ sub(/^(\/[^ >]*> )+/, "") }
       $0 == "" || /^targetcli shell version|^Copyright 2011|^For help on commands|^Parameter (color_mode|auto_save_on_exit) is now/ { next }
       { print }'
}

# The configfs directory of backstore NAME, whatever its type.
backstore_dir() {
  local d
  for d in /sys/kernel/config/target/core/*/"$1"; do
    [ -d "$d/wwn" ] && { echo "$d"; return 0; }
  done
  return 1
}

# The T10 unit serial LIO reports for backstore NAME (targetcli calls it wwn).
backstore_serial() {
  local d; d=$(backstore_dir "$1") || return 1
  sed -n 's/^T10 VPD Unit Serial Number: *//p' "$d/wwn/vpd_unit_serial"
}

# ------------------------------------------------------------- SCSI disks ---

# The unit serial an initiator-side disk reports (VPD page 0x80).
disk_serial() {
  local f=/sys/block/$1/device/vpd_pg80
  if [ -r "$f" ]; then
    tail -c +5 "$f" | tr -d '\0' | sed 's/ *$//'
  else
    sg_vpd -q -p sn "/dev/$1" 2>/dev/null | sed -n 's/^ *Unit serial number: *//p'
  fi
}

# How the disk reaches us: loopback (tcm_loop), iscsi or other.
disk_transport() {
  local p; p=$(readlink -f "/sys/block/$1")
  case $p in
    */tcm_loop*) echo loopback ;;
    */session*) echo iscsi ;;
    *) echo other ;;
  esac
}

_find_disk() {
  local serial=$1 transport=$2 b
  for b in /sys/block/sd*; do
    [ -e "$b" ] || continue
    b=${b##*/}
    [ -z "$transport" ] || [ "$(disk_transport "$b")" = "$transport" ] || continue
    [ "$(disk_serial "$b")" = "$serial" ] && [ -b "/dev/$b" ] && { echo "/dev/$b"; return 0; }
  done
  return 1
}

# lun_dev_for_wwn SERIAL [loopback|iscsi] : the /dev/sdX showing that LIO unit
# serial, waiting up to 15 s for the SCSI scan.
lun_dev_for_wwn() {
  local serial=$1 transport=${2:-} dev=""
  wait_for 15 "a disk with serial $serial${transport:+ over $transport}" \
    eval 'dev=$(_find_disk "$serial" "$transport")' || return 1
  echo "$dev"
}

# lun_dev NAME [loopback|iscsi] : the /dev/sdX of backstore NAME.
lun_dev() {
  local serial; serial=$(backstore_serial "$1") || { echo "no backstore $1" >&2; return 1; }
  lun_dev_for_wwn "$serial" "${2:-}"
}

# scsi_identity /dev/sdX : what a host identifies the disk by, asked afresh
# (sysfs caches the VPD pages): unit serial, NAA id, INQUIRY strings, LUN number.
scsi_identity() {
  echo "sn=$(sg_vpd -p sn "$1" | sed -n 's/^ *Unit serial number: *//p')"
  sg_vpd -p di "$1" | grep -A1 'NAA' | tr -s ' ' | tr '\n' ' '
  echo
  sg_inq "$1" | grep -E 'Vendor identification|Product identification|Product revision level' | tr -s ' '
  echo "lun=$(basename "$(readlink -f "/sys/block/${1##*/}/device")" | cut -d: -f4)"
}

# ------------------------------------------------------------------- legs ---
# A leg is a file on tmpfs behind a loop device behind a dm device named NAME;
# the dm table is what the fault helpers swap (LIO-VM.md §5).

leg_loop() { cat "$HM_STATE/leg-$1.loop"; }
leg_sectors() { blockdev --getsz "$(leg_loop "$1")"; }
_leg_table() { dmsetup reload "$1" --table "0 $(leg_sectors "$1") $2" && dmsetup resume "$1"; }

# make_leg NAME SIZE_MB : prints /dev/mapper/NAME.
make_leg() {
  local name=$1 mb=$2 img=$HM_LEGS/$1.img loopdev
  truncate -s "${mb}M" "$img"
  loopdev=$(losetup -f --show "$img")
  echo "$loopdev" > "$HM_STATE/leg-$name.loop"
  dmsetup create "$name" --table "0 $(blockdev --getsz "$loopdev") linear $loopdev 0" >&2
  echo "/dev/mapper/$name"
}

leg_restore() { _leg_table "$1" "linear $(leg_loop "$1") 0"; }
leg_error() { _leg_table "$1" "error"; }
# leg_delay NAME MS : every read and write waits MS milliseconds.
leg_delay() { _leg_table "$1" "delay $(leg_loop "$1") 0 $2"; }
# leg_flakey NAME UP_S DOWN_S : works UP_S seconds, fails every I/O for DOWN_S.
leg_flakey() { _leg_table "$1" "flakey $(leg_loop "$1") 0 $2 $3"; }
# Suspend = a hung array: I/O queues in dm until leg_resume.
leg_suspend() { dmsetup suspend "$1"; }
leg_resume() { dmsetup resume "$1"; }

remove_leg() {
  local name=$1
  dmsetup remove "$name" 2>/dev/null || dmsetup remove --force "$name"
  losetup -d "$(leg_loop "$name")"
  rm -f "$HM_STATE/leg-$name.loop" "$HM_LEGS/$name.img"
}

# -------------------------------------------------------------- hamirror ---

# hamirror_toml NAME LEG... : writes /var/lib/hamirror/NAME.toml (metadata beside
# it) and prints its path. A file, because LIO cuts an inline cfgstring at its
# first ',' (targetcli-scripts/lib.sh, check_cfgstring). Extra top-level keys:
# HM_TOML_EXTRA='io_timeout_ms = 3000'.
hamirror_toml() {
  local name=$1 f=/var/lib/hamirror/$1.toml leg
  shift
  mkdir -p /var/lib/hamirror
  { echo "name = \"$name\""
    echo "metadata = [\"/var/lib/hamirror/$name.meta\"]"
    [ -z "${HM_TOML_EXTRA:-}" ] || printf '%s\n' "$HM_TOML_EXTRA"
    for leg; do printf '[[legs]]\npath = "%s"\n' "$leg"; done
  } > "$f"
  echo "$f"
}

# leg_states VOLUME : the legs' states in order, e.g. "in_sync in_sync".
leg_states() {
  hamirrorctl status "$1" --json | python3 -c '
import json, sys
for l in json.load(sys.stdin)["legs"]:
    s = l["state"]
    print(s["state"] if isinstance(s, dict) else s)' | xargs
}

# all_in_sync VOLUME : every leg in_sync.
all_in_sync() {
  local states; states=$(leg_states "$1") || return 1
  [ -n "$states" ] && [ -z "$(tr ' ' '\n' <<< "$states" | grep -vx in_sync)" ]
}

# ------------------------------------------------------------------ iSCSI ---

iscsi_start() {
  mkdir -p /run/lock/iscsi
  pidof iscsid >/dev/null || iscsid
}

# iscsi_login IQN : discovery then login on 127.0.0.1.
iscsi_login() {
  iscsi_start
  iscsiadm -m discovery -t sendtargets -p 127.0.0.1 >/dev/null
  iscsiadm -m node -T "$1" -p 127.0.0.1 --login >/dev/null
}

iscsi_logout() { iscsiadm -m node -T "$1" -p 127.0.0.1 --logout >/dev/null; }

# -------------------------------------------------------------------- fio ---

# fio_iops JSON_FILE read|write : IOPS of the first job, rounded.
# fio may put notes before the JSON document, hence the search for the first "{".
fio_iops() {
  python3 - "$1" "$2" <<'PY'
import json, sys
text = open(sys.argv[1]).read()
if "{" not in text:
    sys.exit("no JSON in %s: %r" % (sys.argv[1], text[:300]))
print(round(json.loads(text[text.index("{"):])["jobs"][0][sys.argv[2]]["iops"]))
PY
}

# -------------------------------------------------------------- clean-up ---

# Between scenarios of one boot: undo whatever the last one left, hung or not.
guest_cleanup() {
  set +e
  local n
  for n in $(dmsetup ls 2>/dev/null | awk '$1 != "No" { print $1 }'); do dmsetup resume "$n" 2>/dev/null; done
  pidof iscsid >/dev/null && iscsiadm -m node --logoutall=all >/dev/null 2>&1
  awk '$2 ~ "^/mnt/" { print $2 }' /proc/mounts | sort -r | xargs -r -n1 umount -l
  targetctl clear >/dev/null 2>&1 || tcli <<< "clearconfig confirm=True" >/dev/null 2>&1
  stop_runner >/dev/null 2>&1 || kill -9 "$(runner_pid)" 2>/dev/null
  dmsetup remove_all --force >/dev/null 2>&1
  losetup -D
  rm -rf "${HM_LEGS:?}"/* "${HM_STATE:?}"/* /run/hamirror/* /var/lib/hamirror/* 2>/dev/null
  return 0
}

# ------------------------------------------------------- fault scenarios ---

# heartbeat_start DISK OFFSET_MB SECONDS OUT : in the background, writes 4 KiB
# (O_DIRECT|O_DSYNC) at OFFSET_MB of DISK every 50 ms for SECONDS and then puts
# the longest time between two completed writes, in seconds, into OUT: the
# longest stall the host saw. Prints its pid.
heartbeat_start() {
  python3 - "$1" "$2" "$3" > "$4" <<'PY' &
import mmap, os, sys, time
disk, off, secs = sys.argv[1], int(sys.argv[2]) << 20, float(sys.argv[3])
fd = os.open(disk, os.O_WRONLY | os.O_DIRECT | os.O_DSYNC)
buf = mmap.mmap(-1, 4096)
worst, last, end = 0.0, time.monotonic(), time.monotonic() + secs
while time.monotonic() < end:
    os.pwrite(fd, buf, off)
    now = time.monotonic(); worst = max(worst, now - last); last = now
    time.sleep(0.05)
print("%.2f" % worst)
PY
  echo $!
}

# hm_status VOLUME EXPR : EXPR evaluated in Python over `hamirrorctl status
# VOLUME --json` bound to d, e.g. hm_status vol2 'd["legs"][1]["state"]["state"]'.
hm_status() {
  hamirrorctl status "$1" --json | python3 -c 'import json, sys; d = json.load(sys.stdin); print(eval(sys.argv[1]))' "$2"
}

# leg_state VOLUME LEG : one leg's state name (in_sync, faulted, rebuilding, offline).
leg_state() {
  hm_status "$1" "(lambda s: s['state'] if isinstance(s, dict) else s)(d['legs'][$2]['state'])"
}

# fio_max_lat_s JSON_FILE read|write : the longest completion latency, in seconds.
fio_max_lat_s() {
  python3 - "$1" "$2" <<'PY'
import json, sys
text = open(sys.argv[1]).read()
j = json.loads(text[text.index("{"):])["jobs"][0][sys.argv[2]]
print("%.2f" % (j["clat_ns"]["max"] / 1e9))
PY
}

# leg_is VOLUME LEG STATE : whether the leg is in STATE (for wait_for, check).
leg_is() { [ "$(leg_state "$1" "$2")" = "$3" ]; }
