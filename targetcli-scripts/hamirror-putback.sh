#!/usr/bin/env bash
# hamirror-putback.sh - put hamirror back under a LUN served directly by one leg.
#
# Usage: hamirror-putback.sh [options] NAME SIZE CFGSTRING SOURCE_LEG_INDEX
#   NAME              the block or fileio backstore left by hamirror-remove.sh
#   SIZE              the LUN's size (bytes or K/M/G/T); must not change
#   CFGSTRING         hamirror's settings, as for hamirror-create.sh
#   SOURCE_LEG_INDEX  which leg of CFGSTRING's list (0-based) served the LUN
#                     meanwhile: the only trusted copy. ';source=N;source_token=T'
#                     is appended to the cfgstring (T new for this put-back), and
#                     hamirror rebuilds every other leg from it while serving
#                     I/O. The metadata records T: later restarts of the runner,
#                     which read the same cfgstring, do not rebuild again.
# Options:
#   --force          accept a SOURCE leg that is not the device serving the LUN
#   --cmd-time-out SEC  LIO's command timeout for the new backstore (default 30)
#   -n, --dry-run    print the targetcli commands instead of running them
#   -h, --help       this text
#
# The LUN keeps its identity (unit serial, INQUIRY strings, block size, LUN
# numbers, ACL mappings); hosts see it vanish for a few seconds (see
# hamirror-remove.sh). Needs tcmu-runner running with handler_hamirror.so.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "$(readlink -f "$0")")/lib.sh"

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit "${1:-0}"; }

FORCE=0 TIMEOUT=""
ARGS=()
while [ $# -gt 0 ]; do
  case $1 in
    --force) FORCE=1 ;;
    --cmd-time-out) TIMEOUT=${2:?--cmd-time-out needs seconds}; shift ;;
    -n|--dry-run) DRY_RUN=1 ;;
    -h|--help) usage ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) ARGS+=("$1") ;;
  esac
  shift
done
[ ${#ARGS[@]} = 4 ] || usage 2 >&2
NAME=${ARGS[0]} SIZE=${ARGS[1]} SOURCE=${ARGS[3]}
CFG=$(cfg_without_source "${ARGS[2]#hamirror/}")
[[ $SOURCE =~ ^[0-9]+$ ]] || die "SOURCE_LEG_INDEX must be a leg number (0, 1, ...)"
[ -z "$TIMEOUT" ] || [[ $TIMEOUT =~ ^[0-9]+$ ]] || die "--cmd-time-out takes whole seconds"
NEW_CFG="$CFG;source=$SOURCE;source_token=pb$(date +%s)"
check_cfgstring "$NEW_CFG"
need_root
need_lio
pidof tcmu-runner >/dev/null || die "tcmu-runner is not running; start it first"

for d in $(so_dirs "$NAME"); do
  [ "$(so_kind "$d")" != user:hamirror ] || die "$NAME is already a user:hamirror backstore"
done
DIR=""
for kind in block fileio; do
  d=$(find_so "$NAME" "$kind" 2>/dev/null) && DIR=$d
done
[ -n "$DIR" ] || die "no block or fileio backstore named '$NAME'"
SERVING=$(cat "$DIR/udev_path")

# The source must be the copy hosts have been writing to.
mapfile -t LEGS < <(cfg_legs "$CFG")
if [ ${#LEGS[@]} -gt 0 ]; then
  [ "$SOURCE" -lt ${#LEGS[@]} ] || die "the cfgstring has ${#LEGS[@]} legs (0 to $(( ${#LEGS[@]} - 1 ))); there is no leg $SOURCE"
  if [ "$(readlink -f "${LEGS[$SOURCE]}")" != "$(readlink -f "$SERVING")" ] && [ "$FORCE" = 0 ]; then
    die "leg $SOURCE is ${LEGS[$SOURCE]}, but $NAME is served from $SERVING: the source" \
        "must be the leg hosts wrote to (the others would overwrite it). Use --force only if you are sure."
  fi
else
  note "the cfgstring is a file: make sure its leg $SOURCE is $SERVING"
fi

identity_load "$DIR"
[ "$(bytes "$SIZE")" = "$ID_SIZE" ] \
  || die "SIZE is $(bytes "$SIZE") bytes but the LUN has $ID_SIZE: hosts must see the same size ($ID_SIZE)"

echo "putting hamirror back under $NAME, rebuilding from leg $SOURCE ($SERVING); identity kept:"
identity_show
ensure_lio_state_dirs
CONTROL=""
[ "$ID_BLOCK_SIZE" = 512 ] || CONTROL=" control=hw_block_size=$ID_BLOCK_SIZE"
CREATE="/backstores/user:hamirror create name=$NAME size=$ID_SIZE cfgstring=$NEW_CFG wwn=$ID_SERIAL$CONTROL"
[ -z "$TIMEOUT" ] || CREATE+=$'\n'"/backstores/user:hamirror/$NAME set attribute cmd_time_out=$TIMEOUT"
if [ "$(so_kind "$DIR")" = block ]; then
  UNDO="/backstores/block create name=$NAME dev=$SERVING wwn=$ID_SERIAL"
else
  UNDO="/backstores/fileio create name=$NAME file_or_dev=$SERVING write_back=false wwn=$ID_SERIAL"
fi
UNDO+=$'\n'"$(identity_attribute_batch "/backstores/$(so_kind "$DIR")/$NAME")"
replace_backstore "$DIR" user:hamirror "$CREATE" "$UNDO"
[ "$DRY_RUN" = 1 ] && exit 0

echo "done: $NAME is mirrored again; hamirror rebuilds the other legs from leg $SOURCE."
echo "watch it: hamirrorctl status $(volume_name_of "$CFG" 2>/dev/null || echo "$NAME")"
