//! A leg at run time: its backend, state, I/O threads and in-flight tickets.
//!
//! Every leg I/O carries a [`Ticket`]. Whoever resolves it first wins: the
//! worker when the I/O returns, or the deadline monitor when it does not. A
//! result that arrives after the monitor resolved the ticket is dropped (a
//! "zombie"). The ticket stays in `inflight` until the I/O really returns, so
//! a faulted leg with zombies is not brought back (and no region is resynced
//! onto it) until the kernel has let go of every old I/O: a late write can
//! then never land on a region that was already resynced.

use super::jobqueue::{JobQueue, Lane};
use crate::backend::{Backend, Op};
use crate::buf::{slices_aligned, AlignedBuf, HostWriteBuf};
use crate::state::LegState;
use parking_lot::{Condvar, Mutex, RwLock};
use std::collections::HashMap;
use std::io::{self, IoSlice};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use uring::Ring;

/// What a finished leg I/O hands back.
pub(crate) enum LegOut {
    Done,
    Data(AlignedBuf),
}

pub(crate) type LegDone = Box<dyn FnOnce(io::Result<LegOut>) + Send>;

/// One I/O for a leg.
pub(crate) enum Job {
    Read { offset: u64, len: usize },
    Write { offset: u64, buf: Arc<dyn HostWriteBuf> },
    WriteOwned { offset: u64, data: AlignedBuf },
    Flush,
    Discard { offset: u64, len: u64 },
    Zero { offset: u64, len: u64 },
}

impl Job {
    fn is_write(&self) -> bool {
        matches!(self, Job::Write { .. } | Job::WriteOwned { .. } | Job::Discard { .. } | Job::Zero { .. })
    }

    /// What a backend is asked before the job goes to the ring, if it can.
    fn async_op(&self) -> Option<(Op, u64, u64)> {
        Some(match self {
            Job::Read { offset, len } => (Op::Read, *offset, *len as u64),
            Job::Write { offset, buf } => (Op::Write, *offset, buf.len() as u64),
            Job::WriteOwned { offset, data } => (Op::Write, *offset, data.len() as u64),
            Job::Flush => (Op::Flush, 0, 0),
            // fallocate and BLKZEROOUT stay on the leg's threads.
            Job::Discard { .. } | Job::Zero { .. } => return None,
        })
    }
}

/// The statistics a finished job adds to.
#[derive(Clone, Copy)]
enum Counted {
    Read(usize),
    Write(usize),
    /// Flush, discard, write-zeroes: only errors and latency.
    Other {
        write: bool,
    },
}

impl Counted {
    fn of(job: &Job) -> Counted {
        match job {
            Job::Read { len, .. } => Counted::Read(*len),
            Job::Write { buf, .. } => Counted::Write(buf.len()),
            Job::WriteOwned { data, .. } => Counted::Write(data.len()),
            j => Counted::Other { write: j.is_write() },
        }
    }

    fn is_write(self) -> bool {
        matches!(self, Counted::Write(_) | Counted::Other { write: true })
    }
}

/// A host write waiting on several legs, as the monitor sees it when a leg
/// lags behind the others (`write_lag_ms`; see `write.rs`).
pub(crate) trait Waiter: Send + Sync {
    /// Whether a leg other than `leg` that was in sync has stored the write.
    fn stored_elsewhere(&self, leg: usize) -> bool;
    /// A leg the write waits for left the in-sync set: acknowledge the write
    /// if it no longer waits for any in-sync leg.
    fn leg_demoted(&self);
}

pub(crate) struct Ticket {
    pub started: Instant,
    resolved: AtomicBool,
    done: Mutex<Option<LegDone>>,
    waiter: Option<Arc<dyn Waiter>>,
}

impl Ticket {
    /// Delivers `r` unless someone already did; returns whether it was delivered.
    pub fn resolve(&self, r: io::Result<LegOut>) -> bool {
        if self.resolved.swap(true, std::sync::atomic::Ordering::AcqRel) {
            return false;
        }
        if let Some(done) = self.done.lock().take() {
            done(r);
        }
        true
    }
}

/// Counters shown by `hamirrorctl status` and `metrics`.
#[derive(Default)]
pub(crate) struct LegStats {
    pub reads: AtomicU64,
    pub writes: AtomicU64,
    pub read_bytes: AtomicU64,
    pub write_bytes: AtomicU64,
    pub read_errors: AtomicU64,
    pub write_errors: AtomicU64,
    pub timeouts: AtomicU64,
    pub latency_us_total: AtomicU64,
    pub latency_samples: AtomicU64,
}

pub(crate) struct Leg {
    pub index: usize,
    pub path: String,
    backend: RwLock<Arc<dyn Backend>>,
    pub state: RwLock<LegState>,
    /// Counts the leg's state changes (made under the header lock). A
    /// rebuild belongs to the count it started at: had the leg failed and
    /// come back meanwhile, writes it missed lie behind the rebuild's cursor.
    pub state_changes: AtomicU64,
    pub needs_flush: AtomicBool,
    /// Read errors since the leg was last brought in (the error budget).
    pub read_errors_budget_used: AtomicU64,
    /// Where the last read on this leg ended, to keep sequential streams here.
    pub last_read_end: AtomicU64,
    pub stats: LegStats,
    queue: Arc<JobQueue<Queued>>,
    /// The volume's io_uring, if it uses one; jobs it cannot take (and all
    /// jobs without it) go to the leg's threads.
    ring: Option<Arc<Ring>>,
    /// Whether buffered I/O goes to the ring too (`io_engine=io_uring`), or
    /// only `O_DIRECT` I/O (`auto`; see [`Leg::start_async`]).
    ring_buffered: bool,
    me: Weak<Leg>,
    inflight: Mutex<HashMap<u64, Arc<Ticket>>>,
    next_id: AtomicU64,
    /// Writes acknowledged without this leg that it has not returned yet.
    owed: Mutex<Owed>,
    repaid: Condvar,
}

/// The acknowledged writes a leg still owes (latency priority). While it
/// owes any, it must not rejoin the in-sync set: a read could then miss a
/// write the host was told is done, and after a crash the leg could become
/// the resync source.
#[derive(Default)]
struct Owed {
    writes: usize,
    /// A rebuild is about to put the leg back in sync: no write may be
    /// acknowledged without it until then.
    closing: bool,
}

impl Leg {
    pub fn new(
        index: usize,
        backend: Arc<dyn Backend>,
        state: LegState,
        threads: usize,
        ring: Option<Arc<Ring>>,
        ring_buffered: bool,
    ) -> io::Result<Arc<Leg>> {
        let queue = Arc::new(JobQueue::default());
        let leg = Arc::new_cyclic(|me| Leg {
            index,
            path: backend.name().to_owned(),
            backend: RwLock::new(backend),
            state: RwLock::new(state),
            state_changes: AtomicU64::new(0),
            needs_flush: AtomicBool::new(false),
            read_errors_budget_used: AtomicU64::new(0),
            last_read_end: AtomicU64::new(u64::MAX),
            stats: LegStats::default(),
            queue: queue.clone(),
            ring,
            ring_buffered,
            me: me.clone(),
            inflight: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            owed: Mutex::new(Owed::default()),
            repaid: Condvar::new(),
        });
        for t in 0..threads {
            let (leg, queue) = (Arc::downgrade(&leg), queue.clone());
            std::thread::Builder::new()
                .name(format!("hm-leg{index}-{t}"))
                .spawn(move || worker(leg, &queue))?;
        }
        Ok(leg)
    }

    /// Queues `job`; `done` gets its result, or a timeout from the monitor.
    pub fn submit(&self, job: Job, done: LegDone) {
        self.submit_for(job, done, None)
    }

    /// Like [`submit`](Self::submit), for a host write that may be
    /// acknowledged without this leg when it lags (`waiter`).
    pub fn submit_for(&self, job: Job, done: LegDone, waiter: Option<Arc<dyn Waiter>>) {
        let id = self.next_id.fetch_add(1, Relaxed);
        let ticket = Arc::new(Ticket {
            started: Instant::now(),
            resolved: AtomicBool::new(false),
            done: Mutex::new(Some(done)),
            waiter,
        });
        if job.is_write() {
            self.needs_flush.store(true, Relaxed);
        }
        self.inflight.lock().insert(id, ticket.clone());
        let job = match &self.ring {
            Some(ring) => match self.start_async(ring, id, &ticket, job) {
                Some(job) => job,
                None => return,
            },
            None => job,
        };
        let backend = self.backend();
        let lane = if job.is_write() && backend.writes_one_at_a_time() { Lane::Single } else { Lane::Any };
        self.queue.push((id, ticket, job), backend.alignment() <= 1, lane);
    }

    /// Lets jobs that have waited `longer_than` behind a slow one on the
    /// leg's threads go to threads of their own (see [`JobQueue`]).
    pub fn unstick(&self, longer_than: Duration) {
        self.queue.unstick(longer_than);
    }

    /// Hands `job` to the ring, or gives it back when the backend or the
    /// buffer's alignment keeps it on the blocking path.
    ///
    /// Under `auto`, only `O_DIRECT` legs (alignment above 1) use the ring:
    /// the kernel does their I/O with no thread. Buffered I/O gains nothing
    /// there: the kernel hands each buffered write to its own worker
    /// threads, one file at a time, and copies page-cache reads on the
    /// submitting thread, so a leg's large I/Os no longer run in parallel
    /// (1 MiB sequential writes and reads at QD32 dropped to 0.5–0.7 of the
    /// threads path in the engine bench).
    fn start_async(&self, ring: &Ring, id: u64, ticket: &Arc<Ticket>, job: Job) -> Option<Job> {
        let Some((op, offset, len)) = job.async_op() else { return Some(job) };
        let backend = self.backend();
        let align = backend.alignment();
        if align <= 1 && !self.ring_buffered {
            return Some(job);
        }
        if op == Op::Read && !(len as usize).is_multiple_of(align) {
            return Some(job);
        }
        let Some(file) = backend.async_file(op, offset, len) else { return Some(job) };
        let counted = Counted::of(&job);
        let (me, ticket) = (self.me.clone(), ticket.clone());
        let finish = move |r: io::Result<LegOut>| {
            if let Some(leg) = me.upgrade() {
                leg.finish(id, &ticket, counted, r);
            }
        };
        match job {
            Job::Read { offset, len } => {
                let buf = AlignedBuf::uninit(len);
                ring.read(file, offset, buf, move |buf, r| finish(r.map(|()| LegOut::Data(buf))));
            }
            Job::Write { offset, buf } if slices_aligned(&buf.slices(), align) => {
                ring.write(file, offset, buf, move |r| finish(r.map(|()| LegOut::Done)));
            }
            Job::Write { offset, buf } => {
                let mut bounce = AlignedBuf::uninit(buf.len());
                buf.copy_out(0, bounce.as_mut_slice());
                ring.write(file, offset, Arc::new(bounce), move |r| finish(r.map(|()| LegOut::Done)));
            }
            Job::WriteOwned { offset, data } => {
                ring.write(file, offset, Arc::new(data), move |r| finish(r.map(|()| LegOut::Done)));
            }
            Job::Flush => ring.sync_data(file, move |r| finish(r.map(|()| LegOut::Done))),
            Job::Discard { .. } | Job::Zero { .. } => unreachable!("async_op refuses them"),
        }
        None
    }

    /// Books a returned I/O and hands its result to whoever still waits.
    fn finish(&self, id: u64, ticket: &Ticket, counted: Counted, result: io::Result<LegOut>) {
        let us = ticket.started.elapsed().as_micros() as u64;
        self.stats.latency_us_total.fetch_add(us, Relaxed);
        self.stats.latency_samples.fetch_add(1, Relaxed);
        if counted.is_write() {
            // Armed again as the write returns, before anyone is told: a
            // flush that began while it was in flight may not cover it, and
            // took the flag the submission set (see `Inner::flush`).
            self.needs_flush.store(true, SeqCst);
        }
        match (&result, counted) {
            (Ok(_), Counted::Read(n)) => self.count(&self.stats.reads, &self.stats.read_bytes, n),
            (Ok(_), Counted::Write(n)) => self.count(&self.stats.writes, &self.stats.write_bytes, n),
            (Ok(_), Counted::Other { .. }) => {}
            (Err(_), c) if c.is_write() => {
                self.stats.write_errors.fetch_add(1, Relaxed);
            }
            (Err(_), _) => {
                self.stats.read_errors.fetch_add(1, Relaxed);
            }
        }
        self.inflight.lock().remove(&id);
        ticket.resolve(result);
    }

    /// The ring this leg submits to, if any (see [`uring::Ring::plug`]).
    pub fn ring(&self) -> Option<&Arc<Ring>> {
        self.ring.as_ref()
    }

    /// I/Os submitted and not yet returned by the kernel (including zombies).
    pub fn inflight(&self) -> usize {
        self.inflight.lock().len()
    }

    /// The age of the oldest unresolved I/O.
    pub fn oldest_unresolved(&self) -> Option<Instant> {
        self.inflight.lock().values().filter(|t| !t.resolved.load(Relaxed)).map(|t| t.started).min()
    }

    /// Whether a host write has waited `lag` or longer on this leg although
    /// another in-sync leg has stored it.
    pub fn lags(&self, lag: Duration) -> bool {
        let waiting: Vec<Arc<dyn Waiter>> = self
            .inflight
            .lock()
            .values()
            .filter(|t| !t.resolved.load(Relaxed) && t.started.elapsed() >= lag)
            .filter_map(|t| t.waiter.clone())
            .collect();
        waiting.iter().any(|w| w.stored_elsewhere(self.index))
    }

    /// Tells the host writes waiting on this leg that it left the in-sync set.
    pub fn nudge_waiters(&self) {
        let waiting: Vec<Arc<dyn Waiter>> =
            self.inflight.lock().values().filter_map(|t| t.waiter.clone()).collect();
        for w in waiting {
            w.leg_demoted();
        }
    }

    /// Books a write acknowledged without this leg. Refused while the leg is
    /// in sync or about to be ([`Leg::when_caught_up`]): the write must then
    /// wait for it.
    pub fn owe(&self) -> bool {
        let mut o = self.owed.lock();
        if o.closing || self.is_in_sync() {
            return false;
        }
        o.writes += 1;
        true
    }

    /// Returns the booking of [`Leg::owe`]: the leg has returned the write.
    pub fn repay(&self) {
        let mut o = self.owed.lock();
        o.writes -= 1;
        if o.writes == 0 {
            self.repaid.notify_all();
        }
    }

    /// Runs `promote` (the change back to in sync) once the leg owes no
    /// acknowledged write, holding off new ones meanwhile; gives up when
    /// `keep_waiting` turns false. Every owed write ends by the I/O deadline.
    pub fn when_caught_up<R>(
        &self,
        keep_waiting: impl Fn() -> bool,
        promote: impl FnOnce() -> R,
    ) -> Option<R> {
        let mut o = self.owed.lock();
        o.closing = true;
        while o.writes > 0 {
            if !keep_waiting() {
                o.closing = false;
                return None;
            }
            self.repaid.wait_for(&mut o, Duration::from_millis(20));
        }
        let r = promote();
        o.closing = false;
        Some(r)
    }

    /// Resolves every unresolved I/O with `TimedOut` (after the leg was faulted).
    pub fn abandon_inflight(&self) {
        let tickets: Vec<_> = self.inflight.lock().values().cloned().collect();
        for t in tickets {
            t.resolve(Err(io::Error::new(io::ErrorKind::TimedOut, "leg I/O timed out")));
        }
    }

    /// The leg's storage (replaced when a detached leg is reopened).
    pub fn backend(&self) -> Arc<dyn Backend> {
        self.backend.read().clone()
    }

    /// Puts the reopened storage in place. Only for a leg that is out of
    /// service with no I/O in flight.
    pub fn set_backend(&self, b: Arc<dyn Backend>) {
        *self.backend.write() = b;
    }

    pub fn state(&self) -> LegState {
        self.state.read().clone()
    }

    pub fn is_in_sync(&self) -> bool {
        self.state.read().is_in_sync()
    }

    pub fn takes_writes(&self) -> bool {
        self.state.read().takes_writes()
    }

    fn run(&self, job: Job) -> io::Result<LegOut> {
        let backend = self.backend();
        let b = &*backend;
        match job {
            Job::Read { offset, len } => {
                let mut buf = AlignedBuf::uninit(len);
                b.read_at(buf.as_mut_slice(), offset)?;
                Ok(LegOut::Data(buf))
            }
            Job::Write { offset, buf } => b.write_vectored_at(&buf.slices(), offset).map(|_| LegOut::Done),
            Job::WriteOwned { offset, data } => {
                b.write_vectored_at(&[IoSlice::new(data.as_slice())], offset).map(|_| LegOut::Done)
            }
            Job::Flush => b.flush().map(|_| LegOut::Done),
            Job::Discard { offset, len } => b.discard(offset, len).map(|_| LegOut::Done),
            Job::Zero { offset, len } => b.write_zeroes(offset, len).map(|_| LegOut::Done),
        }
    }

    fn count(&self, ops: &AtomicU64, bytes: &AtomicU64, n: usize) {
        ops.fetch_add(1, Relaxed);
        bytes.fetch_add(n as u64, Relaxed);
    }
}

type Queued = (u64, Arc<Ticket>, Job);

impl Drop for Leg {
    fn drop(&mut self) {
        self.queue.close();
    }
}

fn worker(leg: std::sync::Weak<Leg>, queue: &JobQueue<Queued>) {
    queue.join();
    while let Some(((id, ticket, job), turn)) = queue.pop() {
        let Some(leg) = leg.upgrade() else { return };
        if ticket.resolved.load(std::sync::atomic::Ordering::Acquire) {
            // Given up on (timed out or abandoned) before it started: its
            // host command may be complete and its buffer reused or unmapped,
            // so it must not touch it.
            leg.inflight.lock().remove(&id);
            continue;
        }
        let counted = Counted::of(&job);
        let started = Instant::now();
        let result = leg.run(job);
        turn.served(started.elapsed());
        leg.finish(id, &ticket, counted, result);
    }
}
