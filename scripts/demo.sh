#!/usr/bin/env bash
# The one-command demo: a mirrored LUN inside LIO survives a failed array,
# narrated step by step (tests/vm/scenarios/10-demo.sh).
#
# Usage: scripts/demo.sh [--native|--vm]
#   On a machine with LIO (configfs and target_core_user) and tcmu-runner, as
#   root, it runs natively: it installs the handler (scripts/install.sh),
#   restarts tcmu-runner if systemd runs it, builds two 256 MiB "arrays" from
#   loop devices under device-mapper (arrayA, arrayB) and a LUN named demo on
#   the loopback fabric, and removes all of that at the end.
#   Elsewhere (no LIO, as on the build machines) it boots the project's test
#   VM: Debian's own kernel under QEMU with software emulation, Debian's
#   tcmu-runner and the freshly built handler. About 3 minutes, plus 2 to
#   build the guest image the first time.
set -euo pipefail
cd "$(dirname "$0")/.."
TOP=$PWD
die() { echo "demo.sh: $*" >&2; exit 1; }

have_lio() {
  { [ -d /sys/kernel/config/target ] || modprobe -q target_core_user 2>/dev/null; } \
    && command -v tcmu-runner >/dev/null && command -v targetcli >/dev/null
}

native() {
  [ "$(id -u)" = 0 ] || die "the native demo needs root"
  for n in arrayA arrayB; do
    ! dmsetup info "$n" >/dev/null 2>&1 || die "a device-mapper device named $n exists; the demo would use that name"
  done
  [ ! -e /sys/kernel/config/target/core/user_*/demo ] 2>/dev/null || die "a backstore named demo exists"
  bash scripts/install.sh
  if systemctl is-active -q tcmu-runner 2>/dev/null; then systemctl restart tcmu-runner; fi
  LEGS=$(mktemp -d /var/tmp/hamirror-demo.XXXXXX)
  # Remove only what the demo made (never the host's other LUNs, mounts or sessions).
  trap 'set +e; umount /mnt/demo 2>/dev/null
        targetcli-scripts/hamirror-teardown.sh demo >/dev/null 2>&1
        for n in arrayA arrayB; do dmsetup remove "$n" 2>/dev/null; done
        losetup -j "$LEGS/arrayA.img" -O NAME -n 2>/dev/null | xargs -r losetup -d
        losetup -j "$LEGS/arrayB.img" -O NAME -n 2>/dev/null | xargs -r losetup -d
        rm -rf "$LEGS" /var/lib/hamirror/demo.toml /var/lib/hamirror/demo.meta' EXIT
  HM_LEGS=$LEGS HM_EXTRA_PATH="$TOP/targetcli-scripts:$TOP/target/release" \
    bash -c 'SCENARIO=10-demo; . tests/vm/guest-lib.sh; scenario_begin 10-demo; . tests/vm/scenarios/10-demo.sh'
}

case ${1:-} in
  --native) [ -f target/release/libhandler_hamirror.so ] || cargo build --release --workspace; native ;;
  --vm) exec tests/vm/run.sh 10-demo ;;
  "") if have_lio; then
        [ -f target/release/libhandler_hamirror.so ] || cargo build --release --workspace
        native
      else
        echo "demo.sh: no LIO/tcmu-runner here: running the demo in the test VM" >&2
        exec tests/vm/run.sh 10-demo
      fi ;;
  -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' ;;
  *) die "unknown argument $1 (see --help)" ;;
esac
