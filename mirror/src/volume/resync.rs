//! Resync: crash recovery, difference resync and full rebuilds.
//!
//! Spans of up to 1 MiB of consecutive regions, each under the range lock
//! against host writes: read it from an in-sync leg, write it to the
//! targets. Progress (a cursor) is recorded in the metadata after the target
//! flushed, so a restart continues where it stopped. The rate is capped at
//! `resync_max_mib_s` and drops to `resync_min_mib_s` while the host is busy.
//!
//! A region that the last in-sync leg cannot read is *unreadable*: no leg
//! holds its data. Like md's bad-block list, the rebuild records it, reports
//! it ([`Event::SourceUnreadable`], `status`), copies the rest, and retries it
//! with back-off; the rebuilding leg is brought in sync only once it has
//! been copied, and the recorded cursor never passes it, so a restart
//! retries it too. A host read there fails with a medium error, from the
//! last in-sync leg itself.

use super::intent::Marks;
use super::leg::{Job, LegOut};
use super::{Inner, Recovery};
use crate::event::{Event, ResyncKind};
use crate::state::{FaultReason, LegState};
use serde::Serialize;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the resync worker is doing, for status.
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct Progress {
    pub leg: Option<usize>,
    pub kind: Option<ResyncKind>,
    pub done_bytes: u64,
    pub total_bytes: u64,
    pub started: Option<std::time::SystemTime>,
    pub paused: bool,
    /// Overrides `resync_max_mib_s` when set by the administrator.
    pub max_mib_s: Option<u64>,
    /// Byte ranges `(offset, len)` the rebuild could not read from any leg.
    pub unreadable: Vec<(u64, u64)>,
}

/// Bytes copied as one I/O: a resync pays its per-copy overhead once per
/// span, not per region, while a host write that hits the span being
/// copied waits for at most this much.
const SPAN_BYTES: u64 = 1 << 20;

/// How often progress is made durable.
const CHECKPOINT: Duration = Duration::from_secs(1);
/// The host counts as busy if it did I/O this recently.
const HOST_BUSY_MS: u64 = 200;
/// The first wait before unreadable regions are tried again; it doubles
/// after each try that still fails, up to the second.
const UNREADABLE_RETRY: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(60));

enum Step {
    Copied(u64),
    TargetFailed,
    /// The source failed the read and was taken out: another leg may serve.
    SourceFailed,
    /// The source failed the read and stays, as the last in-sync leg: no
    /// leg can serve the span now.
    Unreadable,
    Stopped,
}

/// Why a rebuild pass ended before the end.
enum PassEnd {
    /// The leg's state changed: another pass takes over.
    NotOurs,
    /// The volume is shutting down: record how far the pass got.
    Stopped,
    /// The leg failed a write: it is faulted.
    TargetFailed,
}

impl From<Step> for PassEnd {
    fn from(s: Step) -> PassEnd {
        match s {
            Step::TargetFailed => PassEnd::TargetFailed,
            _ => PassEnd::Stopped,
        }
    }
}

/// One rebuild pass over a leg, from a cursor on.
struct Pass {
    leg: usize,
    /// The leg's state-change count when the pass began: the pass is the
    /// leg's only while it stays the same.
    changes: u64,
    full: bool,
    /// The next region to copy.
    cursor: u64,
    unreadable: Unreadable,
    copied: u64,
}

impl Pass {
    fn kind(&self) -> ResyncKind {
        if self.full {
            ResyncKind::Full
        } else {
            ResyncKind::Difference
        }
    }
}

/// Unreadable regions of one rebuild pass, as runs `(first, count)` in order.
#[derive(Default)]
struct Unreadable(Vec<(u64, u64)>);

impl Unreadable {
    fn add(&mut self, first: u64, count: u64) {
        match self.0.last_mut() {
            Some((f, n)) if *f + *n == first => *n += count,
            _ => self.0.push((first, count)),
        }
    }

    /// Where a restart must resume: not past the first unreadable region.
    fn cursor(&self, cursor: u64) -> u64 {
        self.0.first().map_or(cursor, |&(f, _)| f.min(cursor))
    }
}

impl Inner {
    pub(super) fn resync_loop(self: Arc<Self>) {
        while !self.shutting_down.load(Relaxed) {
            if self.recovery.lock().is_some() {
                self.run_recovery();
            } else if let Some(leg) = self.legs.iter().position(|l| l.state() == LegState::Rebuilding) {
                self.rebuild(leg);
            } else {
                let mut p = self.resync.lock();
                *p = Progress { paused: p.paused, max_mib_s: p.max_mib_s, ..Progress::default() };
                self.resync_wake.wait_for(&mut p, Duration::from_millis(500));
            }
        }
    }

    pub(super) fn wait_resync_idle(&self, timeout: Duration) -> bool {
        let until = Instant::now() + timeout;
        while Instant::now() < until {
            let busy =
                self.recovery.lock().is_some() || self.legs.iter().any(|l| l.state() == LegState::Rebuilding);
            if !busy {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    fn begin_progress(&self, leg: usize, kind: ResyncKind, total: u64) {
        let mut p = self.resync.lock();
        p.leg = Some(leg);
        p.kind = Some(kind);
        p.done_bytes = 0;
        p.total_bytes = total;
        p.started = Some(std::time::SystemTime::now());
        p.unreadable.clear();
        drop(p);
        self.emit(Event::ResyncStarted { leg, kind, total_bytes: total });
    }

    /// Makes the bitmap's regions from the recovery's cursor on equal on
    /// every leg, from the source. Then, if every leg is in sync, clears the
    /// bits no write holds: they stand for no difference any more.
    fn run_recovery(self: &Arc<Self>) {
        let Some(Recovery { source, cursor: start, kind }) = *self.recovery.lock() else { return };
        let targets: Vec<usize> =
            (0..self.legs.len()).filter(|&i| i != source && self.legs[i].takes_writes()).collect();
        let total = self.intent.count_set_from(start, Marks::All) * self.intent.region_bytes();
        self.begin_progress(source, kind, total);
        let t0 = Instant::now();
        let mut copied = 0;
        let mut cursor = start;
        while let Some(r) = self.intent.next_set(cursor, Marks::All) {
            let n = self.span_of_set(r, Marks::All);
            match self.copy_span(r, n, Some(source), &targets) {
                Step::Copied(n) => copied += n,
                Step::TargetFailed => {}
                Step::SourceFailed | Step::Unreadable => {
                    // Another in-sync leg takes over as the source.
                    let next = self.legs.iter().position(|l| l.is_in_sync() && l.index != source);
                    *self.recovery.lock() = next.map(|s| Recovery { source: s, cursor: r, kind });
                    return;
                }
                Step::Stopped => return,
            }
            cursor = r + n;
            if let Some(rec) = self.recovery.lock().as_mut() {
                rec.cursor = cursor;
            }
        }
        let flushed = self.flush_all_legs();
        *self.recovery.lock() = None;
        if flushed && self.all_in_sync() && self.intent.len() > start {
            self.intent.clear_unheld(start, self.intent.len() - 1);
        }
        self.emit(Event::ResyncFinished {
            leg: source,
            kind,
            copied_bytes: copied,
            seconds: t0.elapsed().as_secs_f64(),
        });
    }

    /// Brings a rebuilding leg in sync: the bitmap's regions (difference) or
    /// every region (full), from the recorded cursor on. The pass ends, and
    /// never promotes the leg, once the leg's state changed: a leg that
    /// failed and came back meanwhile missed writes behind the cursor, which
    /// the next pass, from region 0, copies.
    fn rebuild(self: &Arc<Self>, leg: usize) {
        let (cursor, full) = self.recorded_rebuild(leg);
        let changes = self.legs[leg].state_changes.load(Relaxed);
        let mut pass = Pass { leg, changes, full, cursor, unreadable: Unreadable::default(), copied: 0 };
        self.begin_progress(leg, pass.kind(), self.pass_bytes(&pass));
        let t0 = Instant::now();
        match self.copy_pass(&mut pass).and_then(|()| self.retry_unreadable(&mut pass)) {
            Ok(()) => {}
            Err(PassEnd::NotOurs) => return,
            Err(PassEnd::Stopped) => {
                self.checkpoint(&pass);
                return;
            }
            Err(PassEnd::TargetFailed) => return self.rebuild_failed(leg, pass.kind()),
        }
        self.promote(&pass, t0);
    }

    /// Whether `pass` is still the leg's current one.
    fn ours(&self, pass: &Pass) -> bool {
        let l = &self.legs[pass.leg];
        l.state() == LegState::Rebuilding && l.state_changes.load(Relaxed) == pass.changes
    }

    /// The bytes the pass has to copy from its cursor on.
    fn pass_bytes(&self, pass: &Pass) -> u64 {
        let regions = self.intent.len();
        let n = if pass.full {
            regions - pass.cursor.min(regions)
        } else {
            self.intent.count_set_from(pass.cursor, Marks::Written)
        };
        n * self.intent.region_bytes()
    }

    /// The next span the pass copies: `(first region, count)`.
    fn next_span(&self, pass: &Pass) -> Option<(u64, u64)> {
        if pass.full {
            let regions = self.intent.len();
            (pass.cursor < regions).then(|| (pass.cursor, (regions - pass.cursor).min(self.span_regions())))
        } else {
            let r = self.intent.next_set(pass.cursor, Marks::Written)?;
            Some((r, self.span_of_set(r, Marks::Written)))
        }
    }

    /// Copies the pass's spans from its cursor to the end, leaving out (and
    /// recording) the regions no leg can read. Progress is made durable
    /// about every [`CHECKPOINT`].
    fn copy_pass(self: &Arc<Self>, pass: &mut Pass) -> Result<(), PassEnd> {
        let mut checkpoint = Instant::now();
        loop {
            if !self.ours(pass) {
                return Err(PassEnd::NotOurs);
            }
            if self.shutting_down.load(Relaxed) {
                return Err(PassEnd::Stopped);
            }
            let Some((r, n)) = self.next_span(pass) else { return Ok(()) };
            match self.copy_span(r, n, None, &[pass.leg]) {
                Step::Copied(bytes) => pass.copied += bytes,
                Step::SourceFailed => continue, // another in-sync leg serves
                Step::Unreadable => self.copy_regions_apart(pass, r, n)?,
                other => return Err(other.into()),
            }
            pass.cursor = r + n;
            if checkpoint.elapsed() >= CHECKPOINT && self.checkpoint(pass) {
                checkpoint = Instant::now();
            }
        }
    }

    /// Brings the leg in sync once it owes no write (latency priority: writes
    /// acknowledged without it must have reached it before it is read).
    fn promote(&self, pass: &Pass, t0: Instant) {
        let leg = pass.leg;
        if let Err(e) = self.leg_io_wait(leg, Job::Flush) {
            let errno = e.raw_os_error().unwrap_or(libc::EIO);
            let _ = self.fault_leg(leg, FaultReason::RebuildError { errno });
            return;
        }
        let rebuilding = || self.ours(pass) && !self.shutting_down.load(Relaxed);
        let promoted = self.legs[leg].when_caught_up(rebuilding, || {
            // Checked under the header lock, which every state change holds.
            self.change_state(leg, LegState::InSync, |_| self.ours(pass))
        });
        if matches!(promoted, Some(Ok(()))) {
            // The fault history is kept for the flap window on purpose: a leg
            // that comes back and soon fails again is recognised as flapping.
            let seconds = t0.elapsed().as_secs_f64();
            self.emit(Event::ResyncFinished { leg, kind: pass.kind(), copied_bytes: pass.copied, seconds });
        }
    }

    fn rebuild_failed(&self, leg: usize, kind: ResyncKind) {
        self.emit(Event::ResyncFailed { leg, kind, error: format!("{}", self.legs[leg].state()) });
    }

    /// Copies a span that could not be read as a whole region by region, so
    /// that only the regions no leg can read are left out (and recorded).
    fn copy_regions_apart(self: &Arc<Self>, pass: &mut Pass, first: u64, count: u64) -> Result<(), PassEnd> {
        for r in first..first + count {
            if !self.copy_region(pass, r)? {
                self.report_unreadable(pass, r);
            }
        }
        Ok(())
    }

    /// Copies region `r` to the pass's leg; false if no leg can read it. A
    /// source taken out for failing the read gives way to another in-sync
    /// leg at once.
    fn copy_region(self: &Arc<Self>, pass: &mut Pass, r: u64) -> Result<bool, PassEnd> {
        loop {
            match self.copy_span(r, 1, None, &[pass.leg]) {
                Step::Copied(n) => {
                    pass.copied += n;
                    return Ok(true);
                }
                Step::SourceFailed => continue,
                Step::Unreadable => return Ok(false),
                other => return Err(other.into()),
            }
        }
    }

    /// Records region `r` as unreadable, and tells the administrator once.
    fn report_unreadable(&self, pass: &mut Pass, r: u64) {
        pass.unreadable.add(r, 1);
        self.resync.lock().unreadable = self.unreadable_bytes(&pass.unreadable);
        let (offset, len) = self.byte_range(r, 1);
        let source = self.legs.iter().position(|l| l.is_in_sync()).unwrap_or(pass.leg);
        self.emit(Event::SourceUnreadable { leg: source, target: pass.leg, offset, len });
    }

    /// Tries the pass's unreadable regions again, with back-off, until every
    /// one has been copied.
    fn retry_unreadable(self: &Arc<Self>, pass: &mut Pass) -> Result<(), PassEnd> {
        let mut wait = UNREADABLE_RETRY.0;
        while !pass.unreadable.0.is_empty() {
            self.wait_for_retry(pass, wait);
            if !self.ours(pass) {
                return Err(PassEnd::NotOurs);
            }
            if self.shutting_down.load(Relaxed) {
                return Err(PassEnd::Stopped);
            }
            let mut still = Unreadable::default();
            for (first, count) in std::mem::take(&mut pass.unreadable.0) {
                for r in first..first + count {
                    if !self.copy_region(pass, r)? {
                        still.add(r, 1);
                    }
                }
            }
            pass.unreadable = still;
            self.resync.lock().unreadable = self.unreadable_bytes(&pass.unreadable);
            wait = (wait * 2).min(UNREADABLE_RETRY.1);
        }
        Ok(())
    }

    /// Sleeps `wait`, or less if the pass ends or the volume shuts down.
    fn wait_for_retry(&self, pass: &Pass, wait: Duration) {
        let mut p = self.resync.lock();
        let until = Instant::now() + wait;
        while Instant::now() < until && self.ours(pass) && !self.shutting_down.load(Relaxed) {
            self.resync_wake.wait_until(&mut p, until);
        }
    }

    /// Unreadable regions as byte ranges `(offset, len)`, for status.
    fn unreadable_bytes(&self, u: &Unreadable) -> Vec<(u64, u64)> {
        u.0.iter().map(|&(first, count)| self.byte_range(first, count)).collect()
    }

    /// Regions `[first, first+count)` as a byte range `(offset, len)`,
    /// within the volume's end.
    fn byte_range(&self, first: u64, count: u64) -> (u64, u64) {
        let rb = self.intent.region_bytes();
        let offset = first * rb;
        (offset, (count * rb).min(self.size() - offset))
    }

    /// Records how far a pass got (after the target flushed), so that the
    /// next start continues from there: not past a region it could not
    /// read. False if the target did not flush.
    fn checkpoint(&self, pass: &Pass) -> bool {
        if self.leg_io_wait(pass.leg, Job::Flush).is_err() {
            return false;
        }
        let cursor = pass.unreadable.cursor(pass.cursor);
        let _ = self.record_cursor(pass.leg, pass.changes, cursor, pass.full);
        true
    }

    fn span_regions(&self) -> u64 {
        (SPAN_BYTES / self.intent.region_bytes()).max(1)
    }

    /// How many regions from `first` on are set (of `which`), consecutively
    /// (up to a span).
    fn span_of_set(&self, first: u64, which: Marks) -> u64 {
        let max = self.span_regions().min(self.intent.len() - first);
        (1..max).find(|&i| !self.intent.is_set(first + i, which)).unwrap_or(max)
    }

    /// Copies regions `[first, first+count)` from `source` (or any in-sync
    /// leg) to `targets`, as one I/O each way under one range lock.
    fn copy_span(self: &Arc<Self>, first: u64, count: u64, source: Option<usize>, targets: &[usize]) -> Step {
        self.throttle();
        if self.shutting_down.load(Relaxed) {
            return Step::Stopped;
        }
        let (offset, len) = self.byte_range(first, count);
        let guard = self.lock_wait(offset, len);
        let Some(src) = source.or_else(|| self.legs.iter().position(|l| l.is_in_sync())) else {
            return Step::Stopped;
        };
        let data = match self.leg_io_wait(src, Job::Read { offset, len: len as usize }) {
            Ok(LegOut::Data(d)) => d,
            _ => {
                drop(guard);
                return match self.fault_leg(src, FaultReason::ReadErrors { count: 1 }) {
                    Ok(()) => Step::SourceFailed,
                    Err(_) => Step::Unreadable,
                };
            }
        };
        let mut failed = false;
        let live: Vec<usize> = targets.iter().copied().filter(|&t| self.legs[t].takes_writes()).collect();
        let mut data = Some(data);
        for (i, &t) in live.iter().enumerate() {
            // The last target takes the buffer itself; others get a copy.
            let copy = if i + 1 == live.len() {
                data.take().expect("one buffer per span")
            } else {
                crate::buf::AlignedBuf::from_slice(data.as_ref().expect("not yet moved").as_slice())
            };
            if let Err(e) = self.leg_io_wait(t, Job::WriteOwned { offset, data: copy }) {
                let errno = e.raw_os_error().unwrap_or(libc::EIO);
                let _ = self.fault_leg(t, FaultReason::RebuildError { errno });
                failed = true;
            }
        }
        drop(guard);
        if failed && targets.iter().all(|&t| !self.legs[t].takes_writes()) {
            return Step::TargetFailed;
        }
        self.resync_bytes.fetch_add(len, Relaxed);
        self.resync.lock().done_bytes += len;
        Step::Copied(len)
    }

    pub(super) fn lock_wait(self: &Arc<Self>, offset: u64, len: u64) -> super::rangelock::RangeGuard {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.locks.lock(offset, offset + len, move |g| drop(tx.send(g)));
        rx.recv().expect("the range lock grants every request")
    }

    /// Sleeps as needed to keep to the resync rate, and while paused.
    fn throttle(&self) {
        loop {
            let p = self.resync.lock().clone();
            if !p.paused || self.shutting_down.load(Relaxed) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let p = self.resync.lock().clone();
        let busy = self.host_idle_for_ms() < HOST_BUSY_MS;
        let max = p.max_mib_s.unwrap_or(self.tun().resync_max_mib_s);
        let rate =
            if busy { self.tun().resync_min_mib_s.min(if max == 0 { u64::MAX } else { max }) } else { max };
        if rate == 0 {
            return;
        }
        let Some(started) = p.started.and_then(|s| s.elapsed().ok()) else { return };
        let allowed = rate as f64 * 1048576.0 * started.as_secs_f64();
        if (p.done_bytes as f64) > allowed {
            let ahead = (p.done_bytes as f64 - allowed) / (rate as f64 * 1048576.0);
            std::thread::sleep(Duration::from_secs_f64(ahead.min(0.25)));
        }
    }
}
