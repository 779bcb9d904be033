# shellcheck shell=bash
# 12-reconfig: a mirrored LUN grown while the host uses it, and its settings
# changed through a new cfgstring. The legs (dm over loop
# files) are grown first, each with different bytes in its new tail;
# hamirror-grow.sh sets dev_size, tcmu-runner calls the handler's reconfig, the
# host rescans and sees the new size, writes and verifies across the old end,
# and the legs end byte-identical over the new size. Refusals: a leg too small
# (script and kernel path), a shrink, a size that is no whole block. Then the
# TOML file is edited and handed over again (hamirror-reconfig.sh): a new
# io_timeout_ms applies at once; a new region_size is refused.
# (Sourced by autorun.sh after guest-lib.sh.)

require_handler
NAA=naa.5001405000012a01
must "tcmu-runner starts" start_runner
LEG0=$(make_leg grow0 64)
LEG1=$(make_leg grow1 64)
CFG=$(hamirror_toml vol12 "$LEG0" "$LEG1")
must "create vol12 (64 MiB)" hamirror-create.sh vol12 64M "$CFG"
must "export vol12" hamirror-export-loopback.sh vol12 "$NAA"
DISK=$(lun_dev vol12 loopback)
must "vol12 is $DISK" test -b "$DISK"
must "initial copy done" wait_for 120 "both legs in sync" all_in_sync vol12
must "the host writes the first 64 MiB" dd if=/dev/urandom of="$DISK" bs=1M count=64 oflag=direct status=none
old_sum() { dd if="$DISK" bs=1M count=60 iflag=direct status=none | md5sum; }
OLD_SUM=$(old_sum)
log_has() { runner_log_since "$1" | grep -q "$2"; }
copied() { echo $(( $(hm_status vol12 'd["resync_bytes_total"]') - BEFORE )); }
copy_done() { [ "$(hm_status vol12 'd["resync"]')" = None ] && [ "$(copied)" -gt 0 ]; }

# grow_leg NAME MB : the loop file grows, its new tail gets its own random bytes,
# then the loop device and the dm table follow (an array growing its LUN).
grow_leg() {
  local img=$HM_LEGS/$1.img old
  old=$(stat -c %s "$img")
  truncate -s "$2M" "$img"
  head -c $(( ($2 << 20) - old )) /dev/urandom | dd of="$img" bs=1M seek=$(( old >> 20 )) conv=notrunc status=none
  losetup -c "$(leg_loop "$1")"
  leg_restore "$1"
}

# --- refusals: nothing changes ---------------------------------------------------
DIR=$(backstore_dir vol12)
expect_fail "hamirror-grow.sh refuses while a leg is too small" hamirror-grow.sh vol12 128M
check "...and says which leg to grow" sh -c "hamirror-grow.sh vol12 128M 2>&1 | grep -q 'grow it first'"
mark=$(runner_log_mark)
grow_leg grow0 128
expect_fail "the kernel's dev_size write fails while leg 1 is too small" sh -c "echo $((128 << 20)) > $DIR/attrib/dev_size"
check "tcmu-runner's log says which leg, and what to do" log_has "$mark" 'grow1.*would need 134217728; grow it first'
check "the LUN kept its size" test "$(cat "$DIR/attrib/dev_size")" = $((64 << 20))
expect_fail "hamirror-grow.sh refuses to shrink" hamirror-grow.sh vol12 32M
expect_fail "hamirror-grow.sh refuses a size that is no whole block" hamirror-grow.sh vol12 67109000
mark=$(runner_log_mark)
expect_fail "a shrink through dev_size fails" sh -c "echo $((32 << 20)) > $DIR/attrib/dev_size"
check "tcmu-runner's log says why" log_has "$mark" 'shrink the filesystem'
check "status still shows 64 MiB" test "$(hm_status vol12 'd["size"]')" = $((64 << 20))

# --- the grow --------------------------------------------------------------------
grow_leg grow1 128
BEFORE=$(hm_status vol12 'd["resync_bytes_total"]')
t=$(now)
must "hamirror-grow.sh vol12 128M" hamirror-grow.sh vol12 128M
figure grow_reconfig_s "$(elapsed "$t")" s
check "status shows 128 MiB" test "$(hm_status vol12 'd["size"]')" = $((128 << 20))
must "the host rescans" sh -c "echo 1 > /sys/block/${DISK#/dev/}/device/rescan"
check "the host sees 128 MiB" wait_for 10 "new capacity" sh -c "[ \$(blockdev --getsize64 $DISK) = $((128 << 20)) ]"
must "the host writes and verifies across the old end" fio --name=new --filename="$DISK" --offset=60M --size=68M \
  --bs=4k --rw=randwrite --ioengine=libaio --iodepth=16 --direct=1 --verify=crc32c --verify_fatal=1 --eta=never \
  --output=/tmp/fio12b.out
check "the old data is intact" test "$(old_sum)" = "$OLD_SUM"
check "the new capacity is copied" wait_for 120 "copy done" copy_done
COPIED=$(copied)
figure grow_copied_bytes "$COPIED" bytes
check "only the new 64 MiB was copied (not the old 64 MiB)" test "$COPIED" -le $(( (64 << 20) + (256 << 10) ))
check "the event log says so" sh -c "hamirrorctl events vol12 | grep -q 'grown from 67108864 to 134217728'"

# --- settings ----------------------------------------------------------------------
mark=$(runner_log_mark)
sed -i '1a io_timeout_ms = 2500' "$CFG"
must "hamirror-reconfig.sh applies the edited TOML file" hamirror-reconfig.sh vol12
check "tcmu-runner's log lists the change" log_has "$mark" 'settings changed: io_timeout_ms'
mark=$(runner_log_mark)
sed -i '1a region_size = 1048576' "$CFG"
expect_fail "a new region_size is refused" hamirror-reconfig.sh vol12
check "...naming the key" log_has "$mark" 'region_size cannot change while the LUN is open'
sed -i '/^region_size/d' "$CFG"
check "the LUN serves on" dd if=/dev/urandom of="$DISK" bs=4k count=16 oflag=direct status=none
must "tear down" hamirror-teardown.sh vol12
check "the legs are byte-identical over 128 MiB" cmp -s "$LEG0" "$LEG1"
