#!/usr/bin/env bash
# hamirror-export-fc-template.sh - TEMPLATE: export a backstore over Fibre Channel
# with a QLogic HBA in target mode (tcm_qla2xxx). Copy it, fill in the values
# below, read it once more, then run it. It is not exercised by the test suite
# (the test VM has no FC hardware).
#
# Usage: hamirror-export-fc-template.sh [-n|--dry-run] NAME
#
# Before the first run on a host:
#  * the HBA port must be in target mode: qla2xxx loaded with
#    qlini_mode=disabled (e.g. "options qla2xxx qlini_mode=disabled" in
#    /etc/modprobe.d/, then rebuild the initramfs and reboot), and the
#    tcm_qla2xxx module loaded;
#  * the target port's WWPN is in /sys/class/fc_host/host*/port_name
#    (0x21000024ff314c48 -> naa.21000024ff314c48 below);
#  * the hosts' initiator WWPNs come from their HBAs (or the switch's name server);
#  * zone each initiator with the target port on the FC switches.
# Multipathing: export the same backstore on a second port/HBA with the same LUN
# number; the LUN keeps one identity (unit serial / NAA) on all ports.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "$(readlink -f "$0")")/lib.sh"

# ---- fill these in -------------------------------------------------------------
TARGET_WWPN="naa.2100000000000000"            # this host's target port
INITIATORS=(                                  # hosts allowed to see the LUN
  "naa.2100000000000001"
  # "naa.2100000000000002"
)
LUN_NUMBER=0                                  # the same on every port and host
# ----------------------------------------------------------------------------

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit "${1:-0}"; }
case ${1:-} in -h|--help) usage ;; -n|--dry-run) DRY_RUN=1; shift ;; esac
[ $# = 1 ] || usage 2 >&2
NAME=$1
[ "$TARGET_WWPN" != naa.2100000000000000 ] || [ "$DRY_RUN" = 1 ] \
  || die "this is a template: set TARGET_WWPN and INITIATORS in $0 first (or use --dry-run)"
need_root
need_lio
DIR=$(find_so "$NAME")
FC=/qla2xxx/$TARGET_WWPN

{
  # The target for the HBA port (once per port); ACL mode is the only mode FC has.
  TPG=$CFS/qla2xxx/$(cfs_wwn qla2xxx "$TARGET_WWPN")/tpgt_1
  [ -d "$TPG" ] || echo "/qla2xxx create $TARGET_WWPN"
  echo "$FC/luns create $(so_tcli_path "$DIR") lun=$LUN_NUMBER add_mapped_luns=false"
  for ini in "${INITIATORS[@]}"; do
    [ -d "$TPG/acls/$(cfs_wwn qla2xxx "$ini")" ] || echo "$FC/acls create $ini add_mapped_luns=false"
    echo "$FC/acls/$ini create mapped_lun=$LUN_NUMBER tpg_lun_or_backstore=$LUN_NUMBER"
  done
} | tcli_batch
[ "$DRY_RUN" = 1 ] && exit 0
exports_of "$DIR" | has_prefix "qla2xxx " || die "the FC LUN was not created (see targetcli's message above)"
echo "exported $(so_tcli_path "$DIR") on $TARGET_WWPN lun $LUN_NUMBER to ${#INITIATORS[@]} initiator(s)"
echo "rescan on the hosts (Linux: echo 1 > /sys/class/fc_host/hostN/issue_lip; ESXi: storage rescan)"
