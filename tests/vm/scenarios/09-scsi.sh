# shellcheck shell=bash
# 09-scsi: SCSI behaviour through LIO with sg3-utils: READ CAPACITY matches the
# configured size, SYNCHRONIZE CACHE, UNMAP, WRITE SAME, COMPARE AND WRITE (a
# miscompare returns MISCOMPARE and leaves the data untouched), and persistent
# reservations (register, reserve, release), which LIO emulates for TCMU.
# (Sourced by autorun.sh after guest-lib.sh.)

require_handler
must "tcmu-runner starts" start_runner
mkdir -p /etc/rtslib-fb-target/pr /etc/rtslib-fb-target/alua
LEG0=$(make_leg leg0 128)
LEG1=$(make_leg leg1 128)
CFG=$(HM_TOML_EXTRA="write_cache = true
unmap_zero_fill = true" hamirror_toml vol9 "$LEG0" "$LEG1")
must "create vol9" hamirror-create.sh vol9 128M "$CFG"
must "export vol9" hamirror-export-loopback.sh vol9 naa.5001405000009a01
DISK=$(lun_dev vol9 loopback)
must "vol9 is $DISK" test -b "$DISK"
must "initial copy done" wait_for 180 "in sync" all_in_sync vol9
BS=512

# READ CAPACITY (16): last LBA + 1 blocks of 512 bytes = 128 MiB.
CAP=$(sg_readcap --16 "$DISK" 2>&1)
check "READ CAPACITY reports the configured 128 MiB" grep -q "Device size: 134217728 bytes" <<< "$CAP"
# The sd driver reads the caching mode page: "write back" means WCE=1.
check "the write cache the host sees follows the config (write back)" \
  grep -q "write back" /sys/block/"$(basename "$DISK")"/device/scsi_disk/*/cache_type

# SYNCHRONIZE CACHE
check "SYNCHRONIZE CACHE succeeds" sg_sync "$DISK"

# WRITE SAME (16): 64 blocks of a pattern at LBA 2048.
head -c $BS /dev/urandom > /tmp/pat
check "WRITE SAME succeeds" sg_write_same --16 --in=/tmp/pat --lba=2048 --num=64 "$DISK"
dd if="$DISK" bs=$BS skip=2048 count=64 iflag=direct status=none > /tmp/ws
check "WRITE SAME wrote the pattern 64 times" sh -c 'for i in $(seq 0 63); do dd if=/tmp/ws bs=512 skip=$i count=1 status=none | cmp -s - /tmp/pat || exit 1; done'

# UNMAP: with unmap_zero_fill every leg reads back zeroes.
dd if=/dev/urandom of="$DISK" bs=$BS seek=4096 count=128 oflag=direct status=none
check "UNMAP succeeds" sg_unmap --lba=4096 --num=128 "$DISK"
check "the unmapped blocks read back as zeroes" \
  cmp -s <(dd if="$DISK" bs=512 skip=4096 count=128 iflag=direct status=none) <(head -c 65536 /dev/zero)

# COMPARE AND WRITE: one block. Good compare -> written; bad -> MISCOMPARE, untouched.
head -c $BS /dev/urandom > /tmp/old; head -c $BS /dev/urandom > /tmp/new; head -c $BS /dev/urandom > /tmp/other
dd if=/tmp/old of="$DISK" bs=$BS seek=8192 oflag=direct status=none
cat /tmp/old /tmp/new > /tmp/caw-good
check "COMPARE AND WRITE with matching data succeeds" sg_compare_and_write --in=/tmp/caw-good --lba=8192 --num=1 "$DISK"
dd if="$DISK" bs=$BS skip=8192 count=1 iflag=direct status=none > /tmp/now
check "... and wrote the new data" cmp -s /tmp/now /tmp/new
cat /tmp/other /tmp/old > /tmp/caw-bad
out=$(sg_compare_and_write --in=/tmp/caw-bad --lba=8192 --num=1 "$DISK" 2>&1) && rc=0 || rc=$?
check "a mismatching COMPARE AND WRITE fails with MISCOMPARE ($rc)" grep -qi "miscompare" <<< "$out"
dd if="$DISK" bs=$BS skip=8192 count=1 iflag=direct status=none > /tmp/now
check "... and left the data untouched" cmp -s /tmp/now /tmp/new

# Persistent reservations (LIO emulates them in the kernel for TCMU devices).
check "PR: register a key" sg_persist --out --register --param-sark=0x1234 "$DISK"
check "PR: reserve (write exclusive)" sg_persist --out --reserve --param-rk=0x1234 --prout-type=1 "$DISK"
check "PR: the reservation is reported" sh -c "sg_persist --in --read-reservation '$DISK' | grep -qi 0x1234"
check "PR: release" sg_persist --out --release --param-rk=0x1234 --prout-type=1 "$DISK"
check "PR: unregister" sg_persist --out --register --param-rk=0x1234 --param-sark=0 "$DISK"

must "tear down" hamirror-teardown.sh vol9
check "the legs are byte-identical" cmp -s "$LEG0" "$LEG1"
