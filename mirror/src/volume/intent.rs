//! The write-intent bitmap at run time (md's bitmap, DRBD's activity log).
//!
//! Before the first write to a clean region goes to any leg, the region's bit
//! is made durable in every live metadata copy; the write waits (queued, not
//! blocking its caller) until the metadata thread has written the page. Bits
//! of regions that are already set cost nothing, so steady writes do no
//! metadata I/O. A region's bit is cleared lazily, by [`Intent::clear_idle`],
//! once no write is in flight there, it has been idle for the clear delay,
//! every leg is in sync and every leg has flushed since.

use crate::meta::{MetaError, MetaStore};
use bitvec::order::Lsb0;
use bitvec::vec::BitVec;
use parking_lot::{Condvar, Mutex};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(crate) type Bits = BitVec<u64, Lsb0>;
pub(crate) type IntentDone = Box<dyn FnOnce(Result<(), Arc<MetaError>>) + Send>;

struct Active {
    inflight: u32,
    last: Instant,
}

struct State {
    bits: Bits,
    active: HashMap<u64, Active>,
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
    region_shift: u32,
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
    pub fn new(store: Arc<MetaStore>, bits: Bits, region_size: u64) -> Arc<Intent> {
        Arc::new(Intent {
            store,
            region_shift: region_size.trailing_zeros(),
            st: Mutex::new(State {
                bits,
                active: HashMap::new(),
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
        let mut st = self.st.lock();
        let now = Instant::now();
        let mut wait_for = 0;
        for r in first..=last {
            let a = st.active.entry(r).or_insert(Active { inflight: 0, last: now });
            a.inflight += 1;
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

    /// The write to `[first, last]` is over (whatever its result).
    pub fn end(&self, first: u64, last: u64) {
        let mut st = self.st.lock();
        let now = Instant::now();
        for r in first..=last {
            if let Some(a) = st.active.get_mut(&r) {
                a.inflight -= 1;
                a.last = now;
            }
        }
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
        let st = self.st.lock();
        let now = Instant::now();
        st.active
            .iter()
            .filter(|(_, a)| a.inflight == 0 && now.duration_since(a.last) >= delay)
            .map(|(&r, a)| (r, a.last))
            .collect()
    }

    /// Clears the given regions unless they were written again since
    /// `idle_regions` reported them. Call only after every leg flushed.
    pub fn clear_idle(&self, regions: &[(u64, Instant)]) -> usize {
        let mut st = self.st.lock();
        let mut n = 0;
        for &(r, stamp) in regions {
            let still_idle = st.active.get(&r).is_some_and(|a| a.inflight == 0 && a.last == stamp);
            if still_idle {
                st.active.remove(&r);
                if st.bits[r as usize] {
                    st.set_bit(r, false);
                    n += 1;
                }
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
            if !st.active.contains_key(&r) && st.bits[r as usize] {
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
