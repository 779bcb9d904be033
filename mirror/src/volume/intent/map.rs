//! The bits themselves: one per region, the pages' durability marks, and
//! which bits an extent's marking alone set. Lock-free to read; changed
//! only under the intent's `st` (see `mod.rs`).

use super::{Bits, DURABLE};
use crate::meta::MetaStore;
use std::sync::atomic::{AtomicU64, Ordering};

/// The bitmap and its pages' durability marks, sized for the volume.
pub(super) struct Map {
    pub regions: u64,
    /// One bit per region. Changed only under `st`.
    pub bits: Vec<AtomicU64>,
    /// Per bitmap page: `DURABLE`, or the batch that will write its changes.
    pub pending: Vec<AtomicU64>,
    /// One bit per region whose bit an extent's marking set and that no
    /// write has begun in since: the legs are equal there. Set under `st`;
    /// cleared by every write that begins in the region.
    pub by_extent: Vec<AtomicU64>,
}

/// Region `r`'s word in a bit vector, and its bit in that word.
pub(super) fn word_bit(r: u64) -> (usize, u64) {
    ((r / 64) as usize, 1 << (r % 64))
}

impl Map {
    pub fn is_set(&self, r: u64) -> bool {
        self.has(r, Marks::All)
    }

    /// Whether region `r`'s bit is set and counted by `which`.
    pub fn has(&self, r: u64, which: Marks) -> bool {
        let (w, m) = word_bit(r);
        self.word(w, which) & m != 0
    }

    pub fn is_durable(&self, r: u64) -> bool {
        self.is_set(r) && self.pending[super::Intent::page(r)].load(Ordering::Acquire) == DURABLE
    }

    /// Word `w` of the bits `which` counts.
    pub fn word(&self, w: usize, which: Marks) -> u64 {
        let bits = self.bits[w].load(Ordering::Acquire);
        match which {
            Marks::All => bits,
            Marks::Written => bits & !self.by_extent[w].load(Ordering::Acquire),
        }
    }

    /// A write begins in `[first, last]`: its regions are no longer known equal.
    pub fn written(&self, first: u64, last: u64) {
        for r in first..=last {
            let (w, m) = word_bit(r);
            if self.by_extent[w].load(Ordering::Acquire) & m != 0 {
                self.by_extent[w].fetch_and(!m, Ordering::AcqRel);
            }
        }
    }

    /// A copy of one page's bits, as the store writes it.
    pub fn snapshot(&self, page: usize) -> Bits {
        let rpp = MetaStore::regions_per_page() as u64;
        let (a, b) = (page as u64 * rpp, ((page as u64 + 1) * rpp).min(self.regions));
        let words: Vec<u64> =
            (a / 64..b.div_ceil(64)).map(|w| self.bits[w as usize].load(Ordering::Acquire)).collect();
        let mut bits = Bits::from_vec(words);
        bits.truncate((b - a) as usize);
        bits
    }
}

/// Which set bits a question is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Marks {
    /// Every set bit: after a crash any of these regions may differ.
    All,
    /// Without the bits an extent's marking set where no write has begun
    /// since: what a leg that left while the volume ran may lack.
    Written,
}
