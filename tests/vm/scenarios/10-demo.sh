# shellcheck shell=bash
# 10-demo: the one-command demo (`make demo`), narrated. A 2-leg mirrored LUN
# carries a filesystem and a verified workload; one "array" dies under load and
# the workload never stops; the array comes back and only what changed is
# copied; both arrays end byte-identical.
# (Sourced by autorun.sh after guest-lib.sh.)

require_handler
NAA=naa.5001405000001d01
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
status() { hamirrorctl status demo | sed 's/^/   | /'; }

say "Step 1. Two disk arrays. Here they are two 256 MiB block devices (dm over loop): /dev/mapper/arrayA and /dev/mapper/arrayB."
must "tcmu-runner starts" start_runner
A=$(make_leg arrayA 256)
B=$(make_leg arrayB 256)

say "Step 2. One mirrored LUN over both, created with targetcli-scripts/hamirror-create.sh and exported on the loopback fabric."
CFG=$(HM_TOML_EXTRA="io_timeout_ms = 2000
failback_delay_ms = 1000" hamirror_toml demo "$A" "$B")
echo "   config ($CFG):"; sed 's/^/   | /' "$CFG"
must "create the mirrored LUN" hamirror-create.sh demo 256M "$CFG"
must "export it" hamirror-export-loopback.sh demo "$NAA"
DISK=$(lun_dev demo loopback)
must "the host sees one disk: $DISK" test -b "$DISK"
wait_for 120 "the initial copy" all_in_sync demo >/dev/null
INITIAL=$(hm_status demo 'd["resync_bytes_total"]')
status

say "Step 3. The host puts a filesystem on it and starts a workload: fio writes and verifies (crc32c) for 40 s, and a heartbeat writes every 0.1 s."
mkdir -p /mnt/demo
must "mkfs.ext4" mkfs.ext4 -q -F -E nodiscard "$DISK"
must "mount" mount "$DISK" /mnt/demo
fio --name=demo --directory=/mnt/demo --size=48M --bs=4k --rw=randwrite --ioengine=libaio \
    --iodepth=8 --direct=1 --time_based --runtime=40 --verify=crc32c --verify_fatal=1 \
    --output-format=json > /tmp/demo-fio.json 2> /tmp/demo-fio.err &
FIO=$!
python3 - > /tmp/demo-stall <<'PY' &
import os, time
fd = os.open("/mnt/demo/heartbeat", os.O_WRONLY | os.O_CREAT | os.O_DIRECT | os.O_DSYNC, 0o644)
import mmap
buf = mmap.mmap(-1, 4096)
worst, last, end = 0.0, time.time(), time.time() + 38
while time.time() < end:
    os.pwrite(fd, buf, 0)
    now = time.time(); worst = max(worst, now - last); last = now
    time.sleep(0.1)
print("%.2f" % worst)
PY
BEAT=$!
sleep 8
status

say "Step 4. Array B fails: every I/O to it now returns an error (dm 'error' target). The host must notice nothing."
leg_error arrayB
sleep 6
status
check "array B is out, with the reason" sh -c 'hamirrorctl status demo --json | grep -q faulted'
check "the workload is still running" kill -0 "$FIO"

say "Step 5. Array B comes back. hamirror takes it back by itself and copies only the regions written while it was away."
leg_restore arrayB
wait_for 120 "array B back in sync" all_in_sync demo >/dev/null && ok=1 || ok=0
check "array B is back in sync" test "$ok" = 1
hamirrorctl events demo | tail -n 6 | sed 's/^/   | /'
COPIED=$(( $(hm_status demo 'd["resync_bytes_total"]') - INITIAL ))
echo "   the resync copied $((COPIED / 1048576)) MiB of the 256 MiB LUN: the regions written while array B was away"
figure demo_resync_bytes "$COPIED" bytes

say "Step 6. The workload finishes. Did it ever see an error or a long pause?"
wait "$FIO" && rc=0 || rc=$?
wait "$BEAT" || true
check "fio finished with zero errors and every block verified" test "$rc" = 0
[ "$rc" = 0 ] || tail -n 20 /tmp/demo-fio.err
STALL=$(cat /tmp/demo-stall 2>/dev/null || echo "?")
echo "   longest pause between two heartbeat writes: ${STALL} s (io_timeout_ms = 2000)"
figure demo_longest_stall_s "$STALL" s
umount /mnt/demo

say "Step 7. Remove the LUN and compare the two arrays directly, byte for byte."
must "tear down" hamirror-teardown.sh demo
SA=$(md5sum < "$A" | cut -d' ' -f1); SB=$(md5sum < "$B" | cut -d' ' -f1)
echo "   arrayA md5 $SA"; echo "   arrayB md5 $SB"
check "both arrays hold the same bytes" test "$SA" = "$SB"
say "Done: the LUN survived the loss of an array with no error, and the array came back with a difference resync."
