//! State changes the rest of the system observes (log lines, `hamirrorctl events`).

use crate::state::LegState;
use serde::Serialize;
use std::time::SystemTime;

#[derive(Clone, Debug, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    LegStateChanged { leg: usize, path: String, from: LegState, to: LegState },
    ResyncStarted { leg: usize, kind: ResyncKind, total_bytes: u64 },
    ResyncFinished { leg: usize, kind: ResyncKind, copied_bytes: u64, seconds: f64 },
    ResyncFailed { leg: usize, kind: ResyncKind, error: String },
    ReadRepaired { leg: usize, offset: u64, len: u64 },
    // `leg`, the last in-sync leg, cannot read `[offset, offset+len)`: the
    // rebuild of `target` leaves it out, retries it, and keeps `target`
    // rebuilding until it is copied. Host reads there get a medium error.
    SourceUnreadable { leg: usize, target: usize, offset: u64, len: u64 },
    MetadataCopyLost { copy: usize, path: String, error: String },
    MetadataCopyRepaired { copy: usize, path: String },
    VerifyFinished { mismatched_regions: u64, repaired: bool },
    LastLegSlow { leg: usize, waited_ms: u64 },
    LegLagging { leg: usize, lag_ms: u64 },
    Resized { from: u64, to: u64 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ResyncKind {
    /// Copy the regions in the bitmap only.
    Difference,
    /// Copy the whole volume (new, replaced or changed leg).
    Full,
    /// After an unclean stop: make the bitmap's regions equal on all legs.
    CrashRecovery,
    /// After a grow: make the new capacity equal on all legs.
    NewCapacity,
}

/// An event with the time it happened.
#[derive(Clone, Debug, Serialize)]
pub struct Stamped {
    pub unix_ms: u64,
    #[serde(flatten)]
    pub event: Event,
}

impl Stamped {
    pub fn now(event: Event) -> Self {
        let unix_ms = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Stamped { unix_ms, event }
    }
}

impl std::fmt::Display for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Event::LegStateChanged { leg, path, from, to } => {
                write!(f, "leg {leg} ({path}): {from} -> {to}")
            }
            Event::ResyncStarted { leg, kind, total_bytes } => {
                write!(f, "leg {leg}: {kind:?} resync started, {total_bytes} bytes to copy")
            }
            Event::ResyncFinished { leg, kind, copied_bytes, seconds } => write!(
                f,
                "leg {leg}: {kind:?} resync finished, {copied_bytes} bytes copied in {seconds:.1} s"
            ),
            Event::ResyncFailed { leg, kind, error } => {
                write!(f, "leg {leg}: {kind:?} resync failed: {error}")
            }
            Event::ReadRepaired { leg, offset, len } => {
                write!(f, "leg {leg}: read error at byte {offset} (+{len}) repaired from another leg")
            }
            Event::SourceUnreadable { leg, target, offset, len } => write!(
                f,
                "leg {leg}, the last in-sync leg, cannot read byte {offset} (+{len}): no leg holds it; \
                 leg {target} stays rebuilding while the copy retries it (a host write there rewrites it)"
            ),
            Event::MetadataCopyLost { copy, path, error } => write!(
                f,
                "metadata copy {copy} ({path}) lost: {error}; the other copies carry on, replace it"
            ),
            Event::MetadataCopyRepaired { copy, path } => {
                write!(f, "metadata copy {copy} ({path}) repaired from the others")
            }
            Event::VerifyFinished { mismatched_regions, repaired } => write!(
                f,
                "verify finished: {mismatched_regions} mismatched regions{}",
                if *repaired { ", repaired" } else { "" }
            ),
            Event::LastLegSlow { leg, waited_ms } => write!(
                f,
                "leg {leg} is the last in-sync leg and has not answered for {waited_ms} ms; still waiting"
            ),
            Event::LegLagging { leg, lag_ms } => write!(
                f,
                "leg {leg} lags more than write_lag_ms={lag_ms} behind the others: writes are acknowledged \
                 without it while it catches up"
            ),
            Event::Resized { from, to } => write!(f, "volume grown from {from} to {to} bytes"),
        }
    }
}
