#!/usr/bin/env bash
# Host-side checks of the built Debian package (`make test` runs it; a few
# seconds, no root needed, nothing installed): control fields, the files an
# admin relies on, the handler's entry point, the admin scripts working from
# where the package puts them, and the maintainer scripts' decisions against a
# fake configfs (tcmu-runner is never touched: pidof and systemctl are stubs).
#
# Usage: scripts/check-deb.sh [DEB]     (default target/debian/hamirror_*_amd64.deb)
# The installation itself is tested in the guest (tests/vm/autorun.sh, dpkg -i).
set -euo pipefail
cd "$(dirname "$0")/.."
DEB=${1:-$(ls -t target/debian/hamirror_*_amd64.deb 2>/dev/null | head -n 1 || true)}
[ -n "$DEB" ] && [ -f "$DEB" ] || { echo "check-deb: no package: make deb" >&2; exit 2; }

T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
failed=0
ok() { echo "ok   $*"; }
bad() { echo "FAIL $*"; failed=1; }
# check DESC CMD... : one line per check.
check() { local d=$1; shift; if "$@" > "$T/out" 2>&1; then ok "$d"; else bad "$d"; sed 's/^/     /' "$T/out"; fi; }

echo "check-deb: $DEB"
field() { dpkg-deb -f "$DEB" "$1"; }
UPSTREAM=$(python3 -c 'import sys, tomllib; print(tomllib.load(open("Cargo.toml", "rb"))["package"]["version"])')

# --- control -----------------------------------------------------------------------
check "Package: hamirror" test "$(field Package)" = hamirror
check "Version: $UPSTREAM-1 (workspace Cargo.toml + Debian revision)" test "$(field Version)" = "$UPSTREAM-1"
check "Architecture: amd64" test "$(field Architecture)" = amd64
check "Depends has tcmu-runner (>= 1.5.4)" grep -qF 'tcmu-runner (>= 1.5.4)' <<< "$(field Depends)"
check "Depends has libc6 (from dpkg-shlibdeps)" grep -qE '(^|, )libc6( |,|$)' <<< "$(field Depends)"
check "Maintainer and Description are set" test -n "$(field Maintainer)" -a -n "$(field Description)"
check "the file name is hamirror_<version>_amd64.deb" test "$(basename "$DEB")" = "hamirror_$(field Version)_amd64.deb"

# --- files ----------------------------------------------------------------------------
dpkg-deb -c "$DEB" | awk '{ p = $6; sub(/^\.\//, "/", p); print p ($7 == "->" ? " -> " $8 : "") }' > "$T/list"
has() { grep -qxF -- "$1" "$T/list"; }
for f in /usr/lib/x86_64-linux-gnu/tcmu-runner/handler_hamirror.so /usr/sbin/hamirrorctl \
         /usr/share/man/man1/hamirrorctl.1.gz \
         /usr/share/bash-completion/completions/hamirrorctl \
         /usr/share/zsh/vendor-completions/_hamirrorctl \
         /usr/share/fish/vendor_completions.d/hamirrorctl.fish \
         /usr/share/hamirror/targetcli-scripts/lib.sh \
         /usr/share/hamirror/targetcli-scripts/hamirror-create.sh \
         /var/lib/hamirror/ /usr/share/doc/hamirror/copyright /usr/share/doc/hamirror/changelog.Debian.gz; do
  check "ships $f" has "$f"
done
check "a man page per subcommand (hamirrorctl-*.1.gz)" grep -q '^/usr/share/man/man1/hamirrorctl-.*\.1\.gz$' "$T/list"
check "no uncompressed man page" bash -c "! grep -q '^/usr/share/man/.*\.[0-9]$' '$T/list'"
for s in targetcli-scripts/hamirror-*.sh; do
  n=$(basename "$s")
  check "ships $n" has "/usr/share/hamirror/targetcli-scripts/$n"
  case $n in
    *-template.sh) check "$n is not on PATH (a template to copy)" bash -c "! grep -q '^/usr/sbin/$n' '$T/list'" ;;
    *) check "/usr/sbin/$n links to it" has "/usr/sbin/$n -> ../share/hamirror/targetcli-scripts/$n"
       check "$n has a man page (section 8)" has "/usr/share/man/man8/$n.8.gz" ;;
  esac
done

# --- what is inside ----------------------------------------------------------------------
dpkg-deb -x "$DEB" "$T/root"
R=$T/root
check "the handler exports handler_init" bash -c "nm -D --defined-only '$R/usr/lib/x86_64-linux-gnu/tcmu-runner/handler_hamirror.so' | grep -qw handler_init"
check "the handler is stripped" bash -c "! readelf -S '$R/usr/lib/x86_64-linux-gnu/tcmu-runner/handler_hamirror.so' | grep -q '\.debug_info'"
check "hamirrorctl runs (--version)" "$R/usr/sbin/hamirrorctl" --version
check "hamirrorctl.1 is a man page" bash -c "zcat '$R/usr/share/man/man1/hamirrorctl.1.gz' | grep -q '^\.TH'"
check "changelog.Debian names the version" bash -c "zcat '$R/usr/share/doc/hamirror/changelog.Debian.gz' | head -n1 | grep -qF 'hamirror ($(field Version))'"
# The scripts find lib.sh through their real location: run them through the link.
check "hamirror-create.sh --help works through /usr/sbin" bash -c "'$R/usr/sbin/hamirror-create.sh' --help | grep -q '^Usage: hamirror-create.sh'"
check "hamirror-remove.sh --help works through /usr/sbin" bash -c "'$R/usr/sbin/hamirror-remove.sh' --help | grep -q '^Usage: hamirror-remove.sh'"
check "hamirror-create.sh refuses a bad cfgstring (lib.sh loaded)" bash -c "! '$R/usr/sbin/hamirror-create.sh' -n v1 64M 'leg=/a,/b;meta=/m' 2> '$T/err' && grep -q \"','\" '$T/err'"

# --- maintainer scripts, against a fake configfs and stubbed process tools -------------------
dpkg-deb -e "$DEB" "$T/DEBIAN"
mkdir -p "$T/stub"
cat > "$T/stub/pidof" <<'EOF'
#!/bin/sh
[ -n "${STUB_RUNNER_PID:-}" ] && echo "$STUB_RUNNER_PID"
EOF
cat > "$T/stub/systemctl" <<EOF
#!/bin/sh
echo "systemctl \$*" >> "$T/systemctl.calls"
exit 1
EOF
chmod +x "$T/stub/pidof" "$T/stub/systemctl"
CFS=$T/configfs
mkdir -p "$CFS/target/core"
lun() {  # lun HBA NAME CONFIG
  mkdir -p "$CFS/target/core/$1/$2"; : > "$CFS/target/core/$1/$2/control"
  echo "Status: ACTIVATED  Max DMA size: 0  Config: $3 Size: 67108864 Cmd Time Out: 30" > "$CFS/target/core/$1/$2/info"
}
maint() {  # maint SCRIPT ARG... : runs it under dash with the stubs first on PATH
  HAMIRROR_CONFIGFS=$CFS PATH="$T/stub:/usr/bin:/bin:/usr/sbin:/sbin" dash "$T/DEBIAN/$1" "${@:2}"
}
check "postinst, prerm are POSIX sh" bash -c "dash -n '$T/DEBIAN/postinst' && dash -n '$T/DEBIAN/prerm'"

out=$(maint postinst configure 2>&1) && rc=0 || rc=$?
check "postinst, no LUN, runner not running: succeeds and says so" \
  bash -c "[ $rc = 0 ] && grep -q 'tcmu-runner is not running' <<< '$out'"
out=$(STUB_RUNNER_PID=4242 maint postinst configure 2>&1) && rc=0 || rc=$?
if [ -d /run/systemd/system ]; then
  echo "skip postinst without systemd: this machine runs systemd"
else
  check "postinst, no LUN, runner running, no systemd: asks for a restart by hand" \
    bash -c "[ $rc = 0 ] && grep -q 'not managed by systemd' <<< '$out'"
fi
lun user_1 q1 'qcow//var/lib/images/q1.qcow2'
lun user_2 vol1 'hamirror/leg=/dev/a;leg=/dev/b;meta=/var/lib/hamirror/vol1.meta'
out=$(STUB_RUNNER_PID=4242 maint postinst configure 2>&1) && rc=0 || rc=$?
check "postinst, 2 LUNs served: succeeds, says what to do" \
  bash -c "[ $rc = 0 ] && grep -q '2 LUN(s) are served by tcmu-runner' <<< '$out' && grep -q 'systemctl restart tcmu-runner' <<< '$out'"
check "postinst, 2 LUNs served: never restarts tcmu-runner" bash -c "! grep -q restart '$T/systemctl.calls' 2>/dev/null"

out=$(maint prerm remove 2>&1) && rc=0 || rc=$?
check "prerm remove refuses while a hamirror LUN exists, naming it" \
  bash -c "[ $rc = 1 ] && grep -q 'refusing to remove.*(vol1)' <<< '$out'"
check "prerm upgrade goes ahead with a hamirror LUN" maint prerm upgrade 0.1.0-1
check "prerm remove with HAMIRROR_FORCE_REMOVE=1 goes ahead" env HAMIRROR_FORCE_REMOVE=1 HAMIRROR_CONFIGFS="$CFS" PATH="$T/stub:/usr/bin:/bin" dash "$T/DEBIAN/prerm" remove
rm -rf "$CFS/target/core/user_2"
check "prerm remove goes ahead when only other handlers' LUNs exist" maint prerm remove

if [ "$failed" = 0 ]; then echo "check-deb: all checks pass"; else echo "check-deb: FAILED"; fi
exit "$failed"
