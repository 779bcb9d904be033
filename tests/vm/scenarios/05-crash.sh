# shellcheck shell=bash
# 05-crash: tcmu-runner is killed with SIGKILL in the middle of a verified
# write workload and restarted. The workload completes without a verification
# error (LIO holds the commands meanwhile), the resync after the restart
# covers only the write-intent bitmap's regions, and the legs end identical.
# (Sourced by autorun.sh after guest-lib.sh.)

require_handler
NAA=naa.5001405000005a01
must "tcmu-runner starts" start_runner
LEG0=$(make_leg leg0 256)
LEG1=$(make_leg leg1 256)
# Bits of idle regions are cleared after 1 s, so that at the crash the bitmap
# holds roughly the regions fio is writing, not everything ever written.
CFG=$(HM_TOML_EXTRA="io_timeout_ms = 3000
bitmap_clear_delay_ms = 1000" hamirror_toml vol5 "$LEG0" "$LEG1")
must "create vol5" hamirror-create.sh vol5 256M "$CFG"
must "export vol5" hamirror-export-loopback.sh vol5 "$NAA"
DISK=$(lun_dev vol5 loopback)
must "vol5 is $DISK" test -b "$DISK"
must "initial copy done" wait_for 180 "both legs in sync" all_in_sync vol5

# A write phase then a verify phase: blocks written before the crash are
# read back and checked after it.
# The kill must land mid-write, whatever this machine's speed: io_size is two
# passes over the 32 MiB area (16384 writes) and rate_iops caps them at 1000/s,
# so the write phase lasts at least 16 s and the kill comes at 8 s. (Without
# the cap a fast run finished writing before the kill, and the recovery
# rightly found nothing to copy.)
fio --name=crash --filename="$DISK" --size=32M --io_size=64M --rate_iops=1000 --bs=4k --rw=randwrite \
    --ioengine=libaio --iodepth=16 --direct=1 --verify=crc32c --verify_fatal=1 --do_verify=1 \
    --output-format=json > /tmp/fio5.json 2> /tmp/fio5.err &
FIO=$!
sleep 8
DIRTY=$(hm_status vol5 'd["dirty_regions"]')
REGION=$(hm_status vol5 'd["region_size"]')
figure crash_dirty_regions_at_kill "$DIRTY" regions
mark=$(runner_log_mark)
# recovered VOLUME : every leg in sync and no resync running.
recovered() { all_in_sync "$1" && [ "$(hm_status "$1" 'd["resync"] is None')" = True ]; }
must "kill -9 tcmu-runner mid-workload" kill9_runner
sleep 3
check "the workload is blocked, not failed" kill -0 "$FIO"
t=$(now)
must "tcmu-runner restarts" start_runner
check "the runner reopened vol5" wait_for 60 "vol5 reopened" sh -c "hamirrorctl status vol5 >/dev/null 2>&1"
figure crash_restart_to_reopen_s "$(elapsed "$t")" s
wait "$FIO" && rc=0 || rc=$?
check "fio finished and verified every block written across the crash" test "$rc" = 0
[ "$rc" = 0 ] || tail -n 20 /tmp/fio5.err
check "crash recovery finished" wait_for 180 "both legs in sync, recovery done" \
  recovered vol5
COPIED=$(hm_status vol5 'd["resync_bytes_total"]')
figure crash_recovery_bytes "$COPIED" bytes
# For the reader of the log: the recovery's own account (not a check).
runner_log_since "$mark" | grep -i "crashrecovery" | tail -n 2 || true
# Only the regions in the bitmap at the crash (plus what fio wrote while the
# runner restarted) may be copied: never the 256 MiB LUN. fio's area is 32 MiB
# from offset 0, eight whole 4 MiB bitmap extents.
check "the recovery copied only bitmap regions (<= 32 MiB + 1 region, of 256 MiB)" \
  test "$COPIED" -le $(( (32 << 20) + REGION ))
check "the recovery copied something (writes were in flight at the kill)" test "$COPIED" -gt 0
must "tear down" hamirror-teardown.sh vol5
check "the legs are byte-identical" cmp -s "$LEG0" "$LEG1"
