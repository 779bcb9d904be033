//! Opening a volume: legs, metadata, trust, and the threads.
//!
//! Every check that can refuse runs before anything is written, so a refused
//! open changes nothing on any leg or metadata copy (invariant 7).

use super::intent::Intent;
use super::leg::Leg;
use super::rangelock::RangeLock;
use super::resize::{self, AtOpen};
use super::{resync, EventSink, Inner, Recovery, WrapLeg};
use crate::backend::detached::DetachedBackend;
use crate::backend::file::{FileBackend, LegOpenError, OpenMode};
use crate::backend::{Backend, LegIdentity};
use crate::config::{InitialSync, IoEngine, VolumeConfig};
use crate::error::OpenError;
use crate::event::{Event, ResyncKind};
use crate::meta::{CopyNote, Header, LegRecord, MetaStore, Opened, Probe, RecordedState};
use crate::state::{FaultReason, LegState};
use parking_lot::{Condvar, Mutex};
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;
use std::time::Instant;

pub(super) fn open(
    cfg: VolumeConfig,
    sink: EventSink,
    wrap: Option<WrapLeg>,
) -> Result<Arc<Inner>, OpenError> {
    cfg.validate()?;
    check_metadata_paths(&cfg)?;
    let ring = io_ring(&cfg)?;
    let existing = MetaStore::probe(&cfg.metadata)? == Probe::Present;
    let slots = open_legs(&cfg, &wrap, existing)?;
    let opened = if existing {
        MetaStore::open(&cfg.metadata)?
    } else {
        let all: Vec<_> = slots.iter().map(|s| s.clone().expect("a new volume opens every leg")).collect();
        create_metadata(&cfg, &all)?
    };
    let Opened { store, mut header, mut bitmap, notes } = opened;
    check_header(&cfg, &header)?;
    let backends = detach_missing(&cfg, &header, slots);
    // A source request applies once: `req` is this open's view of the config.
    let req = VolumeConfig { source: pending_source(&cfg, &header), ..cfg.clone() };
    let states = trusted_states(&req, &header, &backends)?;
    let unclean = !header.clean;
    apply_states(&mut header, &states, &req);
    if let Some(s) = req.source {
        log::warn!(
            "{}: source={s}: leg {s} is the only trusted leg; the others get a full rebuild",
            cfg.name
        );
        header.source_request = source_request(s, &cfg.source_token);
    }
    let resized = resize::resize_at_open(&store, &mut header, &mut bitmap, cfg.size)?;
    header.clean = false;
    header.generation += 1;
    store.write_header(&header)?;

    let store = Arc::new(store);
    let intent = Intent::new(
        store.clone(),
        bitmap,
        header.region_size,
        cfg.bitmap_extent_size,
        cfg.active_extents(),
        cfg.bitmap,
    );
    let mut legs = Vec::new();
    for (i, (b, state)) in backends.into_iter().zip(states).enumerate() {
        let buffered_too = cfg.io_engine == IoEngine::IoUring;
        legs.push(
            Leg::new(i, b, state, cfg.leg_threads, ring.clone(), buffered_too).map_err(OpenError::Spawn)?,
        );
    }
    let recovery = match (crash_recovery(&req, unclean, &intent, &legs), resized) {
        (None, AtOpen::Grown { dirty_from }) => resize::new_capacity(&legs, dirty_from),
        (rec, _) => rec,
    };
    let inner = Arc::new(Inner {
        wrap,
        faults: Mutex::new(vec![Default::default(); legs.len()]),
        size: AtomicU64::new(cfg.size),
        tun: parking_lot::RwLock::new(cfg.tunables()),
        io_engine: if ring.is_some() { IoEngine::IoUring } else { IoEngine::Threads },
        cfg,
        legs,
        locks: RangeLock::new(),
        intent,
        header: Mutex::new(header),
        events: Mutex::new(VecDeque::new()),
        sink,
        shutting_down: AtomicBool::new(false),
        started: Instant::now(),
        last_host_io_ms: AtomicU64::new(super::NO_HOST_IO_YET),
        recovery: Mutex::new(recovery),
        resync: Mutex::new(resync::Progress::default()),
        resync_wake: Condvar::new(),
        resync_bytes: AtomicU64::new(0),
        verify: Mutex::new(Default::default()),
        threads: Mutex::new(Vec::new()),
    });
    for note in notes {
        inner.emit(note_event(note));
    }
    inner.intent.set_housekeeping(Box::new(super::monitor::Clearing(Arc::downgrade(&inner))));
    inner.start_threads().map_err(OpenError::Spawn)?;
    Ok(inner)
}

/// Entries in the submission queue; completions beyond it wait in the kernel.
const RING_ENTRIES: u32 = 1024;

/// The volume's io_uring, if `io_engine` wants one and the kernel gives it.
/// `auto` wants one only for `O_DIRECT` legs (see `Leg::start_async`).
fn io_ring(cfg: &VolumeConfig) -> Result<Option<Arc<uring::Ring>>, OpenError> {
    let direct = (0..cfg.legs.len()).any(|i| cfg.leg_direct_io(i));
    if cfg.io_engine == IoEngine::Threads || (cfg.io_engine == IoEngine::Auto && !direct) {
        return Ok(None);
    }
    match uring::Ring::new(&format!("hm-ring-{}", cfg.name), RING_ENTRIES) {
        Ok(r) => Ok(Some(r)),
        Err(source) if cfg.io_engine == IoEngine::IoUring => Err(OpenError::IoUring { source }),
        Err(e) => {
            log::warn!("{}: io_uring is not available ({e}); legs do their I/O on threads", cfg.name);
            Ok(None)
        }
    }
}

pub(super) fn check_metadata_paths(cfg: &VolumeConfig) -> Result<(), OpenError> {
    let canon = |p: &PathBuf| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone());
    for m in &cfg.metadata {
        if cfg.legs.iter().any(|l| canon(&l.path) == canon(m)) {
            return Err(OpenError::MetadataIsLeg { path: m.clone() });
        }
    }
    Ok(())
}

/// A leg opened, or why it could not be (kept only for an existing volume,
/// which then starts without it).
type Slot = Result<Arc<dyn Backend>, String>;

fn open_legs(cfg: &VolumeConfig, wrap: &Option<WrapLeg>, existing: bool) -> Result<Vec<Slot>, OpenError> {
    let mut out: Vec<Slot> = Vec::new();
    for i in 0..cfg.legs.len() {
        let opened: Vec<Arc<dyn Backend>> = out.iter().filter_map(|s| s.clone().ok()).collect();
        match open_leg(cfg, i, cfg.size, wrap, &opened) {
            Ok(b) => out.push(Ok(b)),
            // An array that is down must not keep the LUN down: an existing
            // volume starts with the leg faulted and takes it back later.
            Err(e @ (OpenError::LegMissing { .. } | OpenError::LegOpen { .. })) if existing => {
                let why = e.to_string();
                log::error!("{}: starting without leg {i}: {why}", cfg.name);
                out.push(Err(why));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// Opens leg `i` and checks it against the legs already open and against
/// `need`, the volume's size.
pub(super) fn open_leg(
    cfg: &VolumeConfig,
    i: usize,
    need: u64,
    wrap: &Option<WrapLeg>,
    opened: &[Arc<dyn Backend>],
) -> Result<Arc<dyn Backend>, OpenError> {
    let path = cfg.legs[i].path.clone();
    let mode = OpenMode { direct_io: cfg.leg_direct_io(i), sync_writes: !cfg.write_cache };
    let b = FileBackend::open(&path, mode).map_err(|e| match e {
        LegOpenError::Missing => OpenError::LegMissing { leg: i, path: path.clone() },
        LegOpenError::NotStorage => OpenError::LegNotStorage { leg: i, path: path.clone() },
        LegOpenError::Busy => duplicate_or_busy(opened, i, &path),
        LegOpenError::Open(source) => OpenError::LegOpen { leg: i, path: path.clone(), source },
    })?;
    if let Some(other) = opened.iter().position(|o| o.identity() == b.identity()) {
        return Err(OpenError::LegDuplicate { leg: i, other, path });
    }
    if b.size() < need {
        return Err(OpenError::LegTooSmall { leg: i, path, have: b.size(), need });
    }
    Ok(match wrap {
        Some(w) => Arc::from(w(i, Box::new(b))),
        None => Arc::new(b),
    })
}

/// Legs that could not be opened take their recorded identity, detached.
fn detach_missing(cfg: &VolumeConfig, h: &Header, slots: Vec<Slot>) -> Vec<Arc<dyn Backend>> {
    slots
        .into_iter()
        .enumerate()
        .map(|(i, s)| match s {
            Ok(b) => b,
            Err(why) => {
                let id = LegIdentity::from_recorded(&h.legs[i].identity);
                let name = cfg.legs[i].path.display().to_string();
                Arc::new(DetachedBackend::new(&name, id, cfg.size, why)) as Arc<dyn Backend>
            }
        })
        .collect()
}

/// A leg that is busy because an earlier leg of this very volume holds it is
/// a duplicate, not someone else's.
fn duplicate_or_busy(opened: &[Arc<dyn Backend>], leg: usize, path: &std::path::Path) -> OpenError {
    let id = std::fs::metadata(path).ok().map(|m| LegIdentity::of(&m));
    match id.and_then(|id| opened.iter().position(|o| *o.identity() == id)) {
        Some(other) => OpenError::LegDuplicate { leg, other, path: path.to_owned() },
        None => OpenError::LegBusy { leg, path: path.to_owned() },
    }
}

fn create_metadata(cfg: &VolumeConfig, legs: &[Arc<dyn Backend>]) -> Result<Opened, OpenError> {
    let records = legs
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let fresh = cfg.initial_sync == InitialSync::None || i == cfg.source.unwrap_or(0);
            LegRecord {
                identity: b.identity().as_str().to_owned(),
                path: b.name().to_owned(),
                state: if fresh { RecordedState::InSync } else { RecordedState::Rebuilding { full: true } },
                reason: String::new(),
                in_sync_generation: 1,
                rebuild_cursor: 0,
            }
        })
        .collect();
    let header = Header {
        volume_id: crate::meta::random_id().map_err(|source| {
            OpenError::Meta(crate::meta::MetaError::Io { path: "/dev/urandom".into(), source })
        })?,
        name: cfg.name.clone(),
        size: cfg.size,
        block_size: cfg.block_size,
        region_size: cfg.region_size,
        generation: 1,
        clean: true,
        legs: records,
        source_request: cfg.source.map(|s| source_request(s, &cfg.source_token)).unwrap_or_default(),
    };
    Ok(MetaStore::create(&cfg.metadata, &header)?)
}

/// How a `source=N` request is recorded once honoured.
pub(super) fn source_request(source: usize, token: &str) -> String {
    format!("{source}:{token}").chars().take(crate::meta::MAX_SOURCE_REQUEST).collect()
}

/// `cfg.source`, unless the metadata records this very request as honoured.
pub(super) fn pending_source(cfg: &VolumeConfig, h: &Header) -> Option<usize> {
    let s = cfg.source?;
    (h.source_request != source_request(s, &cfg.source_token)).then_some(s)
}

fn check_header(cfg: &VolumeConfig, h: &Header) -> Result<(), OpenError> {
    let mismatch = |what: String| Err(OpenError::Mismatch { what });
    if h.legs.len() != cfg.legs.len() {
        return mismatch(format!(
            "the metadata records {} legs, the configuration lists {}",
            h.legs.len(),
            cfg.legs.len()
        ));
    }
    if h.block_size != cfg.block_size {
        return mismatch(format!("block size {} recorded, {} configured", h.block_size, cfg.block_size));
    }
    Ok(())
}

/// Which legs can be trusted, from the metadata and the legs' identities.
fn trusted_states(
    cfg: &VolumeConfig,
    h: &Header,
    legs: &[Arc<dyn Backend>],
) -> Result<Vec<LegState>, OpenError> {
    let same: Vec<bool> =
        legs.iter().zip(&h.legs).map(|(b, r)| b.identity().as_str() == r.identity).collect();
    if !same.iter().any(|&s| s) {
        return Err(OpenError::Mismatch {
            what: "none of the configured legs is a leg this metadata records: it belongs to another volume"
                .into(),
        });
    }
    if let Some(s) = cfg.source {
        let r = &h.legs[s];
        if !same[s] || r.state != RecordedState::InSync || r.in_sync_generation != h.generation {
            return Err(OpenError::Mismatch {
                what: format!(
                    "source={s}: leg {s} ({}) is not recorded in sync at the last generation ({}); \
                     it missed writes the other legs took and cannot be the source",
                    r.path, r.reason
                ),
            });
        }
        return Ok((0..legs.len())
            .map(|i| if i == s { LegState::InSync } else { LegState::Rebuilding })
            .collect());
    }
    if let Some(i) = same.iter().position(|&s| !s) {
        return Err(OpenError::Mismatch {
            what: format!(
                "leg {i} ({}) is not the storage the metadata records (recorded {}, found {}); \
                 if it was replaced on purpose, open once with source=N naming a good leg",
                legs[i].name(),
                h.legs[i].identity,
                legs[i].identity()
            ),
        });
    }
    let states: Vec<LegState> = h
        .legs
        .iter()
        .zip(legs)
        .map(|(r, b)| match r.state {
            _ if b.detached().is_some() => LegState::Faulted(FaultReason::Unavailable {
                detail: b.detached().unwrap_or_default().to_owned(),
            }),
            RecordedState::InSync if r.in_sync_generation == h.generation => LegState::InSync,
            RecordedState::InSync => {
                LegState::Faulted(FaultReason::Recorded { detail: "stale generation".into() })
            }
            RecordedState::Faulted => LegState::Faulted(FaultReason::Recorded { detail: r.reason.clone() }),
            RecordedState::Rebuilding { .. } => LegState::Rebuilding,
            RecordedState::Offline => LegState::Offline,
        })
        .collect();
    if !states.iter().any(LegState::is_in_sync) {
        return Err(OpenError::NoTrustedLeg { detail: untrusted(h, legs) });
    }
    Ok(states)
}

/// Why no leg can serve: the legs recorded in sync, and what keeps each out.
fn untrusted(h: &Header, legs: &[Arc<dyn Backend>]) -> String {
    let recorded: Vec<String> = h
        .legs
        .iter()
        .zip(legs)
        .enumerate()
        .filter(|(_, (r, _))| r.state == RecordedState::InSync && r.in_sync_generation == h.generation)
        .map(|(i, (r, b))| {
            let why = b.detached().map_or_else(|| "absent".to_owned(), |w| format!("cannot be opened: {w}"));
            format!("leg {i} ({}) is recorded in sync but {why}", r.path)
        })
        .collect();
    if recorded.is_empty() {
        format!("the metadata records no leg in sync at its generation {}", h.generation)
    } else {
        recorded.join("; ")
    }
}

fn apply_states(h: &mut Header, states: &[LegState], cfg: &VolumeConfig) {
    for (i, (r, s)) in h.legs.iter_mut().zip(states).enumerate() {
        if cfg.source.is_some() && cfg.source != Some(i) {
            r.state = RecordedState::Rebuilding { full: true };
            r.rebuild_cursor = 0;
        } else if let LegState::InSync = s {
            r.state = RecordedState::InSync;
        }
    }
    let next = h.generation + 1;
    for r in h.legs.iter_mut().filter(|r| r.state == RecordedState::InSync) {
        r.in_sync_generation = next;
    }
}

/// After an unclean stop, the regions in the bitmap may differ between legs:
/// copy them from one in-sync leg to the others, reading from it meanwhile.
fn crash_recovery(cfg: &VolumeConfig, unclean: bool, intent: &Intent, legs: &[Arc<Leg>]) -> Option<Recovery> {
    if !unclean {
        return None;
    }
    if !cfg.bitmap {
        intent.set_all();
    }
    if intent.count_set() == 0 {
        return None;
    }
    let source = cfg.source.unwrap_or_else(|| legs.iter().position(|l| l.is_in_sync()).unwrap_or(0));
    Some(Recovery { source, cursor: 0, kind: ResyncKind::CrashRecovery })
}

fn note_event(note: CopyNote) -> Event {
    match note {
        CopyNote::Repaired { copy, path, .. } => {
            Event::MetadataCopyRepaired { copy, path: path.display().to_string() }
        }
        CopyNote::Lost { copy, path, error } => {
            Event::MetadataCopyLost { copy, path: path.display().to_string(), error }
        }
        CopyNote::PagesLost { pages } => Event::MetadataCopyLost {
            copy: usize::MAX,
            path: String::new(),
            error: format!("{pages} bitmap pages unreadable in every copy; their regions will be resynced"),
        },
    }
}
