//! The host's write paths: write, unmap, write-same, compare-and-write and
//! flush. None of them blocks its caller; each ends in `done`. A write holds
//! its byte range, makes its write intent durable, fans out to every leg
//! that takes writes, and is acknowledged if an in-sync leg stored it.

use super::leg::{Job, Leg, Waiter};
use super::rangelock::RangeGuard;
use super::{Done, Inner};
use crate::buf::{AlignedBuf, HostWriteBuf};
use crate::error::IoError;
use crate::state::FaultReason;
use parking_lot::Mutex;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering::*};
use std::sync::Arc;

/// What a write fans out.
#[derive(Clone)]
pub(super) enum Payload {
    Host(Arc<dyn HostWriteBuf>),
    Zero(u64),
    /// Unmap: discard where the leg can, else zeroes (`zero_fill`).
    Discard {
        len: u64,
        zero_fill: bool,
    },
}

impl Payload {
    fn len(&self) -> u64 {
        match self {
            Payload::Host(b) => b.len() as u64,
            Payload::Zero(n) | Payload::Discard { len: n, .. } => *n,
        }
    }

    fn job(&self, leg: &Leg, offset: u64) -> Job {
        match self {
            Payload::Host(buf) => Job::Write { offset, buf: buf.clone() },
            Payload::Zero(len) => Job::Zero { offset, len: *len },
            Payload::Discard { len, zero_fill } => {
                if !leg.backend().caps().discard_zeroes && *zero_fill {
                    Job::Zero { offset, len: *len }
                } else {
                    Job::Discard { offset, len: *len }
                }
            }
        }
    }
}

/// What became of a leg that failed a host I/O.
#[derive(PartialEq, Eq)]
enum Kept {
    /// Out of the in-sync set (or already out).
    Out,
    /// Still in sync: it is the last in-sync leg.
    LastInSync,
}

/// One leg's outcome in a fan-out.
struct LegResult {
    leg: usize,
    was_in_sync: bool,
    result: io::Result<()>,
}

impl LegResult {
    /// A leg that was in sync when the write started has it.
    fn stored(&self) -> bool {
        self.was_in_sync && self.result.is_ok()
    }
}

/// A flush sent to several legs.
struct Fan {
    remaining: AtomicUsize,
    results: Mutex<Vec<LegResult>>,
}

/// A write sent to several legs. It holds its range and its write intent
/// until every leg has returned it, even when it was acknowledged earlier
/// (latency priority): no other write or resync copy of the range can
/// overtake a late leg write, and the region stays in the bitmap meanwhile.
struct WriteFan {
    vol: Arc<Inner>,
    offset: u64,
    len: u64,
    regions: (u64, u64),
    /// The legs written, each with whether it was in sync at the start.
    targets: Vec<(usize, bool)>,
    /// Latency priority: acknowledge once no in-sync leg is still missing.
    early: bool,
    st: Mutex<FanState>,
}

struct FanState {
    results: Vec<LegResult>,
    /// `results[..settled]` were decided by an early acknowledgement.
    settled: usize,
    /// The legs (a bit set) that owe this write ([`Leg::owe`]).
    owed: u32,
    done: Option<Done>,
    guard: Option<RangeGuard>,
}

impl WriteFan {
    fn returned(self: &Arc<Self>, r: LegResult) {
        let mut st = self.st.lock();
        if st.owed & (1 << r.leg) != 0 && r.result.is_ok() {
            // A failed one is repaid only once the failure is recorded: the
            // leg must not be put back in sync in between.
            st.owed &= !(1 << r.leg);
            self.vol.legs[r.leg].repay();
        }
        st.results.push(r);
        if st.results.len() < self.targets.len() {
            let ack = if self.early { self.ack_early(&mut st) } else { None };
            drop(st);
            if let Some((done, r)) = ack {
                done(r);
            }
            return;
        }
        let (done, guard) = (st.done.take(), st.guard.take());
        let results = std::mem::take(&mut st.results);
        let (settled, owed) = (st.settled, std::mem::take(&mut st.owed));
        drop(st);
        let stored_before = results[..settled].iter().any(LegResult::stored);
        let r = self.vol.settle_write(&results[settled..], stored_before, self.offset, self.len);
        self.repay(owed);
        self.vol.intent.end(self.regions.0, self.regions.1);
        drop(guard);
        match done {
            Some(done) => done(r),
            None => {
                if let Err(e) = r {
                    // Acknowledged already; the leg's state is in the metadata.
                    log::warn!("{}: a late leg write after its acknowledgement: {e}", self.vol.cfg.name);
                }
            }
        }
    }

    /// The acknowledgement, if the write waits for no in-sync leg any more
    /// and an in-sync leg stored it: the legs still writing are booked as
    /// owing it, and the returned results are settled first.
    fn ack_early(&self, st: &mut FanState) -> Option<(Done, Result<(), IoError>)> {
        st.done.as_ref()?;
        let back = |leg: usize| st.results.iter().any(|r| r.leg == leg);
        let pending: Vec<usize> = self.targets.iter().map(|&(l, _)| l).filter(|&l| !back(l)).collect();
        let legs = &self.vol.legs;
        if !st.results.iter().any(LegResult::stored) || pending.iter().any(|&l| legs[l].is_in_sync()) {
            return None;
        }
        let settled = self.vol.settle_write(&st.results[st.settled..], true, self.offset, self.len);
        st.settled = st.results.len();
        if let Err(e) = settled {
            return Some((st.done.take()?, Err(e)));
        }
        let mut owed = 0;
        for &l in &pending {
            if !legs[l].owe() {
                // The leg is (about to be) back in sync: wait for it.
                self.repay(owed);
                return None;
            }
            owed |= 1 << l;
        }
        st.owed = owed;
        Some((st.done.take()?, Ok(())))
    }

    /// Returns the bookings of [`Leg::owe`] for the legs in `owed` (a bit set).
    fn repay(&self, owed: u32) {
        self.vol.legs.iter().filter(|l| owed & (1 << l.index) != 0).for_each(|l| l.repay());
    }
}

impl Waiter for WriteFan {
    fn stored_elsewhere(&self, leg: usize) -> bool {
        self.st.lock().results.iter().any(|r| r.leg != leg && r.stored())
    }

    fn leg_demoted(&self) {
        let ack = self.ack_early(&mut self.st.lock());
        if let Some((done, r)) = ack {
            done(r);
        }
    }
}

impl Inner {
    pub(super) fn check_range(&self, offset: u64, len: u64) -> Result<(), IoError> {
        if self.shutting_down.load(Relaxed) {
            return Err(IoError::ShuttingDown);
        }
        let size = self.size();
        if offset.checked_add(len).is_none_or(|end| end > size) {
            return Err(IoError::OutOfRange { offset, len, size });
        }
        let bs = u64::from(self.cfg.block_size);
        if !offset.is_multiple_of(bs) || !len.is_multiple_of(bs) {
            return Err(IoError::Unaligned { offset, len, block_size: self.cfg.block_size });
        }
        Ok(())
    }

    // ---- writes ----

    pub(super) fn write(self: &Arc<Self>, offset: u64, buf: Arc<dyn HostWriteBuf>, done: Done) {
        self.locked_write(offset, Payload::Host(buf), done)
    }

    pub(super) fn unmap(self: &Arc<Self>, offset: u64, len: u64, done: Done) {
        let writable: Vec<_> = self.legs.iter().filter(|l| l.takes_writes()).collect();
        let all_discard = writable.iter().all(|l| l.backend().caps().discard_zeroes);
        if !all_discard && !self.cfg.unmap_zero_fill {
            // Some leg would keep its old data: do nothing anywhere rather
            // than let the legs differ. SCSI allows an unmap to be a no-op.
            return match self.check_range(offset, len) {
                Ok(()) => done(Ok(())),
                Err(e) => done(Err(e)),
            };
        }
        self.locked_write(offset, Payload::Discard { len, zero_fill: self.cfg.unmap_zero_fill }, done)
    }

    pub(super) fn write_same(
        self: &Arc<Self>,
        offset: u64,
        len: u64,
        block: Arc<dyn HostWriteBuf>,
        done: Done,
    ) {
        let bs = self.cfg.block_size as usize;
        if block.len() != bs {
            let (got, expected) = (block.len() as u64, bs as u64);
            return done(Err(IoError::BufferLength { what: "WRITE SAME's block", got, expected }));
        }
        let mut pattern = vec![0u8; bs];
        block.copy_out(0, &mut pattern);
        if pattern.iter().all(|&b| b == 0) {
            return self.locked_write(offset, Payload::Zero(len), done);
        }
        const CHUNK: u64 = 1 << 20;
        let chunk_len = CHUNK.min(len) as usize;
        let chunk: Vec<u8> = pattern.iter().copied().cycle().take(chunk_len).collect();
        self.write_same_from(offset, offset + len, Arc::new(chunk), done);
    }

    fn write_same_from(self: &Arc<Self>, at: u64, end: u64, chunk: Arc<Vec<u8>>, done: Done) {
        if at >= end {
            return done(Ok(()));
        }
        let n = (end - at).min(chunk.len() as u64) as usize;
        let piece: Arc<dyn HostWriteBuf> =
            if n == chunk.len() { chunk.clone() } else { Arc::new(chunk[..n].to_vec()) };
        let me = self.clone();
        self.locked_write(
            at,
            Payload::Host(piece),
            Box::new(move |r| match r {
                Ok(()) => me.write_same_from(at + n as u64, end, chunk, done),
                Err(e) => done(Err(e)),
            }),
        );
    }

    fn locked_write(self: &Arc<Self>, offset: u64, payload: Payload, done: Done) {
        let len = payload.len();
        if let Err(e) = self.check_range(offset, len) {
            return done(Err(e));
        }
        if len == 0 {
            return done(Ok(()));
        }
        self.note_host_io();
        let me = self.clone();
        self.locks.lock(offset, offset + len, move |guard| me.write_under(guard, offset, payload, done));
    }

    /// With the range held: make the write intent durable, then fan out.
    pub(super) fn write_under(
        self: &Arc<Self>,
        guard: RangeGuard,
        offset: u64,
        payload: Payload,
        done: Done,
    ) {
        let (first, last) = self.intent.regions(offset, payload.len());
        let me = self.clone();
        self.intent.begin(
            first,
            last,
            || self.all_in_sync(),
            Box::new(move |r| match r {
                Err(e) => {
                    me.intent.end(first, last);
                    drop(guard);
                    done(Err(IoError::Metadata(e)))
                }
                Ok(()) => me.fan_out(guard, (first, last), offset, payload, done),
            }),
        );
    }

    /// Sends the write to every leg that takes writes, in parallel.
    fn fan_out(
        self: &Arc<Self>,
        guard: RangeGuard,
        regions: (u64, u64),
        offset: u64,
        payload: Payload,
        done: Done,
    ) {
        let targets: Vec<(usize, bool)> =
            self.legs.iter().filter(|l| l.takes_writes()).map(|l| (l.index, l.is_in_sync())).collect();
        if !targets.iter().any(|&(_, in_sync)| in_sync) {
            self.intent.end(regions.0, regions.1);
            drop(guard);
            return done(Err(IoError::NoLegInSync));
        }
        // Latency priority: the write may be acknowledged while a leg still
        // writes it, so that leg must not write from the host's buffer.
        let early = self.tun().write_lag_ms > 0;
        let payload = match payload {
            Payload::Host(buf) if early => {
                let mut copy = AlignedBuf::uninit(buf.len());
                buf.copy_out(0, copy.as_mut_slice());
                Payload::Host(Arc::new(copy))
            }
            p => p,
        };
        let fan = Arc::new(WriteFan {
            vol: self.clone(),
            offset,
            len: payload.len(),
            regions,
            targets,
            early,
            st: Mutex::new(FanState {
                results: Vec::new(),
                settled: 0,
                owed: 0,
                done: Some(done),
                guard: Some(guard),
            }),
        });
        // Every leg's write goes to the kernel in one system call.
        let _plug = self.legs[fan.targets[0].0].ring().map(|r| r.plug());
        for &(leg, was_in_sync) in &fan.targets {
            let f = fan.clone();
            let waiter = early.then(|| fan.clone() as Arc<dyn Waiter>);
            self.legs[leg].submit_for(
                payload.job(&self.legs[leg], offset),
                Box::new(move |r| {
                    let result = r.map(|_| ()).or_else(|e| match e.kind() {
                        // A leg that cannot discard keeps its data: the unmap
                        // policy made that safe before the fan-out.
                        io::ErrorKind::Unsupported => Ok(()),
                        _ => Err(e),
                    });
                    f.returned(LegResult { leg, was_in_sync, result });
                }),
                waiter,
            );
        }
    }

    /// Decides a fanned-out write: it succeeded if any in-sync leg stored it
    /// (here or, `stored_before`, in results decided earlier), and then every
    /// leg that failed it is faulted (durably, before the ack). If a leg that
    /// failed it cannot be faulted because it is now the last in-sync leg
    /// (the legs that stored it left the in-sync set meanwhile: a timeout,
    /// an admin, latency priority), the write failed: the one leg that will
    /// be read does not hold it.
    fn settle_write(
        &self,
        results: &[LegResult],
        stored_before: bool,
        offset: u64,
        len: u64,
    ) -> Result<(), IoError> {
        let mut stored = stored_before || results.iter().any(LegResult::stored);
        let mut last_err = None;
        for r in results {
            let Err(e) = &r.result else { continue };
            let in_sync_now = self.legs[r.leg].is_in_sync();
            if stored || !in_sync_now {
                let errno = e.raw_os_error().unwrap_or(libc::EIO);
                let reason = if r.was_in_sync {
                    FaultReason::WriteError { errno }
                } else {
                    FaultReason::RebuildError { errno }
                };
                if self.fault_before_ack(r.leg, reason)? == Kept::LastInSync {
                    stored = false;
                }
            }
            last_err = Some(io::Error::new(e.kind(), e.to_string()));
        }
        match (stored, last_err) {
            (true, _) => Ok(()),
            (false, Some(last)) => Err(IoError::WriteFailed { offset, len, last }),
            (false, None) => Err(IoError::NoLegInSync),
        }
    }

    // ---- flush ----

    /// Flushes the legs written since their last flush. A leg whose flush
    /// fails is re-armed and faulted if another in-sync leg flushed.
    pub(super) fn flush(self: &Arc<Self>, done: Done) {
        if self.shutting_down.load(Relaxed) {
            return done(Err(IoError::ShuttingDown));
        }
        self.note_host_io();
        let targets: Vec<(usize, bool)> = self
            .legs
            .iter()
            .filter(|l| l.takes_writes() && l.needs_flush.swap(false, AcqRel))
            .map(|l| (l.index, l.is_in_sync()))
            .collect();
        if targets.is_empty() {
            return done(Ok(()));
        }
        let fan =
            Arc::new(Fan { remaining: AtomicUsize::new(targets.len()), results: Mutex::new(Vec::new()) });
        let done = Arc::new(Mutex::new(Some(done)));
        for (leg, was_in_sync) in targets {
            let (me, fan, done) = (self.clone(), fan.clone(), done.clone());
            self.legs[leg].submit(
                Job::Flush,
                Box::new(move |r| {
                    if r.is_err() {
                        me.legs[leg].needs_flush.store(true, Relaxed);
                    }
                    fan.results.lock().push(LegResult { leg, was_in_sync, result: r.map(|_| ()) });
                    if fan.remaining.fetch_sub(1, AcqRel) == 1 {
                        let results = std::mem::take(&mut *fan.results.lock());
                        let d = done.lock().take().expect("finished once");
                        d(me.settle_flush(&results));
                    }
                }),
            );
        }
    }

    /// Faults a leg that failed a host I/O. If the fault cannot be recorded
    /// in the metadata, the I/O must not be acknowledged (invariant 1). The
    /// last in-sync leg is never faulted: it stays, and the caller decides.
    fn fault_before_ack(&self, leg: usize, reason: FaultReason) -> Result<Kept, IoError> {
        match self.fault_leg(leg, reason) {
            Err(super::legstate::Refused::Metadata(m)) => Err(IoError::Metadata(m)),
            Err(super::legstate::Refused::LastInSync) => Ok(Kept::LastInSync),
            Ok(()) => Ok(Kept::Out),
        }
    }

    fn settle_flush(&self, results: &[LegResult]) -> Result<(), IoError> {
        let failed_in_sync = results.iter().filter(|r| r.was_in_sync && r.result.is_err()).count();
        let some_in_sync_ok = self.in_sync_count() > failed_in_sync;
        let mut last = None;
        for r in results {
            if let Err(e) = &r.result {
                let errno = e.raw_os_error().unwrap_or(libc::EIO);
                if some_in_sync_ok || !r.was_in_sync {
                    self.fault_before_ack(r.leg, FaultReason::FlushError { errno })?;
                }
                last = Some(io::Error::new(e.kind(), e.to_string()));
            }
        }
        match last {
            Some(e) if !some_in_sync_ok => Err(IoError::FlushFailed(e)),
            _ => Ok(()),
        }
    }
}
