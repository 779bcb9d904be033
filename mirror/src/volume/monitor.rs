//! The volume's housekeeping threads and their lifecycle: the monitor
//! (I/O deadlines, latency priority, and the tick that drives failback in
//! `legstate.rs`), the cleaner (lazy clearing of the write-intent bitmap),
//! and a clean shutdown.

use super::intent::Housekeeping;
use super::leg::Job;
use super::Inner;
use crate::event::Event;
use crate::state::{FaultReason, LegState};
use std::io;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

impl Inner {
    pub(super) fn start_threads(self: &Arc<Self>) -> io::Result<()> {
        let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new().name(format!("hm-{name}")).spawn(f)
        };
        let mut t = self.threads.lock();
        let intent = self.intent.clone();
        t.push(spawn("meta", Box::new(move || intent.run()))?);
        let me = self.clone();
        t.push(spawn("monitor", Box::new(move || me.monitor_loop()))?);
        let me = self.clone();
        t.push(spawn("cleaner", Box::new(move || me.cleaner_loop()))?);
        let me = self.clone();
        t.push(spawn("resync", Box::new(move || me.resync_loop()))?);
        Ok(())
    }

    pub(super) fn stop_threads(&self) {
        self.shutting_down.store(true, Relaxed);
        self.resync_wake.notify_all();
        self.intent.stop();
        let threads = std::mem::take(&mut *self.threads.lock());
        for t in threads {
            let _ = t.join();
        }
    }

    pub(super) fn shutdown(self: &Arc<Self>) {
        if self.shutting_down.swap(true, Relaxed) {
            return;
        }
        self.resync_wake.notify_all();
        // Wait for host I/O and resync copies to drain (bounded by the deadline).
        let until = Instant::now() + self.tun().io_timeout() * 2;
        while self.locks.held() > 0 && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
        let all_in_sync = self.all_in_sync();
        if all_in_sync && self.recovery.lock().is_none() && self.flush_all_legs() {
            let idle = self.intent.idle_extents(Duration::ZERO);
            self.intent.clear_idle(&idle);
            self.intent.clear_unheld(0, self.intent.len().saturating_sub(1));
        }
        let synced = self.intent.sync().is_ok();
        // Whatever is still queued behind a hung leg must never run: its
        // host buffers go away with the device.
        for l in &self.legs {
            l.abandon_inflight();
        }
        self.stop_threads();
        if synced {
            if let Err(e) = self.record_clean(true) {
                log::error!("{}: could not mark the metadata clean: {e}", self.cfg.name);
            }
        }
    }

    /// How often the deadlines (and, with `write_lag_ms`, the lag) are checked.
    fn tick(&self) -> Duration {
        let t = self.tun();
        let lag = match t.write_lag_ms {
            0 => Duration::MAX,
            ms => Duration::from_millis(ms) / 2,
        };
        (t.io_timeout() / 5).min(lag).clamp(Duration::from_millis(2), Duration::from_millis(100))
    }

    fn monitor_loop(self: Arc<Self>) {
        while !self.shutting_down.load(Relaxed) {
            let tick = self.tick();
            std::thread::sleep(tick);
            for leg in 0..self.legs.len() {
                self.legs[leg].unstick(tick);
                self.leave_behind_if_lagging(leg);
                self.enforce_deadline(leg);
                self.maybe_fail_back(leg);
            }
        }
    }

    /// Latency priority (`write_lag_ms`): an in-sync leg still writing that
    /// long after a write was sent, which another in-sync leg has stored,
    /// leaves the in-sync set for rebuilding. The change is recorded in the
    /// metadata before any write is acknowledged without the leg; the writes
    /// that waited only for it are then acknowledged, and the resync copies
    /// the bitmap's regions to it. Each of its late writes keeps its range
    /// and its bit until the leg returns it, so no copy overtakes one.
    fn leave_behind_if_lagging(&self, leg: usize) {
        let lag = self.tun().write_lag_ms;
        let l = &self.legs[leg];
        if lag == 0 || !l.is_in_sync() || !l.lags(Duration::from_millis(lag)) {
            return;
        }
        match self.change_state(leg, LegState::Rebuilding, |s| s.is_in_sync()) {
            Ok(()) => {
                self.emit(Event::LegLagging { leg, lag_ms: lag });
                l.nudge_waiters();
            }
            Err(e) => log::debug!("{}: leg {leg} lags but stays in sync: {e:?}", self.cfg.name),
        }
    }

    /// Faults a leg whose oldest I/O missed the deadline and completes its
    /// I/Os from the other legs. The last in-sync leg is only reported.
    fn enforce_deadline(&self, leg: usize) {
        let l = &self.legs[leg];
        let Some(oldest) = l.oldest_unresolved() else {
            self.faults.lock()[leg].warned_slow = false;
            return;
        };
        let age = oldest.elapsed();
        if age < self.tun().io_timeout() {
            return;
        }
        if !l.takes_writes() {
            // A probe on a leg already out: just let its caller go.
            l.abandon_inflight();
            return;
        }
        if l.is_in_sync() && self.in_sync_count() == 1 {
            // The last in-sync leg is never failed for slowness: wait.
            if age >= Duration::from_millis(self.tun().last_leg_grace_ms)
                && !std::mem::replace(&mut self.faults.lock()[leg].warned_slow, true)
            {
                self.emit(Event::LastLegSlow { leg, waited_ms: age.as_millis() as u64 });
            }
            return;
        }
        l.stats.timeouts.fetch_add(1, Relaxed);
        let ms = self.tun().io_timeout_ms;
        match self.fault_leg(leg, FaultReason::Timeout { ms }) {
            Ok(()) => l.abandon_inflight(),
            Err(e) => log::warn!("{}: leg {leg} timed out but stays: {e:?}", self.cfg.name),
        }
    }

    /// Flushes every leg that needs it; false if any in-sync leg failed.
    pub(super) fn flush_all_legs(&self) -> bool {
        let mut ok = true;
        for l in &self.legs {
            if !l.takes_writes() || !l.needs_flush.swap(false, Relaxed) {
                continue;
            }
            if let Err(e) = self.leg_io_wait(l.index, Job::Flush) {
                l.needs_flush.store(true, Relaxed);
                ok = false;
                let errno = e.raw_os_error().unwrap_or(libc::EIO);
                let _ = self.fault_leg(l.index, FaultReason::FlushError { errno });
            }
        }
        ok
    }

    /// Whether bits may be cleared: every leg in sync (none can lack the
    /// regions) and no crash recovery or new capacity copy under way.
    pub(super) fn may_clear(&self) -> bool {
        self.all_in_sync() && self.recovery.lock().is_none()
    }

    /// Clears the bits of idle extents, after flushing the legs, while every leg
    /// is in sync and nothing is being resynced.
    fn cleaner_loop(self: Arc<Self>) {
        while !self.shutting_down.load(Relaxed) {
            let delay = Duration::from_millis(self.tun().bitmap_clear_delay_ms);
            std::thread::sleep((delay / 2).clamp(Duration::from_millis(10), Duration::from_secs(1)));
            if !self.may_clear() {
                continue;
            }
            let idle = self.intent.idle_extents(delay);
            // A leg that left during the flush may lack what it held.
            if idle.is_empty() || !self.flush_all_legs() || !self.may_clear() {
                continue;
            }
            self.intent.clear_idle(&idle);
        }
    }
}

/// The volume's side of clearing bits to make room in the activity log.
pub(super) struct Clearing(pub Weak<Inner>);

impl Housekeeping for Clearing {
    fn may_clear(&self) -> bool {
        self.0.upgrade().is_some_and(|v| v.may_clear())
    }

    /// Legs that write `O_DSYNC` (`write_cache = false`) hold every write
    /// that completed: nothing to flush.
    fn flush_for_clear(&self) -> bool {
        self.0
            .upgrade()
            .is_some_and(|v| v.may_clear() && (!v.cfg.write_cache || v.flush_all_legs()) && v.may_clear())
    }
}
