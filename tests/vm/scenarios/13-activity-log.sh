# shellcheck shell=bash
# 13-activity-log: issue 24's measurement. A 1 TiB LUN (sparse legs, no
# initial copy) takes 4 KiB random writes over its whole size for 10 s,
# twice: with the default activity log (bitmap_active_size = 4G) and with no
# limit (0). While fio runs, `hamirrorctl status` is sampled for the bytes a
# crash would copy: bounded, it must never pass 4 GiB. The IOPS of both runs,
# and of QD1 writes over a small hot area, are figures (ratios, not checks).
# (Sourced by autorun.sh after guest-lib.sh.)

require_handler
must "tcmu-runner starts" start_runner
LEG0=$(make_leg al0 1048576)
LEG1=$(make_leg al1 1048576)

# run VOL LIMIT NAA : one volume over the two legs; leaves figures al_VOL_*.
run() {
  local vol=$1 limit=$2 naa=$3 cfg disk sampler peak
  cfg=$(HM_TOML_EXTRA="initial_sync = \"none\"
bitmap_active_size = $limit" hamirror_toml "$vol" "$LEG0" "$LEG1")
  must "create $vol (1 TiB, bitmap_active_size = $limit)" hamirror-create.sh "$vol" 1T "$cfg"
  must "export $vol" hamirror-export-loopback.sh "$vol" "$naa"
  disk=$(lun_dev "$vol" loopback)
  must "$vol is $disk" test -b "$disk"
  : > "/tmp/$vol.peak"
  ( while :; do hm_status "$vol" 'd["activity"]["crash_copy_bytes"]' >> "/tmp/$vol.peak" 2>/dev/null; sleep 0.5; done ) &
  sampler=$!
  must "fio: 4 KiB random writes over the whole LUN, 10 s" \
    fio --name=spread --filename="$disk" --bs=4k --rw=randwrite --norandommap --randrepeat=0 \
        --ioengine=libaio --iodepth=16 --direct=1 --time_based --runtime=10 \
        --output-format=json --output="/tmp/$vol.json"
  kill "$sampler" 2>/dev/null || true
  wait "$sampler" 2>/dev/null || true
  hm_status "$vol" 'd["activity"]["crash_copy_bytes"]' >> "/tmp/$vol.peak"
  peak=$(sort -n "/tmp/$vol.peak" | tail -n 1)
  figure "al_${vol}_iops" "$(fio_iops "/tmp/$vol.json" write)" IOPS
  figure "al_${vol}_peak_crash_copy" "$peak" bytes
  figure "al_${vol}_samples" "$(wc -l < "/tmp/$vol.peak")" samples
  figure "al_${vol}_evictions" "$(hm_status "$vol" 'd["activity"]["evictions"]')" extents
  figure "al_${vol}_waits" "$(hm_status "$vol" 'd["activity"]["waits"]')" writes
  must "fio: QD1 writes over a 64 MiB hot area, 5 s" \
    fio --name=hot --filename="$disk" --size=64M --bs=4k --rw=randwrite --ioengine=libaio \
        --iodepth=1 --direct=1 --time_based --runtime=5 --output-format=json --output="/tmp/$vol.hot.json"
  figure "al_${vol}_hot_qd1_iops" "$(fio_iops "/tmp/$vol.hot.json" write)" IOPS
  echo "$peak" > "/tmp/$vol.peakvalue"
  must "tear down $vol" hamirror-teardown.sh "$vol"
}

run albounded $((4 << 30)) naa.500140500000ad01
run alunbounded 0 naa.500140500000ad02
BOUNDED=$(cat /tmp/albounded.peakvalue)
UNBOUNDED=$(cat /tmp/alunbounded.peakvalue)
check "bounded: a crash would never have copied more than 4 GiB (peak $BOUNDED bytes)" \
  test "$BOUNDED" -le $((4 << 30))
check "unbounded, the same writes would leave more (peak $UNBOUNDED bytes): the check means something" \
  test "$UNBOUNDED" -gt $((4 << 30))
