#!/usr/bin/env bash
# hamirror-reconfig.sh - change a running mirrored LUN's settings.
#
# Usage: hamirror-reconfig.sh [options] NAME [CFGSTRING]
#   NAME       the user:hamirror backstore
#   CFGSTRING  the new cfgstring (without "hamirror/"); omitted: the current one
#              is handed over again, which is how a TOML file's edits are applied
# Options:
#   -n, --dry-run  say what would be done instead of doing it
#   -h, --help     this text
#
# tcmu-runner passes the cfgstring to hamirror, which applies the settings that
# can change while hosts use the LUN at once: io_timeout_ms, last_leg_grace_ms,
# resync_max_mib_s, resync_min_mib_s, read_error_budget, bitmap_clear_delay_ms,
# auto_failback, failback_delay_ms, flap_limit, flap_window_s. A change to any
# other key (legs, metadata, region_size, direct_io, write_cache...) is refused
# and nothing changes; those need the backstore re-created. The size is changed
# with hamirror-grow.sh.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "$(readlink -f "$0")")/lib.sh"

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit "${1:-0}"; }

ARGS=()
while [ $# -gt 0 ]; do
  case $1 in
    -n|--dry-run) DRY_RUN=1 ;;
    -h|--help) usage ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) ARGS+=("$1") ;;
  esac
  shift
done
[ ${#ARGS[@]} = 1 ] || [ ${#ARGS[@]} = 2 ] || usage 2 >&2
NAME=${ARGS[0]}
need_root
need_lio
DIR=$(find_so "$NAME" user:hamirror)
OLD=$(so_config "$DIR")
NEW=${ARGS[1]:-${OLD#hamirror/}}
NEW=${NEW#hamirror/}
check_cfgstring "$NEW"
if [ "$DRY_RUN" = 1 ]; then
  echo "would set $DIR/attrib/dev_config to hamirror/$NEW"
  exit 0
fi
VOLUME=$(volume_name_of "$NEW" 2>/dev/null || true)
# printf, not echo: LIO keeps what is written, newline included.
if ! printf %s "hamirror/$NEW" > "$DIR/attrib/dev_config" 2>/dev/null; then
  die_refused "the new settings" "$NAME" "$VOLUME"
fi
note "$NAME: settings applied (tcmu-runner's log lists what changed)"
