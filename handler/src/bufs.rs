//! The host's buffers (a command's iovecs) as the engine's buffer traits:
//! writes go from the tcmu ring to the legs without a copy, reads are filled
//! once, by the leg read that wins.

use hamirror_ffi::IoVecs;
use mirror::{HostReadBuf, HostWriteBuf};
use std::io::IoSlice;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Data the host sends (WRITE, WRITE SAME's block, COMPARE AND WRITE halves).
pub struct HostWrite(pub IoVecs);

impl HostWriteBuf for HostWrite {
    fn len(&self) -> usize {
        self.0.len()
    }

    fn slices(&self) -> Vec<IoSlice<'_>> {
        self.0.slices()
    }
}

/// Memory a READ fills. If the engine ever offered a source of the wrong
/// length, `failed` is raised and the command fails instead of returning
/// whatever the buffer held.
pub struct HostRead {
    bufs: IoVecs,
    failed: Arc<AtomicBool>,
}

impl HostRead {
    /// The buffer, and the flag the completion checks.
    pub fn new(bufs: IoVecs) -> (HostRead, Arc<AtomicBool>) {
        let failed = Arc::new(AtomicBool::new(false));
        (HostRead { bufs, failed: failed.clone() }, failed)
    }
}

impl HostReadBuf for HostRead {
    fn len(&self) -> usize {
        self.bufs.len()
    }

    fn fill_from(&mut self, src: &[u8]) {
        if let Err(e) = self.bufs.fill_from(src) {
            log::error!("read buffer not filled: {e}");
            self.failed.store(true, Ordering::Release);
        }
    }
}
