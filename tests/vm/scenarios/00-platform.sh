# shellcheck shell=bash
# 00-platform: the test platform itself, without hamirror. If this fails, no
# hamirror scenario can be trusted: LIO, tcmu-runner, targetcli over D-Bus, the
# loopback and iSCSI fabrics, device-mapper fault injection, and runner crash
# recovery must all behave as LIO-VM.md describes.
# (Sourced by autorun.sh after guest-lib.sh.)

NAA=naa.5001405000000a01
IQN=iqn.2003-01.org.linux-iscsi.hamirror-vm:platform
FIO=(fio --direct=1 --ioengine=libaio --bs=4k --iodepth=16 --size=64M --time_based
     --verify=crc32c --output-format=json)

# --- the runner and the legs ---------------------------------------------------
t=$(now)
must "tcmu-runner starts and owns org.kernel.TCMUService1" start_runner
figure runner_start_s "$(elapsed "$t")" s
check "tcmu-runner registered Debian's qcow handler" grep -q 'Handler qcow is registered' "$RUNNER_LOG"

LEG0=$(make_leg leg0 256)
LEG1=$(make_leg leg1 256)
check "dm legs appear without udev" test -b "$LEG0" -a -b "$LEG1"

# --- LIO block backstore on a leg, over loopback -----------------------------------
t=$(now)
tcli <<EOF
/backstores/block create name=plat0 dev=$LEG0
/loopback create $NAA
/loopback/$NAA/luns create /backstores/block/plat0 lun=0
EOF
figure targetcli_batch_s "$(elapsed "$t")" s
must "targetcli created backstore plat0" backstore_dir plat0
t=$(now)
DISK=$(lun_dev plat0 loopback)
must "the loopback LUN appears as a SCSI disk ($DISK)" test -b "$DISK"
figure lun_appear_s "$(elapsed "$t")" s

mkdir -p /mnt/plat
must "mkfs.ext4 on the LUN" mkfs.ext4 -q -F -E nodiscard "$DISK"
must "mount the LUN" mount "$DISK" /mnt/plat
dd if=/dev/urandom of=/mnt/plat/data bs=1M count=16 status=none
SUM=$(md5sum < /mnt/plat/data)
umount /mnt/plat
mount "$DISK" /mnt/plat
check "a file reads back the same after remount" test "$(md5sum < /mnt/plat/data)" = "$SUM"
umount /mnt/plat
check "the leg holds exactly what the LUN shows" \
  cmp <(dd if="$DISK" bs=1M count=64 iflag=direct status=none) \
      <(dd if="$LEG0" bs=1M count=64 iflag=direct status=none)

"${FIO[@]}" --name=plat --filename="$DISK" --rw=randwrite --runtime=5 \
  > /tmp/fio-block.json 2> /tmp/fio-block.err && rc=0 || rc=$?
check "fio 4k randwrite with crc32c verify over loopback+block" test "$rc" = 0
[ "$rc" = 0 ] && figure loopback_block_4k_randwrite_iops "$(fio_iops /tmp/fio-block.json write)" IOPS
[ "$rc" = 0 ] || tail -n 20 /tmp/fio-block.err /tmp/fio-block.json

# --- device-mapper faults seen through LIO ------------------------------------------
w4k() { dd if=/dev/urandom of="$DISK" bs=4k count=1 seek="$1" oflag=direct status=none 2>/dev/null; }
r4k() { dd if="$DISK" of=/dev/null bs=4k count=1 skip="$1" iflag=direct status=none 2>/dev/null; }
leg_error leg0
expect_fail "a write fails while the leg is an error target" w4k 100
expect_fail "a read fails while the leg is an error target" r4k 100
leg_restore leg0
check "writes work again once the leg is linear again" w4k 100
check "reads work again once the leg is linear again" r4k 100

leg_suspend leg0
w4k 200 & writer=$!
sleep 2
check "a write to a suspended leg hangs" kill -0 "$writer"
leg_resume leg0
check "the hung write completes successfully on resume" wait "$writer"

leg_delay leg0 500
t=$(now)
r4k 300
d=$(elapsed "$t")
check "a delay target slows a read to >= 0.5 s (took $d s)" awk -v d="$d" 'BEGIN { exit !(d >= 0.5) }'
leg_restore leg0

# --- the TCMU path: Debian's qcow handler, and a runner crash -------------------------
# qcow2 needs fallocate, which tmpfs lacks (LIO-VM.md §7.4): put it on ext4 on leg1.
mkdir -p /mnt/qimg
mkfs.ext4 -q -F -E nodiscard "$LEG1"
mount "$LEG1" /mnt/qimg
qemu-img create -q -f qcow2 /mnt/qimg/q.qcow2 128M
tcli <<EOF
/backstores/user:qcow create name=platq size=128M cfgstring=/mnt/qimg/q.qcow2
/loopback/$NAA/luns create /backstores/user:qcow/platq lun=1
EOF
must "targetcli created user:qcow backstore platq" backstore_dir platq
QDISK=$(lun_dev platq loopback)
must "the user:qcow LUN appears ($QDISK)" test -b "$QDISK"
"${FIO[@]}" --name=platq --filename="$QDISK" --rw=randwrite --runtime=3 --size=32M \
  > /tmp/fio-qcow.json 2> /tmp/fio-qcow.err && rc=0 || rc=$?
check "fio 4k randwrite with crc32c verify through tcmu-runner" test "$rc" = 0
[ "$rc" = 0 ] && figure loopback_tcmu_qcow2_4k_randwrite_iops "$(fio_iops /tmp/fio-qcow.json write)" IOPS
[ "$rc" = 0 ] || tail -n 20 /tmp/fio-qcow.err /tmp/fio-qcow.json

dd if=/dev/urandom of=/tmp/pattern bs=1M count=1 status=none
must "kill -9 tcmu-runner" kill9_runner
dd if=/tmp/pattern of="$QDISK" bs=1M seek=4 oflag=direct status=none & writer=$!
sleep 3
check "I/O blocks while tcmu-runner is dead" kill -0 "$writer"
t=$(now)
must "tcmu-runner restarts" start_runner
check "the blocked write completes after the restart" wait "$writer"
figure runner_restart_to_io_done_s "$(elapsed "$t")" s
check "the write made during the crash reads back intact" \
  cmp /tmp/pattern <(dd if="$QDISK" bs=1M skip=4 count=1 iflag=direct status=none)

# --- iSCSI on 127.0.0.1 ----------------------------------------------------------
tcli <<EOF
/iscsi create $IQN
/iscsi/$IQN/tpg1/luns create /backstores/block/plat0
/iscsi/$IQN/tpg1 set attribute authentication=0 demo_mode_write_protect=0 generate_node_acls=1 cache_dynamic_acls=1
EOF
must "open-iscsi logs in to the target on 127.0.0.1" iscsi_login "$IQN"
IDISK=$(lun_dev plat0 iscsi)
must "the iSCSI LUN appears ($IDISK)" test -b "$IDISK"
dd if=/tmp/pattern of="$IDISK" bs=1M seek=8 oflag=direct status=none
check "a write over iSCSI reads back over loopback" \
  cmp /tmp/pattern <(dd if="$DISK" bs=1M skip=8 count=1 iflag=direct status=none)
"${FIO[@]}" --name=plati --filename="$IDISK" --rw=randwrite --runtime=3 \
  > /tmp/fio-iscsi.json 2> /tmp/fio-iscsi.err && rc=0 || rc=$?
check "fio 4k randwrite with crc32c verify over iSCSI" test "$rc" = 0
[ "$rc" = 0 ] && figure iscsi_block_4k_randwrite_iops "$(fio_iops /tmp/fio-iscsi.json write)" IOPS
[ "$rc" = 0 ] || tail -n 20 /tmp/fio-iscsi.err /tmp/fio-iscsi.json
check "iSCSI logout" iscsi_logout "$IQN"

# --- teardown -----------------------------------------------------------------------
umount /mnt/qimg 2>/dev/null || true   # busy until platq is gone; retried below
tcli <<EOF
/iscsi delete $IQN
/loopback delete $NAA
/backstores/block delete plat0
/backstores/user:qcow delete platq
EOF
check "teardown left no backstore in configfs" \
  test -z "$(find /sys/kernel/config/target/core -mindepth 2 -maxdepth 2 -type d -not -path '*/alua/*')"
mountpoint -q /mnt/qimg && umount /mnt/qimg
check "tcmu-runner stops cleanly" stop_runner
remove_leg leg0
remove_leg leg1
