//! One metadata copy: its file, and how its header slots are written.

use super::format::{slot_offset, SLOTS, SLOT_SIZE};
use super::header::{encode_slot, Header};
use super::lock::LockedFile;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

/// One copy as the store keeps it.
pub(super) struct Copy {
    pub path: PathBuf,
    pub file: Option<LockedFile>,
    /// Why the copy is lost; `None` while it is live.
    pub error: Option<String>,
}

/// Writes `h` into the slot sequence `seq` selects and zeroes the other
/// slot, then makes both durable. Callers sync the pages first.
pub(super) fn write_slots(file: &File, h: &Header, seq: u64) -> io::Result<()> {
    let slot = encode_slot(h, seq).map_err(io::Error::other)?;
    let (this, other) = (seq as usize % SLOTS, (seq as usize + 1) % SLOTS);
    file.write_all_at(&slot, slot_offset(this))?;
    file.write_all_at(&[0; SLOT_SIZE], slot_offset(other))?;
    file.sync_data()
}
