# shellcheck shell=bash
# 00-targetcli-scripts: the admin scripts' generic half, without hamirror.
# hamirror-remove.sh and hamirror-putback.sh swap the backstore under a LUN and
# must keep the LUN's identity; that swap (lib.sh's replace_backstore) is the
# same whatever the backstore types, so it is checked here on block <-> fileio,
# through the loopback and iSCSI exports made by the scripts themselves. The
# hamirror-specific parts (sync check, source=N) are in 06-remove-putback.
# (Sourced by autorun.sh after guest-lib.sh.)

SCRIPTS=$HM_SCRIPTS   # where the package put them
NAA=naa.5001405000000b01
IQN=iqn.2003-01.org.linux-iscsi.hamirror-vm:scripts
ME=$(sed -n 's/^InitiatorName=//p' /etc/iscsi/initiatorname.iscsi)

LEG=$(make_leg ida 128)
IMG=$HM_LEGS/ida.img

# --- refusals that must change nothing (no targetcli run at all) ------------------
nothing_changed() { [ -z "$(find /sys/kernel/config/target/core -mindepth 2 -maxdepth 2 -type d -not -path '*/alua/*')" ]; }
expect_fail "create refuses a cfgstring with ':'" hamirror-create.sh v1 64M "legs=/dev/disk/by-path/pci-0000:00:1f.2,/b;meta=/m"
expect_fail "create refuses a cfgstring with ',' (LIO would cut it there)" hamirror-create.sh v1 64M "legs=/a,/b;meta=/m"
expect_fail "create refuses a cfgstring over 255 bytes" hamirror-create.sh v1 64M "legs=/$(printf 'x%.0s' {1..250});meta=/m"
expect_fail "create refuses a bad size" hamirror-create.sh v1 64Q "legs=/a,/b;meta=/m"
expect_fail "remove refuses a backstore that is not user:hamirror" hamirror-remove.sh ida "$LEG"
check "the refusals changed nothing in LIO" nothing_changed
check "--help prints the usage" bash -c 'hamirror-remove.sh --help | grep -q "^Usage: hamirror-remove.sh"'

# --- a LUN exported by the scripts ---------------------------------------------------
tcli <<< "/backstores/block create name=ida dev=$LEG"
must "block backstore ida exists" backstore_dir ida
must "hamirror-export-loopback.sh exports it as LUN 3" hamirror-export-loopback.sh --lun 3 ida "$NAA"
must "hamirror-export-iscsi.sh exports it as LUN 2 to this initiator only" hamirror-export-iscsi.sh --lun 2 ida "$IQN" "$ME"
SERIAL=$(backstore_serial ida)
must "iSCSI login" iscsi_login "$IQN"
LDISK=$(lun_dev_for_wwn "$SERIAL" loopback)
IDISK=$(lun_dev_for_wwn "$SERIAL" iscsi)
dd if=/dev/urandom of="$IDISK" bs=1M count=8 oflag=direct status=none
SUM=$(dd if="$IDISK" bs=1M count=8 iflag=direct status=none | md5sum)

BEFORE_I=$(scsi_identity "$IDISK")
BEFORE_L=$(scsi_identity "$LDISK")
echo "identity over iSCSI before the swaps:"; echo "$BEFORE_I" | sed 's/^/  /'

# swap_to KIND CREATE_LINE UNDO_LINE : replace_backstore exactly as the scripts do.
swap_to() {
  ( . "$SCRIPTS/lib.sh"
    d=$(find_so ida)
    identity_load "$d"
    replace_backstore "$d" "$1" "$2" "$3" )
}
exported_as_before() {
  ( . "$SCRIPTS/lib.sh"
    d=$(find_so ida)
    [ "$(exports_of "$d" | sort | xargs)" = "iscsi $IQN 1 2 loopback $NAA 1 3" ] &&
      [ "$(mappings_of iscsi "$IQN" 1 2)" = "$ME 2 0" ] )
}
after_swap_checks() {
  local what=$1 ldisk
  check "$what: the backstore kept its unit serial" test "$(backstore_serial ida)" = "$SERIAL"
  check "$what: LUN numbers and the iSCSI ACL mapping are as before" exported_as_before
  check "$what: the same iSCSI disk reads the same data" \
    test "$(dd if="$IDISK" bs=1M count=8 iflag=direct status=none | md5sum)" = "$SUM"
  check "$what: the iSCSI host sees the same serial, NAA, INQUIRY and LUN" \
    test "$(scsi_identity "$IDISK")" = "$BEFORE_I"
  ldisk=$(lun_dev_for_wwn "$SERIAL" loopback) || true
  check "$what: the loopback disk is back ($ldisk) with the same identity" \
    test -n "$ldisk" -a "$(scsi_identity "${ldisk:-/nonexistent}" 2>/dev/null)" = "$BEFORE_L"
}

t=$(now)
swap_to fileio "/backstores/fileio create name=ida file_or_dev=$IMG write_back=false wwn=$SERIAL" \
  "/backstores/block create name=ida dev=$LEG wwn=$SERIAL" > /tmp/swap1.out 2>&1 && rc=0 || rc=$?
cat /tmp/swap1.out
figure swap_block_to_fileio_s "$(elapsed "$t")" s
check "block -> fileio swap succeeded" test "$rc" = 0
check "the LUN is now fileio on the leg's image" grep -q "File: $IMG" "$(backstore_dir ida)/info"
after_swap_checks "after block -> fileio"

swap_to block "/backstores/block create name=ida dev=$LEG wwn=$SERIAL" \
  "/backstores/fileio create name=ida file_or_dev=$IMG write_back=false wwn=$SERIAL" \
  > /tmp/swap2.out 2>&1 && rc=0 || rc=$?
cat /tmp/swap2.out
check "fileio -> block swap succeeded" test "$rc" = 0
after_swap_checks "after fileio -> block"

# A creation that fails must leave the old backstore exported as before.
swap_to block "/backstores/block create name=ida dev=/dev/nonexistent wwn=$SERIAL" \
  "/backstores/block create name=ida dev=$LEG wwn=$SERIAL" > /tmp/swap3.out 2>&1 && rc=0 || rc=$?
cat /tmp/swap3.out
check "a failed swap reports failure" test "$rc" != 0
check "a failed swap says it restored the old backstore" grep -q 'was restored and re-exported' /tmp/swap3.out
after_swap_checks "after a failed swap"

# --- teardown by the script ----------------------------------------------------------
check "iSCSI logout" iscsi_logout "$IQN"
must "hamirror-teardown.sh removes LUNs, targets and backstore" hamirror-teardown.sh ida
check "no backstore left" nothing_changed
check "the loopback and iSCSI targets are gone" \
  test ! -e "/sys/kernel/config/target/loopback/$NAA" -a ! -e "/sys/kernel/config/target/iscsi/$IQN"
remove_leg ida
