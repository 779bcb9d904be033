#!/usr/bin/env bash
# Installs everything hamirror needs to build and test on a Debian 12 machine:
# Debian packages (libclang for bindgen, QEMU and debootstrap for the real-kernel
# suite), and tcmu-runner 1.5.4's source package, whose headers build.rs binds.
# Idempotent: a second run only checks. Nothing upstream is committed; the
# sources land in .deps/ (git-ignored). The deb-src entry it may add takes its
# address from this machine's own apt sources (scripts/lib/apt-mirror.sh;
# HAMIRROR_DEBIAN_MIRROR overrides it, HAMIRROR_DEB_SRC_FILE is where it goes).
set -euo pipefail
cd "$(dirname "$0")/.."
TOP=$PWD
DEPS=$TOP/.deps

log() { printf '[setup] %s\n' "$*"; }

PKGS=(
  # bindgen over tcmu-runner's headers
  libclang-dev clang
  # apt-get source
  dpkg-dev
  # the real-kernel suite: build and boot a Debian guest
  qemu-system-x86 qemu-utils debootstrap kmod cpio
  # the harness's symbol check reads the real runner binaries
  binutils
  # make deb: dpkg-shlibdeps (dpkg-dev, above), strip (binutils), python3 reads
  # the version from Cargo.toml
  python3
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done

# shellcheck source=lib/apt-mirror.sh
. "$TOP/scripts/lib/apt-mirror.sh"

# apt-get source needs a deb-src entry. Its address is the Debian mirror this
# machine's apt already uses for binaries (scripts/lib/apt-mirror.sh), so the
# script works on any mirror and names none.
ensure_deb_src() {
  # apt's own view of the sources: any enabled deb-src entry will do.
  if _apt_mirror_targets | awk '$1 == "deb-src" { found = 1 } END { exit !found }'; then
    return 0
  fi
  local suite mirror keyring
  suite=$(. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}")
  [ -n "$suite" ] || { log "ERROR: cannot tell this machine's Debian release (VERSION_CODENAME in /etc/os-release)"; exit 1; }
  mirror=$(apt_debian_mirror "$suite") || { log "ERROR: no Debian mirror to take sources from (see above)"; exit 1; }
  log "adding a deb-src entry for $suite from $mirror (apt-get source needs it)"
  keyring=/usr/share/keyrings/debian-archive-keyring.gpg
  {
    echo "Types: deb-src"
    echo "URIs: $mirror"
    echo "Suites: $suite $suite-updates"
    echo "Components: main"
    if [ -f "$keyring" ]; then echo "Signed-By: $keyring"; fi
  } > "${HAMIRROR_DEB_SRC_FILE:-/etc/apt/sources.list.d/hamirror-deb-src.sources}"
  NEED_UPDATE=1
}

NEED_UPDATE=0
ensure_deb_src
if [ ${#missing[@]} -gt 0 ] || [ "$NEED_UPDATE" = 1 ] || [ ! -d "$DEPS/tcmu-runner" ]; then
  log "apt-get update"
  apt-get update -qq
fi
if [ ${#missing[@]} -gt 0 ]; then
  log "installing: ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# tcmu-runner 1.5.4 sources: headers for bindgen; Debian's binaries for the
# symbol check (the runner's executable and libtcmu.so.2, extracted, not installed).
if [ ! -f "$DEPS/tcmu-runner/tcmu-runner.h" ]; then
  log "fetching Debian's tcmu-runner source package"
  rm -rf "$DEPS/src" && mkdir -p "$DEPS/src"
  # The source package is "tcmu"; it builds the tcmu-runner and libtcmu2 binaries.
  (cd "$DEPS/src" && apt-get source -qq --download-only tcmu-runner >/dev/null 2>&1 \
     && dpkg-source -x ./tcmu_*.dsc tcmu-runner >/dev/null)
  rm -rf "$DEPS/tcmu-runner" && mv "$DEPS/src/tcmu-runner" "$DEPS/tcmu-runner"
fi
if [ ! -x "$DEPS/tcmu-bin/usr/bin/tcmu-runner" ]; then
  log "extracting Debian's tcmu-runner and libtcmu2 binaries (for the export-list check)"
  rm -rf "$DEPS/debs" "$DEPS/tcmu-bin" && mkdir -p "$DEPS/debs" "$DEPS/tcmu-bin"
  (cd "$DEPS/debs" && apt-get download -qq tcmu-runner libtcmu2 >/dev/null)
  for d in "$DEPS"/debs/*.deb; do dpkg-deb -x "$d" "$DEPS/tcmu-bin"; done
fi
log "ok: headers in .deps/tcmu-runner, runner binaries in .deps/tcmu-bin"
