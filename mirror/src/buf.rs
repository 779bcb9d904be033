//! Host buffers as the engine sees them.
//!
//! Writes go to the legs straight from the host's memory (the tcmu ring when
//! the handler drives us): a [`HostWriteBuf`] hands out `IoSlice`s over it and
//! is shared by every leg's write. Reads land in engine memory first and are
//! copied into the host's [`HostReadBuf`] only by the leg read that wins: a
//! hung leg read cannot be cancelled, and if it targeted host memory it could
//! overwrite a later command's data after we completed this one from another
//! leg.

use std::io::IoSlice;

/// Host data to be written. Shared by the legs' parallel writes.
pub trait HostWriteBuf: Send + Sync {
    /// Total length in bytes.
    fn len(&self) -> usize;
    /// The buffer as scatter/gather slices, in order.
    fn slices(&self) -> Vec<IoSlice<'_>>;
    /// Copies `dst.len()` bytes starting at byte `offset` into `dst`.
    fn copy_out(&self, offset: usize, dst: &mut [u8]) {
        let mut skip = offset;
        let mut out = 0;
        for s in self.slices() {
            if out == dst.len() {
                break;
            }
            if skip >= s.len() {
                skip -= s.len();
                continue;
            }
            let n = (s.len() - skip).min(dst.len() - out);
            dst[out..out + n].copy_from_slice(&s[skip..skip + n]);
            out += n;
            skip = 0;
        }
        assert_eq!(out, dst.len(), "copy_out past the end of a host buffer");
    }
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Host memory a read fills.
pub trait HostReadBuf: Send {
    fn len(&self) -> usize;
    /// Fills the buffer from `src` (exactly `len()` bytes).
    fn fill_from(&mut self, src: &[u8]);
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl HostWriteBuf for Vec<u8> {
    fn len(&self) -> usize {
        Vec::len(self)
    }
    fn slices(&self) -> Vec<IoSlice<'_>> {
        vec![IoSlice::new(self)]
    }
}

/// Scattered host memory for tests and tools: a list of separate chunks.
impl HostWriteBuf for Vec<Vec<u8>> {
    fn len(&self) -> usize {
        self.iter().map(Vec::len).sum()
    }
    fn slices(&self) -> Vec<IoSlice<'_>> {
        self.iter().map(|v| IoSlice::new(v)).collect()
    }
}

/// A read target that hands its bytes to a channel or closure owner later.
impl HostReadBuf for Vec<u8> {
    fn len(&self) -> usize {
        Vec::len(self)
    }
    fn fill_from(&mut self, src: &[u8]) {
        self.copy_from_slice(src);
    }
}

/// A heap buffer whose start is aligned for `O_DIRECT`, in safe code: it
/// over-allocates and slices from the first aligned byte.
///
/// Buffers are recycled through a small pool by power-of-two size class:
/// a fresh large allocation is an `mmap` plus a page fault per page, which
/// cost a resync copying 1 MiB spans a third of its throughput.
pub struct AlignedBuf {
    raw: Vec<u8>,
    start: usize,
    len: usize,
}

/// Size classes 4 KiB .. 4 MiB; at most `POOL_BYTES_PER_CLASS` kept per class.
const POOL_CLASSES: usize = 11;
const POOL_BYTES_PER_CLASS: usize = 16 << 20;
static POOL: [parking_lot::Mutex<Vec<Vec<u8>>>; POOL_CLASSES] =
    [const { parking_lot::Mutex::new(Vec::new()) }; POOL_CLASSES];

fn size_class(len: usize) -> Option<usize> {
    let c = len.max(4096).next_power_of_two().trailing_zeros() as usize - 12;
    (c < POOL_CLASSES).then_some(c)
}

impl AlignedBuf {
    pub const ALIGN: usize = 4096;

    /// A buffer of `len` zero bytes.
    pub fn zeroed(len: usize) -> Self {
        let mut b = Self::uninit(len);
        b.as_mut_slice().fill(0);
        b
    }

    /// A buffer of `len` bytes of unspecified (but initialised) content, for
    /// callers that overwrite all of it, such as reads.
    pub fn uninit(len: usize) -> Self {
        let class = size_class(len);
        let raw = class
            .and_then(|c| POOL[c].lock().pop())
            .unwrap_or_else(|| vec![0u8; class.map_or(len, |c| 4096 << c) + Self::ALIGN]);
        let misalign = raw.as_ptr() as usize % Self::ALIGN;
        let start = if misalign == 0 { 0 } else { Self::ALIGN - misalign };
        AlignedBuf { raw, start, len }
    }

    pub fn from_slice(data: &[u8]) -> Self {
        let mut b = Self::uninit(data.len());
        b.as_mut_slice().copy_from_slice(data);
        b
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.raw[self.start..self.start + self.len]
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.raw[self.start..self.start + self.len]
    }
}

/// The engine's own copy of host data (latency priority copies writes).
impl HostWriteBuf for AlignedBuf {
    fn len(&self) -> usize {
        AlignedBuf::len(self)
    }
    fn slices(&self) -> Vec<IoSlice<'_>> {
        vec![IoSlice::new(self.as_slice())]
    }
}

impl uring::ReadBuf for AlignedBuf {
    fn as_mut_slice(&mut self) -> &mut [u8] {
        AlignedBuf::as_mut_slice(self)
    }
}

impl uring::WriteBufs for AlignedBuf {
    fn slices(&self) -> Vec<IoSlice<'_>> {
        vec![IoSlice::new(self.as_slice())]
    }
}

/// Host data goes to the ring as it is, shared by every leg's write.
impl uring::WriteBufs for dyn HostWriteBuf {
    fn slices(&self) -> Vec<IoSlice<'_>> {
        HostWriteBuf::slices(self)
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        let Some(c) = size_class(self.len) else { return };
        if self.raw.len() != (4096 << c) + Self::ALIGN {
            return;
        }
        let mut pool = POOL[c].lock();
        if pool.len() * (4096 << c) < POOL_BYTES_PER_CLASS {
            pool.push(std::mem::take(&mut self.raw));
        }
    }
}

/// Whether every slice starts and ends on `align` (a power of two).
pub fn slices_aligned(slices: &[IoSlice<'_>], align: usize) -> bool {
    align <= 1
        || slices.iter().all(|s| (s.as_ptr() as usize).is_multiple_of(align) && s.len().is_multiple_of(align))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_buf_starts_on_a_page() {
        for len in [0, 1, 512, 4096, 100_000] {
            let b = AlignedBuf::zeroed(len);
            assert_eq!(b.as_slice().as_ptr() as usize % AlignedBuf::ALIGN, 0);
            assert_eq!(b.len(), len);
        }
    }

    #[test]
    fn a_recycled_buffer_is_aligned_and_zeroed_when_asked() {
        let mut a = AlignedBuf::zeroed(10_000);
        a.as_mut_slice().fill(7);
        drop(a);
        let b = AlignedBuf::zeroed(9_000);
        assert_eq!(b.as_slice().as_ptr() as usize % AlignedBuf::ALIGN, 0);
        assert!(b.as_slice().iter().all(|&x| x == 0));
        assert_eq!(b.len(), 9_000);
    }

    #[test]
    fn copy_out_walks_scattered_chunks() {
        let host: Vec<Vec<u8>> = vec![vec![1, 2, 3], vec![], vec![4, 5], vec![6]];
        let mut dst = [0u8; 4];
        host.copy_out(1, &mut dst);
        assert_eq!(dst, [2, 3, 4, 5]);
    }
}
