//! A view of a command's scatter/gather list: the host's data in the tcmu
//! ring, read by writes and filled by reads without copies in between.

use crate::sys;
use std::io::IoSlice;

/// Why an iovec list could not be viewed or used.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum IoVecError {
    #[error("null iovec array with {0} entries")]
    NullArray(usize),
    #[error("iovec {index} has a null base but {len} bytes")]
    NullBase { index: usize, len: usize },
    #[error("iovec lengths add up to more than the address space")]
    Overflow,
    #[error("cannot split a {len}-byte buffer at byte {at}")]
    Split { at: usize, len: usize },
    #[error("a {src}-byte source cannot fill a {len}-byte buffer")]
    FillLength { src: usize, len: usize },
}

#[derive(Clone, Copy, Debug)]
struct Segment {
    base: *mut u8,
    len: usize,
}

/// The buffers of one command, owned by contract until it completes.
///
/// The view copies the (pointer, length) pairs, so it does not depend on the
/// runner's iovec array, only on the memory it describes. It is `'static`,
/// `Send` and `Sync` so that the engine can hand it to the legs' threads; the
/// price is the contract of [`IoVecs::from_raw`]: nobody may use it once the
/// command it belongs to has completed.
#[derive(Debug)]
pub struct IoVecs {
    segs: Vec<Segment>,
    len: usize,
}

// SAFETY: the segments point to host memory reserved for one command, which
// nothing else reads or writes while the command is with the handler
// (`from_raw`'s contract); moving the view to another thread moves that
// exclusive access with it.
unsafe impl Send for IoVecs {}
// SAFETY: through `&IoVecs` the memory can only be read (`slices`), and reads
// from several threads at once are fine; writing (`fill_from`) needs `&mut`.
unsafe impl Sync for IoVecs {}

impl IoVecs {
    /// Views `cnt` iovecs starting at `iov`. Empty segments are dropped.
    ///
    /// # Safety
    /// `iov` must point to `cnt` readable `struct iovec` (or be anything when
    /// `cnt` is 0), and each buffer must be valid for reads and writes of
    /// `iov_len` bytes, without other users, from now until the command it
    /// belongs to completes. The caller must stop using the view (and every
    /// slice taken from it) before that completion: for a tcmu command, the
    /// runner hands the ring space to another command afterwards.
    pub unsafe fn from_raw(iov: *const sys::iovec, cnt: usize) -> Result<IoVecs, IoVecError> {
        if cnt == 0 {
            return Ok(IoVecs::empty());
        }
        if iov.is_null() {
            return Err(IoVecError::NullArray(cnt));
        }
        // SAFETY: `iov` is non-null and points to `cnt` iovecs (caller's contract).
        let raw = unsafe { std::slice::from_raw_parts(iov, cnt) };
        let mut segs = Vec::with_capacity(cnt);
        let mut len = 0usize;
        for (index, v) in raw.iter().enumerate() {
            if v.iov_len == 0 {
                continue;
            }
            if v.iov_base.is_null() {
                return Err(IoVecError::NullBase { index, len: v.iov_len });
            }
            len = len.checked_add(v.iov_len).ok_or(IoVecError::Overflow)?;
            segs.push(Segment { base: v.iov_base.cast(), len: v.iov_len });
        }
        Ok(IoVecs { segs, len })
    }

    fn empty() -> IoVecs {
        IoVecs { segs: Vec::new(), len: 0 }
    }

    /// Total length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Splits into the first `at` bytes and the rest (COMPARE AND WRITE sends
    /// the compare data and the write data in one list).
    pub fn split_at(self, at: usize) -> Result<(IoVecs, IoVecs), IoVecError> {
        if at > self.len {
            return Err(IoVecError::Split { at, len: self.len });
        }
        let (mut head, mut tail) = (Vec::new(), Vec::new());
        let mut seen = 0usize;
        for s in self.segs {
            let end = seen + s.len; // cannot overflow: the sum is `self.len`
            if end <= at {
                head.push(s);
            } else if seen >= at {
                tail.push(s);
            } else {
                let cut = at - seen;
                head.push(Segment { base: s.base, len: cut });
                // `wrapping_add` stays inside the segment (`cut < s.len`).
                tail.push(Segment { base: s.base.wrapping_add(cut), len: s.len - cut });
            }
            seen = end;
        }
        Ok((IoVecs { segs: head, len: at }, IoVecs { segs: tail, len: self.len - at }))
    }

    /// Only the first `len` bytes (all of them if `len` is larger).
    pub fn truncated(self, len: usize) -> IoVecs {
        let keep = len.min(self.len);
        match self.split_at(keep) {
            Ok((head, _)) => head,
            Err(_) => unreachable!("split at {keep} is within the buffer"),
        }
    }

    /// The buffers as slices, in order.
    pub fn slices(&self) -> Vec<IoSlice<'_>> {
        self.segs
            .iter()
            // SAFETY: each segment is valid for reads of `len` bytes with no
            // writer while the view exists (`from_raw`'s contract; `split_at`
            // only narrows segments); the slice borrows `self`, so it cannot
            // outlive the view.
            .map(|s| IoSlice::new(unsafe { std::slice::from_raw_parts(s.base, s.len) }))
            .collect()
    }

    /// Copies `src` into the buffers; `src` must be exactly `len()` bytes.
    pub fn fill_from(&mut self, src: &[u8]) -> Result<(), IoVecError> {
        if src.len() != self.len {
            return Err(IoVecError::FillLength { src: src.len(), len: self.len });
        }
        let mut rest = src;
        for s in &self.segs {
            let (now, later) = rest.split_at(s.len);
            // SAFETY: the segment is valid for writes of `len` bytes and no
            // one else uses it (`from_raw`'s contract); `&mut self` rules out
            // readers through this view; `src` is our own memory, not the ring.
            let dst = unsafe { std::slice::from_raw_parts_mut(s.base, s.len) };
            dst.copy_from_slice(now);
            rest = later;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Scattered test memory and the iovecs that describe it.
    struct Scattered {
        chunks: Vec<Vec<u8>>,
        iov: Vec<sys::iovec>,
    }

    impl Scattered {
        fn new(sizes: &[usize]) -> Scattered {
            let mut chunks: Vec<Vec<u8>> = sizes.iter().map(|&n| vec![0u8; n]).collect();
            let iov = chunks
                .iter_mut()
                .map(|c| sys::iovec { iov_base: c.as_mut_ptr().cast(), iov_len: c.len() })
                .collect();
            Scattered { chunks, iov }
        }

        fn view(&self) -> IoVecs {
            // SAFETY: the iovecs describe `self.chunks`, which outlive every
            // view a test takes (the views are dropped before `self`).
            unsafe { IoVecs::from_raw(self.iov.as_ptr(), self.iov.len()) }.unwrap()
        }

        fn bytes(&self) -> Vec<u8> {
            self.chunks.concat()
        }
    }

    fn flat(v: &IoVecs) -> Vec<u8> {
        v.slices().iter().flat_map(|s| s.iter().copied()).collect()
    }

    #[test]
    fn a_view_sums_the_lengths_and_skips_empty_segments() {
        let s = Scattered::new(&[3, 0, 5]);
        let v = s.view();
        assert_eq!(v.len(), 8);
        assert_eq!(v.slices().len(), 2);
    }

    #[test]
    fn fill_from_writes_across_segments_in_order() {
        let s = Scattered::new(&[2, 3, 1]);
        let mut v = s.view();
        v.fill_from(&[1, 2, 3, 4, 5, 6]).unwrap();
        drop(v);
        assert_eq!(s.chunks, vec![vec![1, 2], vec![3, 4, 5], vec![6]]);
    }

    #[test]
    fn fill_from_refuses_a_source_of_another_length() {
        let s = Scattered::new(&[4]);
        let mut v = s.view();
        assert_eq!(v.fill_from(&[1, 2]), Err(IoVecError::FillLength { src: 2, len: 4 }));
    }

    #[test]
    fn split_at_cuts_inside_a_segment() {
        let s = Scattered::new(&[3, 3]);
        s.view().fill_from(&[0, 1, 2, 3, 4, 5]).unwrap();
        let (head, tail) = s.view().split_at(4).unwrap();
        assert_eq!(flat(&head), vec![0, 1, 2, 3]);
        assert_eq!(flat(&tail), vec![4, 5]);
        assert_eq!(s.bytes(), vec![0, 1, 2, 3, 4, 5]);
    }

    #[test]
    fn split_at_a_boundary_and_at_the_ends_works() {
        let s = Scattered::new(&[2, 2]);
        for at in 0..=4 {
            let (head, tail) = s.view().split_at(at).unwrap();
            assert_eq!((head.len(), tail.len()), (at, 4 - at));
        }
        assert_eq!(s.view().split_at(5).unwrap_err(), IoVecError::Split { at: 5, len: 4 });
    }

    #[test]
    fn truncated_keeps_the_head() {
        let s = Scattered::new(&[2, 2]);
        assert_eq!(s.view().truncated(3).len(), 3);
        assert_eq!(s.view().truncated(9).len(), 4);
    }

    #[test]
    fn a_null_base_with_bytes_is_refused() {
        let iov = [sys::iovec { iov_base: std::ptr::null_mut(), iov_len: 8 }];
        // SAFETY: one readable iovec; its null base is what is being tested.
        let r = unsafe { IoVecs::from_raw(iov.as_ptr(), 1) };
        assert_eq!(r.unwrap_err(), IoVecError::NullBase { index: 0, len: 8 });
    }

    #[test]
    fn lengths_that_overflow_are_refused() {
        let mut a = [0u8; 1];
        let iov = [
            sys::iovec { iov_base: a.as_mut_ptr().cast(), iov_len: usize::MAX },
            sys::iovec { iov_base: a.as_mut_ptr().cast(), iov_len: 2 },
        ];
        // SAFETY: the lengths are bogus on purpose; `from_raw` must refuse
        // them before it touches any buffer.
        let r = unsafe { IoVecs::from_raw(iov.as_ptr(), iov.len()) };
        assert_eq!(r.unwrap_err(), IoVecError::Overflow);
    }

    #[test]
    fn a_null_array_is_empty_only_when_it_has_no_entries() {
        // SAFETY: with a count of 0 the pointer is not read.
        assert!(unsafe { IoVecs::from_raw(std::ptr::null(), 0) }.unwrap().is_empty());
        // SAFETY: a null array must be refused before it is read.
        let r = unsafe { IoVecs::from_raw(std::ptr::null(), 2) };
        assert_eq!(r.unwrap_err(), IoVecError::NullArray(2));
    }
}
