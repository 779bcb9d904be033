//! The write-intent bitmap at run time (md's bitmap, DRBD's activity log).
//!
//! Before the first write to a clean region goes to any leg, the region's bit
//! is made durable in every live metadata copy; the write waits (queued, not
//! blocking its caller) until the metadata thread has written the page. Bits
//! of regions that are already set cost nothing, so steady writes do no
//! metadata I/O. A region's bit is cleared lazily, by [`Intent::clear_idle`],
//! once no write is in flight there, it has been idle for the clear delay,
//! every leg is in sync and every leg has flushed since.
//!
//! Extents (DRBD's activity-log extents): while every leg is in sync, the
//! first write to a clean region sets the bits of its whole extent, an
//! aligned group of regions (`bitmap_extent_size`, 4 MiB by default), in the
//! same page write. Nearby writes then find their bits set and wait for
//! nothing; random 4 KiB writes over a fresh LUN pay one metadata write per
//! extent, not per region. Activity is kept per extent, so an extent's bits
//! are cleared together, once all of it has been idle for the clear delay.
//! The price is more to copy after a crash: whole extents. A leg's
//! difference resync stays exact: the bits an extent's marking set for
//! regions no write has touched since are known (`by_extent`, in memory
//! only), and the resync skips them, since the legs were equal there when
//! they were set and no write has been there since. While a leg is out
//! (faulted, rebuilding, left behind) a write sets only its own regions'
//! bits. After a restart every set bit is copied: `by_extent` is not kept.
//!
//! Memory: two bits per region (`bits`, `by_extent`) plus one word per
//! bitmap page (`pending`): about 1 MiB per TiB at the default 256 KiB
//! regions. The metadata thread copies only the pages it writes.
//!
//! The activity log is bounded (DRBD's `al-extents`): with
//! `bitmap_active_size`, at most that many bytes of extents are active
//! (written since their bits were last cleared) while every leg is in sync
//! and no recovery runs. A write that needs a new extent beyond the limit
//! first clears the least recently used idle ones (down to a low watermark,
//! so one scan serves many), in the same metadata write; the metadata
//! thread has every leg flushed before it writes such a batch, as for any
//! clear, and keeps the extents marked if a flush fails. If
//! every active extent has a write in flight, the write waits for one to
//! end (counted in `waits`). A crash then leaves at most the limit to copy,
//! plus the extents being marked at that instant (a batch reaches each
//! metadata copy in turn, and an open ORs the copies' pages).
//!
//! The volume can grow while it runs ([`Intent::grow`]): the bits live in a
//! [`Map`] behind a read-write lock that only a grow takes for writing, with
//! `st` held and no batch being written.
//!
//! The hot path takes no global lock. A write records itself, per extent, in
//! one of [`SHARDS`] activity maps, then reads its regions' bits and their
//! pages' `pending` marks: a set bit on a page with nothing pending is on
//! disk. Every change of a bit happens under `st`, marks its page pending
//! (with the batch that will write it) and, for a clear, happens under the
//! extent's shard lock after checking that no write is in flight in the
//! extent; a write increments its extent's count under that lock before it
//! reads the bits, so one of the two always sees the other.

use crate::meta::{MetaError, MetaStore};
use bitvec::order::Lsb0;
use bitvec::slice::BitSlice;
use bitvec::vec::BitVec;
use parking_lot::{Condvar, Mutex, MutexGuard, RwLock};
use std::collections::{BTreeSet, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

mod map;

pub(crate) use map::Marks;
use map::{word_bit, Map};

pub(crate) type Bits = BitVec<u64, Lsb0>;
pub(crate) type IntentDone = Box<dyn FnOnce(Result<(), Arc<MetaError>>) + Send>;

struct Active {
    inflight: u32,
    last: Instant,
}

const SHARDS: usize = 32;
/// `pending` of a page whose bits are all on disk.
const DURABLE: u64 = 0;
/// A dirty-page entry that only forces a batch (see [`Intent::sync`]).
const FORCE: usize = usize::MAX;

/// Region numbers are already well spread: hash them with one multiply.
#[derive(Default)]
struct RegionHasher(u64);

impl Hasher for RegionHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8 | u64::from(b)).wrapping_mul(0x9e3779b97f4a7c15);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9e3779b97f4a7c15);
    }
}

type ActiveMap = HashMap<u64, Active, BuildHasherDefault<RegionHasher>>;

struct State {
    dirty_pages: BTreeSet<usize>,
    /// The batch number the next metadata write will carry (never 0).
    next_batch: u64,
    waiters: Vec<(u64, IntentDone)>,
    /// The metadata thread is writing a batch it snapshotted.
    writing: bool,
    stop: bool,
    /// Extents cleared to make room, whose clear the next batch writes once
    /// every leg has flushed.
    evicted: Vec<u64>,
    /// Writes waiting for an active extent to become idle.
    blocked: Vec<Blocked>,
}

/// What the least recently used search found.
enum Lru {
    /// This many idle extents evicted (0 if all were written again meanwhile).
    Evicted(usize),
    /// None idle; another write is in flight and will end.
    Busy,
    /// None idle, and only the asking write is in flight.
    OnlyOwn,
}

/// A write that needs a new extent while every active one is busy.
struct Blocked {
    first: u64,
    last: u64,
    done: IntentDone,
}

/// At the limit, evict down to `limit - limit / EVICT_SLACK` (a 1024-extent
/// log: 64 per scan).
const EVICT_SLACK: usize = 16;

/// What clearing bits needs from the volume, given once it is open.
pub(crate) trait Housekeeping: Send + Sync {
    /// Whether bits of idle extents may be cleared now: every leg is in
    /// sync and no crash recovery or new capacity is being copied.
    fn may_clear(&self) -> bool;
    /// Flushes every leg that needs it; true only if each did and bits may
    /// still be cleared.
    fn flush_for_clear(&self) -> bool;
}

/// The activity log's figures, for status.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Activity {
    /// Extents written since their bits were last cleared.
    pub active: u64,
    /// The most that may be active (0: no limit).
    pub limit: u64,
    /// Idle extents cleared to make room for a new one.
    pub evictions: u64,
    /// Writes that waited because every active extent was busy.
    pub waits: u64,
}

pub(crate) struct Intent {
    store: Arc<MetaStore>,
    /// Off (`bitmap = false`): writes wait for nothing and set no bits.
    enabled: bool,
    region_shift: u32,
    /// log2 of the regions per extent.
    extent_shift: u32,
    shards: Vec<Mutex<ActiveMap>>,
    /// Lock order: `st`, a shard, then `map`; `map` is written only by
    /// [`Intent::grow`] with `st` held.
    map: RwLock<Map>,
    st: Mutex<State>,
    wake: Condvar,
    /// Signalled when a batch write ends (`writing` falls).
    written: Condvar,
    /// At most this many active extents (0: no limit).
    active_limit: usize,
    /// Entries in the activity maps: extents written since their last clear.
    active: AtomicUsize,
    /// `st.blocked.len()`, readable without `st`.
    blocked: AtomicUsize,
    evictions: AtomicU64,
    waits: AtomicU64,
    housekeeping: OnceLock<Box<dyn Housekeeping>>,
}

impl Intent {
    /// An extent smaller than a region is one region. `active_limit` is in
    /// extents (0: no limit).
    pub fn new(
        store: Arc<MetaStore>,
        bits: Bits,
        region_size: u64,
        extent_size: u64,
        active_limit: usize,
        enabled: bool,
    ) -> Arc<Intent> {
        let regions = bits.len() as u64;
        let pages = (bits.len()).div_ceil(MetaStore::regions_per_page());
        Arc::new(Intent {
            store,
            enabled,
            region_shift: region_size.trailing_zeros(),
            extent_shift: extent_size.max(region_size).trailing_zeros() - region_size.trailing_zeros(),
            shards: (0..SHARDS).map(|_| Mutex::new(ActiveMap::default())).collect(),
            map: RwLock::new(Map {
                regions,
                bits: bits.as_raw_slice().iter().map(|&w| AtomicU64::new(w)).collect(),
                pending: (0..pages).map(|_| AtomicU64::new(DURABLE)).collect(),
                by_extent: (0..bits.as_raw_slice().len()).map(|_| AtomicU64::new(0)).collect(),
            }),
            st: Mutex::new(State {
                dirty_pages: BTreeSet::new(),
                next_batch: 1,
                waiters: Vec::new(),
                writing: false,
                stop: false,
                evicted: Vec::new(),
                blocked: Vec::new(),
            }),
            wake: Condvar::new(),
            written: Condvar::new(),
            active_limit,
            active: AtomicUsize::new(0),
            blocked: AtomicUsize::new(0),
            evictions: AtomicU64::new(0),
            waits: AtomicU64::new(0),
            housekeeping: OnceLock::new(),
        })
    }

    /// Gives the volume's side of clearing; until then no extent is cleared
    /// to make room (the limit is not enforced).
    pub fn set_housekeeping(&self, h: Box<dyn Housekeeping>) {
        let _ = self.housekeeping.set(h);
    }

    pub fn activity(&self) -> Activity {
        Activity {
            active: self.active.load(Ordering::Relaxed) as u64,
            limit: self.active_limit as u64,
            evictions: self.evictions.load(Ordering::Relaxed),
            waits: self.waits.load(Ordering::Relaxed),
        }
    }

    pub fn store(&self) -> &Arc<MetaStore> {
        &self.store
    }

    /// Regions `[first, last]` covering the byte range.
    pub fn regions(&self, offset: u64, len: u64) -> (u64, u64) {
        (offset >> self.region_shift, (offset + len.max(1) - 1) >> self.region_shift)
    }

    pub fn region_bytes(&self) -> u64 {
        1 << self.region_shift
    }

    fn page(r: u64) -> usize {
        r as usize / MetaStore::regions_per_page()
    }

    fn extent(&self, region: u64) -> u64 {
        region >> self.extent_shift
    }

    /// The regions of extent `e`, within `map`.
    fn extent_regions(&self, map: &Map, e: u64) -> std::ops::Range<u64> {
        let first = e << self.extent_shift;
        first.min(map.regions)..((e + 1) << self.extent_shift).min(map.regions)
    }

    fn shard(&self, extent: u64) -> &Mutex<ActiveMap> {
        &self.shards[(extent as usize) % SHARDS]
    }

    pub fn is_set(&self, r: u64, which: Marks) -> bool {
        let m = self.map.read();
        r < m.regions && m.has(r, which)
    }

    /// Sets or clears a bit and marks its page for the next batch. Under `st`.
    fn set_bit(map: &Map, st: &mut State, r: u64, on: bool) {
        let (w, m) = word_bit(r);
        if on {
            map.bits[w].fetch_or(m, Ordering::Release);
        } else {
            map.bits[w].fetch_and(!m, Ordering::Release);
            map.by_extent[w].fetch_and(!m, Ordering::Release);
        }
        let page = Self::page(r);
        st.dirty_pages.insert(page);
        map.pending[page].store(st.next_batch, Ordering::Release);
    }

    /// Marks a write to `[first, last]` as in flight and calls `done` once
    /// their bits are durable (at once if they already were). If a region
    /// is clean and `extents()` says so (every leg in sync), its whole
    /// extent is set with it; `extents` is asked only then, off the path of
    /// writes whose bits are already on disk.
    pub fn begin(&self, first: u64, last: u64, extents: impl FnOnce() -> bool, done: IntentDone) {
        if !self.enabled {
            return done(Ok(()));
        }
        self.hold(first, last);
        let durable = {
            let map = self.map.read();
            map.written(first, last);
            (first..=last).all(|r| map.is_durable(r))
        };
        if durable {
            return done(Ok(()));
        }
        let mut st = self.st.lock();
        match self.mark(&mut st, first, last, extents) {
            Some(batch) => self.wait_for(st, batch, done),
            None => self.block(st, Blocked { first, last, done }),
        }
    }

    /// Records a write in flight in `[first, last]`'s extents.
    fn hold(&self, first: u64, last: u64) {
        let now = Instant::now();
        for e in self.extent(first)..=self.extent(last) {
            let mut shard = self.shard(e).lock();
            let a = shard.entry(e).or_insert_with(|| {
                self.active.fetch_add(1, Ordering::SeqCst);
                Active { inflight: 0, last: now }
            });
            a.inflight += 1;
        }
    }

    /// The write in flight in `[first, last]`'s extents is over there.
    fn unhold(&self, first: u64, last: u64) {
        let now = Instant::now();
        for e in self.extent(first)..=self.extent(last) {
            if let Some(a) = self.shard(e).lock().get_mut(&e) {
                a.inflight -= 1;
                a.last = now;
            }
        }
    }

    /// Sets the bits of the clean regions in `[first, last]`, of their whole
    /// extents if `extents()` says so (asked at most once), after making
    /// room under the limit. Returns the batch that makes them durable
    /// (`DURABLE`: none), or `None` if every active extent is busy. Under `st`.
    fn mark(&self, st: &mut State, first: u64, last: u64, extents: impl FnOnce() -> bool) -> Option<u64> {
        // Another write's extent marking may have reached these regions
        // since the caller looked (it marks under `st`).
        let clean = {
            let map = self.map.read();
            map.written(first, last);
            (first..=last).any(|r| !map.is_set(r))
        };
        let whole = clean && extents();
        if whole && !self.make_room(st, self.extent(first)..=self.extent(last)) {
            return None;
        }
        let map = self.map.read();
        let mut wait_for = DURABLE;
        for r in first..=last {
            if !map.is_set(r) {
                if whole {
                    self.set_extent(&map, st, self.extent(r), first..=last);
                } else {
                    Self::set_bit(&map, st, r, true);
                }
            }
            wait_for = wait_for.max(map.pending[Self::page(r)].load(Ordering::Acquire));
        }
        Some(wait_for)
    }

    /// Calls `done` once batch `batch` is on disk (at once for `DURABLE`).
    fn wait_for(&self, mut st: MutexGuard<'_, State>, batch: u64, done: IntentDone) {
        if batch == DURABLE {
            drop(st);
            return done(Ok(()));
        }
        st.waiters.push((batch, done));
        drop(st);
        self.wake.notify_one();
    }

    /// Clears least recently used idle extents until no more than the limit
    /// are active. False if it cannot because every other active extent has
    /// a write in flight: one of them will end. With nothing else in flight
    /// (a write spanning more extents than the limit) the write goes over
    /// the limit rather than wait for nothing. Clears only what the volume
    /// allows (every leg in sync, no recovery); otherwise the limit waits.
    /// Under `st`.
    fn make_room(&self, st: &mut State, own: RangeInclusive<u64>) -> bool {
        let Some(hk) = self.housekeeping.get() else { return true };
        if self.active_limit == 0
            || self.active.load(Ordering::SeqCst) <= self.active_limit
            || !hk.may_clear()
        {
            return true;
        }
        // Down to a low watermark, so that one scan serves many new extents.
        let target = self.active_limit - self.active_limit / EVICT_SLACK;
        while self.active.load(Ordering::SeqCst) > self.active_limit {
            let want = self.active.load(Ordering::SeqCst).saturating_sub(target).max(1);
            match self.evict_lru_idle(st, &own, want) {
                Lru::Evicted(n) => {
                    self.evictions.fetch_add(n as u64, Ordering::Relaxed);
                }
                Lru::Busy => return false,
                Lru::OnlyOwn => return true,
            }
        }
        true
    }

    /// Removes up to `want` of the least recently used idle extents from the
    /// activity maps and clears their bits (`clear_if_idle`). Under `st`.
    fn evict_lru_idle(&self, st: &mut State, own: &RangeInclusive<u64>, want: usize) -> Lru {
        let (mut idle, mut others_busy) = (Vec::new(), false);
        for shard in &self.shards {
            for (&e, a) in shard.lock().iter() {
                if a.inflight == 0 {
                    idle.push((a.last, e));
                } else if !own.contains(&e) {
                    others_busy = true;
                }
            }
        }
        if idle.is_empty() {
            return if others_busy { Lru::Busy } else { Lru::OnlyOwn };
        }
        let want = want.min(idle.len());
        if want < idle.len() {
            idle.select_nth_unstable(want - 1);
            idle.truncate(want);
        }
        let mut evicted = 0;
        for (stamp, e) in idle {
            // One written again since the scan stays.
            if self.clear_if_idle(st, e, stamp).is_some() {
                st.evicted.push(e);
                evicted += 1;
            }
        }
        Lru::Evicted(evicted)
    }

    /// Clears extent `e`'s bits and forgets its activity if it is still idle
    /// since `stamp`; returns how many bits it cleared. Lock order: `st`
    /// (held by the caller), then the shard. With the shard held no write
    /// can start here: it either came before (and is seen in flight) or
    /// comes after and sees its bits clear, their page pending.
    fn clear_if_idle(&self, st: &mut State, e: u64, stamp: Instant) -> Option<usize> {
        let mut shard = self.shard(e).lock();
        if !shard.get(&e).is_some_and(|a| a.inflight == 0 && a.last == stamp) {
            return None;
        }
        shard.remove(&e);
        self.active.fetch_sub(1, Ordering::SeqCst);
        let map = self.map.read();
        let mut n = 0;
        for r in self.extent_regions(&map, e) {
            if map.is_set(r) {
                Self::set_bit(&map, st, r, false);
                n += 1;
            }
        }
        Some(n)
    }

    /// Parks a write until an active extent becomes idle. It lets go of its
    /// own extents meanwhile, so parked writes never wait for each other;
    /// a write that ends before this looks again is seen by the retry.
    fn block(&self, mut st: MutexGuard<'_, State>, b: Blocked) {
        self.waits.fetch_add(1, Ordering::Relaxed);
        self.unhold(b.first, b.last);
        st.blocked.push(b);
        self.blocked.store(st.blocked.len(), Ordering::SeqCst);
        self.retry_blocked(st);
    }

    /// Tries the parked writes again, in order.
    fn retry_blocked(&self, mut st: MutexGuard<'_, State>) {
        let mut now = Vec::new();
        for b in std::mem::take(&mut st.blocked) {
            self.hold(b.first, b.last);
            let may = self.housekeeping.get().is_none_or(|h| h.may_clear());
            match self.mark(&mut st, b.first, b.last, || may) {
                Some(DURABLE) => now.push(b.done),
                Some(batch) => st.waiters.push((batch, b.done)),
                None => {
                    self.unhold(b.first, b.last);
                    st.blocked.push(b);
                }
            }
        }
        self.blocked.store(st.blocked.len(), Ordering::SeqCst);
        drop(st);
        self.wake.notify_one();
        for done in now {
            done(Ok(()));
        }
    }

    /// Sets the clean regions of extent `e` for a write to `written`, in the
    /// same batch (their pages are marked with the same number); those
    /// outside `written` are set for the extent alone (`by_extent`). Under `st`.
    fn set_extent(&self, map: &Map, st: &mut State, e: u64, written: std::ops::RangeInclusive<u64>) {
        for n in self.extent_regions(map, e) {
            if !map.is_set(n) {
                Self::set_bit(map, st, n, true);
                if !written.contains(&n) {
                    let (w, m) = word_bit(n);
                    map.by_extent[w].fetch_or(m, Ordering::Release);
                }
            }
        }
    }

    /// The write to `[first, last]` is over (whatever its result).
    pub fn end(&self, first: u64, last: u64) {
        if !self.enabled {
            return;
        }
        self.unhold(first, last);
        if self.blocked.load(Ordering::SeqCst) > 0 {
            self.retry_blocked(self.st.lock());
        }
    }

    /// Marks every region (a crash without a bitmap: everything may differ).
    pub fn set_all(&self) {
        let mut st = self.st.lock();
        let map = self.map.read();
        for r in 0..map.regions {
            if !map.is_set(r) {
                Self::set_bit(&map, &mut st, r, true);
            }
        }
        drop((map, st));
        self.wake.notify_one();
    }

    /// Grows the bitmap to `regions`, with every region from `dirty_from` on
    /// set (they may differ between legs), and has `resize` make that durable
    /// (the store writes the new pages, then the header with the new size).
    /// Host writes go on meanwhile; only writes to clean regions, which wait
    /// for the metadata thread anyway, wait for the grow. If `resize` fails,
    /// nothing changes.
    pub fn grow(
        &self,
        regions: u64,
        dirty_from: u64,
        resize: impl FnOnce(&[(usize, &BitSlice<u64, Lsb0>)]) -> Result<(), MetaError>,
    ) -> Result<(), MetaError> {
        let mut st = self.st.lock();
        while st.writing {
            // The batch in flight was snapshotted at the old size.
            self.written.wait(&mut st);
        }
        let old = {
            let mut map = self.map.write();
            let old = (map.regions, map.bits.len(), map.pending.len());
            let pages = (regions as usize).div_ceil(MetaStore::regions_per_page());
            map.bits.resize_with(regions.div_ceil(64) as usize, || AtomicU64::new(0));
            map.by_extent.resize_with(regions.div_ceil(64) as usize, || AtomicU64::new(0));
            map.pending.resize_with(pages, || AtomicU64::new(DURABLE));
            map.regions = regions;
            old
        };
        let map = self.map.read();
        for r in dirty_from..regions {
            if r < old.0 {
                // An old region the new size extends: its page is written by
                // the metadata thread too, should the resize fail.
                Self::set_bit(&map, &mut st, r, true);
            } else {
                let (w, m) = word_bit(r);
                map.bits[w].fetch_or(m, Ordering::Release);
            }
        }
        let pages: Vec<(usize, Bits)> =
            MetaStore::grown_pages(old.0 as usize, regions as usize).map(|p| (p, map.snapshot(p))).collect();
        drop(map);
        let slices: Vec<_> = pages.iter().map(|(p, b)| (*p, b.as_bitslice())).collect();
        let result = resize(&slices);
        if result.is_err() {
            let mut map = self.map.write();
            // Clear the new regions' bits, in the old words past the old end
            // too: a later grow counts on them starting clear.
            for r in old.0..(old.1 as u64 * 64).min(regions) {
                let (w, m) = word_bit(r);
                map.bits[w].fetch_and(!m, Ordering::Release);
            }
            map.regions = old.0;
            map.bits.truncate(old.1);
            map.by_extent.truncate(old.1);
            map.pending.truncate(old.2);
        }
        drop(st);
        result
    }

    /// The first set bit (of `which`) at or after `from`.
    pub fn next_set(&self, from: u64, which: Marks) -> Option<u64> {
        let map = self.map.read();
        let mut w = (from / 64) as usize;
        let mut mask = !0u64 << (from % 64);
        while w < map.bits.len() {
            let word = map.word(w, which) & mask;
            if word != 0 {
                let r = w as u64 * 64 + u64::from(word.trailing_zeros());
                return (r < map.regions).then_some(r);
            }
            w += 1;
            mask = !0;
        }
        None
    }

    pub fn count_set(&self) -> u64 {
        self.count_set_from(0, Marks::All)
    }

    /// Like [`count_set`](Self::count_set), between two changes: an
    /// eviction's clear and the new extent's marking are seen together.
    pub fn count_set_settled(&self) -> u64 {
        let _st = self.st.lock();
        self.count_set()
    }

    /// How many regions from `from` on are set, of `which` (bits past the
    /// last region, which a bitmap truncated at open may keep in its last
    /// word, are not).
    pub fn count_set_from(&self, from: u64, which: Marks) -> u64 {
        let map = self.map.read();
        (from / 64..map.regions.div_ceil(64))
            .map(|w| {
                let lo = if w == from / 64 { !0u64 << (from % 64) } else { !0 };
                let end = map.regions - w * 64;
                let hi = if end < 64 { (1u64 << end) - 1 } else { !0 };
                u64::from((map.word(w as usize, which) & lo & hi).count_ones())
            })
            .sum()
    }

    pub fn len(&self) -> u64 {
        self.map.read().regions
    }

    /// Idle extents whose bits may be cleared once the legs have flushed.
    pub fn idle_extents(&self, delay: Duration) -> Vec<(u64, Instant)> {
        let now = Instant::now();
        let mut out = Vec::new();
        for shard in &self.shards {
            let shard = shard.lock();
            let idle = shard.iter().filter(|(_, a)| a.inflight == 0 && now.duration_since(a.last) >= delay);
            out.extend(idle.map(|(&r, a)| (r, a.last)));
        }
        out
    }

    /// Clears the given extents' regions unless they were written again
    /// since `idle_extents` reported them. Call only after every leg flushed.
    /// Returns how many bits it cleared.
    pub fn clear_idle(&self, extents: &[(u64, Instant)]) -> usize {
        let mut st = self.st.lock();
        let n = extents.iter().filter_map(|&(e, stamp)| self.clear_if_idle(&mut st, e, stamp)).sum();
        drop(st);
        self.wake.notify_one();
        n
    }

    /// Clears bits left from before (crash recovery, resync) that no write
    /// holds, after every leg has them and flushed.
    pub fn clear_unheld(&self, first: u64, last: u64) {
        let mut st = self.st.lock();
        for r in first..=last {
            if !self.is_set(r, Marks::All) {
                continue;
            }
            let e = self.extent(r);
            let shard = self.shard(e).lock();
            if !shard.contains_key(&e) {
                Self::set_bit(&self.map.read(), &mut st, r, false);
            }
        }
        drop(st);
        self.wake.notify_one();
    }

    /// Writes every dirty page now and waits for it (clean shutdown, tests).
    pub fn sync(&self) -> Result<(), Arc<MetaError>> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        {
            let mut st = self.st.lock();
            let batch = st.next_batch;
            st.waiters.push((batch, Box::new(move |r| drop(tx.send(r)))));
            st.dirty_pages.insert(FORCE);
        }
        self.wake.notify_one();
        rx.recv().unwrap_or(Ok(()))
    }

    pub fn stop(&self) {
        self.st.lock().stop = true;
        self.wake.notify_all();
    }

    /// Evicted extents whose legs did not all flush stay marked: set again
    /// in memory (the next batch writes them too) and in this batch's pages.
    fn keep_marked(&self, evicted: &[u64], pages: &mut [(usize, Bits)]) {
        let rpp = MetaStore::regions_per_page() as u64;
        let mut st = self.st.lock();
        let map = self.map.read();
        for &e in evicted {
            for r in self.extent_regions(&map, e) {
                Self::set_bit(&map, &mut st, r, true);
                if let Some((_, bits)) = pages.iter_mut().find(|(p, _)| *p == Self::page(r)) {
                    bits.set((r % rpp) as usize, true);
                }
            }
        }
        drop((map, st));
        log::warn!("{} extents stay marked: a leg did not flush before their clear", evicted.len());
    }

    /// The metadata thread: writes dirty pages in batches and wakes the
    /// writes that waited for them. A page whose write failed stays pending
    /// and is tried again with the next batch.
    pub fn run(self: Arc<Self>) {
        loop {
            let (pages, batch) = {
                let mut st = self.st.lock();
                while st.dirty_pages.is_empty() && !st.stop {
                    self.wake.wait(&mut st);
                }
                if st.stop && st.dirty_pages.is_empty() {
                    return;
                }
                let map = self.map.read();
                let mut pages: Vec<(usize, Bits)> = std::mem::take(&mut st.dirty_pages)
                    .into_iter()
                    .filter(|&p| p != FORCE)
                    .map(|p| (p, map.snapshot(p)))
                    .collect();
                drop(map);
                let batch = st.next_batch;
                st.next_batch += 1;
                st.writing = true;
                let evicted = std::mem::take(&mut st.evicted);
                drop(st);
                // Every write to an evicted extent ended before it was
                // evicted: a flush now makes them stable before the clear is.
                if !evicted.is_empty() && !self.housekeeping.get().is_none_or(|h| h.flush_for_clear()) {
                    self.keep_marked(&evicted, &mut pages);
                }
                (pages, batch)
            };
            let slices: Vec<_> = pages.iter().map(|(p, b)| (*p, b.as_bitslice())).collect();
            let result = self.store.write_pages(&slices).map_err(Arc::new);
            let ready: Vec<IntentDone> = {
                let mut st = self.st.lock();
                st.writing = false;
                self.written.notify_all();
                let map = self.map.read();
                for (p, _) in &pages {
                    if result.is_ok() {
                        // Unless a later change re-marked it, the page is on disk.
                        let _ = map.pending[*p].compare_exchange(
                            batch,
                            DURABLE,
                            Ordering::AcqRel,
                            Ordering::Acquire,
                        );
                    } else {
                        st.dirty_pages.insert(*p);
                        map.pending[*p].store(st.next_batch, Ordering::Release);
                    }
                }
                drop(map);
                let (ready, keep) =
                    std::mem::take(&mut st.waiters).into_iter().partition(|(b, _)| *b <= batch);
                st.waiters = keep;
                ready.into_iter().map(|(_, d)| d).collect()
            };
            if let Err(e) = &result {
                log::error!("write-intent bitmap not written (writes to new regions fail until it is): {e}");
                // Do not spin on a dead store: the next batch waits for new work.
                std::thread::sleep(Duration::from_millis(100));
            }
            for done in ready {
                done(result.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::testutil::TempDir;
    use crate::meta::Header;

    /// An intent over `bits`, one per region of `region` bytes, with its
    /// metadata in `dir`.
    fn intent(dir: &TempDir, bits: Bits, region: u64) -> Arc<Intent> {
        intent_with_extents(dir, bits, region, region)
    }

    fn intent_with_extents(dir: &TempDir, bits: Bits, region: u64, extent: u64) -> Arc<Intent> {
        intent_limited(dir, bits, region, extent, 0)
    }

    fn intent_limited(dir: &TempDir, bits: Bits, region: u64, extent: u64, limit: usize) -> Arc<Intent> {
        let h = Header::new("t", bits.len() as u64 * region, 512, region, vec![]).unwrap();
        let opened = MetaStore::create(&[dir.path("m")], &h).unwrap();
        Intent::new(Arc::new(opened.store), bits, region, extent, limit, true)
    }

    /// The volume's side, scripted: whether clearing is allowed, and whether
    /// flushes succeed; counts the flushes.
    struct Volume {
        may: std::sync::atomic::AtomicBool,
        flush_ok: std::sync::atomic::AtomicBool,
        flushes: AtomicU64,
    }

    impl Housekeeping for Arc<Volume> {
        fn may_clear(&self) -> bool {
            self.may.load(Ordering::SeqCst)
        }
        fn flush_for_clear(&self) -> bool {
            self.flushes.fetch_add(1, Ordering::SeqCst);
            self.flush_ok.load(Ordering::SeqCst)
        }
    }

    /// An intent of 64 regions in extents of 8, with at most `limit` active,
    /// its metadata thread running, and the scripted volume side.
    fn limited(dir: &TempDir, limit: usize) -> (Arc<Intent>, Arc<Volume>, std::thread::JoinHandle<()>) {
        let i = intent_limited(dir, Bits::repeat(false, 64), 4096, 8 * 4096, limit);
        let vol = Arc::new(Volume { may: true.into(), flush_ok: true.into(), flushes: AtomicU64::new(0) });
        i.set_housekeeping(Box::new(vol.clone()));
        let worker = std::thread::spawn({
            let i = i.clone();
            move || i.run()
        });
        (i, vol, worker)
    }

    /// Writes once in each of `extents`, in order, each ended before the next.
    fn touch(i: &Intent, extents: &[u64]) {
        for &e in extents {
            begin_wait(i, e * 8, e * 8, true);
            i.end(e * 8, e * 8);
            std::thread::sleep(Duration::from_millis(2)); // distinct last-use times
        }
    }

    fn set_extents(i: &Intent) -> Vec<u64> {
        (0..8).filter(|&e| (e * 8..e * 8 + 8).any(|r| i.is_set(r, Marks::All))).collect()
    }

    /// Starts `begin` and says whether `done` ran before it returned (the
    /// bits were durable already), then waits for `done`.
    fn begin_wait(i: &Intent, first: u64, last: u64, extents: bool) -> bool {
        let (tx, rx) = crossbeam_channel::bounded(1);
        i.begin(
            first,
            last,
            || extents,
            Box::new(move |r| {
                let _ = tx.send(r.is_ok());
            }),
        );
        let at_once = rx.try_recv().ok();
        at_once.is_some() || {
            assert!(rx.recv_timeout(Duration::from_secs(10)).unwrap(), "metadata written");
            false
        }
    }

    #[test]
    fn a_cold_write_marks_its_whole_extent_and_its_neighbours_wait_for_nothing() {
        let dir = TempDir::new("intent");
        let i = intent_with_extents(&dir, Bits::repeat(false, 64), 4096, 8 * 4096);
        let worker = std::thread::spawn({
            let i = i.clone();
            move || i.run()
        });
        assert!(!begin_wait(&i, 3, 3, true), "a clean region waits for the metadata");
        let set: Vec<u64> = (0..64).filter(|&r| i.is_set(r, Marks::All)).collect();
        assert_eq!(set, (0..8).collect::<Vec<_>>(), "the whole extent, nothing past it");
        let written = |i: &Intent| (0..64).filter(|&r| i.is_set(r, Marks::Written)).collect::<Vec<_>>();
        assert_eq!(written(&i), vec![3], "the others are set for the extent alone: equal on every leg");
        assert!(begin_wait(&i, 5, 6, true), "a neighbour in the extent is durable already");
        assert_eq!(written(&i), vec![3, 5, 6], "a write there makes it one that may differ");
        assert_eq!(i.count_set_from(0, Marks::Written), 3);
        // A leg is out: only the written region, so its resync stays exact.
        assert!(!begin_wait(&i, 20, 20, false));
        assert_eq!((16..24).filter(|&r| i.is_set(r, Marks::All)).collect::<Vec<_>>(), vec![20]);
        i.end(3, 3);
        i.end(5, 6);
        i.end(20, 20);
        // Activity is per extent: one write in flight keeps all of it set.
        assert!(begin_wait(&i, 7, 7, true));
        let idle = i.idle_extents(Duration::ZERO);
        assert_eq!(idle.iter().map(|(e, _)| *e).collect::<Vec<_>>(), vec![2]);
        assert_eq!(i.clear_idle(&idle), 1);
        assert_eq!(i.count_set(), 8);
        i.end(7, 7);
        let idle = i.idle_extents(Duration::ZERO);
        assert_eq!(i.clear_idle(&idle), 8, "the extent's bits are cleared together");
        assert_eq!(i.count_set(), 0);
        i.stop();
        worker.join().unwrap();
    }

    #[test]
    fn next_set_finds_bits_across_words_and_stops_at_the_end() {
        let mut b = Bits::repeat(false, 200);
        b.set(3, true);
        b.set(130, true);
        let dir = TempDir::new("intent");
        let i = intent(&dir, b, 4096);
        assert_eq!(i.next_set(0, Marks::All), Some(3));
        assert_eq!(i.next_set(4, Marks::All), Some(130));
        assert_eq!(i.next_set(131, Marks::All), None);
        assert_eq!(i.count_set(), 2);
        assert_eq!(
            (
                i.count_set_from(3, Marks::All),
                i.count_set_from(4, Marks::All),
                i.count_set_from(131, Marks::All)
            ),
            (2, 1, 0)
        );
        let snap = i.map.read().snapshot(0);
        assert_eq!(snap.len(), 200);
        assert!(snap[130] && snap[3] && !snap[4]);
    }

    #[test]
    fn bits_a_truncated_bitmap_keeps_past_its_end_are_not_counted() {
        let dir = TempDir::new("intent");
        let mut bits = Bits::repeat(true, 200);
        bits.truncate(130); // as an open that shrank the volume leaves it
        let i = intent(&dir, bits, 4096);
        assert_eq!(
            (i.count_set(), i.count_set_from(129, Marks::All), i.next_set(130, Marks::All)),
            (130, 1, None)
        );
    }

    #[test]
    fn a_grow_the_store_refuses_leaves_the_bitmap_as_it_was() {
        let dir = TempDir::new("intent");
        let i = intent(&dir, Bits::repeat(false, 100), 4096);
        let refused = || Err(MetaError::Invalid { what: "no".into() });
        assert!(i.grow(300, 99, |_| refused()).is_err());
        assert_eq!((i.len(), i.next_set(100, Marks::All)), (100, None));
        // The old region the grow would have extended stays marked (its page
        // is written by the metadata thread): harmless, and never lost.
        assert_eq!(i.count_set(), 1);
        let mut seen = Vec::new();
        i.grow(300, 99, |pages| {
            seen = pages.iter().map(|(p, b)| (*p, b.len(), b.count_ones())).collect();
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, vec![(0, 300, 201)]);
        assert_eq!(
            (i.len(), i.count_set_from(100, Marks::All), i.next_set(0, Marks::All)),
            (300, 200, Some(99))
        );
    }

    #[test]
    fn a_tib_at_the_default_region_size_keeps_about_a_mib_of_bitmap_in_memory() {
        let region = crate::config::DEFAULT_REGION_SIZE;
        let size = 1u64 << 40;
        let regions = (size / region) as usize;
        let dir = TempDir::new("intent");
        let i = intent(&dir, Bits::repeat(false, regions), region);
        let map = i.map.read();
        let bytes =
            (map.bits.len() + map.by_extent.len() + map.pending.len()) * std::mem::size_of::<AtomicU64>();
        assert!(bytes <= (1 << 20) + (4 << 10), "{bytes} bytes of bitmap state for 1 TiB");
        assert_eq!(map.bits.len() * 8, 512 << 10);
    }

    #[test]
    fn at_the_limit_a_new_extent_clears_the_least_recently_used_idle_one_after_a_flush() {
        let dir = TempDir::new("intent");
        let (i, vol, worker) = limited(&dir, 2);
        touch(&i, &[0, 1]);
        assert_eq!(vol.flushes.load(Ordering::SeqCst), 0, "no clear, no flush");
        touch(&i, &[2]);
        assert_eq!(set_extents(&i), vec![1, 2], "extent 0 was used least recently");
        assert!(vol.flushes.load(Ordering::SeqCst) >= 1, "the legs flushed before the clear was written");
        touch(&i, &[1, 3]);
        assert_eq!(set_extents(&i), vec![1, 3], "extent 1 was used again: 2 goes");
        let a = i.activity();
        assert_eq!((a.active, a.limit, a.evictions, a.waits), (2, 2, 2, 0));
        i.stop();
        worker.join().unwrap();
    }

    #[test]
    fn an_extent_whose_legs_did_not_flush_stays_marked() {
        let dir = TempDir::new("intent");
        let (i, vol, worker) = limited(&dir, 1);
        touch(&i, &[0]);
        vol.flush_ok.store(false, Ordering::SeqCst);
        touch(&i, &[1]);
        i.sync().unwrap();
        assert_eq!(set_extents(&i), vec![0, 1], "a clear without a flush would lose the bound's safety");
        i.stop();
        worker.join().unwrap();
    }

    #[test]
    fn with_every_active_extent_busy_a_new_one_waits_for_a_write_to_end() {
        let dir = TempDir::new("intent");
        let (i, _vol, worker) = limited(&dir, 1);
        assert!(!begin_wait(&i, 0, 0, true), "extent 0: a write in flight");
        let (tx, rx) = crossbeam_channel::bounded(1);
        i.begin(
            8,
            8,
            || true,
            Box::new(move |r| {
                let _ = tx.send(r.is_ok());
            }),
        );
        assert!(rx.recv_timeout(Duration::from_millis(200)).is_err(), "extent 1 must wait: 0 is busy");
        assert_eq!(i.activity().waits, 1);
        i.end(0, 0);
        assert!(rx.recv_timeout(Duration::from_secs(10)).unwrap(), "it goes on once extent 0 is idle");
        assert_eq!(set_extents(&i), vec![1]);
        i.end(8, 8);
        i.stop();
        worker.join().unwrap();
    }

    #[test]
    fn a_write_wider_than_the_limit_goes_over_it_rather_than_wait_for_nothing() {
        let dir = TempDir::new("intent");
        let (i, _vol, worker) = limited(&dir, 1);
        assert!(!begin_wait(&i, 4, 20, true), "three extents, nothing else in flight");
        assert_eq!(set_extents(&i), vec![0, 1, 2]);
        i.end(4, 20);
        touch(&i, &[5]);
        assert_eq!(set_extents(&i), vec![5], "the next new extent brings it back to the limit");
        i.stop();
        worker.join().unwrap();
    }

    #[test]
    fn while_bits_may_not_be_cleared_the_limit_waits() {
        let dir = TempDir::new("intent");
        let (i, vol, worker) = limited(&dir, 1);
        vol.may.store(false, Ordering::SeqCst); // a leg is out, or a recovery runs
        touch(&i, &[0, 1, 2]);
        assert_eq!(set_extents(&i), vec![0, 1, 2], "nothing is cleared");
        vol.may.store(true, Ordering::SeqCst);
        touch(&i, &[3]);
        assert_eq!(set_extents(&i), vec![3]);
        i.stop();
        worker.join().unwrap();
    }
}
