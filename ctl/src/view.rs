//! The data the protocol carries, in a form owned by this crate.
//!
//! The engine's status types are converted rather than sent as they are, so
//! that the wire format (and `hamirrorctl --json`) only changes on purpose: a
//! renamed engine field breaks the build here instead of silently breaking
//! scripts. States and kinds travel as `snake_case` strings, reasons as text.

use mirror::config::IoEngine;
use mirror::event::Stamped;
use mirror::volume::{ActivityStatus, LegStatus, ResyncStatus, VerifyStatus, VolumeStatus};
use mirror::LegState;
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatusView {
    pub name: String,
    pub size: u64,
    pub block_size: u32,
    pub region_size: u64,
    pub generation: u64,
    /// How the legs do their I/O: `io_uring` or `threads`.
    #[serde(default)]
    pub io_engine: String,
    pub legs: Vec<LegView>,
    /// Regions set in the write-intent bitmap.
    pub dirty_regions: u64,
    /// The activity log's bound and what a crash now would copy.
    #[serde(default)]
    pub activity: ActivityView,
    /// The resync in progress, if any.
    pub resync: Option<ResyncView>,
    /// Bytes copied by resyncs since the volume was opened.
    pub resync_bytes_total: u64,
    pub resync_control: ResyncControl,
    /// The verify in progress or last finished since open.
    pub verify: VerifyView,
    pub metadata: Vec<MetadataView>,
}

/// The write-intent bitmap's active extents (`bitmap_active_size`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivityView {
    /// Extents written since their bits were last cleared.
    pub active_extents: u64,
    /// The most that may be active while every leg is in sync (0: no limit).
    pub limit_extents: u64,
    pub extent_bytes: u64,
    /// Bytes a crash now would leave to copy.
    pub crash_copy_bytes: u64,
    /// Idle extents cleared early to make room for a new one.
    pub evictions: u64,
    /// Writes that waited because every active extent was busy.
    pub waits: u64,
}

impl From<ActivityStatus> for ActivityView {
    fn from(a: ActivityStatus) -> ActivityView {
        ActivityView {
            active_extents: a.active_extents,
            limit_extents: a.limit_extents,
            extent_bytes: a.extent_bytes,
            crash_copy_bytes: a.crash_copy_bytes,
            evictions: a.evictions,
            waits: a.waits,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LegView {
    pub index: usize,
    pub path: String,
    pub identity: String,
    /// `in_sync`, `faulted`, `rebuilding` or `offline`.
    pub state: String,
    /// Why the leg is faulted.
    pub reason: Option<String>,
    pub inflight: usize,
    pub reads: u64,
    pub writes: u64,
    pub read_bytes: u64,
    pub write_bytes: u64,
    pub read_errors: u64,
    pub write_errors: u64,
    pub timeouts: u64,
    pub avg_latency_us: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResyncView {
    pub leg: usize,
    /// `difference`, `full`, `crash_recovery` or `new_capacity`.
    pub kind: String,
    pub done_bytes: u64,
    pub total_bytes: u64,
    pub rate_bytes_s: u64,
    pub eta_s: Option<u64>,
    pub paused: bool,
    /// Ranges the last in-sync leg cannot read: the copy retries them, and
    /// the leg stays rebuilding until they are copied.
    #[serde(default)]
    pub unreadable: Vec<ByteRange>,
}

/// A byte range of the volume.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ByteRange {
    pub offset: u64,
    pub len: u64,
}

/// A verify (scrub): the in-sync legs compared region by region.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyView {
    pub running: bool,
    pub done_bytes: u64,
    pub total_bytes: u64,
    pub mismatched_regions: u64,
    /// Byte offsets of the first mismatched regions (the count is complete).
    pub mismatched_offsets: Vec<u64>,
    /// The leg mismatches are repaired from, if repairing.
    pub repair_from: Option<usize>,
    pub repaired_regions: u64,
    pub cancelled: bool,
}

/// The resync settings made through the control socket (the engine does not
/// report them), starting from the volume's configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResyncControl {
    pub paused: bool,
    /// Ceiling in MiB/s; 0 is unlimited.
    pub max_mib_s: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetadataView {
    pub path: String,
    pub live: bool,
    pub error: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EventView {
    pub unix_ms: u64,
    /// The event's kind, e.g. `leg_state_changed`.
    pub event: String,
    /// One sentence, with the reason where there is one.
    pub message: String,
    /// The event's own fields, as the engine reports them.
    pub fields: Value,
}

/// The data of a successful `fail`, `restore`, `replace` or `split`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LegChange {
    pub message: String,
    pub leg: LegView,
}

/// The data of a successful `verify start` or `verify cancel`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VerifyChange {
    pub message: String,
    pub verify: VerifyView,
}

/// The data of a successful `resync` request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResyncChange {
    pub message: String,
    pub resync_control: ResyncControl,
}

/// A volume's health in one word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    /// Every leg in sync, every metadata copy live.
    Healthy,
    /// A leg is being rebuilt; redundancy comes back when it finishes.
    Resyncing,
    /// A leg or a metadata copy is out; the volume runs with less redundancy.
    Degraded,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Healthy => "healthy",
            Health::Resyncing => "resyncing",
            Health::Degraded => "degraded",
        }
    }
}

impl StatusView {
    pub fn new(s: VolumeStatus, control: ResyncControl) -> StatusView {
        StatusView {
            name: s.name,
            size: s.size,
            block_size: s.block_size,
            region_size: s.region_size,
            generation: s.generation,
            io_engine: match s.io_engine {
                IoEngine::IoUring => "io_uring",
                IoEngine::Threads | IoEngine::Auto => "threads",
            }
            .into(),
            legs: s.legs.into_iter().map(LegView::from).collect(),
            dirty_regions: s.dirty_regions,
            activity: s.activity.into(),
            resync: s.resync.map(ResyncView::from),
            resync_bytes_total: s.resync_bytes_total,
            resync_control: control,
            verify: s.verify.into(),
            metadata: s
                .metadata
                .into_iter()
                .map(|m| MetadataView { path: m.path, live: m.live, error: m.error })
                .collect(),
        }
    }

    pub fn legs_in_sync(&self) -> usize {
        self.legs.iter().filter(|l| l.state == "in_sync").count()
    }

    pub fn health(&self) -> Health {
        let all_meta = self.metadata.iter().all(|m| m.live);
        if self.legs_in_sync() == self.legs.len() && all_meta {
            Health::Healthy
        } else if all_meta && self.legs.iter().all(|l| matches!(l.state.as_str(), "in_sync" | "rebuilding")) {
            Health::Resyncing
        } else {
            Health::Degraded
        }
    }
}

impl From<LegStatus> for LegView {
    fn from(l: LegStatus) -> LegView {
        let reason = match &l.state {
            LegState::Faulted(r) => Some(r.to_string()),
            _ => None,
        };
        LegView {
            index: l.index,
            path: l.path,
            identity: l.identity,
            state: l.state.name().to_string(),
            reason,
            inflight: l.inflight,
            reads: l.reads,
            writes: l.writes,
            read_bytes: l.read_bytes,
            write_bytes: l.write_bytes,
            read_errors: l.read_errors,
            write_errors: l.write_errors,
            timeouts: l.timeouts,
            avg_latency_us: l.avg_latency_us,
        }
    }
}

impl From<ResyncStatus> for ResyncView {
    fn from(r: ResyncStatus) -> ResyncView {
        ResyncView {
            leg: r.leg,
            kind: snake_name(&r.kind),
            done_bytes: r.done_bytes,
            total_bytes: r.total_bytes,
            rate_bytes_s: r.rate_bytes_s,
            eta_s: r.eta_s,
            paused: r.paused,
            unreadable: r.unreadable.into_iter().map(|(offset, len)| ByteRange { offset, len }).collect(),
        }
    }
}

impl From<VerifyStatus> for VerifyView {
    fn from(v: VerifyStatus) -> VerifyView {
        VerifyView {
            running: v.running,
            done_bytes: v.done_bytes,
            total_bytes: v.total_bytes,
            mismatched_regions: v.mismatched_regions,
            mismatched_offsets: v.mismatched_offsets,
            repair_from: v.repair_from,
            repaired_regions: v.repaired_regions,
            cancelled: v.cancelled,
        }
    }
}

impl From<&Stamped> for EventView {
    fn from(s: &Stamped) -> EventView {
        let mut fields = serde_json::to_value(&s.event).unwrap_or(Value::Null);
        let kind = match fields.as_object_mut().and_then(|o| o.remove("event")) {
            Some(Value::String(k)) => k,
            _ => "unknown".to_string(),
        };
        EventView { unix_ms: s.unix_ms, event: kind, message: s.event.to_string(), fields }
    }
}

/// The name serde gives a unit variant (`ResyncKind::CrashRecovery` → `crash_recovery`).
fn snake_name<T: Serialize>(t: &T) -> String {
    match serde_json::to_value(t) {
        Ok(Value::String(s)) => s,
        _ => "unknown".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mirror::event::{Event, ResyncKind};
    use mirror::FaultReason;

    fn leg(state: &str) -> LegView {
        LegView {
            index: 0,
            path: "/l".into(),
            identity: String::new(),
            state: state.into(),
            reason: None,
            inflight: 0,
            reads: 0,
            writes: 0,
            read_bytes: 0,
            write_bytes: 0,
            read_errors: 0,
            write_errors: 0,
            timeouts: 0,
            avg_latency_us: 0,
        }
    }

    fn status(states: &[&str], meta_live: bool) -> StatusView {
        StatusView {
            name: "v".into(),
            size: 1,
            block_size: 512,
            region_size: 1,
            generation: 1,
            io_engine: "io_uring".into(),
            legs: states.iter().map(|s| leg(s)).collect(),
            dirty_regions: 0,
            activity: ActivityView::default(),
            resync: None,
            resync_bytes_total: 0,
            resync_control: ResyncControl { paused: false, max_mib_s: 0 },
            verify: VerifyView::default(),
            metadata: vec![MetadataView { path: "/m".into(), live: meta_live, error: None }],
        }
    }

    #[test]
    fn health_is_degraded_when_a_leg_or_metadata_copy_is_out() {
        assert_eq!(status(&["in_sync", "in_sync"], true).health(), Health::Healthy);
        assert_eq!(status(&["in_sync", "rebuilding"], true).health(), Health::Resyncing);
        assert_eq!(status(&["in_sync", "offline"], true).health(), Health::Degraded);
        assert_eq!(status(&["in_sync", "in_sync"], false).health(), Health::Degraded);
    }

    #[test]
    fn events_keep_their_kind_message_and_fields() {
        let e = Stamped {
            unix_ms: 7,
            event: Event::LegStateChanged {
                leg: 1,
                path: "/l1".into(),
                from: LegState::InSync,
                to: LegState::Faulted(FaultReason::Timeout { ms: 5 }),
            },
        };
        let v = EventView::from(&e);
        assert_eq!(v.event, "leg_state_changed");
        assert!(v.message.contains("I/O timed out after 5 ms"), "{}", v.message);
        assert_eq!(v.fields["leg"], 1);
    }

    #[test]
    fn resync_kinds_travel_as_snake_case() {
        assert_eq!(snake_name(&ResyncKind::CrashRecovery), "crash_recovery");
    }
}
