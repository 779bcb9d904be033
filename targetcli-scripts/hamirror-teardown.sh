#!/usr/bin/env bash
# hamirror-teardown.sh - unexport a LUN everywhere and delete its backstore.
#
# Usage: hamirror-teardown.sh [options] NAME
#   NAME   the backstore (user:hamirror, or the block/fileio one left by
#          hamirror-remove.sh)
# Options:
#   --type KIND     which backstore when several share NAME (user:hamirror, block...)
#   --keep-targets  keep iSCSI/loopback/FC targets even when this was their last LUN
#   -n, --dry-run   print the targetcli commands instead of running them
#   -h, --help      this text
# Hosts lose the LUN at once: unmount or remove it from the hosts first.
# The legs and the metadata files are left as they are (each in-sync leg is a
# plain copy of the LUN).
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "$(readlink -f "$0")")/lib.sh"

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit "${1:-0}"; }

KIND="" KEEP_TARGETS=0
ARGS=()
while [ $# -gt 0 ]; do
  case $1 in
    --type) KIND=${2:?--type needs a backstore type}; shift ;;
    --keep-targets) KEEP_TARGETS=1 ;;
    -n|--dry-run) DRY_RUN=1 ;;
    -h|--help) usage ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) ARGS+=("$1") ;;
  esac
  shift
done
[ ${#ARGS[@]} = 1 ] || usage 2 >&2
NAME=${ARGS[0]}
need_root
need_lio
DIR=$(find_so "$NAME" "$KIND")
SO_PATH=$(so_tcli_path "$DIR")
identity_load "$DIR"

# A target whose every LUN is one of ours is deleted with them.
only_ours() {
  local fabric=$1 wwn=$2 link
  for link in "$CFS/$fabric/$wwn"/tpgt_*/lun/lun_*/*; do
    [ -L "$link" ] || continue
    [ "$(readlink -f "$link")" = "$DIR" ] || return 1
  done
  return 0
}

{ identity_unexport_batch
  if [ "$KEEP_TARGETS" = 0 ]; then
    for e in "${ID_EXPORTS[@]}"; do
      set -- $e
      echo "$1 $2"
    done | sort -u | while read -r fabric wwn; do
      only_ours "$fabric" "$wwn" && echo "/$(tcli_fabric "$fabric") delete $(tcli_wwn "$fabric" "$wwn")"
    done
  fi
  so_delete_cmd "$SO_PATH"
} | tcli_batch
[ "$DRY_RUN" = 1 ] && exit 0

[ ! -d "$DIR" ] || die "$SO_PATH is still there (see targetcli's message above)"
echo "removed $SO_PATH and its ${#ID_EXPORTS[@]} LUN(s)"
