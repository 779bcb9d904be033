//! An asynchronous byte-range lock.
//!
//! Host writes, compare-and-writes, resync copies and read repairs to
//! overlapping ranges are serialised by it: two overlapping writes could
//! otherwise land in different orders on different legs and leave them
//! different, a CAW could interleave with a plain write, and a resync copy
//! could overwrite a newer host write. Requests are granted in arrival order
//! among those that overlap; a conflicting request waits in a queue and is
//! started by the thread that releases the range, so callers never block.

use parking_lot::Mutex;
use std::collections::VecDeque;
use std::sync::Arc;

type Grant = Box<dyn FnOnce(RangeGuard) + Send>;

struct Waiter {
    start: u64,
    end: u64,
    grant: Grant,
}

#[derive(Default)]
struct Ranges {
    held: Vec<(u64, u64, u64)>,
    waiting: VecDeque<Waiter>,
    next_id: u64,
}

#[derive(Default)]
pub struct RangeLock {
    inner: Mutex<Ranges>,
}

/// Holds `[start, end)` until dropped.
pub struct RangeGuard {
    lock: Arc<RangeLock>,
    id: u64,
}

fn overlaps(a: (u64, u64), b: (u64, u64)) -> bool {
    a.0 < b.1 && b.0 < a.1
}

impl RangeLock {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Runs `grant` with the range held: at once if nothing overlapping is
    /// held or waiting, otherwise later, on the thread that frees the range.
    pub fn lock(self: &Arc<Self>, start: u64, end: u64, grant: impl FnOnce(RangeGuard) + Send + 'static) {
        let mut r = self.inner.lock();
        let blocked = r.held.iter().any(|&(s, e, _)| overlaps((s, e), (start, end)))
            || r.waiting.iter().any(|w| overlaps((w.start, w.end), (start, end)));
        if blocked {
            r.waiting.push_back(Waiter { start, end, grant: Box::new(grant) });
            return;
        }
        let id = r.take(start, end);
        drop(r);
        grant(RangeGuard { lock: self.clone(), id });
    }

    /// Number of held ranges (for tests and status).
    pub fn held(&self) -> usize {
        self.inner.lock().held.len()
    }

    fn release(self: &Arc<Self>, id: u64) {
        let mut ready = Vec::new();
        {
            let mut r = self.inner.lock();
            r.held.retain(|&(_, _, h)| h != id);
            let mut i = 0;
            while i < r.waiting.len() {
                let (s, e) = (r.waiting[i].start, r.waiting[i].end);
                let free = !r.held.iter().any(|&(hs, he, _)| overlaps((hs, he), (s, e)))
                    && !r.waiting.iter().take(i).any(|w| overlaps((w.start, w.end), (s, e)));
                if free {
                    let w = r.waiting.remove(i).expect("index in range");
                    let id = r.take(s, e);
                    ready.push((w.grant, id));
                } else {
                    i += 1;
                }
            }
        }
        for (grant, id) in ready {
            grant(RangeGuard { lock: self.clone(), id });
        }
    }
}

impl Ranges {
    fn take(&mut self, start: u64, end: u64) -> u64 {
        self.next_id += 1;
        self.held.push((start, end, self.next_id));
        self.next_id
    }
}

impl Drop for RangeGuard {
    fn drop(&mut self) {
        self.lock.release(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn disjoint_ranges_are_granted_at_once() {
        let l = RangeLock::new();
        let (tx, rx) = mpsc::channel();
        for i in 0..4u64 {
            let tx = tx.clone();
            l.lock(i * 10, i * 10 + 10, move |g| tx.send(g).unwrap());
        }
        let guards: Vec<_> = rx.try_iter().collect();
        assert_eq!(guards.len(), 4);
    }

    #[test]
    fn an_overlapping_range_waits_until_the_holder_releases() {
        let l = RangeLock::new();
        let (tx, rx) = mpsc::channel();
        let t1 = tx.clone();
        l.lock(0, 100, move |g| t1.send(("first", g)).unwrap());
        l.lock(50, 150, move |g| tx.send(("second", g)).unwrap());
        let (name, g1) = rx.try_recv().unwrap();
        assert_eq!(name, "first");
        assert!(rx.try_recv().is_err(), "second must wait");
        drop(g1);
        assert_eq!(rx.try_recv().unwrap().0, "second");
    }

    #[test]
    fn a_later_request_does_not_overtake_an_earlier_waiter() {
        let l = RangeLock::new();
        let (tx, rx) = mpsc::channel();
        let order = Arc::new(Mutex::new(Vec::new()));
        let t = tx.clone();
        l.lock(0, 10, move |g| t.send(g).unwrap());
        let o = order.clone();
        l.lock(0, 20, move |_g| o.lock().push("wide"));
        let o = order.clone();
        // Free of the holder but overlapping the waiting wide request.
        l.lock(15, 20, move |_g| o.lock().push("narrow"));
        assert!(order.lock().is_empty());
        drop(rx.try_recv().unwrap());
        assert_eq!(*order.lock(), vec!["wide", "narrow"]);
        assert_eq!(l.held(), 0);
    }
}
