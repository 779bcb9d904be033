//! Leg state changes. Each bumps the metadata generation and is durable in
//! the metadata before anyone relies on it: a write that faulted a leg is
//! acknowledged only after the fault is recorded, so a crash can never make
//! the stale leg a resync source (invariant 1).

use super::Inner;
use crate::event::Event;
use crate::meta::{MetaError, RecordedState};
use crate::state::{FaultReason, LegState};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Why a state change was not made.
#[derive(Debug)]
pub(crate) enum Refused {
    /// The leg is the last one in sync; it stays.
    LastInSync,
    /// The change could not be recorded in any metadata copy.
    Metadata(Arc<MetaError>),
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
        let leaving_sync = from.is_in_sync() && !to.is_in_sync();
        if leaving_sync && self.in_sync_count() == 1 {
            return Err(Refused::LastInSync);
        }
        let mut next = header.clone();
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
        self.intent.store().write_header(&next).map_err(|e| Refused::Metadata(Arc::new(e)))?;
        *header = next;
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
        let mut next = header.clone();
        next.legs[leg].rebuild_cursor = cursor;
        next.legs[leg].state = RecordedState::Rebuilding { full };
        self.intent.store().write_header(&next).map_err(Arc::new)?;
        *header = next;
        Ok(())
    }

    /// Records a new identity for a leg whose storage was replaced.
    pub(crate) fn record_identity(&self, leg: usize, identity: &str) -> Result<(), Arc<MetaError>> {
        let mut header = self.header.lock();
        let mut next = header.clone();
        next.generation += 1;
        next.legs[leg].identity = identity.to_owned();
        self.intent.store().write_header(&next).map_err(Arc::new)?;
        *header = next;
        Ok(())
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

    /// Marks the metadata clean (clean shutdown) or not.
    pub(crate) fn record_clean(&self, clean: bool) -> Result<(), Arc<MetaError>> {
        let mut header = self.header.lock();
        let mut next = header.clone();
        next.clean = clean;
        self.intent.store().write_header(&next).map_err(Arc::new)?;
        *header = next;
        Ok(())
    }

    pub(crate) fn generation(&self) -> u64 {
        self.header.lock().generation
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
