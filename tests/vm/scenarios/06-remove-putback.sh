# shellcheck shell=bash
# 06-remove-putback: hamirror can be taken out from under a live LUN and put
# back, with the admin scripts, and hosts see the same disk throughout:
#  * hamirror-remove.sh refuses a leg that is not in sync, changing nothing;
#  * it serves the LUN from one in-sync leg directly (block backstore) with the
#    same serial/NAA/INQUIRY/LUN number/ACL mapping, the data intact;
#  * writes made meanwhile land on that leg only;
#  * hamirror-putback.sh ... SOURCE=that leg mirrors it again, rebuilding the
#    other leg from it, and both legs end byte-identical.
# (Sourced by autorun.sh after guest-lib.sh.)

require_handler
IQN=iqn.2003-01.org.linux-iscsi.hamirror-vm:vol6
ME=$(sed -n 's/^InitiatorName=//p' /etc/iscsi/initiatorname.iscsi)

must "tcmu-runner starts" start_runner
LEG0=$(make_leg leg0 128)
LEG1=$(make_leg leg1 128)
CFG=$(hamirror_toml vol6 "$LEG0" "$LEG1")
must "hamirror-create.sh creates vol6" hamirror-create.sh vol6 128M "$CFG"
must "hamirror-export-iscsi.sh exports vol6 as LUN 4 to this initiator" \
  hamirror-export-iscsi.sh --lun 4 vol6 "$IQN" "$ME"
must "both legs in sync" wait_for 180 "vol6 in sync" all_in_sync vol6
must "iSCSI login" iscsi_login "$IQN"
SERIAL=$(backstore_serial vol6)
DISK=$(lun_dev_for_wwn "$SERIAL" iscsi)
BEFORE=$(scsi_identity "$DISK")
echo "identity before:"; echo "$BEFORE" | sed 's/^/  /'

region_sum() {   # DEV OFFSET_MB COUNT_MB
  dd if="$1" bs=1M skip="$2" count="$3" iflag=direct status=none | md5sum
}
dd if=/dev/urandom of="$DISK" bs=1M count=16 oflag=direct status=none
SUM_A=$(region_sum "$DISK" 0 16)
backstore_type() { basename "$(dirname "$(backstore_dir vol6)")" | sed 's/_[0-9]*$//'; }

# --- a leg out of sync is refused -----------------------------------------------
must "hamirrorctl takes leg 1 out of service" hamirrorctl fail vol6 1
expect_fail "hamirror-remove.sh refuses leg 1 while it is not in sync" hamirror-remove.sh vol6 "$LEG1"
check "the refusal left vol6 on hamirror" test "$(backstore_type)" = user
check "the refusal left the LUN exported to the host" test "$(region_sum "$DISK" 0 16)" = "$SUM_A"
must "hamirrorctl restores leg 1" hamirrorctl restore vol6 1
must "leg 1 back in sync" wait_for 120 "vol6 in sync" all_in_sync vol6

# --- remove: serve the LUN from leg 1 directly -----------------------------------------
t=$(now)
must "hamirror-remove.sh serves vol6 from leg 1" hamirror-remove.sh vol6 "$LEG1"
figure remove_s "$(elapsed "$t")" s
check "vol6 is now a block backstore on leg 1" \
  test "$(backstore_type)" = iblock -a "$(cat "$(backstore_dir vol6)/udev_path")" = "$LEG1"
check "the host sees the same serial, NAA, INQUIRY and LUN" test "$(scsi_identity "$DISK")" = "$BEFORE"
check "the host reads the same data" test "$(region_sum "$DISK" 0 16)" = "$SUM_A"
dd if=/dev/urandom of="$DISK" bs=1M seek=32 count=8 oflag=direct status=none
SUM_B=$(region_sum "$DISK" 32 8)
check "a write made meanwhile is on leg 1" test "$(region_sum "$LEG1" 32 8)" = "$SUM_B"
check "... and not on leg 0" test "$(region_sum "$LEG0" 32 8)" != "$SUM_B"

# --- put back, rebuilding leg 0 from leg 1 ------------------------------------------------
t=$(now)
must "hamirror-putback.sh mirrors vol6 again from leg 1" hamirror-putback.sh vol6 128M "$CFG" 1
figure putback_s "$(elapsed "$t")" s
check "vol6 is a user:hamirror backstore again" test "$(backstore_type)" = user
check "its cfgstring names leg 1 as the source" grep -q ';source=1' "$(backstore_dir vol6)/attrib/dev_config"
check "the host still sees the same disk" test "$(scsi_identity "$DISK")" = "$BEFORE"
check "leg 0 is rebuilt" wait_for 180 "vol6 in sync" all_in_sync vol6
check "the host reads both regions intact" \
  test "$(region_sum "$DISK" 0 16)" = "$SUM_A" -a "$(region_sum "$DISK" 32 8)" = "$SUM_B"

check "iSCSI logout" iscsi_logout "$IQN"
must "hamirror-teardown.sh removes vol6" hamirror-teardown.sh vol6
check "the legs are byte-identical" \
  cmp <(dd if="$LEG0" bs=1M iflag=direct status=none) <(dd if="$LEG1" bs=1M iflag=direct status=none)
check "tcmu-runner stops cleanly" stop_runner
remove_leg leg0
remove_leg leg1
