//! COMPARE AND WRITE: with the range held against every other write and
//! resync copy, read the current data, compare it, and write only if it
//! matches. Each asynchronous step is a method of [`CompareAndWrite`].

use super::rangelock::RangeGuard;
use super::write::Payload;
use super::{Done, Inner};
use crate::buf::{AlignedBuf, HostReadBuf, HostWriteBuf};
use crate::error::IoError;
use parking_lot::Mutex;
use std::sync::Arc;

/// One COMPARE AND WRITE on its way.
struct CompareAndWrite {
    vol: Arc<Inner>,
    offset: u64,
    compare: Arc<dyn HostWriteBuf>,
    data: Arc<dyn HostWriteBuf>,
    done: Done,
}

impl Inner {
    /// Writes `data` at `offset` if what is there equals `compare` (the two
    /// of the same length); otherwise fails with [`IoError::Miscompare`].
    pub(super) fn compare_and_write(
        self: &Arc<Self>,
        offset: u64,
        compare: Arc<dyn HostWriteBuf>,
        data: Arc<dyn HostWriteBuf>,
        done: Done,
    ) {
        if compare.len() != data.len() {
            let (got, expected) = (compare.len() as u64, data.len() as u64);
            return done(Err(IoError::BufferLength { what: "the compare half", got, expected }));
        }
        if let Err(e) = self.check_range(offset, data.len() as u64) {
            return done(Err(e));
        }
        self.note_host_io();
        CompareAndWrite { vol: self.clone(), offset, compare, data, done }.lock();
    }
}

impl CompareAndWrite {
    fn len(&self) -> u64 {
        self.data.len() as u64
    }

    /// Holds the range: no write or copy can change it until this one ends.
    fn lock(self) {
        let vol = self.vol.clone();
        let (start, end) = (self.offset, self.offset + self.len());
        vol.locks.lock(start, end, move |guard| self.read(guard));
    }

    /// Reads what is there now, from an in-sync leg.
    fn read(self, guard: RangeGuard) {
        let current = Arc::new(Mutex::new(AlignedBuf::zeroed(self.len() as usize)));
        let sink = Box::new(SharedRead(current.clone()));
        let vol = self.vol.clone();
        let offset = self.offset;
        let next = Box::new(move |r: Result<(), IoError>| self.compare(guard, r, &current.lock()));
        vol.read_from_legs(offset, sink, next, 0, 0, None);
    }

    /// Writes if it matches; a miscompare names the first differing byte.
    fn compare(self, guard: RangeGuard, read: Result<(), IoError>, current: &AlignedBuf) {
        if let Err(e) = read {
            return (self.done)(Err(e));
        }
        if let Some(at) = first_difference(&*self.compare, current.as_slice()) {
            return (self.done)(Err(IoError::Miscompare { offset: at as u64 }));
        }
        self.vol.write_under(guard, self.offset, Payload::Host(self.data), self.done);
    }
}

/// The read's destination, shared with the step that compares.
struct SharedRead(Arc<Mutex<AlignedBuf>>);

impl HostReadBuf for SharedRead {
    fn len(&self) -> usize {
        self.0.lock().len()
    }
    fn fill_from(&mut self, src: &[u8]) {
        self.0.lock().as_mut_slice().copy_from_slice(src);
    }
}

/// The first byte at which `a` differs from `b` (same lengths).
fn first_difference(a: &dyn HostWriteBuf, b: &[u8]) -> Option<usize> {
    let mut at = 0;
    for s in a.slices() {
        if let Some(i) = s.iter().zip(&b[at..at + s.len()]).position(|(x, y)| x != y) {
            return Some(at + i);
        }
        at += s.len();
    }
    None
}
