//! Leg state, in one place: every change of a leg's state, the policy that
//! decides it (the last in-sync leg stays, flapping legs wait for the
//! administrator, failback backs off), and its record in the metadata.
//!
//! Every change passes through [`Inner::change_state_as`], and every write
//! of the metadata header through [`Inner::update_header`], under the header
//! lock. A change is durable before anyone relies on it: a write that
//! faulted a leg is acknowledged only after the fault is recorded, so a
//! crash can never make the stale leg a resync source (invariant 1).

use super::leg::{Job, LegOut};
use super::Inner;
use crate::event::Event;
use crate::meta::{Header, MetaError, RecordedState};
use crate::state::{FaultReason, LegState};
use parking_lot::MutexGuard;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Why a state change was not made.
#[derive(Debug)]
pub(crate) enum Refused {
    /// The leg is the last one in sync; it stays.
    LastInSync,
    /// The change could not be recorded in any metadata copy.
    Metadata(Arc<MetaError>),
}

/// Recent faults of one leg: flap detection and the failback back-off.
#[derive(Clone, Default)]
pub(crate) struct FaultHistory {
    faults: Vec<Instant>,
    retry_at: Option<Instant>,
    /// The leg was reported slow as the last in-sync leg (once per stall).
    pub(super) warned_slow: bool,
}

/// The failback back-off doubles with each recent fault, up to this many
/// doublings (`failback_delay_ms` × 128).
const MAX_BACKOFF_DOUBLINGS: u32 = 7;

/// How long a leg with `faults` recent faults waits before it is tried
/// again: `delay`, doubled for each fault after the first.
fn backoff(delay: Duration, faults: usize) -> Duration {
    let doublings = (faults.max(1) as u32 - 1).min(MAX_BACKOFF_DOUBLINGS);
    delay * (1 << doublings)
}

impl Inner {
    /// Takes a leg out of service for `reason`. A leg already out is left as
    /// it is. The last in-sync leg is never faulted.
    pub(crate) fn fault_leg(&self, leg: usize, reason: FaultReason) -> Result<(), Refused> {
        let reason = self.flapping_or(leg, reason);
        self.change_state(leg, LegState::Faulted(reason), |from| from.takes_writes())
    }

    /// Sets `leg` to `to` if `allowed(current state)`, recording it first.
    pub(crate) fn change_state(
        &self,
        leg: usize,
        to: LegState,
        allowed: impl FnOnce(&LegState) -> bool,
    ) -> Result<(), Refused> {
        let rec = recorded(&to);
        self.change_state_as(leg, to, rec, allowed)
    }

    /// Like [`change_state`](Self::change_state), recording `rec` (e.g. a
    /// full rebuild) in the same metadata write, so that the resync worker
    /// woken by the change can never see a half-made decision.
    pub(crate) fn change_state_as(
        &self,
        leg: usize,
        to: LegState,
        rec_state: RecordedState,
        allowed: impl FnOnce(&LegState) -> bool,
    ) -> Result<(), Refused> {
        let mut header = self.header.lock();
        let from = self.legs[leg].state();
        if !allowed(&from) || from == to {
            return Ok(());
        }
        if from.is_in_sync() && !to.is_in_sync() && self.in_sync_count() == 1 {
            return Err(Refused::LastInSync);
        }
        self.write_header(&mut header, |next| {
            next.generation += 1;
            let rec = &mut next.legs[leg];
            rec.state = rec_state;
            rec.reason = match &to {
                LegState::Faulted(r) => r.to_string().chars().take(120).collect(),
                _ => String::new(),
            };
            if matches!(to, LegState::Rebuilding) {
                rec.rebuild_cursor = 0;
            }
            for (i, r) in next.legs.iter_mut().enumerate() {
                let in_sync = if i == leg { to.is_in_sync() } else { self.legs[i].is_in_sync() };
                if in_sync {
                    r.in_sync_generation = next.generation;
                }
            }
        })
        .map_err(Refused::Metadata)?;
        *self.legs[leg].state.write() = to.clone();
        self.legs[leg].state_changes.fetch_add(1, Ordering::AcqRel);
        drop(header);
        if matches!(to, LegState::Faulted(_)) {
            self.note_fault(leg);
        }
        self.emit(Event::LegStateChanged { leg, path: self.legs[leg].path.clone(), from, to });
        self.resync_wake.notify_all();
        Ok(())
    }

    /// Changes the metadata header: `change` edits a copy, which is written
    /// to the metadata and only then becomes the header in force.
    pub(crate) fn update_header(&self, change: impl FnOnce(&mut Header)) -> Result<(), Arc<MetaError>> {
        self.write_header(&mut self.header.lock(), change)
    }

    fn write_header(
        &self,
        header: &mut MutexGuard<'_, Header>,
        change: impl FnOnce(&mut Header),
    ) -> Result<(), Arc<MetaError>> {
        let mut next = (**header).clone();
        change(&mut next);
        self.intent.store().write_header(&next).map_err(Arc::new)?;
        **header = next;
        Ok(())
    }

    /// Records resync progress (and a full/difference flag) for a rebuilding
    /// leg, unless its state changed since `changes` (the rebuild that got
    /// this far is over; the one that follows starts from 0).
    pub(crate) fn record_cursor(
        &self,
        leg: usize,
        changes: u64,
        cursor: u64,
        full: bool,
    ) -> Result<(), Arc<MetaError>> {
        let mut header = self.header.lock();
        if self.legs[leg].state_changes.load(Ordering::Acquire) != changes {
            return Ok(());
        }
        self.write_header(&mut header, |next| {
            next.legs[leg].rebuild_cursor = cursor;
            next.legs[leg].state = RecordedState::Rebuilding { full };
        })
    }

    /// Records a new identity for a leg whose storage was replaced.
    pub(crate) fn record_identity(&self, leg: usize, identity: &str) -> Result<(), Arc<MetaError>> {
        self.update_header(|next| {
            next.generation += 1;
            next.legs[leg].identity = identity.to_owned();
        })
    }

    /// Marks the metadata clean (clean shutdown) or not.
    pub(crate) fn record_clean(&self, clean: bool) -> Result<(), Arc<MetaError>> {
        self.update_header(|next| next.clean = clean)
    }

    /// How a leg that comes back is resynced: the bitmap's regions, or
    /// everything when there is no bitmap.
    pub(crate) fn returning_leg_state(&self) -> RecordedState {
        RecordedState::Rebuilding { full: !self.cfg.bitmap }
    }

    pub(crate) fn recorded_rebuild(&self, leg: usize) -> (u64, bool) {
        let h = self.header.lock();
        let r = &h.legs[leg];
        match r.state {
            RecordedState::Rebuilding { full } => (r.rebuild_cursor, full),
            _ => (0, false),
        }
    }

    pub(crate) fn generation(&self) -> u64 {
        self.header.lock().generation
    }

    /// A leg that faults `flap_limit` times within the window is flapping
    /// and waits for the administrator.
    fn flapping_or(&self, leg: usize, reason: FaultReason) -> FaultReason {
        let f = &self.faults.lock()[leg];
        let window = Duration::from_secs(self.tun().flap_window_s);
        let recent = f.faults.iter().filter(|t| t.elapsed() < window).count() as u32 + 1;
        if recent >= self.tun().flap_limit && reason.is_recoverable() {
            return FaultReason::Flapping { faults: recent };
        }
        reason
    }

    /// Counts a fault and sets when the leg is tried again.
    fn note_fault(&self, leg: usize) {
        let window = Duration::from_secs(self.tun().flap_window_s);
        let mut all = self.faults.lock();
        let f = &mut all[leg];
        f.faults.retain(|t| t.elapsed() < window);
        f.faults.push(Instant::now());
        f.retry_at = Some(Instant::now() + backoff(self.failback_delay(), f.faults.len()));
    }

    /// A failback attempt failed: the leg waits as long again.
    fn note_failback_failed(&self, leg: usize) {
        let mut all = self.faults.lock();
        let f = &mut all[leg];
        f.retry_at = Some(Instant::now() + backoff(self.failback_delay(), f.faults.len()));
    }

    fn failback_delay(&self) -> Duration {
        Duration::from_millis(self.tun().failback_delay_ms)
    }

    /// The administrator brought the leg back: its past faults no longer count.
    pub(super) fn forget_faults(&self, leg: usize) {
        self.faults.lock()[leg] = FaultHistory::default();
    }

    /// Brings a leg back after a recoverable fault once its retry time came,
    /// the kernel returned all its old I/Os, and a probe read succeeds.
    pub(super) fn maybe_fail_back(&self, leg: usize) {
        let l = &self.legs[leg];
        let LegState::Faulted(reason) = l.state() else { return };
        let detached = l.backend().detached().is_some();
        if !self.tun().auto_failback || !(reason.is_recoverable() || detached) || l.inflight() > 0 {
            return;
        }
        let due = self.faults.lock()[leg].retry_at.is_none_or(|t| Instant::now() >= t);
        if !due {
            return;
        }
        if let Err(why) = self.reattach(leg) {
            log::debug!("{}: leg {leg} still unavailable: {why}", self.cfg.name);
            return self.note_failback_failed(leg);
        }
        if !self.probe(leg) {
            return self.note_failback_failed(leg);
        }
        log::info!("{}: leg {leg} answers again; resyncing it", self.cfg.name);
        l.read_errors_budget_used.store(0, Ordering::Relaxed);
        let rec = self.returning_leg_state();
        let _ = self.change_state_as(leg, LegState::Rebuilding, rec, |s| matches!(s, LegState::Faulted(_)));
    }

    /// Reopens the storage of a leg that was absent at start, if it is back
    /// and is the same device the metadata records.
    pub(super) fn reattach(&self, leg: usize) -> Result<(), String> {
        let l = &self.legs[leg];
        if l.backend().detached().is_none() {
            return Ok(());
        }
        let others: Vec<_> = self.legs.iter().filter(|o| o.index != leg).map(|o| o.backend()).collect();
        let b = super::open::open_leg(&self.cfg, leg, self.size(), &self.wrap, &others)
            .map_err(|e| e.to_string())?;
        let recorded = self.header.lock().legs[leg].identity.clone();
        if b.identity().as_str() != recorded {
            return Err(format!(
                "{} is now {}, not the recorded {recorded}; replace the leg on purpose with `hamirrorctl replace`",
                l.path,
                b.identity()
            ));
        }
        l.set_backend(b);
        Ok(())
    }

    /// Reads the first block and writes it back: the leg must do both.
    fn probe(&self, leg: usize) -> bool {
        let bs = self.cfg.block_size as usize;
        let data = match self.leg_io_wait(leg, Job::Read { offset: 0, len: bs }) {
            Ok(LegOut::Data(d)) => d,
            _ => return false,
        };
        // Block 0 is stale on a faulted leg anyway; rewriting it proves writes work
        // and changes nothing the resync will not overwrite.
        self.leg_io_wait(leg, Job::WriteOwned { offset: 0, data }).is_ok()
            && self.leg_io_wait(leg, Job::Flush).is_ok()
    }
}

pub(crate) fn recorded(s: &LegState) -> RecordedState {
    match s {
        LegState::InSync => RecordedState::InSync,
        LegState::Faulted(_) => RecordedState::Faulted,
        LegState::Rebuilding => RecordedState::Rebuilding { full: false },
        LegState::Offline => RecordedState::Offline,
    }
}

#[cfg(test)]
mod tests {
    use super::backoff;
    use std::time::Duration;

    #[test]
    fn failback_backoff_doubles_with_each_recent_fault_up_to_128_times_the_delay() {
        let d = Duration::from_millis(100);
        let waits: Vec<u128> = (0..=10).map(|n| backoff(d, n).as_millis()).collect();
        assert_eq!(waits, [100, 100, 200, 400, 800, 1600, 3200, 6400, 12800, 12800, 12800]);
    }
}
