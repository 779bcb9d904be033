//! The host's read path: a leg is chosen (sequential streams stay on their
//! leg, otherwise the least loaded; during crash recovery, the source for
//! regions not yet recovered), a failed read is retried on the next leg, and
//! the good data is written back to a leg that returned a media error (md's
//! read-error correction), within the leg's error budget.

use super::intent::Marks;
use super::leg::{Job, Leg, LegOut};
use super::{Done, Inner};
use crate::buf::HostReadBuf;
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

    /// Rewrites `[offset, offset+len)` on `bad` with `good`'s data, under the
    /// range lock and the write intent, so it races no host write.
    fn repair(self: &Arc<Self>, bad: usize, good: usize, offset: u64, len: u64) {
        let me = self.clone();
        self.locks.lock(offset, offset + len, move |guard| {
            let (first, last) = me.intent.regions(offset, len);
            let m2 = me.clone();
            me.intent.begin(
                first,
                last,
                || me.all_in_sync(),
                Box::new(move |r| {
                    if r.is_err() {
                        m2.intent.end(first, last);
                        return drop(guard);
                    }
                    let m3 = m2.clone();
                    m2.legs[good].submit(
                        Job::Read { offset, len: len as usize },
                        Box::new(move |r| {
                            let Ok(LegOut::Data(data)) = r else {
                                m3.intent.end(first, last);
                                return drop(guard);
                            };
                            let m4 = m3.clone();
                            m3.legs[bad].submit(
                                Job::WriteOwned { offset, data },
                                Box::new(move |r| {
                                    match r {
                                        Ok(_) => m4.emit(Event::ReadRepaired { leg: bad, offset, len }),
                                        Err(e) => {
                                            let errno = e.raw_os_error().unwrap_or(libc::EIO);
                                            let _ = m4.fault_leg(bad, FaultReason::WriteError { errno });
                                        }
                                    }
                                    m4.intent.end(first, last);
                                    drop(guard);
                                }),
                            );
                        }),
                    );
                }),
            );
        });
    }
}
