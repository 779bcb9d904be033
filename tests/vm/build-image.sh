#!/usr/bin/env bash
# Builds the guest for the real-kernel suite from Debian's own packages:
#   tests/vm/cache/<key>/vmlinuz    Debian's kernel (linux-image-amd64's current ABI)
#   tests/vm/cache/<key>/base.cpio  an uncompressed newc initramfs holding a whole
#                                   debootstrap minbase root (LIO tools, tcmu-runner,
#                                   fio, dmsetup, open-iscsi...) plus the kernel
#                                   modules the suite needs, with modules.dep.
# The guest's /init, the scenarios and the handler are NOT in here: run.sh adds
# them as a small second cpio on every run, so editing them never forces a rebuild.
#
# <key> hashes everything that decides the image's content (package list, kernel
# package and version, module list, this script), so an unchanged setup reuses
# the image and a changed one gets a fresh directory. Prints the image directory
# as the last line of stdout; progress and timings go to stderr.
#
# Usage: tests/vm/build-image.sh [--force]     (root; see LIO-VM.md §1)
set -euo pipefail

VM_DIR=$(cd "$(dirname "$0")" && pwd)
CACHE=${HAMIRROR_VM_CACHE:-$VM_DIR/cache}
SUITE=bookworm
FORCE=0
[ "${1:-}" = --force ] && FORCE=1

# Guest userland. qemu-utils is only there so 00-platform can exercise the TCMU
# path (user:qcow) without hamirror.
PACKAGES=(
  kmod tcmu-runner libtcmu2 targetcli-fb python3-rtslib-fb python3-configshell-fb
  sg3-utils fio dmsetup mount dbus open-iscsi iproute2 procps busybox e2fsprogs
  libiscsi-bin util-linux coreutils qemu-utils
)
# Everything is modprobe'd by hand in the guest (there is no udev); whatever these
# depend on is pulled in by the closure below.
MODULES=(
  configfs target_core_mod target_core_user tcm_loop iscsi_target_mod
  target_core_iblock target_core_file uio sd_mod sg loop
  dm_mod dm_flakey dm_delay dm_zero iscsi_tcp ext4 null_blk crc32c_generic
  virtio_pci virtio_blk 9p 9pnet_virtio
)

log() { printf '[build-image] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
now() { date +%s.%N; }
T_START=$(now)
T_STEP=$T_START
# Prints how long the step that just ended took, and the running total.
step_done() {
  local t; t=$(now)
  log "$(awk -v s="$1" -v a="$T_STEP" -v b="$T_START" -v t="$t" \
          'BEGIN { printf "%-30s %6.1f s  (total %6.1f s)", s, t - a, t - b }')"
  T_STEP=$t
}

[ "$(id -u)" = 0 ] || die "must run as root (debootstrap, device nodes in the cpio)"
for tool in debootstrap dpkg-deb depmod modprobe cpio apt-get flock; do
  command -v "$tool" >/dev/null || die "$tool not found: run scripts/setup-host.sh"
done

# The Debian mirror this machine's apt already uses (scripts/lib/apt-mirror.sh):
# the guest comes from the same, reachable, archive, and no address is named here.
# shellcheck source=../../scripts/lib/apt-mirror.sh
. "$VM_DIR/../../scripts/lib/apt-mirror.sh"

# linux-image-amd64 is a metapackage; the real kernel package name carries the ABI.
KPKG=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ { print $2; exit }')
[ -n "$KPKG" ] || die "cannot resolve linux-image-amd64 (apt-get update?)"
KPKG_VERSION=$(apt-cache show "$KPKG" | awk '/^Version:/ { print $2; exit }')
MIRROR=$(apt_debian_mirror "$SUITE") || die "no Debian mirror in this machine's apt sources (see above)"

KEY=$( { echo "suite=$SUITE"; echo "packages=${PACKAGES[*]}"; echo "kernel=$KPKG=$KPKG_VERSION"
         echo "modules=${MODULES[*]}"; cat "$0"; } | sha256sum | cut -c1-16)
OUT=$CACHE/$KEY

mkdir -p "$CACHE"
# Two runs of the suite at once must not build the same image twice.
exec 9>"$CACHE/.build-image.lock"
flock 9

if [ "$FORCE" = 0 ] && [ -s "$OUT/base.cpio" ] && [ -s "$OUT/vmlinuz" ]; then
  log "reusing image $KEY ($KPKG $KPKG_VERSION)"
  echo "$OUT"
  exit 0
fi

log "building image $KEY: $KPKG $KPKG_VERSION from $MIRROR"
WORK=$CACHE/build-$KEY
rm -rf "$WORK" "$OUT"
mkdir -p "$WORK" "$CACHE/debs/kernel" "$CACHE/debs/debootstrap"
# Build on a private tmpfs when we may mount one: dpkg fsyncs every file it
# unpacks, and deleting ~1 GB of scratch files from disk costs seconds more.
if mount -t tmpfs -o size=4G,mode=0755 hamirror-vm-build "$WORK" 2>/dev/null; then
  trap 'umount "$WORK"; rmdir "$WORK"' EXIT
else
  log "cannot mount a tmpfs; building on disk (slower)"
  trap 'rm -rf "$WORK"' EXIT
fi

# --- kernel ------------------------------------------------------------------
KDEB=$(ls "$CACHE/debs/kernel/${KPKG}_${KPKG_VERSION//:/%3a}_"*.deb 2>/dev/null | head -n1 || true)
if [ -z "$KDEB" ]; then
  (cd "$CACHE/debs/kernel" && apt-get download -q -o APT::Sandbox::User=root "$KPKG=$KPKG_VERSION" >&2)
  KDEB=$(ls "$CACHE/debs/kernel/${KPKG}_"*.deb | head -n1)
fi
dpkg-deb -x "$KDEB" "$WORK/kroot"
KVER=$(ls "$WORK/kroot/lib/modules")
[ "$(echo "$KVER" | wc -l)" = 1 ] || die "expected one kernel in $KDEB, found: $KVER"
step_done "kernel $KVER"

# The .deb ships ~4000 modules and no modules.dep: index them once so that
# modprobe can list the closure, then copy only that.
depmod -b "$WORK/kroot" "$KVER"
CLOSURE=$WORK/modules.list
for m in "${MODULES[@]}"; do
  modprobe -d "$WORK/kroot" -S "$KVER" --show-depends "$m" \
    || die "module $m not found in $KPKG"
done | awk '$1 == "insmod" { print $2 }' | sort -u > "$CLOSURE"
step_done "module closure ($(wc -l < "$CLOSURE") .ko)"

# --- root filesystem ---------------------------------------------------------
ROOT=$WORK/rootfs
INCLUDE=$(IFS=,; echo "${PACKAGES[*]}")
# debootstrap is chatty; keep its log for when it fails.
if ! debootstrap --variant=minbase --include="$INCLUDE" \
     --cache-dir="$CACHE/debs/debootstrap" "$SUITE" "$ROOT" "$MIRROR" > "$WORK/debootstrap.log" 2>&1; then
  tail -n 30 "$WORK/debootstrap.log" >&2
  [ -f "$ROOT/debootstrap/debootstrap.log" ] && tail -n 30 "$ROOT/debootstrap/debootstrap.log" >&2
  die "debootstrap failed"
fi
step_done "debootstrap ($(du -sm "$ROOT" | cut -f1) MB)"

# Modules: the closure, with the lists depmod needs to describe builtins.
MODDIR=lib/modules/$KVER
while read -r ko; do
  rel=${ko#"$WORK/kroot/"}
  install -D -m 0644 "$ko" "$ROOT/$rel"
done < "$CLOSURE"
for f in modules.order modules.builtin modules.builtin.modinfo; do
  cp "$WORK/kroot/$MODDIR/$f" "$ROOT/$MODDIR/"
done
depmod -b "$ROOT" "$KVER"

# Trim what a test guest never reads: the initramfs lives in guest RAM and its
# size is paid on every boot. Keep Python's bytecode: it speeds up targetcli.
rm -rf "$ROOT"/usr/share/{doc,man,info,locale,lintian,linda} \
       "$ROOT"/var/cache/apt/* "$ROOT"/var/lib/apt/lists/* "$ROOT"/var/cache/debconf/*-old \
       "$ROOT"/var/log/*.log "$ROOT"/debootstrap

# rtslib-fb on Debian keeps LIO's PR/ALUA state in /etc/rtslib-fb-target; without
# pr/ every PERSISTENT RESERVE OUT fails (LIO-VM.md §9). /etc/target silences
# targetcli's "db_root: cannot open".
mkdir -p "$ROOT"/etc/rtslib-fb-target/{pr,alua} "$ROOT"/etc/target "$ROOT"/etc/tcmu \
         "$ROOT"/run/lock/iscsi "$ROOT"/mnt
echo hamirror-vm > "$ROOT/etc/hostname"
: > "$ROOT/etc/fstab"
step_done "modules + trim ($(du -sm "$ROOT" | cut -f1) MB)"

# --- artefacts -----------------------------------------------------------------
# Written beside the final directory and renamed, so a half-written image never
# looks ready.
rm -rf "$OUT.tmp" && mkdir -p "$OUT.tmp"
cp "$WORK/kroot/boot/vmlinuz-$KVER" "$OUT.tmp/vmlinuz"
(cd "$ROOT" && find . -xdev -print0 | cpio --null -o -H newc --quiet) > "$OUT.tmp/base.cpio"
{ echo "key=$KEY"; echo "kernel=$KPKG $KPKG_VERSION ($KVER)"; echo "mirror=$MIRROR"
  echo "packages=${PACKAGES[*]}"; echo "modules=${MODULES[*]}"; echo "built=$(date -Is)"; } > "$OUT.tmp/INFO"
mv "$OUT.tmp" "$OUT"
step_done "cpio ($(du -m "$OUT/base.cpio" | cut -f1) MB)"

# Older images are dead weight once the key moved on.
for old in "$CACHE"/*/base.cpio; do
  d=$(dirname "$old")
  [ "$d" = "$OUT" ] || { log "removing stale image $(basename "$d")"; rm -rf "$d"; }
done
for old in "$CACHE"/build-*; do
  [ -d "$old" ] && ! mountpoint -q "$old" && rm -rf "$old"
done
log "image ready: $OUT"
echo "$OUT"
