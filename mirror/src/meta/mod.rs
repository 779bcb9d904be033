//! Durable mirror state: the volume's header (shape, leg states, generation)
//! and its write-intent bitmap, kept in 1 to 4 metadata files outside the
//! legs, each a full copy, so that no single one is a point of failure.
//!
//! - `format`: the on-disk layout and the bitmap page codec;
//! - `header`: the header types and their checksummed slot codec;
//! - `create`: making a new volume's copies;
//! - `lock`: checking, locking and atomically creating copy files;
//! - `inspect`: telling what a file holds without changing it;
//! - `copy`: one copy's file and the write of its header slots;
//! - `open` and `repair`: choosing the copy to trust and repairing the others;
//! - `store`: [`MetaStore`], which writes headers and bitmap pages to every
//!   live copy.

mod copy;
mod create;
mod format;
#[cfg(test)]
mod fuzz;
mod header;
mod inspect;
mod lock;
mod open;
mod repair;
mod store;
#[cfg(test)]
pub(crate) mod testutil;

pub use format::{DecodeError, FORMAT_VERSION, PAGE_SIZE, REGIONS_PER_PAGE, SLOT_SIZE};
pub use header::{random_id, Header, LegRecord, RecordedState};
pub use header::{MAX_IDENTITY, MAX_NAME, MAX_PATH, MAX_REASON, MAX_SOURCE_REQUEST};
pub use store::MetaStore;

use bitvec::order::Lsb0;
use bitvec::vec::BitVec;
use std::io;
use std::path::PathBuf;

/// The write-intent bitmap: one bit per region, set while the region may
/// differ between legs.
pub type Bitmap = BitVec<u64, Lsb0>;

/// An opened volume's metadata.
pub struct Opened {
    /// Writes to the copies from now on; holds their locks.
    pub store: MetaStore,
    /// The header found (or written, for a new volume).
    pub header: Header,
    /// The write-intent bitmap: the OR of every valid copy's pages.
    pub bitmap: Bitmap,
    /// What was repaired or lost while opening.
    pub notes: Vec<CopyNote>,
}

impl std::fmt::Debug for Opened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opened")
            .field("store", &self.store)
            .field("header", &self.header)
            .field("dirty_regions", &self.bitmap.count_ones())
            .field("notes", &self.notes)
            .finish()
    }
}

/// Something that happened to a metadata copy, for the log and events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CopyNote {
    /// Copy `copy` was missing, corrupt or out of date and was rewritten from
    /// the others.
    Repaired { copy: usize, path: PathBuf, why: String },
    /// Copy `copy` failed and is no longer written; the others carry on.
    Lost { copy: usize, path: PathBuf, error: String },
    /// This many bitmap pages were unreadable in every up-to-date copy; their
    /// regions are all treated as dirty (resynced).
    PagesLost { pages: usize },
}

/// How one copy is doing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CopyHealth {
    /// The copy's path as listed.
    pub path: PathBuf,
    /// Still written to.
    pub live: bool,
    /// Why it is not live.
    pub error: Option<String>,
}

/// Whether a volume's metadata already exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probe {
    /// No path holds hamirror metadata: create the volume.
    Absent,
    /// At least one path holds hamirror metadata: open the volume.
    Present,
}

/// Why a metadata operation failed. Each says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    /// The list of copies is empty or too long.
    #[error("{count} metadata copies given; give 1 to {max}, each on different storage", max = crate::config::MAX_METADATA_COPIES)]
    CopyCount { count: usize },
    /// Two listed copies are the same file.
    #[error("{path}: the same file as metadata copy {other}; list each copy once, on different storage", path = .path.display(), other = .other.display())]
    DuplicateCopy { path: PathBuf, other: PathBuf },
    /// A copy path names a directory, device or other non-file.
    #[error("{path}: not a regular file; metadata copies must be files", path = .path.display())]
    NotAFile { path: PathBuf },
    /// Another open file description holds the copy's lock.
    #[error("{path}: in use by another hamirror volume or process; stop it first", path = .path.display())]
    Locked { path: PathBuf },
    /// The copy belongs to a volume with another id.
    #[error("{path}: holds the metadata of another volume ({theirs}, this one is {ours}); it was left untouched: list the right file or remove it", path = .path.display())]
    Foreign { path: PathBuf, theirs: String, ours: String },
    /// `create` found metadata at a path.
    #[error("{path}: already holds hamirror metadata; open the volume instead, or remove the file to start anew", path = .path.display())]
    Exists { path: PathBuf },
    /// A path holds data that is not hamirror metadata.
    #[error("{path}: not empty and not hamirror metadata; it was left untouched: fix the path or remove the file", path = .path.display())]
    NotMetadata { path: PathBuf },
    /// A copy is in a format version this build does not know.
    #[error("{path}: metadata format version {found}, this hamirror reads version {FORMAT_VERSION}; use the hamirror that wrote it", path = .path.display())]
    Version { path: PathBuf, found: u32 },
    /// `open` found no copy with a valid header.
    #[error(
        "no metadata copy can be trusted ({details}); restore a copy from backup or create the volume anew"
    )]
    NoValidCopy { details: String },
    /// A write reached no copy (the error is the last copy's).
    #[error("no metadata copy could be written; check the storage that holds them")]
    AllCopiesFailed(#[source] io::Error),
    /// Reading, writing or creating a copy failed where no other copy can stand in.
    #[error("{path}: I/O error", path = .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A header field is longer than the format holds.
    #[error("{field}: {len} is over the limit of {max}; shorten it")]
    TooLarge { field: &'static str, len: usize, max: usize },
    /// A request the store cannot carry out (wrong bitmap length, changed size...).
    #[error("invalid metadata request: {what}")]
    Invalid { what: String },
}
