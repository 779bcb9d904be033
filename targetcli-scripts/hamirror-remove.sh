#!/usr/bin/env bash
# hamirror-remove.sh - take hamirror out from under a LUN, keeping the LUN.
#
# Usage: hamirror-remove.sh [options] NAME LEG_PATH
#   NAME      the user:hamirror backstore
#   LEG_PATH  the leg that will serve the LUN from now on, directly: a block
#             device becomes a "block" backstore, a file a "fileio" one
#             (write_back=false: every acknowledged write is on the leg)
# Options:
#   --force         skip the "leg is in sync" check (only if you know the leg holds
#                   the LUN's current data, e.g. hamirrorctl is unavailable)
#   --allow-larger  accept a leg larger than the LUN (hosts then see the larger
#                   size: targetcli exports a whole device or file)
#   --volume VOL    hamirror's volume name, if it is not the one in the cfgstring
#   -n, --dry-run   print the targetcli commands instead of running them
#   -h, --help      this text
#
# The LUN keeps its identity: unit serial (hence NAA id), INQUIRY vendor/product/
# revision, block size, and the same LUN numbers and ACL mappings on every
# fabric. Hosts see it vanish for the few seconds targetcli needs (quiesce them or
# expect path errors that multipathing or the OS retries), then come back as the
# same disk. The other legs are no longer written: hamirror-putback.sh rebuilds
# them from this one later.
#
# Refuses unless `hamirrorctl status VOL --json` says LEG_PATH is in_sync, both
# before the LUN is unexported and again once no host I/O can arrive.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "$(readlink -f "$0")")/lib.sh"

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit "${1:-0}"; }

FORCE=0 ALLOW_LARGER=0 VOLUME=""
ARGS=()
while [ $# -gt 0 ]; do
  case $1 in
    --force) FORCE=1 ;;
    --allow-larger) ALLOW_LARGER=1 ;;
    --volume) VOLUME=${2:?--volume needs a name}; shift ;;
    -n|--dry-run) DRY_RUN=1 ;;
    -h|--help) usage ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) ARGS+=("$1") ;;
  esac
  shift
done
[ ${#ARGS[@]} = 2 ] || usage 2 >&2
NAME=${ARGS[0]} LEG=${ARGS[1]}
need_root
need_lio
DIR=$(find_so "$NAME" user:hamirror)
CFG=$(so_config "$DIR")
CFG=$(cfg_without_source "${CFG#hamirror/}")
[ -n "$VOLUME" ] || VOLUME=$(volume_name_of "$CFG" 2>/dev/null || true)
[ -n "$VOLUME" ] || VOLUME=$NAME

# --- the leg -----------------------------------------------------------------
if [ -b "$LEG" ]; then
  KIND=block
  LEG_SIZE=$(blockdev --getsize64 "$LEG")
  LEG_SECTOR=$(blockdev --getss "$LEG")
elif [ -f "$LEG" ]; then
  KIND=fileio
  LEG_SIZE=$(stat -c %s "$LEG")
  LEG_SECTOR=512
else
  die "$LEG is neither a block device nor a file"
fi
INDEX=""
mapfile -t LEGS < <(cfg_legs "$CFG")
for i in "${!LEGS[@]}"; do
  [ "$(readlink -f "${LEGS[$i]}")" = "$(readlink -f "$LEG")" ] && INDEX=$i
done
if [ ${#LEGS[@]} -gt 0 ] && [ -z "$INDEX" ]; then
  die "$LEG is not one of the legs of $NAME: ${LEGS[*]}"
fi

identity_load "$DIR"
[ "$LEG_SIZE" -ge "$ID_SIZE" ] || die "$LEG has $LEG_SIZE bytes, less than the LUN's $ID_SIZE"
if [ "$LEG_SIZE" -gt "$ID_SIZE" ] && [ "$ALLOW_LARGER" = 0 ]; then
  die "$LEG has $LEG_SIZE bytes, more than the LUN's $ID_SIZE: hosts would see a larger disk." \
      "Pass --allow-larger if that is fine, or give a device of the exact size (a dm linear of $((ID_SIZE / 512)) sectors over it)."
fi
[ "$LEG_SECTOR" -le "$ID_BLOCK_SIZE" ] \
  || die "$LEG has $LEG_SECTOR-byte sectors; the LUN's blocks are $ID_BLOCK_SIZE bytes"

# --- in sync? ----------------------------------------------------------------
leg_in_sync() {
  local state
  state=$(leg_sync_state "$VOLUME" "$LEG") || return 1
  [ "$state" = in_sync ] && return 0
  note "leg $LEG is '$state', not in_sync"
  return 1
}
if [ "$FORCE" = 0 ] && ! leg_in_sync; then
  die "refusing: $LEG may not hold the LUN's current data. Wait until" \
      "'hamirrorctl status $VOLUME' shows it in_sync, or pass --force if you know better."
fi
RECHECK=leg_in_sync
[ "$FORCE" = 1 ] && RECHECK=""

echo "replacing hamirror under $NAME by $KIND on $LEG; identity kept:"
identity_show
if [ "$KIND" = block ]; then
  CREATE="/backstores/block create name=$NAME dev=$LEG wwn=$ID_SERIAL"
else
  CREATE="/backstores/fileio create name=$NAME file_or_dev=$LEG write_back=false wwn=$ID_SERIAL"
fi
UNDO="/backstores/user:hamirror create name=$NAME size=$ID_SIZE cfgstring=$CFG wwn=$ID_SERIAL"
replace_backstore "$DIR" "$KIND" "$CREATE" "$UNDO" "$RECHECK"
[ "$DRY_RUN" = 1 ] && exit 0

echo "done: $NAME is served by $LEG alone (/backstores/$KIND/$NAME), unit serial $ID_SERIAL."
echo "to mirror it again later (rebuilding the other legs from this one):"
echo "  hamirror-putback.sh $NAME $ID_SIZE '$CFG' ${INDEX:-<index of $LEG in the legs list>}"
