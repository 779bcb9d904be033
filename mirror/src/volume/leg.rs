//! A leg at run time: its backend, state, I/O threads and in-flight tickets.
//!
//! Every leg I/O carries a [`Ticket`]. Whoever resolves it first wins: the
//! worker when the I/O returns, or the deadline monitor when it does not. A
//! result that arrives after the monitor resolved the ticket is dropped (a
//! "zombie"). The ticket stays in `inflight` until the I/O really returns, so
//! a faulted leg with zombies is not brought back (and no region is resynced
//! onto it) until the kernel has let go of every old I/O: a late write can
//! then never land on a region that was already resynced.

use crate::backend::Backend;
use crate::buf::{AlignedBuf, HostWriteBuf};
use crate::state::LegState;
use parking_lot::{Condvar, Mutex, RwLock};
use std::collections::{HashMap, VecDeque};
use std::io::{self, IoSlice};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

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
}

pub(crate) struct Ticket {
    pub started: Instant,
    resolved: AtomicBool,
    done: Mutex<Option<LegDone>>,
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
    pub needs_flush: AtomicBool,
    /// Read errors since the leg was last brought in (the error budget).
    pub read_errors_budget_used: AtomicU64,
    /// Where the last read on this leg ended, to keep sequential streams here.
    pub last_read_end: AtomicU64,
    pub stats: LegStats,
    queue: Arc<JobQueue>,
    inflight: Mutex<HashMap<u64, Arc<Ticket>>>,
    next_id: AtomicU64,
}

impl Leg {
    pub fn new(
        index: usize,
        backend: Arc<dyn Backend>,
        state: LegState,
        threads: usize,
    ) -> io::Result<Arc<Leg>> {
        let queue = Arc::new(JobQueue::default());
        let leg = Arc::new(Leg {
            index,
            path: backend.name().to_owned(),
            backend: RwLock::new(backend),
            state: RwLock::new(state),
            needs_flush: AtomicBool::new(false),
            read_errors_budget_used: AtomicU64::new(0),
            last_read_end: AtomicU64::new(u64::MAX),
            stats: LegStats::default(),
            queue: queue.clone(),
            inflight: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
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
        let id = self.next_id.fetch_add(1, Relaxed);
        let ticket = Arc::new(Ticket {
            started: Instant::now(),
            resolved: AtomicBool::new(false),
            done: Mutex::new(Some(done)),
        });
        if job.is_write() {
            self.needs_flush.store(true, Relaxed);
        }
        self.inflight.lock().insert(id, ticket.clone());
        self.queue.push((id, ticket, job));
    }

    /// I/Os submitted and not yet returned by the kernel (including zombies).
    pub fn inflight(&self) -> usize {
        self.inflight.lock().len()
    }

    /// The age of the oldest unresolved I/O.
    pub fn oldest_unresolved(&self) -> Option<Instant> {
        self.inflight.lock().values().filter(|t| !t.resolved.load(Relaxed)).map(|t| t.started).min()
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
                self.count(&self.stats.reads, &self.stats.read_bytes, len);
                Ok(LegOut::Data(buf))
            }
            Job::Write { offset, buf } => {
                b.write_vectored_at(&buf.slices(), offset)?;
                self.count(&self.stats.writes, &self.stats.write_bytes, buf.len());
                Ok(LegOut::Done)
            }
            Job::WriteOwned { offset, data } => {
                b.write_vectored_at(&[IoSlice::new(data.as_slice())], offset)?;
                self.count(&self.stats.writes, &self.stats.write_bytes, data.len());
                Ok(LegOut::Done)
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

/// A leg's job queue. Workers park on a condition variable at once: spinning
/// or yielding idle workers (as channel receivers do) steal the CPU from the
/// ones doing I/O when dozens of them share a few cores.
#[derive(Default)]
struct JobQueue {
    jobs: Mutex<(VecDeque<Queued>, bool)>,
    ready: Condvar,
}

impl JobQueue {
    fn push(&self, q: Queued) {
        self.jobs.lock().0.push_back(q);
        self.ready.notify_one();
    }

    /// The next job; `None` once the leg is gone.
    fn pop(&self) -> Option<Queued> {
        let mut j = self.jobs.lock();
        loop {
            if let Some(q) = j.0.pop_front() {
                return Some(q);
            }
            if j.1 {
                return None;
            }
            self.ready.wait(&mut j);
        }
    }

    fn close(&self) {
        self.jobs.lock().1 = true;
        self.ready.notify_all();
    }
}

impl Drop for Leg {
    fn drop(&mut self) {
        self.queue.close();
    }
}

fn worker(leg: std::sync::Weak<Leg>, queue: &JobQueue) {
    while let Some((id, ticket, job)) = queue.pop() {
        let Some(leg) = leg.upgrade() else { return };
        if ticket.resolved.load(std::sync::atomic::Ordering::Acquire) {
            // Given up on (timed out or abandoned) before it started: its
            // host command may be complete and its buffer reused or unmapped,
            // so it must not touch it.
            leg.inflight.lock().remove(&id);
            continue;
        }
        let was_write = job.is_write();
        let result = leg.run(job);
        let us = ticket.started.elapsed().as_micros() as u64;
        leg.stats.latency_us_total.fetch_add(us, Relaxed);
        leg.stats.latency_samples.fetch_add(1, Relaxed);
        if result.is_err() {
            let c = if was_write { &leg.stats.write_errors } else { &leg.stats.read_errors };
            c.fetch_add(1, Relaxed);
        }
        if was_write && result.is_err() {
            // A failed write leaves the leg's cache state unknown.
            leg.needs_flush.store(true, Relaxed);
        }
        leg.inflight.lock().remove(&id);
        ticket.resolve(result);
    }
}
