//! A mirrored volume: the public handle and the state its threads share.
//!
//! Host I/O enters through [`Volume`]'s asynchronous methods (`read.rs`,
//! `write.rs`), which never block the caller; leg I/O runs on each leg's
//! threads (`leg.rs`). Four more threads per volume: the metadata writer
//! (`intent.rs`), the monitor that enforces deadlines and brings legs back
//! (`monitor.rs`), the cleaner that clears idle bitmap regions
//! (`monitor.rs`), and the resync worker (`resync.rs`). Every leg state
//! change and every metadata header write goes through `legstate.rs`.

mod admin;
mod caw;
mod intent;
mod jobqueue;
mod leg;
mod legstate;
mod monitor;
mod open;
mod preflight;
mod rangelock;
mod read;
mod resize;
mod resync;
mod retune;
mod status;
mod verify;
mod write;

pub use admin::AdminError;
pub use preflight::preflight;
pub use resize::ResizeError;
pub use retune::RetuneError;
pub use status::{ActivityStatus, LegStatus, ResyncStatus, VolumeStatus};
pub use verify::{VerifyError, VerifyStatus};

use crate::buf::{HostReadBuf, HostWriteBuf};
use crate::config::VolumeConfig;
use crate::error::{IoError, OpenError};
use crate::event::{Event, Stamped};
use crate::meta::Header;
use intent::Intent;
use leg::Leg;
use parking_lot::{Condvar, Mutex};
use rangelock::RangeLock;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

/// Called exactly once per host I/O, from any thread (possibly inline).
pub type Done = Box<dyn FnOnce(Result<(), IoError>) + Send>;
/// Receives every [`Event`] as it happens (the handler logs them).
pub type EventSink = Arc<dyn Fn(&Event) + Send + Sync>;
/// Puts something in front of leg `i`'s storage.
pub(crate) type WrapLeg =
    Arc<dyn Fn(usize, Box<dyn crate::backend::Backend>) -> Box<dyn crate::backend::Backend> + Send + Sync>;

const EVENT_HISTORY: usize = 256;
/// `last_host_io_ms` before the host's first I/O: the host counts as idle.
const NO_HOST_IO_YET: u64 = u64::MAX;

/// A handle to an open volume. Cheap to clone; [`Volume::shutdown`] stops it.
#[derive(Clone)]
pub struct Volume {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    cfg: VolumeConfig,
    /// The volume's size now (`cfg.size` is the size it opened with).
    size: AtomicU64,
    /// The settings that can change while the volume runs (`cfg` holds the
    /// ones it opened with).
    tun: parking_lot::RwLock<crate::config::Tunables>,
    /// The I/O engine in use (`io_engine=auto` resolved).
    io_engine: crate::config::IoEngine,
    legs: Vec<Arc<Leg>>,
    locks: Arc<RangeLock>,
    intent: Arc<Intent>,
    /// The metadata header; its lock also serialises leg state changes.
    header: Mutex<Header>,
    events: Mutex<VecDeque<Stamped>>,
    sink: EventSink,
    shutting_down: AtomicBool,
    started: Instant,
    /// Milliseconds since `started` of the last host I/O (resync yields to it).
    last_host_io_ms: AtomicU64,
    recovery: Mutex<Option<Recovery>>,
    resync: Mutex<resync::Progress>,
    resync_wake: Condvar,
    /// Bytes copied by every resync since open (status, tests, benchmarks).
    resync_bytes: AtomicU64,
    verify: Mutex<verify::VerifyStatus>,
    faults: Mutex<Vec<legstate::FaultHistory>>,
    /// Wraps each leg's storage as it is opened, and again when it is
    /// reopened (only the `fault-injection` feature's faulty legs do).
    wrap: Option<WrapLeg>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

/// Crash recovery (or new capacity) in progress: regions at or past
/// `cursor` whose bits are set may differ between legs and are read from
/// `source` only.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Recovery {
    source: usize,
    cursor: u64,
    kind: crate::event::ResyncKind,
}

impl Volume {
    /// Opens (or, with no metadata yet, creates) the volume described by `cfg`.
    pub fn open(cfg: VolumeConfig, sink: EventSink) -> Result<Volume, OpenError> {
        open::open(cfg, sink, None).map(|inner| Volume { inner })
    }

    /// Like [`open`](Self::open), with every leg's storage wrapped by `wrap`.
    #[cfg(feature = "fault-injection")]
    pub(crate) fn open_wrapped(
        cfg: VolumeConfig,
        sink: EventSink,
        wrap: WrapLeg,
    ) -> Result<Volume, OpenError> {
        open::open(cfg, sink, Some(wrap)).map(|inner| Volume { inner })
    }

    /// The configuration in force: as opened, with the current size and
    /// tunables.
    pub fn config(&self) -> VolumeConfig {
        let cfg = VolumeConfig { size: self.size(), ..self.inner.cfg.clone() };
        cfg.with_tunables(self.inner.tun())
    }

    /// The size now: the configured size, or what a [`grow`](Self::grow) made it.
    pub fn size(&self) -> u64 {
        self.inner.size()
    }

    pub fn read(&self, offset: u64, buf: Box<dyn HostReadBuf>, done: Done) {
        self.inner.read(offset, buf, done)
    }

    pub fn write(&self, offset: u64, buf: Arc<dyn HostWriteBuf>, done: Done) {
        self.inner.write(offset, buf, done)
    }

    pub fn flush(&self, done: Done) {
        self.inner.flush(done)
    }

    pub fn unmap(&self, offset: u64, len: u64, done: Done) {
        self.inner.unmap(offset, len, done)
    }

    /// Writes `len` bytes at `offset`, repeating the one-block `block`.
    pub fn write_same(&self, offset: u64, len: u64, block: Arc<dyn HostWriteBuf>, done: Done) {
        self.inner.write_same(offset, len, block, done)
    }

    /// Atomically: if the data at `offset` equals `compare`, writes `data`
    /// there; otherwise fails with [`IoError::Miscompare`] and writes nothing.
    pub fn compare_and_write(
        &self,
        offset: u64,
        compare: Arc<dyn HostWriteBuf>,
        data: Arc<dyn HostWriteBuf>,
        done: Done,
    ) {
        self.inner.compare_and_write(offset, compare, data, done)
    }

    /// Whether an unmap makes the range read back as zeroes on every leg
    /// (every leg discards to zeroes, or `unmap_zero_fill` is on). When not,
    /// unmap is a no-op, and the host should not be offered it.
    pub fn unmap_zeroes(&self) -> bool {
        self.inner.cfg.unmap_zero_fill || self.inner.legs.iter().all(|l| l.backend().caps().discard_zeroes)
    }

    pub fn status(&self) -> VolumeStatus {
        self.inner.status()
    }

    /// The most recent events, oldest first.
    pub fn events(&self) -> Vec<Stamped> {
        self.inner.events.lock().iter().cloned().collect()
    }

    /// Bytes copied by resyncs since the volume was opened.
    pub fn resync_bytes(&self) -> u64 {
        self.inner.resync_bytes.load(Ordering::Relaxed)
    }

    /// Blocks until no resync or crash recovery is pending (or `timeout`).
    pub fn wait_resync_idle(&self, timeout: std::time::Duration) -> bool {
        self.inner.wait_resync_idle(timeout)
    }

    /// Stops cleanly: waits for host I/O to drain, flushes the legs, clears
    /// the bitmap where every leg is in sync and marks the metadata clean.
    /// The legs and metadata files stay locked until the last handle is
    /// dropped: whoever holds a clone (the control server) must drop it.
    pub fn shutdown(&self) {
        self.inner.shutdown()
    }

    /// Stops the threads without cleaning up, as a crash would (tests).
    pub fn abandon(&self) {
        self.inner.stop_threads();
    }

    pub(crate) fn inner(&self) -> &Arc<Inner> {
        &self.inner
    }
}

impl Inner {
    fn emit(&self, event: Event) {
        (self.sink)(&event);
        let mut ev = self.events.lock();
        if ev.len() == EVENT_HISTORY {
            ev.pop_front();
        }
        ev.push_back(Stamped::now(event));
    }

    fn note_host_io(&self) {
        let ms = self.started.elapsed().as_millis() as u64;
        self.last_host_io_ms.store(ms, Ordering::Relaxed);
    }

    fn host_idle_for_ms(&self) -> u64 {
        let last = self.last_host_io_ms.load(Ordering::Relaxed);
        if last == NO_HOST_IO_YET {
            return u64::MAX;
        }
        let now = self.started.elapsed().as_millis() as u64;
        now.saturating_sub(last)
    }

    fn in_sync_count(&self) -> usize {
        self.legs.iter().filter(|l| l.is_in_sync()).count()
    }

    fn all_in_sync(&self) -> bool {
        self.legs.iter().all(|l| l.is_in_sync())
    }

    /// Runs one leg I/O and waits for it (monitor, cleaner and resync threads
    /// only; the deadline applies, so this returns within it).
    fn leg_io_wait(&self, leg: usize, job: leg::Job) -> std::io::Result<leg::LegOut> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.legs[leg].submit(job, Box::new(move |r| drop(tx.send(r))));
        let t = self.tun();
        let limit = t.io_timeout()
            + std::time::Duration::from_millis(t.last_leg_grace_ms)
            + std::time::Duration::from_secs(1);
        match rx.recv_timeout(limit) {
            Ok(r) => r,
            Err(_) => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "leg I/O timed out")),
        }
    }
}
