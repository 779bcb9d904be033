# shellcheck shell=bash
# 07-bad-config: targetcli refuses each bad configuration with a reason that
# says what to fix, and nothing on any leg or metadata file changes
# (DESIGN.md invariant 7). Cases: a missing leg, a leg smaller than the LUN,
# a leg listed twice, another volume's metadata, a malformed cfgstring, an
# unknown key, and a cfgstring over LIO's 255 bytes.
# (Sourced by autorun.sh after guest-lib.sh.)

require_handler
must "tcmu-runner starts" start_runner
L0=$(make_leg l0 64); L1=$(make_leg l1 64); SMALL=$(make_leg small 16)
O0=$(make_leg o0 64); O1=$(make_leg o1 64)
mkdir -p /var/lib/hamirror
for d in "$L0" "$L1" "$SMALL"; do head -c 1M /dev/urandom | dd of="$d" bs=1M conv=notrunc status=none; done

# Another volume's metadata: made by a real volume over two other legs.
must "a first volume (other) is created" hamirror-create.sh other 64M "leg=$O0;leg=$O1;meta=/var/lib/hamirror/other.meta;initial_sync=none"
must "and removed, leaving its metadata" hamirror-teardown.sh other

sums() { md5sum "$L0" "$L1" "$SMALL" /var/lib/hamirror/other.meta 2>/dev/null; ls /var/lib/hamirror; }
BEFORE=$(sums)

# attempt NAME CFGSTRING PATTERN : the create must fail and its output (or
# the runner's log, for errors found at open) must match PATTERN.
attempt() {
  local name=$1 cfg=$2 pattern=$3 out mark
  mark=$(runner_log_mark)
  out=$(hamirror-create.sh "$name" 64M "$cfg" 2>&1) && { fail "$name: accepted ($cfg)"; return; }
  if grep -qiE "$pattern" <<< "$out"; then
    pass "$name: refused by targetcli: $(grep -iE "$pattern" <<< "$out" | head -n 1 | cut -c1-160)"
  elif runner_log_since "$mark" | grep -qiE "$pattern"; then
    pass "$name: refused at open: $(runner_log_since "$mark" | grep -iE "$pattern" | head -n 1 | cut -c1-200)"
  else
    fail "$name: refused, but no reason matching /$pattern/ in: $out"
  fi
  check "$name: no backstore was left behind" sh -c "! targetcli ls /backstores/user:hamirror 2>/dev/null | grep -q ' $name '"
}

attempt missing "leg=$L0;leg=/dev/mapper/nope;meta=/var/lib/hamirror/m1.meta" "leg 1 .*does not exist"
attempt small "leg=$L0;leg=$SMALL;meta=/var/lib/hamirror/m2.meta" "smaller than the volume"
attempt twice "leg=$L0;leg=$L0;meta=/var/lib/hamirror/m3.meta" "same storage as leg 0"
attempt foreign "leg=$L0;leg=$L1;meta=/var/lib/hamirror/other.meta" "another volume"
attempt malformed "leg=$L0;leg=$L1;meta" "not key=value"
attempt unknown "leg=$L0;leg=$L1;meta=/var/lib/hamirror/m4.meta;colour=red" "unknown key .colour."
attempt toolong "leg=$L0;leg=$L1;meta=/var/lib/hamirror/$(printf 'x%.0s' $(seq 250)).meta" "255|too long|at most"

AFTER=$(sums)
check "no leg and no metadata file changed, and no metadata file was created" test "$BEFORE" = "$AFTER"
[ "$BEFORE" = "$AFTER" ] || diff <(echo "$BEFORE") <(echo "$AFTER")
