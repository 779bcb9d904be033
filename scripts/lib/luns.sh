# shellcheck shell=sh
# Which LUNs tcmu-runner serves right now, read from LIO's configfs. POSIX sh:
# scripts/install.sh sources it, and scripts/package-deb.sh pastes it into the
# package's postinst and prerm (maintainer scripts run under dash and must not
# depend on files of the package being present).
#
#   tcmu_user_luns   every user backstore (any TCMU handler: hamirror, qcow,
#                    rbd...), one "user_N/NAME" per line. A restart of
#                    tcmu-runner stalls the I/O of all of them.
#   hamirror_luns    only the user:hamirror backstores, one NAME per line.
# HAMIRROR_CONFIGFS (default /sys/kernel/config) lets the tests point at a copy.

tcmu_user_luns() {
  for _hm_c in "${HAMIRROR_CONFIGFS:-/sys/kernel/config}"/target/core/user_*/*/control; do
    [ -e "$_hm_c" ] || continue
    _hm_d=${_hm_c%/control}
    _hm_hba=${_hm_d%/*}
    echo "${_hm_hba##*/}/${_hm_d##*/}"
  done
  return 0
}

# LIO's info file says "Config: <handler>/<cfgstring>" for a user backstore.
hamirror_luns() {
  for _hm_c in "${HAMIRROR_CONFIGFS:-/sys/kernel/config}"/target/core/user_*/*/control; do
    [ -e "$_hm_c" ] || continue
    _hm_d=${_hm_c%/control}
    grep -qs 'Config: hamirror/' "$_hm_d/info" && echo "${_hm_d##*/}"
  done
  return 0
}
