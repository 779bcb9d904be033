# shellcheck shell=bash
# 02-leg-failure: while fio writes and verifies, leg 1 becomes a dm `error`
# target. fio sees no error, status shows leg 1 faulted with the reason; when
# the device is back and restored, the resync copies only the dirty regions
# (the engine's byte count), and the legs end identical.
# (Sourced by autorun.sh after guest-lib.sh.)

require_handler
NAA=naa.5001405000002a01
must "tcmu-runner starts" start_runner
LEG0=$(make_leg leg0 256)
LEG1=$(make_leg leg1 256)
CFG=$(HM_TOML_EXTRA="io_timeout_ms = 3000
auto_failback = false" hamirror_toml vol2 "$LEG0" "$LEG1")
must "create vol2" hamirror-create.sh vol2 256M "$CFG"
must "export vol2" hamirror-export-loopback.sh vol2 "$NAA"
DISK=$(lun_dev vol2 loopback)
must "vol2 is $DISK" test -b "$DISK"
must "initial copy done" wait_for 180 "both legs in sync" all_in_sync vol2
BEFORE=$(hm_status vol2 'd["resync_bytes_total"]')

# fio keeps to the first 64 MiB; the heartbeat writes at 200 MiB.
fio --name=fail --filename="$DISK" --size=64M --bs=4k --rw=randwrite --ioengine=libaio \
    --iodepth=16 --direct=1 --time_based --runtime=30 --verify=crc32c --verify_fatal=1 \
    --output-format=json > /tmp/fio2.json 2> /tmp/fio2.err &
FIO=$!
HB=$(heartbeat_start "$DISK" 200 28 /tmp/hb2)
sleep 6
t=$(now)
must "leg 1 becomes an error target" leg_error leg1
check "status shows leg 1 faulted" wait_for 30 "leg 1 faulted" leg_is vol2 1 faulted
figure leg_error_detect_s "$(elapsed "$t")" s
check "the fault reason names the write error" sh -c "hamirrorctl status vol2 | grep -qi 'write error'"
wait "$FIO" && rc=0 || rc=$?
wait "$HB" || true
check "fio finished with zero errors and every block verified" test "$rc" = 0
[ "$rc" = 0 ] || tail -n 20 /tmp/fio2.err
[ "$rc" = 0 ] && figure leg_error_max_write_latency_s "$(fio_max_lat_s /tmp/fio2.json write)" s
figure leg_error_longest_stall_s "$(cat /tmp/hb2)" s
check "leg 0 is still in sync" leg_is vol2 0 in_sync

must "leg 1's device works again" leg_restore leg1
t=$(now)
must "hamirrorctl restore vol2 1" hamirrorctl restore vol2 1
check "leg 1 back in sync" wait_for 180 "leg 1 in sync" all_in_sync vol2
figure leg_error_resync_s "$(elapsed "$t")" s
COPIED=$(( $(hm_status vol2 'd["resync_bytes_total"]') - BEFORE ))
figure leg_error_resync_bytes "$COPIED" bytes
# fio wrote only the first 64 MiB, the heartbeat one region at 200 MiB.
check "the resync copied only dirty regions (<= 64 MiB + one region, of a 256 MiB LUN)" \
  test "$COPIED" -le $(( (64 << 20) + (256 << 10) ))
check "the resync copied something" test "$COPIED" -gt 0
must "tear down" hamirror-teardown.sh vol2
check "the legs are byte-identical" cmp -s "$LEG0" "$LEG1"
