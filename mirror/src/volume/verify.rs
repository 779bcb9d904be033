//! Verify (scrub): an on-demand comparison of the in-sync legs, region by
//! region under the range lock, rate-limited like a resync. It reports the
//! mismatched regions and, if asked, repairs them from a chosen leg.

use super::leg::{Job, LegOut};
use super::{Inner, Volume};
use crate::event::Event;
use serde::Serialize;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Mismatched regions listed in the status (the count is always complete).
const LISTED: usize = 64;

#[derive(Clone, Debug, Default, Serialize)]
pub struct VerifyStatus {
    pub running: bool,
    pub done_bytes: u64,
    pub total_bytes: u64,
    pub mismatched_regions: u64,
    /// The first mismatched regions' byte offsets.
    pub mismatched_offsets: Vec<u64>,
    /// The leg mismatches are repaired from, if repairing.
    pub repair_from: Option<usize>,
    pub repaired_regions: u64,
    pub cancelled: bool,
}

/// Why a verify could not start.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    #[error("a verify is already running; wait for it or cancel it")]
    Running,
    #[error("fewer than two legs are in sync: nothing to compare")]
    NothingToCompare,
    #[error("leg {0} is not in sync and cannot be the repair source")]
    BadSource(usize),
}

impl Volume {
    /// Starts comparing the in-sync legs; with `repair_from`, a mismatched
    /// region is overwritten on the others with that leg's data.
    pub fn verify_start(&self, repair_from: Option<usize>) -> Result<(), VerifyError> {
        let inner = self.inner().clone();
        if inner.in_sync_count() < 2 {
            return Err(VerifyError::NothingToCompare);
        }
        if let Some(s) = repair_from {
            if s >= inner.legs.len() || !inner.legs[s].is_in_sync() {
                return Err(VerifyError::BadSource(s));
            }
        }
        {
            let mut v = inner.verify.lock();
            if v.running {
                return Err(VerifyError::Running);
            }
            *v = VerifyStatus { running: true, total_bytes: inner.size(), repair_from, ..Default::default() };
        }
        std::thread::Builder::new()
            .name("hm-verify".into())
            .spawn(move || inner.run_verify(repair_from))
            .map_err(|_| VerifyError::Running)?;
        Ok(())
    }

    pub fn verify_status(&self) -> VerifyStatus {
        self.inner().verify.lock().clone()
    }

    pub fn verify_cancel(&self) {
        self.inner().verify.lock().cancelled = true;
    }
}

impl Inner {
    fn run_verify(self: Arc<Self>, repair_from: Option<usize>) {
        let rb = self.intent.region_bytes();
        let regions = self.intent.len();
        let started = Instant::now();
        for r in 0..regions {
            if self.shutting_down.load(Relaxed) || self.verify.lock().cancelled {
                break;
            }
            self.verify_throttle(started);
            let offset = r * rb;
            let len = rb.min(self.size() - offset);
            let mismatch = self.verify_region(offset, len, repair_from);
            let mut v = self.verify.lock();
            v.done_bytes += len;
            if let Some(repaired) = mismatch {
                v.mismatched_regions += 1;
                if v.mismatched_offsets.len() < LISTED {
                    v.mismatched_offsets.push(offset);
                }
                v.repaired_regions += u64::from(repaired);
            }
        }
        let (mismatched, repaired) = {
            let mut v = self.verify.lock();
            v.running = false;
            (v.mismatched_regions, v.repaired_regions > 0)
        };
        self.emit(Event::VerifyFinished { mismatched_regions: mismatched, repaired });
    }

    /// Compares one region across the in-sync legs; `Some(repaired)` if they differ.
    fn verify_region(self: &Arc<Self>, offset: u64, len: u64, repair_from: Option<usize>) -> Option<bool> {
        let _guard = self.lock_wait(offset, len);
        let legs: Vec<usize> = self.legs.iter().filter(|l| l.is_in_sync()).map(|l| l.index).collect();
        let mut datas = Vec::new();
        for &l in &legs {
            match self.leg_io_wait(l, Job::Read { offset, len: len as usize }) {
                Ok(LegOut::Data(d)) => datas.push((l, d)),
                _ => return None, // a read error is the read path's business
            }
        }
        let differs = datas.windows(2).any(|w| w[0].1.as_slice() != w[1].1.as_slice());
        if !differs {
            return None;
        }
        let Some(src) = repair_from.and_then(|s| datas.iter().position(|(l, _)| *l == s)) else {
            return Some(false);
        };
        let good = crate::buf::AlignedBuf::from_slice(datas[src].1.as_slice());
        let mut ok = true;
        for (l, d) in &datas {
            if d.as_slice() != good.as_slice() {
                let copy = crate::buf::AlignedBuf::from_slice(good.as_slice());
                ok &= self.leg_io_wait(*l, Job::WriteOwned { offset, data: copy }).is_ok();
            }
        }
        Some(ok)
    }

    fn verify_throttle(&self, started: Instant) {
        let max = self.resync.lock().max_mib_s.unwrap_or(self.tun().resync_max_mib_s);
        let busy = self.host_idle_for_ms() < 200;
        let rate = if busy { self.tun().resync_min_mib_s } else { max };
        if rate == 0 {
            return;
        }
        let done = self.verify.lock().done_bytes as f64;
        let allowed = rate as f64 * 1048576.0 * started.elapsed().as_secs_f64();
        if done > allowed {
            let ahead = (done - allowed) / (rate as f64 * 1048576.0);
            std::thread::sleep(Duration::from_secs_f64(ahead.min(0.25)));
        }
    }
}
