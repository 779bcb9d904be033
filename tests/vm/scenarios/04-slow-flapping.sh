# shellcheck shell=bash
# 04-slow-flapping: a slow leg (dm delay below the deadline) slows the host but
# stays in; a leg slower than the deadline is dropped; a flapping leg (dm
# flakey) is retried with back-off and, after flap_limit faults, left out
# until restored by hand: no resync loop. fio sees no error throughout, and
# the status says what happened.
# (Sourced by autorun.sh after guest-lib.sh.)

require_handler
NAA=naa.5001405000004a01
must "tcmu-runner starts" start_runner
LEG0=$(make_leg leg0 256)
LEG1=$(make_leg leg1 256)
CFG=$(HM_TOML_EXTRA="io_timeout_ms = 2000
failback_delay_ms = 500
flap_limit = 3" hamirror_toml vol4 "$LEG0" "$LEG1")
must "create vol4" hamirror-create.sh vol4 256M "$CFG"
must "export vol4" hamirror-export-loopback.sh vol4 "$NAA"
DISK=$(lun_dev vol4 loopback)
must "vol4 is $DISK" test -b "$DISK"
must "initial copy done" wait_for 180 "both legs in sync" all_in_sync vol4

# run_fio NAME SECONDS : verified fio, with a heartbeat at 200 MiB whose longest
# gap (the longest host-visible stall) becomes the figure NAME_longest_stall_s.
run_fio() {
  local hb rc
  hb=$(heartbeat_start "$DISK" 200 "$2" "/tmp/$1.hb")
  fio --name="$1" --filename="$DISK" --size=32M --bs=4k --rw=randrw --ioengine=libaio \
      --iodepth=8 --direct=1 --time_based --runtime="$2" --verify=crc32c --verify_fatal=1 \
      --output-format=json > "/tmp/$1.json" 2> "/tmp/$1.err" && rc=0 || rc=$?
  wait "$hb" || true
  figure "${1}_longest_stall_s" "$(cat "/tmp/$1.hb")" s
  return "$rc"
}

# --- slow, within the deadline: stays in ----------------------------------------
must "leg 1 gets 300 ms per I/O (dm delay)" leg_delay leg1 300
run_fio slow 10 && rc=0 || rc=$?
check "fio ran with zero errors against a slow leg" test "$rc" = 0
check "a leg slower than usual but within the deadline stays in sync" leg_is vol4 1 in_sync
figure slow_leg_avg_latency_us "$(hm_status vol4 'd["legs"][1]["avg_latency_us"]')" us

# --- slower than the deadline: dropped, then back -----------------------------------
must "leg 1 gets 4 s per I/O (over io_timeout_ms 2000)" leg_delay leg1 4000
run_fio tooslow 10 && rc=0 || rc=$?
check "fio ran with zero errors while leg 1 was too slow" test "$rc" = 0
check "leg 1 was dropped for a timeout" sh -c "hamirrorctl events vol4 | grep -qi 'timed out'"
must "leg 1 is fast again" leg_restore leg1
check "leg 1 comes back by itself" wait_for 120 "both in sync" all_in_sync vol4

# --- flapping: up 1 s, down 2 s --------------------------------------------------
must "leg 1 flaps (dm flakey: up 1 s, down 2 s)" leg_flakey leg1 1 2
run_fio flap 30 && rc=0 || rc=$?
check "fio ran with zero errors against a flapping leg" test "$rc" = 0
check "leg 1 is left out as flapping" wait_for 60 "flapping" \
  sh -c "hamirrorctl status vol4 | grep -qi flapping"
STARTS=$(hamirrorctl events vol4 --json | python3 -c '
import json, sys
print(sum(1 for e in json.load(sys.stdin) if e["event"] == "resync_started"))')
figure flapping_resync_starts "$STARTS" resyncs
sleep 10
STARTS2=$(hamirrorctl events vol4 --json | python3 -c '
import json, sys
print(sum(1 for e in json.load(sys.stdin) if e["event"] == "resync_started"))')
check "no resync loop: no new resync in 10 s once flapping" test "$STARTS2" = "$STARTS"
must "leg 1 is stable again" leg_restore leg1
must "hamirrorctl restore vol4 1" hamirrorctl restore vol4 1
check "leg 1 back in sync after the manual restore" wait_for 120 "both in sync" all_in_sync vol4
hamirrorctl events vol4 | tail -n 8
must "tear down" hamirror-teardown.sh vol4
check "the legs are byte-identical" cmp -s "$LEG0" "$LEG1"
