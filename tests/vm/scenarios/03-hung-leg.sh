# shellcheck shell=bash
# 03-hung-leg: while fio writes and verifies, leg 0's device is suspended (I/O
# to it hangs). I/O continues within the detection time (io_timeout_ms): the
# longest host-visible stall is measured and must stay under it plus a margin.
# On resume the hung I/O returns, the leg comes back by itself and is resynced.
# (Sourced by autorun.sh after guest-lib.sh.)

require_handler
NAA=naa.5001405000003a01
TIMEOUT_MS=3000
must "tcmu-runner starts" start_runner
LEG0=$(make_leg leg0 256)
LEG1=$(make_leg leg1 256)
CFG=$(HM_TOML_EXTRA="io_timeout_ms = $TIMEOUT_MS
failback_delay_ms = 1000" hamirror_toml vol3 "$LEG0" "$LEG1")
must "create vol3" hamirror-create.sh vol3 256M "$CFG"
must "export vol3" hamirror-export-loopback.sh vol3 "$NAA"
DISK=$(lun_dev vol3 loopback)
must "vol3 is $DISK" test -b "$DISK"
must "initial copy done" wait_for 180 "both legs in sync" all_in_sync vol3

fio --name=hang --filename="$DISK" --size=64M --bs=4k --rw=randrw --ioengine=libaio \
    --iodepth=16 --direct=1 --time_based --runtime=30 --verify=crc32c --verify_fatal=1 \
    --output-format=json > /tmp/fio3.json 2> /tmp/fio3.err &
FIO=$!
HB=$(heartbeat_start "$DISK" 200 28 /tmp/hb3)
sleep 6
must "leg 0 hangs (dmsetup suspend)" leg_suspend leg0
check "status shows leg 0 faulted for a timeout" \
  wait_for 30 "leg 0 faulted" sh -c "hamirrorctl status vol3 | grep -qi 'timed out'"
wait "$FIO" && rc=0 || rc=$?
wait "$HB" || true
check "fio finished with zero errors and every block verified" test "$rc" = 0
[ "$rc" = 0 ] || tail -n 20 /tmp/fio3.err
STALL=$(cat /tmp/hb3)
figure hung_leg_longest_stall_s "$STALL" s
[ "$rc" = 0 ] && figure hung_leg_max_write_latency_s "$(fio_max_lat_s /tmp/fio3.json write)" s
# The promise: a hung leg holds I/O no longer than the detection time. The
# margin covers the monitor's tick and the emulated machine's scheduling.
check "the longest stall ($STALL s) is within io_timeout_ms ($TIMEOUT_MS ms) + 2 s" \
  awk -v s="$STALL" -v t="$TIMEOUT_MS" 'BEGIN { exit !(s <= t / 1000 + 2) }'

must "leg 0 resumes (the hung I/O returns)" leg_resume leg0
t=$(now)
check "leg 0 comes back by itself and is resynced" wait_for 180 "both in sync" all_in_sync vol3
figure hung_leg_failback_and_resync_s "$(elapsed "$t")" s
must "tear down" hamirror-teardown.sh vol3
check "the legs are byte-identical" cmp -s "$LEG0" "$LEG1"
