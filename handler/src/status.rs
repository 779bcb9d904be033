//! What the host is told when the engine fails a command: one exhaustive
//! match from [`IoError`] to a TCMU status (and sense information).

use hamirror_ffi::Status;
use log::Level;
use mirror::IoError;

/// A failed command's completion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub status: Status,
    /// The sense data's INFORMATION field (MISCOMPARE: the first differing byte).
    pub info: Option<u32>,
}

impl Outcome {
    fn status(status: Status) -> Outcome {
        Outcome { status, info: None }
    }
}

/// The status for an engine error. A write that one leg failed and another
/// stored never gets here: the engine reports it as a success.
pub fn outcome(e: &IoError) -> Outcome {
    match e {
        // ILLEGAL REQUEST, LBA OUT OF RANGE: the host asked for too much.
        IoError::OutOfRange { .. } => Outcome::status(Status::Range),
        // ILLEGAL REQUEST, INVALID FIELD IN CDB: not a whole number of
        // blocks, or a data-out buffer of the wrong length for the command.
        IoError::Unaligned { .. } | IoError::BufferLength { .. } => Outcome::status(Status::InvalidCdb),
        // MEDIUM ERROR: no leg could serve the data.
        IoError::ReadFailed { .. } => Outcome::status(Status::ReadError),
        IoError::WriteFailed { .. } | IoError::FlushFailed(_) => Outcome::status(Status::WriteError),
        // MISCOMPARE with the offset of the first differing byte.
        IoError::Miscompare { offset } => {
            Outcome { status: Status::Miscompare, info: u32::try_from(*offset).ok() }
        }
        // BUSY: the host retries, and a reopened volume will serve it.
        IoError::ShuttingDown => Outcome::status(Status::Busy),
        // HARDWARE ERROR: nothing the host can fix by retrying this command.
        IoError::NoLegInSync | IoError::Metadata(_) => Outcome::status(Status::HardwareError),
    }
}

/// How loudly to log a failed command: a miscompare is the host's business,
/// a shutdown is routine, everything else is an error.
pub fn level(e: &IoError) -> Level {
    match e {
        IoError::Miscompare { .. } => Level::Debug,
        IoError::ShuttingDown => Level::Info,
        IoError::OutOfRange { .. } | IoError::Unaligned { .. } | IoError::BufferLength { .. } => Level::Warn,
        IoError::ReadFailed { .. }
        | IoError::WriteFailed { .. }
        | IoError::FlushFailed(_)
        | IoError::NoLegInSync
        | IoError::Metadata(_) => Level::Error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    fn eio() -> io::Error {
        io::Error::from_raw_os_error(libc::EIO)
    }

    #[test]
    fn out_of_range_is_an_illegal_request() {
        let e = IoError::OutOfRange { offset: 10, len: 1, size: 10 };
        assert_eq!(outcome(&e).status, Status::Range);
    }

    #[test]
    fn unaligned_is_an_invalid_cdb() {
        let e = IoError::Unaligned { offset: 1, len: 1, block_size: 512 };
        assert_eq!(outcome(&e).status, Status::InvalidCdb);
    }

    #[test]
    fn a_read_no_leg_could_serve_is_a_read_medium_error() {
        let e = IoError::ReadFailed { offset: 0, len: 512, last: eio() };
        assert_eq!(outcome(&e), Outcome { status: Status::ReadError, info: None });
    }

    #[test]
    fn a_write_or_flush_no_leg_could_store_is_a_write_medium_error() {
        let w = IoError::WriteFailed { offset: 0, len: 512, last: eio() };
        assert_eq!(outcome(&w).status, Status::WriteError);
        assert_eq!(outcome(&IoError::FlushFailed(eio())).status, Status::WriteError);
    }

    #[test]
    fn a_miscompare_carries_the_offset_of_the_first_differing_byte() {
        let e = IoError::Miscompare { offset: 513 };
        assert_eq!(outcome(&e), Outcome { status: Status::Miscompare, info: Some(513) });
        assert_eq!(level(&e), Level::Debug);
    }

    #[test]
    fn a_miscompare_offset_beyond_32_bits_is_sent_without_information() {
        let e = IoError::Miscompare { offset: 1 << 40 };
        assert_eq!(outcome(&e), Outcome { status: Status::Miscompare, info: None });
    }

    #[test]
    fn shutting_down_asks_the_host_to_retry() {
        assert_eq!(outcome(&IoError::ShuttingDown).status, Status::Busy);
    }

    #[test]
    fn no_leg_in_sync_is_a_hardware_error() {
        assert_eq!(outcome(&IoError::NoLegInSync).status, Status::HardwareError);
        assert_eq!(level(&IoError::NoLegInSync), Level::Error);
    }
}
