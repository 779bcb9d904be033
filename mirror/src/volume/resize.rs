//! Changing a volume's size: online growth, and either direction at open.
//!
//! The bytes a grow adds hold whatever the legs held there, which differs
//! from leg to leg. So the new regions are set in the write-intent bitmap,
//! durably, before the metadata records the new size (a crash in between
//! leaves the old size), and then copied from one in-sync leg to the others
//! by the same pass that follows a crash: until it has copied a region, host
//! reads there come from that one leg, so the host never sees the legs
//! disagree (md and DRBD resync new capacity the same way). A leg that is
//! faulted keeps the new regions in the bitmap and gets them with its
//! difference resync.
//!
//! Shrinking is done only at open (the LUN was re-created smaller): the
//! metadata forgets the regions past the new end. Online, a shrink is
//! refused, since the host may still hold data there.

use super::leg::Leg;
use super::{Inner, Recovery, Volume};
use crate::event::{Event, ResyncKind};
use crate::meta::{Bitmap, Header, MetaError, MetaStore};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

/// Why a resize was refused. Each says what to do instead; nothing changed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ResizeError {
    #[error("{size} bytes is not a multiple of the {block_size}-byte block size")]
    Unaligned { size: u64, block_size: u32 },
    #[error(
        "shrinking a running LUN from {from} to {to} bytes could cut off data in use; shrink the \
         filesystem, then re-create the backstore smaller"
    )]
    Shrink { from: u64, to: u64 },
    #[error("leg {leg} ({path}) holds {have} bytes and the volume would need {need}; grow it first (and rescan it if it is a SAN LUN)")]
    LegTooSmall { leg: usize, path: String, have: u64, need: u64 },
    #[error("leg {leg} ({path}): cannot measure its size: {error}")]
    LegSize { leg: usize, path: String, error: String },
    #[error("the new size could not be recorded in the metadata (the volume keeps its old size): {0}")]
    Metadata(String),
}

impl Volume {
    /// Grows the volume to `size` bytes while it serves I/O (tcmu-runner's
    /// reconfig when the LUN's `dev_size` is raised). Every leg that is
    /// present must already hold `size` bytes; a leg absent now is checked
    /// when it comes back. The same size is a no-op.
    pub fn grow(&self, size: u64) -> Result<(), ResizeError> {
        self.inner().grow(size)
    }
}

impl Inner {
    pub(super) fn size(&self) -> u64 {
        self.size.load(Relaxed)
    }

    fn grow(self: &Arc<Self>, size: u64) -> Result<(), ResizeError> {
        // The header lock serialises resizes with each other and with leg
        // state changes, which rewrite the header too.
        let mut header = self.header.lock();
        let old = self.size();
        let block_size = self.cfg.block_size;
        if size == old {
            return Ok(());
        }
        if !size.is_multiple_of(u64::from(block_size)) {
            return Err(ResizeError::Unaligned { size, block_size });
        }
        if size < old {
            return Err(ResizeError::Shrink { from: old, to: size });
        }
        for l in self.legs.iter().filter(|l| l.backend().detached().is_none()) {
            let leg = l.index;
            let have = l.backend().refresh_size().map_err(|e| ResizeError::LegSize {
                leg,
                path: l.path.clone(),
                error: e.to_string(),
            })?;
            if have < size {
                return Err(ResizeError::LegTooSmall { leg, path: l.path.clone(), have, need: size });
            }
        }
        let rb = self.intent.region_bytes();
        let dirty_from = old / rb;
        let new = Header { size, ..header.clone() };
        let store = self.intent.store().clone();
        self.intent
            .grow(size.div_ceil(rb), dirty_from, |pages| store.resize(&new, pages))
            .map_err(|e| ResizeError::Metadata(e.to_string()))?;
        *header = new;
        self.size.store(size, Relaxed);
        drop(header);
        self.copy_new_capacity(dirty_from);
        self.emit(Event::Resized { from: old, to: size });
        Ok(())
    }

    /// Has the resync worker make regions `from..` equal on every leg that
    /// takes writes, serving reads there from one leg until it has. A crash
    /// recovery under way covers them already (its cursor is behind them).
    fn copy_new_capacity(&self, from: u64) {
        let mut rec = self.recovery.lock();
        if rec.is_none() {
            *rec = new_capacity(&self.legs, from);
        }
        drop(rec);
        self.resync_wake.notify_all();
    }
}

/// The copy of new capacity (regions `from..`) from the first in-sync leg,
/// if another leg takes writes.
pub(super) fn new_capacity(legs: &[Arc<Leg>], from: u64) -> Option<Recovery> {
    let source = legs.iter().position(|l| l.is_in_sync())?;
    legs.iter().any(|l| l.index != source && l.takes_writes()).then_some(Recovery {
        source,
        cursor: from,
        kind: ResyncKind::NewCapacity,
    })
}

/// What an open did to the metadata's size.
pub(super) enum AtOpen {
    Same,
    /// Grown; regions from this one on are new.
    Grown {
        dirty_from: u64,
    },
    Shrunk,
}

/// Brings the metadata (`header`, `bitmap`) to the configured size, durably,
/// the same way an online grow does: new regions set, pages before header.
pub(super) fn resize_at_open(
    store: &MetaStore,
    header: &mut Header,
    bitmap: &mut Bitmap,
    size: u64,
) -> Result<AtOpen, MetaError> {
    let old = header.size;
    if size == old {
        return Ok(AtOpen::Same);
    }
    let new = Header { size, ..header.clone() };
    let regions = size.div_ceil(header.region_size) as usize;
    let rpp = MetaStore::regions_per_page();
    let outcome = if size > old {
        let dirty_from = old / header.region_size;
        bitmap.resize(regions, true);
        bitmap[dirty_from as usize..].fill(true);
        let pages: Vec<_> = MetaStore::grown_pages(old.div_ceil(header.region_size) as usize, regions)
            .map(|p| (p, &bitmap[p * rpp..((p + 1) * rpp).min(regions)]))
            .collect();
        store.resize(&new, &pages)?;
        log::warn!(
            "{}: the LUN grew from {old} to {size} bytes; the new capacity is copied between legs",
            new.name
        );
        AtOpen::Grown { dirty_from }
    } else {
        store.resize(&new, &[])?;
        bitmap.truncate(regions);
        log::warn!(
            "{}: the LUN shrank from {old} to {size} bytes; data past {size} on the legs is no longer mirrored",
            new.name
        );
        AtOpen::Shrunk
    };
    *header = new;
    Ok(outcome)
}
