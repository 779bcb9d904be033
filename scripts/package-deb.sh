#!/usr/bin/env bash
# Builds the Debian package from the release build (`make deb`):
#   target/debian/hamirror_<version>-<rev>_amd64.deb
# with dpkg-deb alone (no cargo-deb, no debhelper): the templates are in
# packaging/deb/, the LUN detector of the maintainer scripts is
# scripts/lib/luns.sh (the one scripts/install.sh uses).
#
# Usage: scripts/package-deb.sh [--out DIR]      (default target/debian)
# Environment:
#   HAMIRROR_TARGET_DIR   the release build (default target/release)
#   HAMIRROR_DEB_REVISION Debian revision (default 1)
#   DEBFULLNAME, DEBEMAIL the Maintainer field (as dch uses them)
#   SOURCE_DATE_EPOCH     timestamps in the package (default: HEAD's commit time)
#
# Contents (the man pages and completions come from `hamirrorctl generate-docs`
# run on the freshly built binary; the build fails if it has no such command):
#   /usr/lib/x86_64-linux-gnu/tcmu-runner/handler_hamirror.so   (stripped)
#   /usr/sbin/hamirrorctl                                        (stripped)
#   /usr/sbin/hamirror-*.sh -> /usr/share/hamirror/targetcli-scripts/hamirror-*.sh
#   /usr/share/hamirror/targetcli-scripts/   (the admin scripts and their lib.sh;
#                                             the FC export template stays here only)
#   /usr/share/man/man1/hamirrorctl*.1.gz
#   /usr/share/man/man8/hamirror-*.sh.8.gz   (from each script's --help)
#   /usr/share/bash-completion/completions/hamirrorctl
#   /usr/share/zsh/vendor-completions/_hamirrorctl
#   /usr/share/fish/vendor_completions.d/hamirrorctl.fish
#   /usr/share/doc/hamirror/{copyright,changelog.Debian.gz}
#   /var/lib/hamirror/                        (metadata files; kept on removal)
set -euo pipefail
cd "$(dirname "$0")/.."
TOP=$PWD
TARGET_DIR=${HAMIRROR_TARGET_DIR:-$TOP/target/release}
OUT=$TOP/target/debian
while [ $# -gt 0 ]; do
  case $1 in
    --out) OUT=${2:?--out needs a directory}; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "package-deb.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

log() { printf '[deb] %s\n' "$*" >&2; }
# A value for the right-hand side of sed's s/// (the templates' @NAME@ fields).
sed_rhs() { printf '%s' "$1" | sed 's/[\/&]/\\&/g'; }
die() { log "ERROR: $*"; exit 1; }

for tool in dpkg-deb dpkg-shlibdeps strip gzip python3; do
  command -v "$tool" > /dev/null || die "$tool not found: run scripts/setup-host.sh (dpkg-dev, binutils)"
done
ARCH=amd64
MULTIARCH=x86_64-linux-gnu
[ "$(dpkg --print-architecture)" = "$ARCH" ] || die "only $ARCH is packaged (this machine is $(dpkg --print-architecture))"

SO=$TARGET_DIR/libhandler_hamirror.so
CTL=$TARGET_DIR/hamirrorctl
[ -f "$SO" ] && [ -f "$CTL" ] || die "no release build in $TARGET_DIR: cargo build --release --workspace (or make build)"

# Version: the workspace's root package, plus the Debian revision.
UPSTREAM=$(python3 - "$TOP/Cargo.toml" <<'PY'
import sys, tomllib
with open(sys.argv[1], "rb") as f:
    t = tomllib.load(f)
v = t.get("package", {}).get("version")
if isinstance(v, dict) or v is None:
    v = t.get("workspace", {}).get("package", {}).get("version")
if not v:
    sys.exit("no version in " + sys.argv[1])
print(v)
PY
)
VERSION=$UPSTREAM-${HAMIRROR_DEB_REVISION:-1}
COMMIT=$(git rev-parse --short=12 HEAD 2> /dev/null || echo unknown)
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
  SOURCE_DATE_EPOCH=$(git log -1 --format=%ct 2> /dev/null || date +%s)
fi
export SOURCE_DATE_EPOCH
MAINTAINER="${DEBFULLNAME:-hamirror maintainers} <${DEBEMAIL:-maintainers@hamirror.invalid}>"
DEB=$OUT/hamirror_${VERSION}_$ARCH.deb

WORK=$(mktemp -d "${TMPDIR:-/tmp}/hamirror-deb.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
ROOT=$WORK/root
DOC=$ROOT/usr/share/doc/hamirror
HANDLER_DIR=$ROOT/usr/lib/$MULTIARCH/tcmu-runner
mkdir -p "$ROOT/DEBIAN" "$HANDLER_DIR" "$ROOT/usr/sbin" "$ROOT/usr/share/man/man1" \
         "$ROOT/usr/share/bash-completion/completions" "$ROOT/usr/share/zsh/vendor-completions" \
         "$ROOT/usr/share/fish/vendor_completions.d" "$ROOT/usr/share/hamirror/targetcli-scripts" \
         "$ROOT/var/lib/hamirror" "$DOC"

# Copies first: other builds may rewrite target/ meanwhile.
install -m 0644 "$SO" "$HANDLER_DIR/handler_hamirror.so"
install -m 0755 "$CTL" "$ROOT/usr/sbin/hamirrorctl"
strip --strip-unneeded --remove-section=.comment "$HANDLER_DIR/handler_hamirror.so" "$ROOT/usr/sbin/hamirrorctl"

# --- man pages and completions, from the binary being shipped -------------------
GEN=$WORK/generated
if ! "$ROOT/usr/sbin/hamirrorctl" generate-docs --out "$GEN" > "$WORK/gen.out" 2>&1; then
  if grep -qiE 'unknown|unrecognized|unexpected|invalid (sub)?command' "$WORK/gen.out"; then
    sed 's/^/  hamirrorctl: /' "$WORK/gen.out" >&2
    die "hamirrorctl lacks generate-docs: rebuild (cargo build --release --workspace) from a tree that has it; no package without man pages"
  fi
  sed 's/^/  hamirrorctl: /' "$WORK/gen.out" >&2
  die "hamirrorctl generate-docs --out DIR failed"
fi
missing=()
for f in man/hamirrorctl.1 completions/hamirrorctl.bash completions/_hamirrorctl completions/hamirrorctl.fish; do
  [ -s "$GEN/$f" ] || missing+=("$f")
done
[ ${#missing[@]} = 0 ] || die "hamirrorctl generate-docs wrote no ${missing[*]} (expected DIR/man/hamirrorctl.1, DIR/man/hamirrorctl-<sub>.1, DIR/completions/{hamirrorctl.bash,_hamirrorctl,hamirrorctl.fish})"
for m in "$GEN"/man/*.1; do
  gzip -9n < "$m" > "$ROOT/usr/share/man/man1/$(basename "$m").gz"
  chmod 0644 "$ROOT/usr/share/man/man1/$(basename "$m").gz"
done
install -m 0644 "$GEN/completions/hamirrorctl.bash" "$ROOT/usr/share/bash-completion/completions/hamirrorctl"
install -m 0644 "$GEN/completions/_hamirrorctl" "$ROOT/usr/share/zsh/vendor-completions/_hamirrorctl"
install -m 0644 "$GEN/completions/hamirrorctl.fish" "$ROOT/usr/share/fish/vendor_completions.d/hamirrorctl.fish"

# --- the admin scripts ------------------------------------------------------------
# They source lib.sh from their own real directory (readlink -f "$0"), so the
# /usr/sbin links work. The FC template is to be copied and edited, not run as is.
SCRIPTS=$ROOT/usr/share/hamirror/targetcli-scripts
for s in targetcli-scripts/*.sh; do
  name=$(basename "$s")
  if [ "$name" = lib.sh ]; then
    install -m 0644 "$s" "$SCRIPTS/$name"
    continue
  fi
  install -m 0755 "$s" "$SCRIPTS/$name"
  case $name in
    *-template.sh) ;;
    *) ln -s "../share/hamirror/targetcli-scripts/$name" "$ROOT/usr/sbin/$name" ;;
  esac
done
[ -f "$SCRIPTS/lib.sh" ] || die "targetcli-scripts/lib.sh is missing"

# A man page (section 8: they are in /usr/sbin) per linked script, from its own
# --help, which is its header comment: "NAME - summary" first, then the usage.
mkdir -p "$ROOT/usr/share/man/man8"
for link in "$ROOT"/usr/sbin/hamirror-*.sh; do
  name=$(basename "$link")
  bash "$SCRIPTS/$name" --help > "$WORK/help.txt" 2>&1 || die "$name --help failed"
  summary=$(head -n 1 "$WORK/help.txt")
  [[ $summary == "$name - "* ]] || die "$name --help does not start with '$name - summary'"
  {
    echo ".TH \"$(tr '[:lower:]' '[:upper:]' <<< "$name")\" 8 \"\" \"hamirror $UPSTREAM\" \"hamirror\""
    echo ".SH NAME"
    echo "${name//-/\\-} \\- ${summary#"$name - "}"
    echo ".SH DESCRIPTION"
    echo ".nf"
    # Verbatim, with roff's escape and control characters neutralised.
    tail -n +2 "$WORK/help.txt" | sed -e '1{/^$/d}' -e 's/\\/\\e/g' -e "s/^\([.']\)/\\\\\&\1/"
    echo ".fi"
    echo ".SH SEE ALSO"
    echo "hamirrorctl(1), targetcli(8); the scripts live in /usr/share/hamirror/targetcli-scripts/."
  } | gzip -9n > "$ROOT/usr/share/man/man8/$name.8.gz"
  chmod 0644 "$ROOT/usr/share/man/man8/$name.8.gz"
done

# --- documentation (Debian policy 12.5, 12.7) -------------------------------------
YEAR=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y)
sed "s/@YEAR@/$YEAR/" packaging/deb/copyright > "$DOC/copyright"
sed -e "s/@VERSION@/$VERSION/" -e "s/@COMMIT@/$COMMIT/" -e "s/@MAINTAINER@/$(sed_rhs "$MAINTAINER")/" \
    -e "s/@DATE@/$(LC_ALL=C date -u -R -d "@$SOURCE_DATE_EPOCH")/" packaging/deb/changelog.in \
  | gzip -9n > "$DOC/changelog.Debian.gz"
chmod 0644 "$DOC/copyright" "$DOC/changelog.Debian.gz"

# --- maintainer scripts -------------------------------------------------------------
# #HAMIRROR_LUNS# becomes scripts/lib/luns.sh: a maintainer script must not rely
# on the package's own files (prerm may run in a half-installed state).
for s in postinst prerm; do
  awk -v lib=scripts/lib/luns.sh '
      $0 == "#HAMIRROR_LUNS#" { while ((getline l < lib) > 0) print l; next } { print }' \
    "packaging/deb/$s.in" > "$ROOT/DEBIAN/$s"
  chmod 0755 "$ROOT/DEBIAN/$s"
  sh -n "$ROOT/DEBIAN/$s" || die "DEBIAN/$s is not valid sh"
done

# --- control --------------------------------------------------------------------------
# Shared-library dependencies of what is really shipped. The handler's tcmur_*/tcmu_*
# symbols come from tcmu-runner itself at dlopen time (LIO-VM.md §6), hence
# "found in none of the libraries" for them: expected, and covered by Depends: tcmu-runner.
mkdir -p "$WORK/debian"
printf 'Source: hamirror\n\nPackage: hamirror\nArchitecture: %s\n' "$ARCH" > "$WORK/debian/control"
SHLIBS=$(cd "$WORK" && dpkg-shlibdeps -O -e"root/usr/sbin/hamirrorctl" \
           -e"root/usr/lib/$MULTIARCH/tcmu-runner/handler_hamirror.so" 2> shlibdeps.err) \
  || { cat "$WORK/shlibdeps.err" >&2; die "dpkg-shlibdeps failed"; }
grep -vE "symbol tcmu[a-z_]* used by .* found in none of the libraries|^dpkg-shlibdeps: warning: [0-9]+ other similar warnings" \
  "$WORK/shlibdeps.err" | sed 's/^/  /' >&2 || true
SHLIBS=${SHLIBS#shlibs:Depends=}
[[ $SHLIBS == *libc6* ]] || die "dpkg-shlibdeps found no libc6 dependency ($SHLIBS)"
rm -rf "$WORK/debian" "$WORK/shlibdeps.err"

SIZE=$(du -sk --exclude=DEBIAN "$ROOT" | cut -f1)
sed -e "s/@VERSION@/$VERSION/" -e "s/@ARCH@/$ARCH/" -e "s/@MAINTAINER@/$(sed_rhs "$MAINTAINER")/" \
    -e "s/@INSTALLED_SIZE@/$SIZE/" -e "s/@SHLIBS_DEPENDS@/$(sed_rhs "$SHLIBS")/" \
    packaging/deb/control.in > "$ROOT/DEBIAN/control"
(cd "$ROOT" && find . -path ./DEBIAN -prune -o -type f -printf '%P\n' | LC_ALL=C sort \
   | xargs -d '\n' md5sum) > "$ROOT/DEBIAN/md5sums"
chmod 0644 "$ROOT/DEBIAN/control" "$ROOT/DEBIAN/md5sums"

mkdir -p "$OUT"
dpkg-deb --root-owner-group -Zxz --build "$ROOT" "$WORK/out.deb" > /dev/null
mv "$WORK/out.deb" "$DEB"
log "built $DEB ($(du -h "$DEB" | cut -f1); Depends: tcmu-runner (>= 1.5.4), $SHLIBS)"
echo "$DEB"
