#!/usr/bin/env bash
# hamirror-export-iscsi.sh - export a backstore over iSCSI.
#
# Usage: hamirror-export-iscsi.sh [options] NAME IQN [INITIATOR_IQN]
#   NAME           the backstore (normally user:hamirror; any type works)
#   IQN            the target name, e.g. iqn.2003-01.org.example.storage:vol1;
#                  created if new (with a portal on 0.0.0.0:3260), else reused
#   INITIATOR_IQN  the one host allowed to see the LUN (an ACL, no CHAP).
#                  Without it a NEW target is put in demo mode: any initiator
#                  may log in and write (generate_node_acls=1, authentication=0,
#                  demo_mode_write_protect=0): for labs and tests only.
# Options:
#   --lun N               LUN number (default: the lowest free one); an
#                         initiator's ACL maps it under the same number
#   --portal IP[:PORT]    listen there instead of 0.0.0.0:3260 (new targets)
#   -n, --dry-run         print the targetcli commands instead of running them
#   -h, --help            this text
# For CHAP, after this script:  targetcli /iscsi/IQN/tpg1/acls/INITIATOR_IQN set auth userid=U password=P
# and set attribute authentication=1 on the TPG.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "$(readlink -f "$0")")/lib.sh"

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit "${1:-0}"; }

LUN="" PORTAL=""
ARGS=()
while [ $# -gt 0 ]; do
  case $1 in
    --lun) LUN=${2:?--lun needs a number}; shift ;;
    --portal) PORTAL=${2:?--portal needs IP[:PORT]}; shift ;;
    -n|--dry-run) DRY_RUN=1 ;;
    -h|--help) usage ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) ARGS+=("$1") ;;
  esac
  shift
done
[ ${#ARGS[@]} = 2 ] || [ ${#ARGS[@]} = 3 ] || usage 2 >&2
NAME=${ARGS[0]} IQN=${ARGS[1]} INITIATOR=${ARGS[2]:-}
for n in "$IQN" ${INITIATOR:+"$INITIATOR"}; do
  [[ $n =~ ^(iqn\.[0-9]{4}-[0-9]{2}\.[^[:space:]]+|naa\.[0-9a-fA-F]+|eui\.[0-9a-fA-F]{16})$ ]] \
    || die "bad iSCSI name '$n': use iqn.YYYY-MM.reversed.domain:name"
done
[ -z "$LUN" ] || [[ $LUN =~ ^[0-9]+$ ]] || die "--lun takes a number"
PORTAL_IP=${PORTAL%:*} PORTAL_PORT=3260
[[ $PORTAL == *:* ]] && PORTAL_PORT=${PORTAL##*:}
need_root
need_lio
modprobe iscsi_target_mod 2>/dev/null || true
DIR=$(find_so "$NAME")
TPG=$CFS/iscsi/$IQN/tpgt_1
T=/iscsi/$IQN/tpg1
NEW_TARGET=0
[ -d "$CFS/iscsi/$IQN" ] || NEW_TARGET=1

if [ -z "$LUN" ]; then
  LUN=0
  while [ -e "$TPG/lun/lun_$LUN" ]; do LUN=$((LUN + 1)); done
fi
[ ! -e "$TPG/lun/lun_$LUN" ] || die "LUN $LUN of $IQN is taken"
exports_of "$DIR" | has_prefix "iscsi $IQN " && die "$NAME is already exported on $IQN"

batch() {
  if [ "$NEW_TARGET" = 1 ]; then
    echo "/iscsi create $IQN"
    if [ -n "$PORTAL" ]; then
      echo "$T/portals delete 0.0.0.0 3260"
      echo "$T/portals create $PORTAL_IP $PORTAL_PORT"
    fi
    if [ -n "$INITIATOR" ]; then
      echo "$T set attribute authentication=0 generate_node_acls=0"
    else
      echo "$T set attribute authentication=0 demo_mode_write_protect=0 generate_node_acls=1 cache_dynamic_acls=1"
    fi
  fi
  echo "$T/luns create $(so_tcli_path "$DIR") lun=$LUN add_mapped_luns=false"
  if [ -n "$INITIATOR" ]; then
    [ -d "$TPG/acls/$INITIATOR" ] || echo "$T/acls create $INITIATOR add_mapped_luns=false"
    echo "$T/acls/$INITIATOR create mapped_lun=$LUN tpg_lun_or_backstore=$LUN"
  fi
}
[ "$NEW_TARGET" = 1 ] || note "target $IQN exists: adding LUN $LUN, leaving its access mode and portals as they are"
batch | tcli_batch
[ "$DRY_RUN" = 1 ] && exit 0

exports_of "$DIR" | has_line "iscsi $IQN 1 $LUN" || die "the LUN was not created (see targetcli's message above)"
if [ -n "$INITIATOR" ]; then
  mappings_of iscsi "$IQN" 1 "$LUN" | has_prefix "$INITIATOR $LUN " || die "the ACL mapping for $INITIATOR was not created"
fi
echo "exported $(so_tcli_path "$DIR") as $IQN lun $LUN${INITIATOR:+ to $INITIATOR only}"
echo "on the host: iscsiadm -m discovery -t sendtargets -p ${PORTAL_IP:-<this-address>}; iscsiadm -m node -T $IQN --login"
