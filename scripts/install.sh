#!/usr/bin/env bash
# Installs or removes hamirror on a LIO server (run as root).
#
# Usage: scripts/install.sh [--uninstall] [--handler-dir DIR] [--bin-dir DIR]
#   (default)      copies target/release/libhandler_hamirror.so to
#                  DIR/handler_hamirror.so (tcmu-runner loads handler_* files
#                  from its handler directory) and hamirrorctl to the bin dir
#   --uninstall    removes both; refuses while a hamirror LUN exists
#   --handler-dir  default /usr/lib/x86_64-linux-gnu/tcmu-runner (Debian's)
#   --bin-dir      default /usr/local/sbin
# tcmu-runner loads handlers when it starts: restart it afterwards
# (systemctl restart tcmu-runner). The legs keep the LUNs' data in native
# format whether hamirror is installed or not.
set -euo pipefail
cd "$(dirname "$0")/.."
HANDLER_DIR=/usr/lib/x86_64-linux-gnu/tcmu-runner
BIN_DIR=/usr/local/sbin
UNINSTALL=0
while [ $# -gt 0 ]; do
  case $1 in
    --uninstall) UNINSTALL=1 ;;
    --handler-dir) HANDLER_DIR=${2:?--handler-dir needs a directory}; shift ;;
    --bin-dir) BIN_DIR=${2:?--bin-dir needs a directory}; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "install.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
die() { echo "install.sh: $*" >&2; exit 1; }

if [ "$UNINSTALL" = 1 ]; then
  # shellcheck source=lib/luns.sh
  . scripts/lib/luns.sh
  luns=$(hamirror_luns | tr '\n' ' ')
  [ -z "$luns" ] || die "hamirror LUNs exist (${luns% }): remove them first (targetcli-scripts/hamirror-remove.sh keeps the data on a leg, hamirror-teardown.sh deletes the LUN)"
  rm -fv "$HANDLER_DIR/handler_hamirror.so" "$BIN_DIR/hamirrorctl"
  echo "uninstalled; restart tcmu-runner so that it forgets the handler"
  exit 0
fi
SO=target/release/libhandler_hamirror.so
CTL=target/release/hamirrorctl
[ -f "$SO" ] && [ -f "$CTL" ] || die "build first: cargo build --release (or make build)"
[ -d "$HANDLER_DIR" ] || die "$HANDLER_DIR does not exist: is tcmu-runner installed (apt-get install tcmu-runner)? Or give --handler-dir"
install -m 0755 -D "$SO" "$HANDLER_DIR/handler_hamirror.so"
install -m 0755 -D "$CTL" "$BIN_DIR/hamirrorctl"
echo "installed $HANDLER_DIR/handler_hamirror.so and $BIN_DIR/hamirrorctl"
echo "restart tcmu-runner, then check: grep 'Handler hamirror is registered' /var/log/tcmu-runner.log"
