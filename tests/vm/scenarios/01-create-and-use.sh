# shellcheck shell=bash
# 01-create-and-use: a 2-leg mirrored LUN made with the admin scripts carries a
# filesystem and fio's verified I/O over loopback and iSCSI, and afterwards each
# leg on its own is a plain, byte-identical copy of the LUN (DESIGN.md
# invariant 4: native format).
# (Sourced by autorun.sh after guest-lib.sh.)

require_handler
NAA=naa.5001405000001a01
IQN=iqn.2003-01.org.linux-iscsi.hamirror-vm:vol1
FIO=(fio --direct=1 --ioengine=libaio --bs=4k --iodepth=16 --time_based
     --verify=crc32c --output-format=json)

must "tcmu-runner starts" start_runner
check "tcmu-runner registered the hamirror handler" grep -q 'Handler hamirror is registered' "$RUNNER_LOG"

LEG0=$(make_leg leg0 256)
LEG1=$(make_leg leg1 256)
CFG=$(HM_TOML_EXTRA="io_timeout_ms = 3000" hamirror_toml vol1 "$LEG0" "$LEG1")
t=$(now)
must "hamirror-create.sh creates user:hamirror vol1" hamirror-create.sh vol1 256M "$CFG"
figure create_s "$(elapsed "$t")" s
must "hamirror-export-loopback.sh exports vol1" hamirror-export-loopback.sh vol1 "$NAA"
must "hamirror-export-iscsi.sh exports vol1 (demo mode)" hamirror-export-iscsi.sh vol1 "$IQN"
DISK=$(lun_dev vol1 loopback)
must "vol1 appears as a local disk ($DISK)" test -b "$DISK"
check "the disk has the LUN's size" test "$(blockdev --getsize64 "$DISK")" = $((256 << 20))

if command -v hamirrorctl >/dev/null; then
  # A new volume first copies leg 0 onto the others.
  t=$(now)
  check "hamirrorctl status shows both legs in sync (after the initial copy)" \
    wait_for 180 "both legs in sync" all_in_sync vol1
  figure initial_sync_256MiB_s "$(elapsed "$t")" s
  # Debian's kernel gives tcmu-runner an io_uring: the legs use it, not threads.
  check "the legs do their I/O through io_uring" \
    bash -c 'hamirrorctl status vol1 | grep -q "leg I/O io_uring"'
else
  fail "hamirrorctl is not in the guest (cargo build --release builds it)"
fi

# --- raw verified I/O over loopback ------------------------------------------------
"${FIO[@]}" --name=raw --filename="$DISK" --rw=randwrite --runtime=5 --size=64M \
  > /tmp/fio-raw.json 2> /tmp/fio-raw.err && rc=0 || rc=$?
check "fio 4k randwrite with crc32c verify over loopback" test "$rc" = 0
[ "$rc" = 0 ] && figure hamirror_loopback_4k_randwrite_iops "$(fio_iops /tmp/fio-raw.json write)" IOPS
[ "$rc" = 0 ] || tail -n 20 /tmp/fio-raw.err /tmp/fio-raw.json

# --- a filesystem, written over loopback, then used over iSCSI -------------------------
mkdir -p /mnt/vol1
must "mkfs.ext4 on the mirrored LUN" mkfs.ext4 -q -F -E nodiscard "$DISK"
must "mount it" mount "$DISK" /mnt/vol1
mkdir -p /mnt/vol1/tree
for i in $(seq 200); do head -c $(( (i * 37) % 9000 + 1 )) /dev/urandom > "/mnt/vol1/tree/f$i"; done
dd if=/dev/urandom of=/mnt/vol1/big bs=1M count=32 status=none
(cd /mnt/vol1 && find . -type f -print0 | sort -z | xargs -0 md5sum) > /tmp/sums
umount /mnt/vol1

must "iSCSI login to vol1" iscsi_login "$IQN"
IDISK=$(lun_dev vol1 iscsi)
must "vol1 appears over iSCSI ($IDISK)" test -b "$IDISK"
must "mount the filesystem over iSCSI" mount "$IDISK" /mnt/vol1
check "every file reads back over iSCSI" bash -c 'cd /mnt/vol1 && md5sum --quiet -c /tmp/sums'
"${FIO[@]}" --name=fs --filename=/mnt/vol1/fio.dat --rw=randwrite --runtime=5 --size=48M \
  > /tmp/fio-iscsi.json 2> /tmp/fio-iscsi.err && rc=0 || rc=$?
check "fio 4k randwrite with crc32c verify in a file over iSCSI" test "$rc" = 0
[ "$rc" = 0 ] && figure hamirror_iscsi_ext4_4k_randwrite_iops "$(fio_iops /tmp/fio-iscsi.json write)" IOPS
[ "$rc" = 0 ] || tail -n 20 /tmp/fio-iscsi.err /tmp/fio-iscsi.json
(cd /mnt/vol1 && find . -type f -print0 | sort -z | xargs -0 md5sum) > /tmp/sums
umount /mnt/vol1
check "iSCSI logout" iscsi_logout "$IQN"
check "both legs are still in sync after the workload" all_in_sync vol1
hamirrorctl status vol1 || true

# --- the legs on their own ------------------------------------------------------------
must "hamirror-teardown.sh removes vol1" hamirror-teardown.sh vol1
check "the legs are byte-identical" \
  cmp <(dd if="$LEG0" bs=1M iflag=direct status=none) <(dd if="$LEG1" bs=1M iflag=direct status=none)
for leg in "$LEG0" "$LEG1"; do
  mkdir -p /mnt/leg
  if mount -o ro,noload "$leg" /mnt/leg; then
    check "$leg mounted alone shows every file intact" bash -c 'cd /mnt/leg && md5sum --quiet -c /tmp/sums'
    umount /mnt/leg
  else
    fail "$leg does not mount on its own"
  fi
done
check "tcmu-runner stops cleanly" stop_runner
remove_leg leg0
remove_leg leg1
