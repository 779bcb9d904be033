# shellcheck shell=bash
# 08-two-luns: two mirrored LUNs in one tcmu-runner, each with its own engine.
# One loses a leg under load while the other keeps going, untouched.
# (Sourced by autorun.sh after guest-lib.sh.)

require_handler
must "tcmu-runner starts" start_runner
A0=$(make_leg a0 128); A1=$(make_leg a1 128)
B0=$(make_leg b0 128); B1=$(make_leg b1 128)
CA=$(HM_TOML_EXTRA="io_timeout_ms = 2000
auto_failback = false" hamirror_toml vola "$A0" "$A1")
CB=$(HM_TOML_EXTRA="io_timeout_ms = 2000" hamirror_toml volb "$B0" "$B1")
must "create vola" hamirror-create.sh vola 128M "$CA"
must "create volb" hamirror-create.sh volb 128M "$CB"
must "export vola" hamirror-export-loopback.sh vola naa.5001405000008a01
must "export volb" hamirror-export-loopback.sh volb naa.5001405000008b01
DA=$(lun_dev vola loopback); DB=$(lun_dev volb loopback)
must "two disks: $DA and $DB" test -b "$DA" -a -b "$DB" -a "$DA" != "$DB"

must "vola initial copy done" wait_for 180 "vola in sync" all_in_sync vola
must "volb initial copy done" wait_for 180 "volb in sync" all_in_sync volb
check "hamirrorctl list shows both volumes" sh -c "hamirrorctl list | grep -q vola && hamirrorctl list | grep -q volb"

fio_on() { # NAME DISK
  fio --name="$1" --filename="$2" --size=32M --bs=4k --rw=randwrite --ioengine=libaio \
      --iodepth=8 --direct=1 --time_based --runtime=20 --verify=crc32c --verify_fatal=1 \
      --output-format=json > "/tmp/$1.json" 2> "/tmp/$1.err"
}
fio_on fa "$DA" & FA=$!
fio_on fb "$DB" & FB=$!
sleep 5
must "vola's leg 1 fails" leg_error a1
wait "$FA" && ra=0 || ra=$?
wait "$FB" && rb=0 || rb=$?
check "vola's workload saw no error" test "$ra" = 0
check "volb's workload saw no error" test "$rb" = 0
check "vola lost leg 1" leg_is vola 1 faulted
check "volb still has both legs" all_in_sync volb
check "volb saw no leg event at all" sh -c "! hamirrorctl events volb | grep -qi faulted"
[ "$rb" = 0 ] && figure two_luns_unaffected_lun_iops "$(fio_iops /tmp/fb.json write)" IOPS
must "vola's leg 1 is back" leg_restore a1
must "restore it" hamirrorctl restore vola 1
check "vola back in sync" wait_for 120 "vola in sync" all_in_sync vola
must "tear down vola" hamirror-teardown.sh vola
must "tear down volb" hamirror-teardown.sh volb
check "vola's legs are identical" cmp -s "$A0" "$A1"
check "volb's legs are identical" cmp -s "$B0" "$B1"
