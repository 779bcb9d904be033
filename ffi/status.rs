//! What a callout tells tcmu-runner: a `TCMU_STS_*` code for commands, a
//! negative errno for device callouts.

use crate::sys;
use std::os::raw::c_int;

/// A command's outcome (`TCMU_STS_*` from `libtcmu_common.h`). libtcmu turns
/// each into SCSI status and sense data; the comment names what the host sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum Status {
    /// GOOD.
    Ok = sys::TCMU_STS_OK,
    /// TASK SET FULL: the host retries later.
    NoResource = sys::TCMU_STS_NO_RESOURCE,
    /// BUSY: the host retries.
    Busy = sys::TCMU_STS_BUSY,
    /// MEDIUM ERROR, WRITE ERROR (0x0C00).
    WriteError = sys::TCMU_STS_WR_ERR,
    /// MEDIUM ERROR, UNRECOVERED READ ERROR (0x1100).
    ReadError = sys::TCMU_STS_RD_ERR,
    /// MISCOMPARE, MISCOMPARE DURING VERIFY OPERATION (0x1D00).
    Miscompare = sys::TCMU_STS_MISCOMPARE,
    /// ILLEGAL REQUEST, INVALID COMMAND OPERATION CODE.
    InvalidCommand = sys::TCMU_STS_INVALID_CMD,
    /// ILLEGAL REQUEST, INVALID FIELD IN CDB (0x2400).
    InvalidCdb = sys::TCMU_STS_INVALID_CDB,
    /// HARDWARE ERROR, INTERNAL TARGET FAILURE (0x4400).
    HardwareError = sys::TCMU_STS_HW_ERR,
    /// ILLEGAL REQUEST, LOGICAL BLOCK ADDRESS OUT OF RANGE (0x2100).
    Range = sys::TCMU_STS_RANGE,
}

impl Status {
    /// The raw `TCMU_STS_*` value.
    pub fn code(self) -> c_int {
        self as c_int
    }

    /// The status for a raw `TCMU_STS_*` value, if it is one of ours.
    pub fn from_code(code: c_int) -> Option<Status> {
        ALL.iter().copied().find(|s| s.code() == code)
    }
}

/// Every status, for lookups and tests.
pub const ALL: [Status; 10] = [
    Status::Ok,
    Status::NoResource,
    Status::Busy,
    Status::WriteError,
    Status::ReadError,
    Status::Miscompare,
    Status::InvalidCommand,
    Status::InvalidCdb,
    Status::HardwareError,
    Status::Range,
];

/// A positive errno a device callout failed with (returned to C negated).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Errno(pub i32);

impl Errno {
    pub const EINVAL: Errno = Errno(libc::EINVAL);
    pub const EIO: Errno = Errno(libc::EIO);
    pub const EOPNOTSUPP: Errno = Errno(libc::EOPNOTSUPP);

    /// The value tcmu-runner expects back: `-errno`.
    pub fn to_c(self) -> c_int {
        -self.0.abs()
    }
}

impl From<&std::io::Error> for Errno {
    fn from(e: &std::io::Error) -> Self {
        Errno(e.raw_os_error().unwrap_or(libc::EIO))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_are_libtcmus_values() {
        assert_eq!(Status::Ok.code(), 0);
        assert_eq!(Status::Busy.code(), 3);
        assert_eq!(Status::WriteError.code(), 4);
        assert_eq!(Status::ReadError.code(), 5);
        assert_eq!(Status::Miscompare.code(), 6);
        assert_eq!(Status::HardwareError.code(), 13);
        assert_eq!(Status::Range.code(), 14);
    }

    #[test]
    fn every_status_round_trips_through_its_code() {
        for s in ALL {
            assert_eq!(Status::from_code(s.code()), Some(s));
        }
        assert_eq!(Status::from_code(-2), None);
    }

    #[test]
    fn errno_goes_back_to_c_negated() {
        assert_eq!(Errno::EINVAL.to_c(), -libc::EINVAL);
        assert_eq!(Errno(-5).to_c(), -5);
    }
}
