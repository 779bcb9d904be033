//! Helpers shared by the metadata tests.

use super::format::{page_offset, slot_offset, PAGE_SIZE, SLOT_SIZE};
use super::header::{MAX_IDENTITY, MAX_NAME, MAX_PATH, MAX_REASON};
use super::{Header, LegRecord, MetaStore, Opened, RecordedState};
use crate::config::MAX_LEGS;
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// A directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("hamirror-meta-{}-{n}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// `n` copy paths in this directory.
    pub fn copies(&self, n: usize) -> Vec<PathBuf> {
        (0..n).map(|i| self.path(&format!("meta{i}"))).collect()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Creates a test volume over `paths`.
pub fn create(paths: &[PathBuf]) -> Opened {
    MetaStore::create(paths, &Header::for_tests()).unwrap()
}

/// XORs every byte of `len` bytes at `offset` with 0x5A.
pub fn corrupt(path: &Path, offset: u64, len: usize) {
    let f = OpenOptions::new().read(true).write(true).open(path).unwrap();
    let mut buf = vec![0u8; len];
    f.read_exact_at(&mut buf, offset).unwrap();
    buf.iter_mut().for_each(|b| *b ^= 0x5A);
    f.write_all_at(&buf, offset).unwrap();
}

/// Corrupts the second half of header slot `slot` (a torn write).
pub fn tear_slot(path: &Path, slot: usize) {
    corrupt(path, slot_offset(slot) + SLOT_SIZE as u64 / 2, 512);
}

/// Corrupts the tail of bitmap page `page`.
pub fn tear_page(path: &Path, page: usize) {
    corrupt(path, page_offset(page) + PAGE_SIZE as u64 - 512, 512);
}

/// A header with every field at its largest.
pub fn full_header() -> Header {
    let mut h = Header::for_tests();
    h.name = "n".repeat(MAX_NAME);
    h.legs = (0..MAX_LEGS)
        .map(|i| LegRecord {
            identity: "i".repeat(MAX_IDENTITY),
            path: "p".repeat(MAX_PATH),
            state: RecordedState::Rebuilding { full: i % 2 == 0 },
            reason: "r".repeat(MAX_REASON),
            in_sync_generation: i as u64,
            rebuild_cursor: u64::MAX - i as u64,
        })
        .collect();
    h.source_request = "s".repeat(super::header::MAX_SOURCE_REQUEST);
    h
}
