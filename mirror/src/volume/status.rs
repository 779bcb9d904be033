//! A volume's status as `hamirrorctl status` shows it.

use super::Inner;
use crate::config::IoEngine;
use crate::event::ResyncKind;
use crate::meta::CopyHealth;
use crate::state::LegState;
use serde::Serialize;
use std::sync::atomic::Ordering::Relaxed;

#[derive(Clone, Debug, Serialize)]
pub struct VolumeStatus {
    pub name: String,
    pub size: u64,
    pub block_size: u32,
    pub region_size: u64,
    pub generation: u64,
    /// How the legs do their I/O: `io_uring` or `threads`.
    pub io_engine: IoEngine,
    pub legs: Vec<LegStatus>,
    /// Regions set in the write-intent bitmap.
    pub dirty_regions: u64,
    /// The activity log: what a crash now would leave to copy, and its bound.
    pub activity: ActivityStatus,
    pub resync: Option<ResyncStatus>,
    /// Bytes copied by resyncs since the volume was opened.
    pub resync_bytes_total: u64,
    pub metadata: Vec<MetadataCopyStatus>,
    pub verify: super::VerifyStatus,
}

/// The write-intent bitmap's active extents (`bitmap_active_size`).
#[derive(Clone, Debug, Serialize)]
pub struct ActivityStatus {
    /// Extents written since their bits were last cleared.
    pub active_extents: u64,
    /// The most that may be active while every leg is in sync (0: no limit).
    pub limit_extents: u64,
    pub extent_bytes: u64,
    /// Bytes a crash now would leave to copy: every set region.
    pub crash_copy_bytes: u64,
    /// Idle extents cleared early to make room for a new one.
    pub evictions: u64,
    /// Writes that waited because every active extent had a write in flight.
    pub waits: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct LegStatus {
    pub index: usize,
    pub path: String,
    pub identity: String,
    pub state: LegState,
    pub inflight: usize,
    pub reads: u64,
    pub writes: u64,
    pub read_bytes: u64,
    pub write_bytes: u64,
    pub read_errors: u64,
    pub write_errors: u64,
    pub timeouts: u64,
    pub avg_latency_us: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct ResyncStatus {
    pub leg: usize,
    pub kind: ResyncKind,
    pub done_bytes: u64,
    pub total_bytes: u64,
    pub rate_bytes_s: u64,
    pub eta_s: Option<u64>,
    pub paused: bool,
    /// Byte ranges `(offset, len)` that no leg could read: the rebuild
    /// retries them, and the leg stays rebuilding until they are copied.
    pub unreadable: Vec<(u64, u64)>,
}

#[derive(Clone, Debug, Serialize)]
pub struct MetadataCopyStatus {
    pub path: String,
    pub live: bool,
    pub error: Option<String>,
}

impl From<CopyHealth> for MetadataCopyStatus {
    fn from(h: CopyHealth) -> Self {
        MetadataCopyStatus { path: h.path.display().to_string(), live: h.live, error: h.error }
    }
}

impl Inner {
    pub(super) fn status(&self) -> VolumeStatus {
        // Once, between two changes: the dirty count and what a crash copies.
        let dirty_regions = self.intent.count_set_settled();
        VolumeStatus {
            name: self.cfg.name.clone(),
            size: self.size(),
            block_size: self.cfg.block_size,
            region_size: self.intent.region_bytes(),
            generation: self.generation(),
            io_engine: self.io_engine,
            legs: self.legs.iter().map(|l| self.leg_status(l)).collect(),
            dirty_regions,
            activity: self.activity_status(dirty_regions),
            resync: self.resync_status(),
            resync_bytes_total: self.resync_bytes.load(Relaxed),
            metadata: self.intent.store().health().into_iter().map(Into::into).collect(),
            verify: self.verify.lock().clone(),
        }
    }

    fn leg_status(&self, l: &super::leg::Leg) -> LegStatus {
        let s = &l.stats;
        let samples = s.latency_samples.load(Relaxed).max(1);
        LegStatus {
            index: l.index,
            path: l.path.clone(),
            identity: l.backend().identity().to_string(),
            state: l.state(),
            inflight: l.inflight(),
            reads: s.reads.load(Relaxed),
            writes: s.writes.load(Relaxed),
            read_bytes: s.read_bytes.load(Relaxed),
            write_bytes: s.write_bytes.load(Relaxed),
            read_errors: s.read_errors.load(Relaxed),
            write_errors: s.write_errors.load(Relaxed),
            timeouts: s.timeouts.load(Relaxed),
            avg_latency_us: s.latency_us_total.load(Relaxed) / samples,
        }
    }

    fn activity_status(&self, dirty_regions: u64) -> ActivityStatus {
        let a = self.intent.activity();
        ActivityStatus {
            active_extents: a.active,
            limit_extents: a.limit,
            extent_bytes: self.cfg.bitmap_extent_size.max(self.intent.region_bytes()),
            crash_copy_bytes: dirty_regions * self.intent.region_bytes(),
            evictions: a.evictions,
            waits: a.waits,
        }
    }

    fn resync_status(&self) -> Option<ResyncStatus> {
        let p = self.resync.lock().clone();
        let (leg, kind) = (p.leg?, p.kind?);
        let secs = p.started.and_then(|s| s.elapsed().ok()).map_or(0.0, |d| d.as_secs_f64());
        let rate = if secs > 0.0 { (p.done_bytes as f64 / secs) as u64 } else { 0 };
        let left = p.total_bytes.saturating_sub(p.done_bytes);
        Some(ResyncStatus {
            leg,
            kind,
            done_bytes: p.done_bytes,
            total_bytes: p.total_bytes,
            rate_bytes_s: rate,
            eta_s: (rate > 0).then(|| left / rate),
            paused: p.paused,
            unreadable: p.unreadable,
        })
    }
}
