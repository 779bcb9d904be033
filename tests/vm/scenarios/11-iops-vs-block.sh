# shellcheck shell=bash
# 11-iops-vs-block: the cost of the mirror, measured in one VM run. The same
# fio job (4k random writes, QD16, O_DIRECT, 15 s) runs on a 2-leg hamirror
# LUN and on LIO's in-kernel `block` backstore over a single leg of the same
# kind (dm over loop), both over the loopback fabric. Figures, not pass/fail:
# emulation makes absolute numbers meaningless, the ratio is what to read.
# (Sourced by autorun.sh after guest-lib.sh.)

require_handler
must "tcmu-runner starts" start_runner
LEG0=$(make_leg leg0 256)
LEG1=$(make_leg leg1 256)
REF=$(make_leg ref 256)
CFG=$(HM_TOML_EXTRA="initial_sync = \"none\"" hamirror_toml volr "$LEG0" "$LEG1")
must "create the hamirror LUN" hamirror-create.sh volr 256M "$CFG"
must "export it" hamirror-export-loopback.sh volr naa.500140500000ba01
export_block() {
  tcli <<EOF
/backstores/block create name=refblk dev=$REF
/loopback create naa.500140500000bb01
/loopback/naa.500140500000bb01/luns create /backstores/block/refblk
EOF
  backstore_dir refblk >/dev/null
}
must "a block backstore on one leg, exported the same way" export_block
HM=$(lun_dev volr loopback); BLK=$(lun_dev refblk loopback)
must "both disks are there ($HM, $BLK)" test -b "$HM" -a -b "$BLK"

job() { # DISK OUT
  fio --name=cmp --filename="$1" --size=128M --bs=4k --rw=randwrite --ioengine=libaio \
      --iodepth=16 --direct=1 --time_based --runtime=15 --output-format=json > "$2" 2>/dev/null
}
must "fio on the in-kernel block backstore" job "$BLK" /tmp/blk.json
must "fio on the hamirror LUN" job "$HM" /tmp/hm.json
B=$(fio_iops /tmp/blk.json write); H=$(fio_iops /tmp/hm.json write)
figure block_backstore_1leg_4k_randwrite_iops "$B" IOPS
figure hamirror_2leg_4k_randwrite_iops "$H" IOPS
figure hamirror_vs_block_ratio "$(awk -v h="$H" -v b="$B" 'BEGIN { printf "%.2f", h / b }')" ""
must "tear down" hamirror-teardown.sh volr
tcli >/dev/null <<EOF
/loopback delete naa.500140500000bb01
/backstores/block delete refblk
EOF
