//! What can go wrong, per operation. The handler maps [`IoError`] to SCSI
//! status with one exhaustive match; [`OpenError`] becomes the reason an admin
//! reads when targetcli refuses a LUN.

use crate::config::ConfigError;
use crate::meta::MetaError;
use std::io;
use std::path::PathBuf;

/// A host I/O the engine could not complete successfully.
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    /// The range lies (partly) beyond the end of the volume.
    #[error("range {offset}+{len} is beyond the volume's {size} bytes")]
    OutOfRange { offset: u64, len: u64, size: u64 },
    /// Offset or length is not a multiple of the block size.
    #[error("range {offset}+{len} is not aligned to the {block_size}-byte block")]
    Unaligned { offset: u64, len: u64, block_size: u32 },
    /// A buffer does not have the length the command needs (WRITE SAME's
    /// one block; COMPARE AND WRITE's compare and write halves alike).
    #[error("{what} is {got} bytes; it must be {expected}")]
    BufferLength { what: &'static str, got: u64, expected: u64 },
    /// Every leg that could serve this read failed it.
    #[error("no leg could read {offset}+{len}")]
    ReadFailed {
        offset: u64,
        len: u64,
        #[source]
        last: io::Error,
    },
    /// Every leg that should have stored this write failed it.
    #[error("no leg could write {offset}+{len}")]
    WriteFailed {
        offset: u64,
        len: u64,
        #[source]
        last: io::Error,
    },
    /// A cache flush failed on every leg that needed it.
    #[error("no leg could flush its cache")]
    FlushFailed(#[source] io::Error),
    /// No leg is in sync: the volume cannot serve data it can vouch for.
    #[error("no leg is in sync")]
    NoLegInSync,
    /// The write-intent bitmap could not be made durable on any metadata copy,
    /// so the write was not sent (acknowledging it could lose it after a crash).
    #[error("no metadata copy could record the write intent")]
    Metadata(#[source] std::sync::Arc<MetaError>),
    /// COMPARE AND WRITE: the data differs at this byte of the compare buffer;
    /// nothing was written.
    #[error("compare and write: data differs at byte {offset}")]
    Miscompare { offset: u64 },
    /// The volume is closing.
    #[error("the volume is shutting down")]
    ShuttingDown,
}

/// Why a volume could not be opened. Each names what to fix.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("invalid configuration")]
    Config(#[from] ConfigError),
    #[error("leg {leg} ({path}): does not exist; check the path or create the file")]
    LegMissing { leg: usize, path: PathBuf },
    #[error("leg {leg} ({path}): not a regular file or block device")]
    LegNotStorage { leg: usize, path: PathBuf },
    #[error("leg {leg} ({path}): {have} bytes, smaller than the volume's {need}; use a larger leg or a smaller size")]
    LegTooSmall { leg: usize, path: PathBuf, have: u64, need: u64 },
    #[error("leg {leg} ({path}): the same storage as leg {other}; each leg must be separate")]
    LegDuplicate { leg: usize, other: usize, path: PathBuf },
    #[error("leg {leg} ({path}): in use by another process or volume (it is locked or open exclusively); stop that user first")]
    LegBusy { leg: usize, path: PathBuf },
    #[error("leg {leg} ({path}): cannot open")]
    LegOpen {
        leg: usize,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("metadata")]
    Meta(#[from] MetaError),
    #[error("the metadata does not match this volume: {what}; nothing was changed")]
    Mismatch { what: String },
    #[error("metadata file {path} is also listed as a leg; keep metadata on other storage")]
    MetadataIsLeg { path: PathBuf },
    /// Every leg the metadata records in sync is absent (or none is).
    #[error("no leg can be trusted as in sync: {detail}; bring that storage back and open the LUN again (every leg still holds the LUN in its own format: see the README's runbook \"No leg can be trusted as in sync\")")]
    NoTrustedLeg { detail: String },
    #[error("cannot start the volume's threads")]
    Spawn(#[source] io::Error),
    #[error("io_engine=io_uring, but this kernel does not give an io_uring (check kernel.io_uring_disabled, and the seccomp profile of a container); use io_engine=auto or threads")]
    IoUring {
        #[source]
        source: io::Error,
    },
}
