//! A leg's storage: the [`Backend`] trait and its implementations.
//!
//! [`file::FileBackend`] serves regular files and block devices. With the
//! `fault-injection` feature (tests only; never in a release build),
//! `fault::FaultyBackend` wraps any backend and injects scripted faults
//! (errors, hangs, delays, torn writes), and `volatile::VolatileDevice`
//! gives a leg a volatile write cache that a simulated power cut loses.

pub mod detached;
#[cfg(feature = "fault-injection")]
pub mod fault;
pub mod file;
mod identity;
#[cfg(feature = "fault-injection")]
pub mod volatile;

pub use identity::LegIdentity;

/// A kind of leg operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Read,
    Write,
    Flush,
    Discard,
}

use std::fs::File;
use std::io::{self, IoSlice};
use std::sync::Arc;

/// What a leg's storage can do besides reading and writing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Caps {
    /// `discard` deallocates and later reads return zeroes.
    pub discard_zeroes: bool,
}

/// One leg's storage. Every call is positional and may run on many threads at
/// once; each either completes the whole range or returns an error.
pub trait Backend: Send + Sync + 'static {
    /// The path or label an administrator knows the leg by.
    fn name(&self) -> &str;
    /// What the leg is, stably (device and inode, or a disk's WWN/serial).
    fn identity(&self) -> &LegIdentity;
    /// Usable size in bytes, as measured when the leg was opened or last
    /// [`refresh_size`](Self::refresh_size)d.
    fn size(&self) -> u64;
    /// Measures the size again (an array LUN or a file grown since the leg
    /// was opened) and returns it.
    fn refresh_size(&self) -> io::Result<u64> {
        Ok(self.size())
    }
    /// Alignment `O_DIRECT` needs for buffers, offsets and lengths (1 if none).
    fn alignment(&self) -> usize;
    /// Whether the kernel runs this leg's writes (and `fallocate`s) one at a
    /// time whatever the number of threads: buffered writes to a regular
    /// file hold its inode lock on every Linux filesystem. A leg then serves
    /// its writes one at a time: more threads would only wait on that lock
    /// and hand it over, which cost half the throughput of 4 KiB writes at
    /// queue depth 32 on ext4.
    fn writes_one_at_a_time(&self) -> bool {
        false
    }
    fn caps(&self) -> Caps;
    /// Reads exactly `buf.len()` bytes at `offset`.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Writes all of `bufs` at `offset`.
    fn write_vectored_at(&self, bufs: &[IoSlice<'_>], offset: u64) -> io::Result<()>;
    /// Makes completed writes durable (cache flush).
    fn flush(&self) -> io::Result<()>;
    /// Deallocates a range so that it reads back as zeroes; `Unsupported` if
    /// the storage cannot.
    fn discard(&self, offset: u64, len: u64) -> io::Result<()>;
    /// Makes a range read back as zeroes, by the cheapest means available.
    fn write_zeroes(&self, offset: u64, len: u64) -> io::Result<()>;
    /// The open file an asynchronous engine (io_uring) may do `op` on
    /// directly, instead of calling the methods above on a thread. `None`
    /// (the default) keeps the operation on the blocking path: a backend
    /// that must see each operation, such as fault injection, says so here.
    fn async_file(&self, op: Op, offset: u64, len: u64) -> Option<&Arc<File>> {
        let _ = (op, offset, len);
        None
    }
    /// Why the leg's storage is absent, if it is (see [`detached::DetachedBackend`]).
    fn detached(&self) -> Option<&str> {
        None
    }
}

/// The [`Backend`] methods a wrapping backend (`self.inner`) passes
/// through unchanged: what the leg is, not what happens to its I/O.
#[cfg(feature = "fault-injection")]
macro_rules! delegate_to_inner {
    () => {
        fn name(&self) -> &str {
            self.inner.name()
        }
        fn identity(&self) -> &LegIdentity {
            self.inner.identity()
        }
        fn size(&self) -> u64 {
            self.inner.size()
        }
        fn refresh_size(&self) -> io::Result<u64> {
            self.inner.refresh_size()
        }
        fn alignment(&self) -> usize {
            self.inner.alignment()
        }
        fn writes_one_at_a_time(&self) -> bool {
            self.inner.writes_one_at_a_time()
        }
        fn caps(&self) -> Caps {
            self.inner.caps()
        }
        fn detached(&self) -> Option<&str> {
            self.inner.detached()
        }
    };
}
#[cfg(feature = "fault-injection")]
use delegate_to_inner;

/// Writes zeroes with plain writes, one chunk at a time.
pub(crate) fn write_zeroes_slowly(b: &dyn Backend, offset: u64, len: u64) -> io::Result<()> {
    const CHUNK: u64 = 1 << 20;
    let zeroes = crate::buf::AlignedBuf::zeroed(CHUNK.min(len) as usize);
    let mut done = 0;
    while done < len {
        let n = (len - done).min(CHUNK) as usize;
        b.write_vectored_at(&[IoSlice::new(&zeroes.as_slice()[..n])], offset + done)?;
        done += n as u64;
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod conformance;
