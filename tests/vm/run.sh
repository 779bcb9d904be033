#!/usr/bin/env bash
# Boots the test guest once and runs the given scenarios in it, in order. The
# guest installs hamirror from its Debian package (dpkg -i) before the first one.
#
# Usage: tests/vm/run.sh [-q] SCENARIO [SCENARIO...]
#   SCENARIO   a name from tests/vm/scenarios (00-platform, 00-platform.sh or a path)
#   -q         do not echo the guest console (it is always saved to the log)
# Environment:
#   HAMIRROR_VM_TIMEOUT        whole boot, seconds (default 1200)
#   HAMIRROR_SCENARIO_TIMEOUT  each scenario inside the guest (default 900)
#   HAMIRROR_VM_MEM, HAMIRROR_VM_SMP   guest RAM in MiB (2048) and vCPUs (2)
#   HAMIRROR_TARGET_DIR        where the built handler and CLI are (target/release)
#   HAMIRROR_DEB               the hamirror .deb the guest installs with dpkg -i
#                              (default target/debian/hamirror_<ver>_amd64.deb,
#                              rebuilt by scripts/package-deb.sh when older than
#                              the handler, the CLI or the packaging files)
#   HAMIRROR_VM_RESULTS        if set, a file that gets one "<scenario> <verdict>" line
#                              per scenario (PASS, FAIL, CRASH = started but never
#                              finished, NOTRUN); e2e.sh uses it
#   HMT_*                      passed through to the scenarios
# Logs: tests/vm/cache/logs/<scenario>.log (one per scenario) and boot-<...>.log.
# Exit status: 0 only if every scenario finished with no FAIL line.
set -euo pipefail

VM_DIR=$(cd "$(dirname "$0")" && pwd)
TOP=$(cd "$VM_DIR/../.." && pwd)
CACHE=${HAMIRROR_VM_CACHE:-$VM_DIR/cache}
LOGS=$CACHE/logs
TARGET_DIR=${HAMIRROR_TARGET_DIR:-$TOP/target/release}
VM_TIMEOUT=${HAMIRROR_VM_TIMEOUT:-1200}
SCENARIO_TIMEOUT=${HAMIRROR_SCENARIO_TIMEOUT:-900}
GUEST_SHARE=usr/local/share/hamirror
GUEST_DEB_DIR=var/cache/hamirror-test

log() { printf '[run] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 2; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="${2:-$(now)}" 'BEGIN { printf "%.1f", b - a }'; }

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit "${1:-0}"; }

QUIET=0
SCENARIOS=()
for arg in "$@"; do
  case $arg in
    -h|--help) usage ;;
    -q) QUIET=1 ;;
    -*) die "unknown option $arg (see --help)" ;;
    *) name=$(basename "$arg" .sh)
       [ -f "$VM_DIR/scenarios/$name.sh" ] || die "no scenario $VM_DIR/scenarios/$name.sh"
       SCENARIOS+=("$name") ;;
  esac
done
[ ${#SCENARIOS[@]} -gt 0 ] || usage 2
T0=$(now)

IMAGE=$("$VM_DIR/build-image.sh" | tail -n 1)
[ -s "$IMAGE/base.cpio" ] || die "build-image.sh produced no image"

# --- the package: hamirror reaches the guest only as an admin would install it ----
# (autorun.sh runs dpkg -i before the scenarios). A package older than what it
# is built from is rebuilt, so `cargo build` + run.sh tests the current code.
deb_stale() {
  local f
  for f in "$TARGET_DIR/libhandler_hamirror.so" "$TARGET_DIR/hamirrorctl" \
           "$TOP"/packaging/deb/* "$TOP"/targetcli-scripts/* \
           "$TOP/scripts/package-deb.sh" "$TOP/scripts/lib/luns.sh" "$TOP/Cargo.toml"; do
    [ "$f" -nt "$1" ] && return 0
  done
  return 1
}
if [ -n "${HAMIRROR_DEB:-}" ]; then
  DEB=$HAMIRROR_DEB
  [ -f "$DEB" ] || die "HAMIRROR_DEB=$DEB does not exist"
else
  DEB=$(ls -t "$TOP"/target/debian/hamirror_*_amd64.deb 2>/dev/null | head -n 1 || true)
  if [ -z "$DEB" ] || deb_stale "$DEB"; then
    log "package: building it from $TARGET_DIR (scripts/package-deb.sh)"
    DEB=$(HAMIRROR_TARGET_DIR=$TARGET_DIR "$TOP/scripts/package-deb.sh" | tail -n 1) \
      || die "cannot build the hamirror package (see above); the guest installs hamirror only from it"
  fi
fi
log "package: $DEB ($(date -r "$DEB" '+%F %T'))"

# --- overlay: everything that changes between runs -------------------------------
RUN_DIR=$(mktemp -d "$CACHE/run.XXXXXX")
trap 'rm -rf "$RUN_DIR"' EXIT
OV=$RUN_DIR/overlay
mkdir -p "$OV/$GUEST_SHARE/scenarios" "$OV/etc/hamirror-test" "$OV/$GUEST_DEB_DIR"
install -m 0755 "$VM_DIR/init" "$OV/init"
install -m 0755 "$VM_DIR/autorun.sh" "$OV/autorun.sh"
install -m 0644 "$VM_DIR/guest-lib.sh" "$OV/$GUEST_SHARE/"
install -m 0644 "$VM_DIR"/scenarios/*.sh "$OV/$GUEST_SHARE/scenarios/"
printf '%s\n' "${SCENARIOS[@]}" > "$OV/etc/hamirror-test/scenarios"
{ echo "HAMIRROR_SCENARIO_TIMEOUT=$SCENARIO_TIMEOUT"
  # Only HMT_* names: values are quoted for the guest's shell.
  while IFS='=' read -r k _; do
    [ -n "$k" ] && printf 'export %s=%q\n' "$k" "${!k}"
  done < <(env | grep -o '^HMT_[A-Za-z0-9_]*=' || true)
} > "$OV/etc/hamirror-test/env"

# The handler, hamirrorctl and the admin scripts come only from the package.
install -m 0644 "$DEB" "$OV/$GUEST_DEB_DIR/"

(cd "$OV" && find . -mindepth 1 -print0 | cpio --null -o -H newc --quiet) > "$RUN_DIR/overlay.cpio"
# Files of the second archive replace those of the first (LIO-VM.md §1).
cat "$IMAGE/base.cpio" "$RUN_DIR/overlay.cpio" > "$RUN_DIR/run.cpio"

# --- boot ------------------------------------------------------------------------
mkdir -p "$LOGS"
TAG=$(IFS=+; echo "${SCENARIOS[*]}")
[ ${#TAG} -le 100 ] || TAG="${SCENARIOS[0]}+$(( ${#SCENARIOS[@]} - 1 ))-more"
BOOT_LOG=$LOGS/boot-$TAG.log
TIMES=$RUN_DIR/times
log "booting for: ${SCENARIOS[*]} (timeout ${VM_TIMEOUT}s, log $BOOT_LOG)"

# Reads the console: saves it, optionally echoes it, and notes host wall-clock
# times of the protocol lines (boot-to-autorun, per-scenario duration).
console() {
  local line
  exec 3> "$BOOT_LOG"
  while IFS= read -r line; do
    line=${line%$'\r'}
    printf '%s\n' "$line" >&3
    [ "$QUIET" = 1 ] || printf '%s\n' "$line"
    case $line in
      *AUTORUN-START*|SCENARIO-START*|SCENARIO-DONE*) echo "$(now) $line" >> "$TIMES" ;;
    esac
  done
}

T_BOOT=$(now)
set +e
timeout -k 10 "$VM_TIMEOUT" qemu-system-x86_64 -accel tcg -smp "${HAMIRROR_VM_SMP:-2}" \
  -m "${HAMIRROR_VM_MEM:-2048}" -nographic -no-reboot \
  -kernel "$IMAGE/vmlinuz" -initrd "$RUN_DIR/run.cpio" \
  -append "console=ttyS0 panic=-1 quiet loglevel=3 log_buf_len=8M" < /dev/null 2>&1 | console
QEMU_RC=${PIPESTATUS[0]}
set -e
T_END=$(now)

# --- verdict ---------------------------------------------------------------------
# Splits the boot log into one log per scenario and judges each.
scenario_log() {
  awk -v n="$1" '$0 == "SCENARIO-START " n { on = 1 } on { print } on && /^SCENARIO-DONE / { exit }' "$BOOT_LOG"
}
stamp() { awk -v pat="$1" 'index($0, pat) { print $1; exit }' "$TIMES" 2>/dev/null; }

echo
echo "===================== results ($TAG) ====================="
FAILED=0
[ -n "${HAMIRROR_VM_RESULTS:-}" ] && : > "$HAMIRROR_VM_RESULTS"
for s in "${SCENARIOS[@]}"; do
  scenario_log "$s" > "$LOGS/$s.log"
  if [ ! -s "$LOGS/$s.log" ]; then
    verdict=NOTRUN
  elif ! grep -q '^SCENARIO-DONE ' "$LOGS/$s.log"; then
    verdict=CRASH
  elif grep -q '^FAIL' "$LOGS/$s.log" || ! grep -q '^SCENARIO-DONE rc=0 ' "$LOGS/$s.log"; then
    verdict=FAIL
  else
    verdict=PASS
  fi
  [ "$verdict" = PASS ] || FAILED=1
  [ -n "${HAMIRROR_VM_RESULTS:-}" ] && echo "$s $verdict" >> "$HAMIRROR_VM_RESULTS"

  t_start=$(stamp "SCENARIO-START $s")
  t_done=$(stamp "scenario=$s")
  took=""
  [ -n "$t_start" ] && [ -n "$t_done" ] && took=" in $(since "$t_start" "$t_done") s"
  echo "--- $s: $verdict$took ($(grep -c '^PASS' "$LOGS/$s.log") passed, $(grep -c '^FAIL' "$LOGS/$s.log") failed checks)"
  grep -E '^(PASS|FAIL|SKIP|FIGURE):' "$LOGS/$s.log" | sed 's/^/    /' || true
  if [ "$verdict" != PASS ] && grep -q 'BEGIN-DUMP' "$LOGS/$s.log"; then
    echo "    --- dumps from the guest (full log: $LOGS/$s.log) ---"
    awk '/^----- BEGIN-DUMP/ { on = 1 } on { print "    | " $0 } /^----- END-DUMP/ { on = 0 }' "$LOGS/$s.log"
  fi
done

t_auto=$(stamp AUTORUN-START)
[ -n "$t_auto" ] && t_auto=$(since "$T_BOOT" "$t_auto")
echo "VM: boot-to-autorun ${t_auto:-?} s," \
     "boot total $(since "$T_BOOT" "$T_END") s, run.sh total $(since "$T0" "$T_END") s"
if [ "$QEMU_RC" = 124 ] || [ "$QEMU_RC" = 137 ]; then
  echo "VM: TIMEOUT after ${VM_TIMEOUT}s (HAMIRROR_VM_TIMEOUT); last console lines:"
  tail -n 20 "$BOOT_LOG" | sed 's/^/    | /'
  FAILED=1
elif [ "$QEMU_RC" != 0 ]; then
  echo "VM: qemu exited with status $QEMU_RC"
  FAILED=1
fi
if ! grep -q '^PACKAGE-INSTALLED ' "$BOOT_LOG"; then
  echo "VM: the hamirror package did not install in the guest; what dpkg said:"
  awk '/^PACKAGE-INSTALL /, /^PACKAGE-(INSTALLED|FAILED)/' "$BOOT_LOG" | sed 's/^/    | /'
  FAILED=1
else
  echo "VM: $(grep -m1 '^PACKAGE-INSTALLED ' "$BOOT_LOG")"
fi
if ! grep -q '^AUTORUN-END' "$BOOT_LOG"; then
  echo "VM: the guest never finished autorun (crash or panic?); last console lines:"
  tail -n 30 "$BOOT_LOG" | sed 's/^/    | /'
  FAILED=1
fi
if [ "$FAILED" = 0 ]; then echo "RESULT: PASS (${SCENARIOS[*]})"; else echo "RESULT: FAIL (${SCENARIOS[*]})"; fi
exit "$FAILED"
