#!/bin/bash
# Guest side of run.sh: runs the scenarios listed in /etc/hamirror-test/scenarios,
# in order, each in its own bash with guest-lib.sh sourced and its own time limit,
# and cleans up between them so that one boot can serve several scenarios.
set -uo pipefail
SHARE=/usr/local/share/hamirror
# HMT_* variables from the host, and the per-scenario timeout.
# shellcheck disable=SC1091
[ -f /etc/hamirror-test/env ] && . /etc/hamirror-test/env
export HAMIRROR_SCENARIO_TIMEOUT=${HAMIRROR_SCENARIO_TIMEOUT:-900}
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
STATE=/run/hamirror-test

# The scenario runs as `timeout`'s process group, so whatever it leaves behind
# (a runner, a stuck dd) can be found and ended afterwards.
run_one() {
  local name=$1 pid rc
  timeout -k 15 "$HAMIRROR_SCENARIO_TIMEOUT" bash -c '
      SCENARIO=$1; . "$2/guest-lib.sh"; scenario_begin "$1"; . "$2/scenarios/$1.sh"' \
    _ "$name" "$SHARE" < /dev/null &
  pid=$!
  wait "$pid"; rc=$?
  if [ ! -e "$STATE/done-$name" ]; then
    # Killed before its EXIT trap could speak (stuck in the kernel, most likely).
    echo "FAIL: scenario $name killed after ${HAMIRROR_SCENARIO_TIMEOUT}s without finishing (rc=$rc)"
    bash -c '. "$1/guest-lib.sh"; on_failure_dump' _ "$SHARE"
    echo "SCENARIO-DONE rc=$rc scenario=$name"
  fi
  LAST_PGID=$pid
  return "$rc"
}

cleanup() {
  timeout -k 5 120 bash -c '. "$1/guest-lib.sh"; guest_cleanup' _ "$SHARE" \
    || echo "WARNING: clean-up between scenarios did not finish"
  kill -9 -- "-$LAST_PGID" 2>/dev/null
  rm -f "$STATE"/done-*
}

# hamirror itself arrives as the Debian package run.sh built, installed the way
# an admin would. Protocol lines for run.sh: PACKAGE-INSTALL <deb>, then dpkg's
# own output (postinst's messages included), then PACKAGE-INSTALLED <version>
# in <s> or PACKAGE-FAILED rc=<n>. The scenarios run either way; those that need
# hamirror then fail with a pointer here.
install_package() {
  local deb rc t0 t1 version
  for deb in /var/cache/hamirror-test/*.deb; do
    [ -f "$deb" ] || { echo "PACKAGE-FAILED rc=1 (no .deb in the guest)"; return 1; }
    echo "PACKAGE-INSTALL $deb"
    read -r t0 _ < /proc/uptime
    # dpkg's "(Reading database ... N%" progress is one \r-separated line: drop it.
    dpkg -i "$deb" 2>&1 | tr '\r' '\n' | grep -v '^(Reading database'
    rc=${PIPESTATUS[0]}
    read -r t1 _ < /proc/uptime
    version=$(dpkg-query -W -f='${Version} ${Status}' hamirror 2>/dev/null)
    if [ "$rc" = 0 ] && [[ $version == *"install ok installed" ]]; then
      echo "PACKAGE-INSTALLED hamirror ${version%% *} in $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }') s"
    else
      echo "PACKAGE-FAILED rc=$rc ($version)"
      return 1
    fi
  done
}
install_package

overall=0
first=1
while read -r name <&3; do
  [ -n "$name" ] || continue
  [ "$first" = 1 ] || cleanup
  first=0
  run_one "$name" || overall=1
done 3< /etc/hamirror-test/scenarios
exit "$overall"
