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
//! The hot path takes no global lock: a write records itself in one of
//! [`SHARDS`] activity maps, then checks `durable`, an atomic copy of the
//! bits known to be on disk. Only a write to a region not durably marked
//! goes to the slow path. The clearer removes a region's activity and its
//! durable bit under the same shard lock, after checking that no write is
//! in flight there; a write increments its count under that lock before it
//! reads `durable`, so one of the two always sees the other.

use crate::meta::{MetaError, MetaStore};
use bitvec::order::Lsb0;
use bitvec::vec::BitVec;
use parking_lot::{Condvar, Mutex};
use std::collections::{BTreeSet, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(crate) type Bits = BitVec<u64, Lsb0>;
pub(crate) type IntentDone = Box<dyn FnOnce(Result<(), Arc<MetaError>>) + Send>;

struct Active {
    inflight: u32,
    last: Instant,
}

const SHARDS: usize = 32;

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
    bits: Bits,
    dirty_pages: BTreeSet<usize>,
    /// Pages not yet durable, with the batch that will make them so. A bit
    /// that is set in memory but whose page is pending is not yet a promise.
    pending: HashMap<usize, u64>,
    /// The batch number the next metadata write will carry.
    next_batch: u64,
    waiters: Vec<(u64, IntentDone)>,
    stop: bool,
}

pub(crate) struct Intent {
    store: Arc<MetaStore>,
    /// Off (`bitmap = false`): writes wait for nothing and set no bits.
    enabled: bool,
    region_shift: u32,
    shards: Vec<Mutex<ActiveMap>>,
    /// Bits known to be set on disk (a subset of `State::bits`).
    durable: Vec<AtomicU64>,
    st: Mutex<State>,
    wake: Condvar,
}

impl State {
    fn set_bit(&mut self, r: u64, on: bool) {
        self.bits.set(r as usize, on);
        let page = r as usize / MetaStore::regions_per_page();
        self.dirty_pages.insert(page);
        self.pending.insert(page, self.next_batch);
    }
}

impl Intent {
    pub fn new(store: Arc<MetaStore>, bits: Bits, region_size: u64, enabled: bool) -> Arc<Intent> {
        let durable = bits.as_raw_slice().iter().map(|&w| AtomicU64::new(w)).collect();
        Arc::new(Intent {
            store,
            enabled,
            region_shift: region_size.trailing_zeros(),
            shards: (0..SHARDS).map(|_| Mutex::new(ActiveMap::default())).collect(),
            durable,
            st: Mutex::new(State {
                bits,
                dirty_pages: BTreeSet::new(),
                pending: HashMap::new(),
                next_batch: 1,
                waiters: Vec::new(),
                stop: false,
            }),
            wake: Condvar::new(),
        })
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

    /// Marks a write to `[first, last]` as in flight and calls `done` once
    /// their bits are durable (at once if they already were).
    pub fn begin(&self, first: u64, last: u64, done: IntentDone) {
        if !self.enabled {
            return done(Ok(()));
        }
        let now = Instant::now();
        for r in first..=last {
            let mut shard = self.shard(r).lock();
            shard.entry(r).or_insert(Active { inflight: 0, last: now }).inflight += 1;
        }
        if (first..=last).all(|r| self.is_durable(r)) {
            return done(Ok(()));
        }
        let mut st = self.st.lock();
        let mut wait_for = 0;
        for r in first..=last {
            if !st.bits[r as usize] {
                st.set_bit(r, true);
            }
            let page = r as usize / MetaStore::regions_per_page();
            if let Some(&batch) = st.pending.get(&page) {
                wait_for = wait_for.max(batch);
            }
        }
        if wait_for == 0 {
            drop(st);
            return done(Ok(()));
        }
        st.waiters.push((wait_for, done));
        drop(st);
        self.wake.notify_one();
    }

    fn shard(&self, region: u64) -> &Mutex<ActiveMap> {
        &self.shards[(region as usize) % SHARDS]
    }

    fn is_durable(&self, r: u64) -> bool {
        self.durable[(r / 64) as usize].load(Ordering::Acquire) & (1 << (r % 64)) != 0
    }

    fn clear_durable(&self, r: u64) {
        self.durable[(r / 64) as usize].fetch_and(!(1 << (r % 64)), Ordering::Release);
    }

    /// The write to `[first, last]` is over (whatever its result).
    pub fn end(&self, first: u64, last: u64) {
        if !self.enabled {
            return;
        }
        let now = Instant::now();
        for r in first..=last {
            if let Some(a) = self.shard(r).lock().get_mut(&r) {
                a.inflight -= 1;
                a.last = now;
            }
        }
    }

    /// Marks every region (a crash without a bitmap: everything may differ).
    pub fn set_all(&self) {
        let mut st = self.st.lock();
        let n = st.bits.len() as u64;
        for r in 0..n {
            if !st.bits[r as usize] {
                st.set_bit(r, true);
            }
        }
        drop(st);
        self.wake.notify_one();
    }

    pub fn is_set(&self, region: u64) -> bool {
        self.st.lock().bits[region as usize]
    }

    /// The first set bit at or after `from`.
    pub fn next_set(&self, from: u64) -> Option<u64> {
        let st = self.st.lock();
        let from = from as usize;
        if from >= st.bits.len() {
            return None;
        }
        st.bits[from..].first_one().map(|i| (from + i) as u64)
    }

    pub fn count_set(&self) -> u64 {
        self.st.lock().bits.count_ones() as u64
    }

    pub fn len(&self) -> u64 {
        self.st.lock().bits.len() as u64
    }

    /// Idle regions whose bits may be cleared once the legs have flushed.
    pub fn idle_regions(&self, delay: Duration) -> Vec<(u64, Instant)> {
        let now = Instant::now();
        let mut out = Vec::new();
        for shard in &self.shards {
            let shard = shard.lock();
            let idle = shard.iter().filter(|(_, a)| a.inflight == 0 && now.duration_since(a.last) >= delay);
            out.extend(idle.map(|(&r, a)| (r, a.last)));
        }
        out
    }

    /// Clears the given regions unless they were written again since
    /// `idle_regions` reported them. Call only after every leg flushed.
    pub fn clear_idle(&self, regions: &[(u64, Instant)]) -> usize {
        let mut gone = Vec::new();
        for &(r, stamp) in regions {
            let mut shard = self.shard(r).lock();
            let still_idle = shard.get(&r).is_some_and(|a| a.inflight == 0 && a.last == stamp);
            if still_idle {
                // Under the shard lock: a write that starts now sees the
                // durable bit gone and takes the slow path.
                self.clear_durable(r);
                shard.remove(&r);
                gone.push(r);
            }
        }
        // The durable bit may have been published again since (the metadata
        // thread holds `st`): check and clear again, with the shard held so
        // that no write can start in between.
        let mut st = self.st.lock();
        let mut n = 0;
        for r in gone {
            let shard = self.shard(r).lock();
            if st.bits[r as usize] && !shard.contains_key(&r) {
                self.clear_durable(r);
                st.set_bit(r, false);
                n += 1;
            }
        }
        drop(st);
        self.wake.notify_one();
        n
    }

    /// Clears bits left from before (crash recovery, resync) that no write
    /// holds, after every leg has them and flushed.
    pub fn clear_unheld(&self, first: u64, last: u64) {
        let mut st = self.st.lock();
        for r in first..=last {
            if !st.bits[r as usize] {
                continue;
            }
            let shard = self.shard(r).lock();
            if !shard.contains_key(&r) {
                self.clear_durable(r);
                st.set_bit(r, false);
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
            // Force a batch even when nothing is dirty.
            st.dirty_pages.insert(usize::MAX);
            st.pending.insert(usize::MAX, batch);
        }
        self.wake.notify_one();
        rx.recv().unwrap_or(Ok(()))
    }

    /// After `pages` reached the disk as in `shadow`: their bits that are
    /// still set in memory are durable. (A bit cleared meanwhile stays off.)
    fn publish_durable(&self, st: &State, shadow: &Bits, pages: &[usize]) {
        let rpp = MetaStore::regions_per_page();
        let (disk, mem) = (shadow.as_raw_slice(), st.bits.as_raw_slice());
        for &p in pages {
            let (a, b) = (p * rpp / 64, ((p + 1) * rpp).div_ceil(64).min(mem.len()));
            for w in a..b {
                self.durable[w].store(disk[w] & mem[w], Ordering::Release);
            }
        }
    }

    pub fn stop(&self) {
        self.st.lock().stop = true;
        self.wake.notify_all();
    }

    /// The metadata thread: writes dirty pages in batches and wakes the
    /// writes that waited for them. A shadow copy of the bitmap is written
    /// from, so host writes can set bits while the page I/O runs.
    pub fn run(self: Arc<Self>) {
        let mut shadow: Bits = self.st.lock().bits.clone();
        loop {
            let (pages, batch) = {
                let mut st = self.st.lock();
                while st.dirty_pages.is_empty() && !st.stop {
                    self.wake.wait(&mut st);
                }
                if st.stop && st.dirty_pages.is_empty() {
                    return;
                }
                let pages: Vec<usize> = std::mem::take(&mut st.dirty_pages)
                    .into_iter()
                    .filter(|&p| p != usize::MAX)
                    .collect();
                let rpp = MetaStore::regions_per_page();
                for &p in &pages {
                    let (a, b) = (p * rpp, ((p + 1) * rpp).min(st.bits.len()));
                    shadow[a..b].copy_from_bitslice(&st.bits[a..b]);
                }
                let batch = st.next_batch;
                st.next_batch += 1;
                (pages, batch)
            };
            let result = if pages.is_empty() {
                Ok(())
            } else {
                self.store.write_bitmap_pages(&shadow, &pages).map_err(Arc::new)
            };
            if let Err(e) = &result {
                log::error!("write-intent bitmap not written: {e}");
            }
            let ready: Vec<IntentDone> = {
                let mut st = self.st.lock();
                if result.is_ok() {
                    self.publish_durable(&st, &shadow, &pages);
                }
                st.pending.retain(|_, b| *b > batch);
                let (ready, keep) = std::mem::take(&mut st.waiters).into_iter().partition(|(b, _)| *b <= batch);
                st.waiters = keep;
                ready.into_iter().map(|(_, d)| d).collect()
            };
            for done in ready {
                done(result.clone());
            }
        }
    }
}
