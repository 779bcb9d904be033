//! The host's read path: a leg is chosen (sequential streams stay on their
//! leg, otherwise the least loaded; during crash recovery, the source for
//! regions not yet recovered), a failed read is retried on the next leg, and
//! the good data is written back to a leg that returned a media error (md's
//! read-error correction), within the leg's error budget.

use super::intent::Marks;
use super::leg::{Job, Leg, LegOut};
use super::rangelock::RangeGuard;
use super::{Done, Inner};
use crate::buf::{AlignedBuf, HostReadBuf};
use crate::error::IoError;
use crate::event::Event;
use crate::state::FaultReason;
use std::io;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

impl Inner {
    pub(super) fn read(self: &Arc<Self>, offset: u64, buf: Box<dyn HostReadBuf>, done: Done) {
        let len = buf.len() as u64;
        if let Err(e) = self.check_range(offset, len) {
            return done(Err(e));
        }
        if len == 0 {
            return done(Ok(()));
        }
        self.note_host_io();
        self.read_from_legs(offset, buf, done, 0, 0, None);
    }

    /// Tries legs one after another until one returns the data. `tried` and
    /// `failed` are bit sets of legs; failed ones get the good data written
    /// back (md's read-error correction).
    pub(super) fn read_from_legs(
        self: &Arc<Self>,
        offset: u64,
        mut buf: Box<dyn HostReadBuf>,
        done: Done,
        tried: u32,
        failed: u32,
        last: Option<io::Error>,
    ) {
        let len = buf.len();
        let Some(leg) = self.pick_read_leg(offset, len as u64, tried) else {
            return done(Err(match last {
                Some(last) => IoError::ReadFailed { offset, len: len as u64, last },
                None => IoError::NoLegInSync,
            }));
        };
        let me = self.clone();
        let legs = self.legs.clone();
        let l = leg;
        self.legs[leg].submit(
            Job::Read { offset, len },
            Box::new(move |r| match r {
                Ok(LegOut::Data(data)) => {
                    buf.fill_from(data.as_slice());
                    legs[l].last_read_end.store(offset + len as u64, Relaxed);
                    me.repair_after_read(failed, l, offset, len as u64);
                    done(Ok(()))
                }
                Ok(LegOut::Done) => unreachable!("a read returns data"),
                Err(e) => {
                    let failed = if me.note_read_error(l, &e) { failed | 1 << l } else { failed };
                    me.read_from_legs(offset, buf, done, tried | 1 << l, failed, Some(e))
                }
            }),
        );
    }

    /// An in-sync leg for a read: during crash recovery only the source for
    /// regions not yet recovered; a leg whose last read ended here (a
    /// sequential stream); otherwise the leg with the fewest I/Os in flight.
    fn pick_read_leg(&self, offset: u64, len: u64, tried: u32) -> Option<usize> {
        if let Some(src) = self.recovery_source_for(offset, len) {
            let ok = tried & (1 << src) == 0 && self.legs[src].is_in_sync();
            return ok.then_some(src);
        }
        let candidates = self.legs.iter().filter(|l| tried & (1 << l.index) == 0 && l.is_in_sync());
        let mut best: Option<(&Arc<Leg>, usize)> = None;
        for l in candidates {
            if l.last_read_end.load(Relaxed) == offset {
                return Some(l.index);
            }
            let load = l.inflight();
            if best.is_none_or(|(_, b)| load < b) {
                best = Some((l, load));
            }
        }
        best.map(|(l, _)| l.index)
    }

    /// The leg that must serve `[offset, offset+len)` during crash recovery.
    fn recovery_source_for(&self, offset: u64, len: u64) -> Option<usize> {
        let rec = *self.recovery.lock();
        let rec = rec?;
        let (first, last) = self.intent.regions(offset, len);
        let pending = (first.max(rec.cursor)..=last).any(|r| self.intent.is_set(r, Marks::All));
        pending.then_some(rec.source)
    }

    /// Counts a read error against the leg's budget; faults the leg past it.
    /// Returns whether the leg should get the good data written back.
    fn note_read_error(&self, leg: usize, e: &io::Error) -> bool {
        if e.kind() == io::ErrorKind::TimedOut {
            return false; // the monitor has dealt with the leg
        }
        let used = self.legs[leg].read_errors_budget_used.fetch_add(1, Relaxed) + 1;
        if used > u64::from(self.tun().read_error_budget) {
            let _ = self.fault_leg(leg, FaultReason::ReadErrors { count: used as u32 });
            return false;
        }
        true
    }

    fn repair_after_read(self: &Arc<Self>, failed: u32, good: usize, offset: u64, len: u64) {
        for leg in 0..self.legs.len() {
            if failed & (1 << leg) != 0 && self.legs[leg].is_in_sync() {
                self.repair(leg, good, offset, len);
            }
        }
    }

    /// Rewrites `[offset, offset+len)` on `bad` with `good`'s data.
    fn repair(self: &Arc<Self>, bad: usize, good: usize, offset: u64, len: u64) {
        let (first, last) = self.intent.regions(offset, len);
        Repair { vol: self.clone(), bad, good, offset, len, regions: (first, last) }.lock();
    }
}

/// Read-error correction for one range, as steps: hold the range, make the
/// write intent durable, read the good leg, write the bad one. Under the
/// range lock and the write intent it races no host write, and a crash
/// midway leaves the region in the bitmap.
struct Repair {
    vol: Arc<Inner>,
    bad: usize,
    good: usize,
    offset: u64,
    len: u64,
    regions: (u64, u64),
}

impl Repair {
    fn lock(self) {
        let vol = self.vol.clone();
        vol.locks.lock(self.offset, self.offset + self.len, move |guard| self.mark(guard));
    }

    fn mark(self, guard: RangeGuard) {
        let vol = self.vol.clone();
        let (first, last) = self.regions;
        vol.intent.begin(
            first,
            last,
            || vol.all_in_sync(),
            Box::new(move |r| match r {
                Ok(()) => self.read(guard),
                Err(_) => self.end(guard),
            }),
        );
    }

    fn read(self, guard: RangeGuard) {
        let job = Job::Read { offset: self.offset, len: self.len as usize };
        let vol = self.vol.clone();
        vol.legs[self.good].submit(
            job,
            Box::new(move |r| match r {
                Ok(LegOut::Data(data)) => self.write(guard, data),
                _ => self.end(guard),
            }),
        );
    }

    fn write(self, guard: RangeGuard, data: AlignedBuf) {
        let vol = self.vol.clone();
        vol.legs[self.bad]
            .submit(Job::WriteOwned { offset: self.offset, data }, Box::new(move |r| self.written(guard, r)));
    }

    fn written(self, guard: RangeGuard, r: io::Result<LegOut>) {
        let (leg, offset, len) = (self.bad, self.offset, self.len);
        match r {
            Ok(_) => self.vol.emit(Event::ReadRepaired { leg, offset, len }),
            Err(e) => {
                let errno = e.raw_os_error().unwrap_or(libc::EIO);
                let _ = self.vol.fault_leg(leg, FaultReason::WriteError { errno });
            }
        }
        self.end(guard);
    }

    /// Ends the repair: the write intent first, then the range.
    fn end(self, guard: RangeGuard) {
        let (first, last) = self.regions;
        self.vol.intent.end(first, last);
        drop(guard);
    }
}
