//! Leg states and the reasons behind them.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Where a leg stands. Only `InSync` legs are read, and only `InSync` and
/// `Rebuilding` legs receive host writes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", content = "reason", rename_all = "snake_case")]
pub enum LegState {
    /// Holds every acknowledged write; served from.
    InSync,
    /// Out of sync because of a fault; its regions are in the bitmap.
    Faulted(FaultReason),
    /// Receiving host writes and a copy of what it missed.
    Rebuilding,
    /// Taken out by the administrator (fail, split); only an admin brings it back.
    Offline,
}

impl LegState {
    pub fn is_in_sync(&self) -> bool {
        matches!(self, LegState::InSync)
    }
    /// Whether host writes go to this leg.
    pub fn takes_writes(&self) -> bool {
        matches!(self, LegState::InSync | LegState::Rebuilding)
    }
    pub fn name(&self) -> &'static str {
        match self {
            LegState::InSync => "in_sync",
            LegState::Faulted(_) => "faulted",
            LegState::Rebuilding => "rebuilding",
            LegState::Offline => "offline",
        }
    }
}

impl fmt::Display for LegState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LegState::Faulted(r) => write!(f, "faulted ({r})"),
            other => f.write_str(other.name()),
        }
    }
}

/// Why a leg was faulted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultReason {
    /// A write failed with this errno.
    WriteError { errno: i32 },
    /// Reads failed more often than the error budget allows.
    ReadErrors { count: u32 },
    /// A flush (cache sync) failed with this errno.
    FlushError { errno: i32 },
    /// An I/O did not finish within the deadline.
    Timeout { ms: u64 },
    /// A resync write to this leg failed.
    RebuildError { errno: i32 },
    /// The leg could not be opened at start-up (missing, identity changed...).
    Unavailable { detail: String },
    /// The leg kept failing after being restored; it stays out until an admin
    /// restores it.
    Flapping { faults: u32 },
    /// Recorded in the metadata before a restart (the reason is kept as text).
    Recorded { detail: String },
}

impl FaultReason {
    /// Whether the engine may try to bring the leg back by itself. A leg that
    /// flaps, or whose device changed, waits for the administrator.
    pub fn is_recoverable(&self) -> bool {
        match self {
            FaultReason::WriteError { .. }
            | FaultReason::FlushError { .. }
            | FaultReason::Timeout { .. }
            | FaultReason::RebuildError { .. }
            | FaultReason::ReadErrors { .. }
            | FaultReason::Recorded { .. } => true,
            FaultReason::Unavailable { .. } | FaultReason::Flapping { .. } => false,
        }
    }
}

impl fmt::Display for FaultReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FaultReason::WriteError { errno } => write!(f, "write error: {}", errno_str(*errno)),
            FaultReason::ReadErrors { count } => write!(f, "{count} read errors, over the budget"),
            FaultReason::FlushError { errno } => write!(f, "flush error: {}", errno_str(*errno)),
            FaultReason::Timeout { ms } => write!(f, "I/O timed out after {ms} ms"),
            FaultReason::RebuildError { errno } => write!(f, "resync write error: {}", errno_str(*errno)),
            FaultReason::Unavailable { detail } => write!(f, "unavailable: {detail}"),
            FaultReason::Recorded { detail } => write!(f, "{detail} (before restart)"),
            FaultReason::Flapping { faults } => {
                write!(f, "flapping: {faults} faults in a short time; restore by hand")
            }
        }
    }
}

pub(crate) fn errno_str(errno: i32) -> String {
    std::io::Error::from_raw_os_error(errno).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_in_sync_and_rebuilding_legs_take_writes() {
        assert!(LegState::InSync.takes_writes());
        assert!(LegState::Rebuilding.takes_writes());
        assert!(!LegState::Offline.takes_writes());
        assert!(!LegState::Faulted(FaultReason::Timeout { ms: 1 }).takes_writes());
    }

    #[test]
    fn flapping_and_changed_legs_wait_for_the_admin() {
        assert!(!FaultReason::Flapping { faults: 3 }.is_recoverable());
        assert!(!FaultReason::Unavailable { detail: "x".into() }.is_recoverable());
        assert!(FaultReason::WriteError { errno: 5 }.is_recoverable());
    }

    #[test]
    fn fault_reason_reads_as_a_sentence() {
        let s = LegState::Faulted(FaultReason::WriteError { errno: libc::EIO }).to_string();
        assert_eq!(s, "faulted (write error: Input/output error (os error 5))");
    }
}
