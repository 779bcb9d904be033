#!/usr/bin/env bash
# hamirror-create.sh - create a mirrored LUN backstore (user:hamirror).
#
# Usage: hamirror-create.sh [options] NAME SIZE CFGSTRING
#   NAME       backstore name (letters, digits, '-', '_', '.')
#   SIZE       LUN size in bytes, or with a K, M, G or T suffix (1024-based): 20G
#   CFGSTRING  hamirror's settings: the absolute path of a TOML file, e.g.
#                /etc/hamirror/vol1.toml
#              or inline key=value pairs separated by ';', one path per leg=
#              and meta= (they repeat):
#                leg=/dev/mapper/a;leg=/dev/mapper/b;meta=/var/lib/hamirror/vol1.meta
#              No ',' (LIO splits the string there) and no ':' (rtslib refuses
#              it). 'hamirror/' + CFGSTRING must fit in 255 bytes.
# Options:
#   --wwn SERIAL        the unit serial ("wwn") hosts will see; LIO derives the
#                       LUN's NAA id from it. Default: a new random one.
#   --cmd-time-out SEC  how long LIO waits for a command before aborting it
#                       (default 30). Only settable before the LUN is exported.
#   --control STR       extra tcmu settings, e.g. max_data_area_mb=64
#   -n, --dry-run       print the targetcli commands instead of running them
#   -h, --help          this text
# Needs tcmu-runner running with handler_hamirror.so in its handler directory.
# Then export the LUN: hamirror-export-iscsi.sh, hamirror-export-loopback.sh.
#
# Example:
#   hamirror-create.sh vol1 20G /etc/hamirror/vol1.toml
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "$(readlink -f "$0")")/lib.sh"

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit "${1:-0}"; }

WWN="" TIMEOUT="" CONTROL=""
ARGS=()
while [ $# -gt 0 ]; do
  case $1 in
    --wwn) WWN=${2:?--wwn needs a value}; shift ;;
    --cmd-time-out) TIMEOUT=${2:?--cmd-time-out needs seconds}; shift ;;
    --control) CONTROL=${2:?--control needs a value}; shift ;;
    -n|--dry-run) DRY_RUN=1 ;;
    -h|--help) usage ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) ARGS+=("$1") ;;
  esac
  shift
done
[ ${#ARGS[@]} = 3 ] || { usage 2 >&2; }
NAME=${ARGS[0]} SIZE=${ARGS[1]} CFG=${ARGS[2]}

[[ $NAME =~ ^[A-Za-z0-9_.-]+$ ]] || die "bad NAME '$NAME': use letters, digits, '-', '_' and '.'"
bytes "$SIZE" >/dev/null
check_cfgstring "$CFG"
[ -z "$TIMEOUT" ] || [[ $TIMEOUT =~ ^[0-9]+$ ]] || die "--cmd-time-out takes whole seconds"
need_root
need_lio
[ -z "$(so_dirs "$NAME" | while read -r d; do [ "$(so_kind "$d")" = user:hamirror ] && echo x; done)" ] \
  || die "a user:hamirror backstore named '$NAME' already exists"
pidof tcmu-runner >/dev/null \
  || die "tcmu-runner is not running; start it (systemctl start tcmu-runner) so that it can open the legs"

ensure_lio_state_dirs
SO=/backstores/user:hamirror/$NAME
tcli_batch <<EOF
/backstores/user:hamirror create name=$NAME size=$SIZE cfgstring=$CFG${WWN:+ wwn=$WWN}${CONTROL:+ control=$CONTROL}
${TIMEOUT:+$SO set attribute cmd_time_out=$TIMEOUT}
EOF
[ "$DRY_RUN" = 1 ] && exit 0

if ! DIR=$(find_so "$NAME" user:hamirror 2>/dev/null); then
  note "the backstore was not created. targetcli's message above says why:"
  note " - 'cfgstring invalid: ...' is hamirror refusing the settings (fix what it names);"
  note " - 'No such path /backstores/user:hamirror' means tcmu-runner has not loaded"
  note "   handler_hamirror.so (look for 'Handler hamirror is registered' in /var/log/tcmu-runner.log);"
  note " - otherwise see /var/log/tcmu-runner.log for the handler's open error."
  die "creating $SO failed"
fi
if [ -n "$TIMEOUT" ] && [ "$(cat "$DIR/attrib/cmd_time_out")" != "$TIMEOUT" ]; then
  die "$SO exists but cmd_time_out is $(cat "$DIR/attrib/cmd_time_out"), not $TIMEOUT"
fi
echo "created $SO: $(so_size "$DIR") bytes, unit serial $(so_serial "$DIR")"
echo "config: $(so_config "$DIR")"
