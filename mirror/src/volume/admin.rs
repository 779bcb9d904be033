//! What an administrator can do to a running volume (`hamirrorctl`).

use super::Volume;
use crate::backend::detached::DetachedBackend;
use crate::meta::RecordedState;
use crate::state::LegState;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

/// Why an admin request was refused. Each says what to do instead.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AdminError {
    #[error("no leg {leg}: this volume has legs 0 to {max}")]
    NoSuchLeg { leg: usize, max: usize },
    #[error("leg {leg} is the last in-sync leg; restore another leg first")]
    LastInSync { leg: usize },
    #[error("leg {leg} is {state}; only a faulted or offline leg can be restored")]
    NotRestorable { leg: usize, state: String },
    #[error("leg {leg} still has {n} I/Os outstanding in the kernel; try again when the device answers")]
    Outstanding { leg: usize, n: usize },
    #[error("leg {leg} is {state}; only an in-sync leg can be {what}")]
    NotInSync { leg: usize, state: String, what: &'static str },
    #[error("leg {leg} cannot be opened: {why}")]
    Unavailable { leg: usize, why: String },
    #[error("the change could not be recorded in the metadata: {0}")]
    Metadata(String),
}

impl Volume {
    fn leg_index(&self, leg: usize) -> Result<usize, AdminError> {
        let n = self.inner().legs.len();
        if leg >= n {
            return Err(AdminError::NoSuchLeg { leg, max: n - 1 });
        }
        Ok(leg)
    }

    /// Takes a leg out of service (planned maintenance). It keeps its data as
    /// of now; writes from then on are tracked in the bitmap.
    pub fn fail_leg(&self, leg: usize) -> Result<(), AdminError> {
        let leg = self.leg_index(leg)?;
        let inner = self.inner();
        let _ = inner.flush_all_legs();
        inner
            .change_state(leg, LegState::Offline, |s| !matches!(s, LegState::Offline))
            .map_err(|e| refused(leg, e))
    }

    /// Detaches an in-sync leg as a frozen point-in-time copy of the volume.
    pub fn split_leg(&self, leg: usize) -> Result<(), AdminError> {
        let leg = self.leg_index(leg)?;
        let state = self.inner().legs[leg].state();
        if !state.is_in_sync() {
            return Err(AdminError::NotInSync { leg, state: state.to_string(), what: "split off" });
        }
        self.fail_leg(leg)
    }

    /// Brings a faulted or offline leg back: it gets a difference resync.
    pub fn restore_leg(&self, leg: usize) -> Result<(), AdminError> {
        let leg = self.leg_index(leg)?;
        let inner = self.inner();
        let l = &inner.legs[leg];
        let state = l.state();
        if !matches!(state, LegState::Faulted(_) | LegState::Offline) {
            return Err(AdminError::NotRestorable { leg, state: state.to_string() });
        }
        let n = l.inflight();
        if n > 0 {
            return Err(AdminError::Outstanding { leg, n });
        }
        inner.reattach(leg).map_err(|why| AdminError::Unavailable { leg, why })?;
        inner.forget_faults(leg);
        l.read_errors_budget_used.store(0, Relaxed);
        let rec = inner.returning_leg_state();
        inner
            .change_state_as(leg, LegState::Rebuilding, rec, |s| {
                matches!(s, LegState::Faulted(_) | LegState::Offline)
            })
            .map_err(|e| refused(leg, e))
    }

    /// Takes the storage now at a faulted or offline leg's path as that leg,
    /// whatever its identity (the disk was replaced), and rebuilds it fully.
    pub fn replace_leg(&self, leg: usize) -> Result<(), AdminError> {
        let leg = self.leg_index(leg)?;
        let inner = self.inner();
        let l = &inner.legs[leg];
        let state = l.state();
        if !matches!(state, LegState::Faulted(_) | LegState::Offline) {
            return Err(AdminError::NotRestorable {
                leg,
                state: format!("{state}; take it out with `fail` first"),
            });
        }
        let n = l.inflight();
        if n > 0 {
            return Err(AdminError::Outstanding { leg, n });
        }
        // Let go of the old storage first: the new disk may be the same
        // file, whose lock the old handle holds.
        let old = l.backend();
        let why = "being replaced".to_owned();
        l.set_backend(Arc::new(DetachedBackend::new(&l.path, old.identity().clone(), inner.size(), why)));
        drop(old);
        let others: Vec<_> = inner.legs.iter().filter(|o| o.index != leg).map(|o| o.backend()).collect();
        let b = super::open::open_leg(&inner.cfg, leg, inner.size(), &inner.wrap, &others)
            .map_err(|e| AdminError::Unavailable { leg, why: e.to_string() })?;
        inner.record_identity(leg, b.identity().as_str()).map_err(|e| AdminError::Metadata(e.to_string()))?;
        l.set_backend(b);
        inner.forget_faults(leg);
        l.read_errors_budget_used.store(0, Relaxed);
        let full = RecordedState::Rebuilding { full: true };
        inner
            .change_state_as(leg, LegState::Rebuilding, full, |s| {
                matches!(s, LegState::Faulted(_) | LegState::Offline)
            })
            .map_err(|e| refused(leg, e))
    }

    pub fn pause_resync(&self, paused: bool) {
        self.inner().resync.lock().paused = paused;
    }

    /// Sets the resync ceiling in MiB/s (0: unlimited) until the volume closes.
    pub fn set_resync_rate(&self, mib_s: u64) {
        self.inner().resync.lock().max_mib_s = Some(mib_s);
    }
}

fn refused(leg: usize, e: super::legstate::Refused) -> AdminError {
    match e {
        super::legstate::Refused::LastInSync => AdminError::LastInSync { leg },
        super::legstate::Refused::Metadata(m) => AdminError::Metadata(m.to_string()),
    }
}
