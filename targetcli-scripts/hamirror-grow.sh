#!/usr/bin/env bash
# hamirror-grow.sh - grow a mirrored LUN while hosts use it.
#
# Usage: hamirror-grow.sh [options] NAME SIZE
#   NAME   the user:hamirror backstore
#   SIZE   the new size: bytes, or a number with K, M, G or T (1024-based),
#          larger than the current size and a whole number of blocks
# Options:
#   --save         run `targetcli saveconfig` afterwards (do this if LIO's
#                  configuration is restored at boot: a saved config still holding
#                  the old size would re-create the LUN smaller)
#   -n, --dry-run  say what would be done instead of doing it
#   -h, --help     this text
#
# Grow every leg first (the array LUN, LV or file), and rescan it on this machine
# if it is a SAN LUN. The script checks each leg's size, then sets the backstore's
# dev_size; tcmu-runner hands that to hamirror, which records the new size and
# copies the new capacity between the legs in the background (reads there come
# from one leg until then). Hosts are told CAPACITY DATA HAS CHANGED with their
# next command; they see the new size after a rescan (Linux:
# `echo 1 > /sys/block/sdX/device/rescan`, or `iscsiadm -m session -R`), then grow
# the partition and filesystem as usual.
#
# Shrinking is refused: a running volume cannot know what the host keeps past
# the new end. hamirror does shrink a LUN re-created smaller, keeping the legs'
# data; the bytes past the end are just no longer mirrored.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "$(readlink -f "$0")")/lib.sh"

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit "${1:-0}"; }

SAVE=0
ARGS=()
while [ $# -gt 0 ]; do
  case $1 in
    --save) SAVE=1 ;;
    -n|--dry-run) DRY_RUN=1 ;;
    -h|--help) usage ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) ARGS+=("$1") ;;
  esac
  shift
done
[ ${#ARGS[@]} = 2 ] || usage 2 >&2
NAME=${ARGS[0]}
NEW=$(bytes "${ARGS[1]}")
need_root
need_lio
DIR=$(find_so "$NAME" user:hamirror)
OLD=$(so_size "$DIR")
BS=$(so_block_size "$DIR")
[ "$NEW" -ne "$OLD" ] || { note "$NAME is already $NEW bytes: nothing to do"; exit 0; }
[ "$NEW" -gt "$OLD" ] || die "$NAME is $OLD bytes; shrinking a LUN in use is refused (see --help)"
[ $(( NEW % BS )) = 0 ] || die "$NEW bytes is not a whole number of $BS-byte blocks"

# Every leg must hold the new size (the handler checks again, but can only say
# why in tcmu-runner's log).
CFG=$(so_config "$DIR")
while read -r leg; do
  [ -n "$leg" ] || continue
  if [ -b "$leg" ]; then have=$(blockdev --getsize64 "$leg")
  elif [ -f "$leg" ]; then have=$(stat -c %s "$leg")
  else note "leg $leg is not present; it is checked when it comes back"; continue
  fi
  [ "$have" -ge "$NEW" ] || die "leg $leg holds $have bytes, $NEW are needed: grow it first" \
    "(and rescan it: echo 1 > /sys/block/<dev>/device/rescan)"
done < <(cfg_legs "$CFG")

if [ "$DRY_RUN" = 1 ]; then
  echo "would set $DIR/attrib/dev_size from $OLD to $NEW"
  [ "$SAVE" = 0 ] || echo "would run: targetcli saveconfig"
  exit 0
fi
VOLUME=$(volume_name_of "$CFG" 2>/dev/null || true)
if ! echo "$NEW" > "$DIR/attrib/dev_size" 2>/dev/null; then
  die_refused "the new size" "$NAME" "$VOLUME"
fi
[ "$(so_size "$DIR")" = "$NEW" ] || die "dev_size reads $(so_size "$DIR") after setting $NEW"
note "$NAME grown from $OLD to $NEW bytes; hosts see it after a rescan"
[ -z "$VOLUME" ] || note "the new capacity is copied between the legs in the background: hamirrorctl status $VOLUME"
if [ "$SAVE" = 1 ]; then
  targetcli saveconfig >/dev/null && note "LIO configuration saved"
fi
