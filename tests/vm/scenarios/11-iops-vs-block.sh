# shellcheck shell=bash
# 11-iops-vs-block: the cost of the mirror, measured in one VM run. The same
# fio job (4k random writes, QD16, O_DIRECT, 15 s) runs on a 2-leg hamirror
# LUN and on LIO's in-kernel `block` backstore over a single leg of the same
# kind (dm over loop), both over the loopback fabric; hamirror twice: with its
# default stable writes (write_cache = false: O_DSYNC on the legs) and with a
# write cache reported to the host (write_cache = true), which is what the
# block backstore does. Figures, not pass/fail: emulation makes absolute
# numbers meaningless, the ratios are what to read.
# (Sourced by autorun.sh after guest-lib.sh.)

require_handler
must "tcmu-runner starts" start_runner
LEG0=$(make_leg leg0 160); LEG1=$(make_leg leg1 160)
LEG2=$(make_leg leg2 160); LEG3=$(make_leg leg3 160)
REF=$(make_leg ref 160)
CFG=$(HM_TOML_EXTRA="initial_sync = \"none\"" hamirror_toml volr "$LEG0" "$LEG1")
CFGW=$(HM_TOML_EXTRA="initial_sync = \"none\"
write_cache = true" hamirror_toml volw "$LEG2" "$LEG3")
must "create the hamirror LUN (stable writes)" hamirror-create.sh volr 160M "$CFG"
must "create the hamirror LUN (write cache)" hamirror-create.sh volw 160M "$CFGW"
must "export the first" hamirror-export-loopback.sh volr naa.500140500000ba01
must "export the second" hamirror-export-loopback.sh volw naa.500140500000bc01
export_block() {
  tcli <<EOF
/backstores/block create name=refblk dev=$REF
/loopback create naa.500140500000bb01
/loopback/naa.500140500000bb01/luns create /backstores/block/refblk
EOF
  backstore_dir refblk >/dev/null
}
must "a block backstore on one leg, exported the same way" export_block
HM=$(lun_dev volr loopback); HW=$(lun_dev volw loopback); BLK=$(lun_dev refblk loopback)
must "the three disks are there ($HM, $HW, $BLK)" test -b "$HM" -a -b "$HW" -a -b "$BLK"

job() { # DISK OUT
  fio --name=cmp --filename="$1" --size=128M --bs=4k --rw=randwrite --ioengine=libaio \
      --iodepth=16 --direct=1 --time_based --runtime=15 --output-format=json > "$2" 2>/dev/null
}
must "fio on the in-kernel block backstore" job "$BLK" /tmp/blk.json
must "fio on the hamirror LUN (stable writes)" job "$HM" /tmp/hm.json
must "fio on the hamirror LUN (write cache)" job "$HW" /tmp/hw.json
B=$(fio_iops /tmp/blk.json write); H=$(fio_iops /tmp/hm.json write); W=$(fio_iops /tmp/hw.json write)
ratio() { awk -v h="$1" -v b="$2" 'BEGIN { printf "%.2f", h / b }'; }
figure block_backstore_1leg_4k_randwrite_iops "$B" IOPS
figure hamirror_2leg_stable_4k_randwrite_iops "$H" IOPS
figure hamirror_2leg_writecache_4k_randwrite_iops "$W" IOPS
figure hamirror_stable_vs_block_ratio "$(ratio "$H" "$B")" ""
figure hamirror_writecache_vs_block_ratio "$(ratio "$W" "$B")" ""
must "tear down the first" hamirror-teardown.sh volr
must "tear down the second" hamirror-teardown.sh volw
tcli >/dev/null <<EOF
/loopback delete naa.500140500000bb01
/backstores/block delete refblk
EOF
