#!/usr/bin/env bash
# The one-command demo: a mirrored LUN inside LIO survives a failed array.
# This machine has no LIO (or no KVM): the demo runs in the project's test VM,
# which boots Debian's own kernel in QEMU with software emulation, loads the
# freshly built handler into Debian's tcmu-runner and narrates each step
# (tests/vm/scenarios/10-demo.sh). About 3 minutes, plus 2 to build the guest
# image the first time.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f target/release/libhandler_hamirror.so ] || cargo build --release --workspace
exec tests/vm/run.sh 10-demo
