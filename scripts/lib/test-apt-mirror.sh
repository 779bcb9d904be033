#!/usr/bin/env bash
# Host-side test of apt-mirror.sh against fixture apt sources (no network, no
# root, nothing under /etc touched): the helper must find the mirror in deb822
# and one-line sources, skip disabled stanzas, comments and security suites, and
# fail with a message when there is no mirror. Run by `make test`.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=apt-mirror.sh
. "$HERE/apt-mirror.sh"
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
failed=0

# case NAME EXPECTED(- = must fail) ; sources come from $T/NAME/{sources.list,parts/}
case_() {
  local name=$1 want=$2 got rc=0 err
  mkdir -p "$T/$name/parts" "$T/$name/lists/partial"
  touch "$T/$name/sources.list"
  got=$(HAMIRROR_DEBIAN_MIRROR='' HAMIRROR_APT_OPTS="-o Dir::Etc::sourcelist=$T/$name/sources.list \
        -o Dir::Etc::sourceparts=$T/$name/parts -o Dir::State::Lists=$T/$name/lists" \
        apt_debian_mirror bookworm 2> "$T/$name.err") || rc=$?
  err=$(cat "$T/$name.err")
  if [ "$want" = - ]; then
    if [ "$rc" != 0 ] && grep -q "no 'deb' entry for Debian 'bookworm'" <<< "$err"; then
      echo "ok   $name: refused ($(head -n1 <<< "$err" | cut -c1-60)...)"
    else
      echo "FAIL $name: expected a clear refusal, got rc=$rc '$got' $err"; failed=1
    fi
  elif [ "$rc" = 0 ] && [ "$got" = "$want" ]; then
    echo "ok   $name: $got"
  else
    echo "FAIL $name: expected $want, got rc=$rc '$got' $err"; failed=1
  fi
}

mkdir -p "$T/deb822/parts"
cat > "$T/deb822/parts/debian.sources" <<'EOF'
# a disabled stanza first: never used
Types: deb
URIs: http://disabled.example/debian
Suites: bookworm
Components: main
Enabled: no

Types: deb deb-src
# the archive, one URI continued on the next line
URIs:
 http://mirror.example.net/debian/
Suites: bookworm bookworm-updates
Components: main contrib
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://security.example.net/debian-security
Suites: bookworm-security
Components: main
EOF
case_ deb822 http://mirror.example.net/debian

mkdir -p "$T/oneline"
cat > "$T/oneline/sources.list" <<'EOF'
# deb http://commented.example/debian bookworm main
deb [arch=amd64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://one.example.org/debian bookworm main
deb-src http://src-only.example/debian bookworm main
EOF
case_ oneline http://one.example.org/debian

mkdir -p "$T/listfile/parts"
echo 'deb http://parts.example/debian bookworm main non-free-firmware' > "$T/listfile/parts/mirror.list"
case_ listfile http://parts.example/debian

mkdir -p "$T/security-only/parts"
echo 'deb http://security.example/debian-security bookworm-security main' > "$T/security-only/parts/s.list"
case_ security-only -

mkdir -p "$T/third-party/parts"
echo 'deb https://vendor.example/apt bookworm stable' > "$T/third-party/parts/v.list"
case_ third-party -

case_ empty -

got=$(HAMIRROR_DEBIAN_MIRROR=http://chosen.example/debian/ apt_debian_mirror bookworm)
if [ "$got" = http://chosen.example/debian ]; then echo "ok   override: $got"; else echo "FAIL override: $got"; failed=1; fi

[ "$failed" = 0 ] && echo "apt-mirror: all cases pass"
exit "$failed"
