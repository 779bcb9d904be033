#!/usr/bin/env bash
# hamirror-export-loopback.sh - show a backstore as a local SCSI disk (tcm_loop).
#
# Usage: hamirror-export-loopback.sh [options] NAME [NAA]
#   NAME   the backstore (normally user:hamirror; any type works)
#   NAA    the loopback target's address, naa.5001405 + 9 hex digits; an
#          existing one gets one more LUN. Default: a new random address.
# Options:
#   --lun N        LUN number (default: the lowest free one)
#   -n, --dry-run  print the targetcli commands instead of running them
#   -h, --help     this text
# Prints the LUN and, once the kernel has scanned it, the local /dev/sdX.
# Useful to use a mirrored LUN on the target host itself, and for tests.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "$(readlink -f "$0")")/lib.sh"

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit "${1:-0}"; }

LUN=""
ARGS=()
while [ $# -gt 0 ]; do
  case $1 in
    --lun) LUN=${2:?--lun needs a number}; shift ;;
    -n|--dry-run) DRY_RUN=1 ;;
    -h|--help) usage ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) ARGS+=("$1") ;;
  esac
  shift
done
[ ${#ARGS[@]} = 1 ] || [ ${#ARGS[@]} = 2 ] || usage 2 >&2
NAME=${ARGS[0]}
NAA=${ARGS[1]:-naa.5001405$(od -An -N5 -tx1 /dev/urandom | tr -d ' \n' | cut -c1-9)}
[[ $NAA =~ ^naa\.[0-9a-fA-F]{16}$ ]] || die "bad NAA '$NAA': loopback wants naa. and 16 hex digits"
[ -z "$LUN" ] || [[ $LUN =~ ^[0-9]+$ ]] || die "--lun takes a number"
need_root
need_lio
modprobe tcm_loop 2>/dev/null || true
DIR=$(find_so "$NAME")
TPG=$CFS/loopback/$NAA/tpgt_1

if [ -z "$LUN" ]; then
  LUN=0
  while [ -e "$TPG/lun/lun_$LUN" ]; do LUN=$((LUN + 1)); done
fi
[ ! -e "$TPG/lun/lun_$LUN" ] || die "LUN $LUN of $NAA is taken"
exports_of "$DIR" | has_prefix "loopback $NAA " && die "$NAME is already exported on $NAA"

{ [ -d "$CFS/loopback/$NAA" ] || echo "/loopback create $NAA"
  echo "/loopback/$NAA/luns create $(so_tcli_path "$DIR") lun=$LUN"; } | tcli_batch
[ "$DRY_RUN" = 1 ] && exit 0

exports_of "$DIR" | has_line "loopback $NAA 1 $LUN" || die "the LUN was not created (see targetcli's message above)"
echo "exported $(so_tcli_path "$DIR") as /loopback/$NAA lun $LUN"

# The local disk: the one whose unit serial (VPD page 0x80) is the backstore's.
SERIAL=$(so_serial "$DIR")
for _ in $(seq 50); do
  for b in /sys/block/sd*; do
    [ -r "$b/device/vpd_pg80" ] && [[ $(readlink -f "$b") == */tcm_loop* ]] || continue
    if [ "$(tail -c +5 "$b/device/vpd_pg80" | tr -d '\0' | sed 's/ *$//')" = "$SERIAL" ]; then
      echo "local disk: /dev/${b##*/}"
      exit 0
    fi
  done
  sleep 0.1
done
note "the LUN has no local /dev/sdX yet (is sd_mod loaded?)"
