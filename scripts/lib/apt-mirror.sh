# shellcheck shell=bash
# The Debian mirror this machine's apt already uses, for scripts that need an
# archive address (setup-host.sh's deb-src entry, build-image.sh's debootstrap).
# Sourced, not run. No address is written here: apt itself parses the machine's
# sources (deb822 /etc/apt/sources.list.d/*.sources, one-line sources.list and
# *.list, Enabled: no, [options], several URIs per stanza), through
# `apt-get indextargets`.
#
#   apt_debian_mirror SUITE   prints the URI (no trailing '/') of a 'deb' entry
#                             for SUITE with component main; prefers one whose
#                             downloaded Release file says Origin: Debian. If no
#                             entry names SUITE, any Debian-origin 'deb' entry
#                             of a non-security suite will do (a mirror serves
#                             every suite). Returns 1 with a message saying what
#                             to fix when there is none.
# HAMIRROR_DEBIAN_MIRROR, if set, is used as is (an admin's explicit choice).
# HAMIRROR_APT_OPTS (words, e.g. "-o Dir::Etc::sourcelist=...") is passed to
# apt-get; the tests use it to point apt at fixture sources.

# Prints "type uri suite component origin" per index target apt knows of.
_apt_mirror_targets() {
  local fmt='$(TARGET_OF) $(REPO_URI) $(RELEASE) $(COMPONENT)'
  # shellcheck disable=SC2086
  {
    # With release info: only targets whose Release file was downloaded, but
    # they carry the archive's Origin.
    apt-get ${HAMIRROR_APT_OPTS:-} indextargets --format "$fmt \$(ORIGIN)" 2>/dev/null
    # Without: every configured target, even before the first apt-get update.
    apt-get ${HAMIRROR_APT_OPTS:-} indextargets --no-release-info --format "$fmt -" 2>/dev/null
  } | awk 'NF >= 4 { if ($5 == "") $5 = "-"; print }'
}

apt_debian_mirror() {
  local suite=${1:?apt_debian_mirror needs a suite} uri
  if [ -n "${HAMIRROR_DEBIAN_MIRROR:-}" ]; then
    echo "${HAMIRROR_DEBIAN_MIRROR%/}"
    return 0
  fi
  if ! command -v apt-get > /dev/null; then
    echo "apt_debian_mirror: apt-get not found: this needs a Debian machine (or set HAMIRROR_DEBIAN_MIRROR=URI)" >&2
    return 1
  fi
  uri=$(_apt_mirror_targets | awk -v suite="$suite" '
      $1 != "deb" || $4 != "main" { next }
      $3 == suite && $5 == "Debian" && !a { a = $2 }
      $3 == suite && !b { b = $2 }
      $3 !~ /-security$/ && $5 == "Debian" && !c { c = $2 }
      END { print (a ? a : b ? b : c) }')
  if [ -z "$uri" ]; then
    {
      echo "apt_debian_mirror: this machine's apt sources have no 'deb' entry for Debian '$suite' (component main),"
      echo "  so there is no mirror to use. Add one for your mirror to /etc/apt/sources.list.d/ (deb822 .sources)"
      echo "  or /etc/apt/sources.list and run apt-get update, or set HAMIRROR_DEBIAN_MIRROR=URI."
    } >&2
    return 1
  fi
  echo "${uri%/}"
}
