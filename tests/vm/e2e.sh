#!/usr/bin/env bash
# Runs every scenario in tests/vm/scenarios, in name order, in as few boots as
# possible: one boot runs them all, and if a scenario takes the guest down (a
# kernel crash, the boot timeout), a new boot continues with the next one.
#
# Usage: tests/vm/e2e.sh [-q] [SCENARIO...]     (default: all scenarios)
# Environment: as for run.sh; HAMIRROR_VM_TIMEOUT defaults here to enough for
# every scenario to use its own limit (HAMIRROR_SCENARIO_TIMEOUT, default 900 s).
# The last line of output is "N passed, M failed"; exit status 0 only if M is 0.
set -euo pipefail

VM_DIR=$(cd "$(dirname "$0")" && pwd)
QUIET=()
PENDING=()
for arg in "$@"; do
  case $arg in
    -q) QUIET=(-q) ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) PENDING+=("$(basename "$arg" .sh)") ;;
  esac
done
if [ ${#PENDING[@]} = 0 ]; then
  for f in "$VM_DIR"/scenarios/*.sh; do PENDING+=("$(basename "$f" .sh)"); done
fi
[ ${#PENDING[@]} -gt 0 ] || { echo "no scenarios in $VM_DIR/scenarios" >&2; exit 2; }

RESULTS=$(mktemp)
trap 'rm -f "$RESULTS"' EXIT
declare -A VERDICT=()
ORDER=("${PENDING[@]}")
boots=0
while [ ${#PENDING[@]} -gt 0 ]; do
  boots=$((boots + 1))
  per_scenario=${HAMIRROR_SCENARIO_TIMEOUT:-900}
  HAMIRROR_VM_RESULTS=$RESULTS \
  HAMIRROR_VM_TIMEOUT=${HAMIRROR_VM_TIMEOUT:-$(( 300 + (per_scenario + 150) * ${#PENDING[@]} ))} \
    "$VM_DIR/run.sh" "${QUIET[@]}" "${PENDING[@]}" || true
  next=()
  stopped=0
  while read -r name verdict; do
    if [ "$stopped" = 1 ]; then
      next+=("$name")
    elif [ "$verdict" = NOTRUN ]; then
      # The boot ended before reaching it (no verdict line at all = run.sh died).
      next+=("$name")
      stopped=1
    else
      VERDICT[$name]=$verdict
      [ "$verdict" = CRASH ] && stopped=1
    fi
  done < "$RESULTS"
  if [ ! -s "$RESULTS" ]; then
    echo "e2e: run.sh gave no results (image build failed?)" >&2
    for name in "${PENDING[@]}"; do VERDICT[$name]=NOTRUN; done
    next=()
  elif [ ${#next[@]} = ${#PENDING[@]} ]; then
    echo "e2e: the guest ran none of the pending scenarios; giving up" >&2
    for name in "${PENDING[@]}"; do VERDICT[$name]=NOTRUN; done
    next=()
  fi
  PENDING=("${next[@]}")
  [ ${#PENDING[@]} = 0 ] || echo "e2e: boot $boots ended early; booting again for: ${PENDING[*]}"
done

passed=0 failed=0
echo
echo "===================== e2e summary ($boots boot(s)) ====================="
for name in "${ORDER[@]}"; do
  printf '  %-32s %s\n' "$name" "${VERDICT[$name]:-NOTRUN}"
  if [ "${VERDICT[$name]:-}" = PASS ]; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
done
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
