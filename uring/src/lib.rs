//! Leg I/O through io_uring, behind a safe API.
//!
//! A [`Ring`] takes positional reads, vectored writes and data syncs on open
//! files and never blocks its caller: the request goes to the kernel and the
//! caller returns. One reaper thread per ring waits for completions and runs
//! each request's `done`. Against a pool of blocking threads this saves the
//! hand-off to a worker for every I/O, and with `O_DIRECT` the kernel does the
//! I/O with no thread at all.
//!
//! # Memory the kernel uses
//!
//! The kernel reads a write's buffers, and fills a read's, at any time until
//! the request completes, which for a hung device may be never. So every
//! request owns what it touches until its completion arrives: the file (an
//! `Arc<File>`, so its descriptor cannot be closed and reused), the write's
//! buffers (an `Arc` of a [`WriteBufs`]) and the read's buffer (moved in and
//! handed back to `done`). Dropping the [`Ring`] does not free any of it: the
//! reaper lives on, owning the ring, until the last request has returned.
//!
//! # Short transfers
//!
//! A read or write may transfer less than asked (a signal, a device limit, more
//! than `UIO_MAXIOV` slices). The reaper resubmits the rest, so `done` sees the
//! whole range transferred or an error, like `read_exact_at`/`write_all_at`.

use io_uring::{opcode, squeue, types, IoUring};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, IoSlice};
use std::os::unix::io::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Data to be written, shared with whoever else writes it. The slices must
/// stay as they are while the value is alive; holding `&self` (through the
/// ring's `Arc`) is what keeps them so.
pub trait WriteBufs: Send + Sync + 'static {
    fn slices(&self) -> Vec<IoSlice<'_>>;
}

/// Memory a read fills; owned by the ring until the read completes.
pub trait ReadBuf: Send + 'static {
    fn as_mut_slice(&mut self) -> &mut [u8];
}

impl WriteBufs for Vec<u8> {
    fn slices(&self) -> Vec<IoSlice<'_>> {
        vec![IoSlice::new(self)]
    }
}

impl ReadBuf for Vec<u8> {
    fn as_mut_slice(&mut self) -> &mut [u8] {
        self
    }
}

type Done = Box<dyn FnOnce(io::Result<()>) + Send>;

/// Slices per request: the kernel's `UIO_MAXIOV`.
const MAX_IOV: usize = 1024;
/// The `user_data` of the no-op that wakes the reaper to look at `closing`.
const WAKE: u64 = u64::MAX;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Read,
    Write,
    SyncData,
}

/// Slice descriptors into memory the request owns (see the module docs).
struct Iovecs(Vec<libc::iovec>);
// SAFETY: the pointers refer to memory owned by the same request (`Keep` or
// the read's boxed buffer), which is `Send`; the descriptors are only read by
// the kernel and by whichever thread holds the request table's lock.
unsafe impl Send for Iovecs {}

/// What keeps a request's memory alive until it completes.
type Keep = Box<dyn Send>;

struct Request {
    kind: Kind,
    file: Arc<File>,
    offset: u64,
    iov: Iovecs,
    /// The first slice not yet transferred in full.
    first: usize,
    _keep: Option<Keep>,
    done: Option<Done>,
}

impl Request {
    fn remaining(&self) -> usize {
        self.iov.0[self.first..].iter().map(|v| v.iov_len).sum()
    }

    fn sqe(&self, id: u64) -> squeue::Entry {
        let fd = types::Fd(self.file.as_raw_fd());
        let iov = &self.iov.0[self.first..];
        let (ptr, n) = (iov.as_ptr(), iov.len().min(MAX_IOV) as u32);
        match self.kind {
            Kind::Read => opcode::Readv::new(fd, ptr, n).offset(self.offset).build(),
            Kind::Write => opcode::Writev::new(fd, ptr, n).offset(self.offset).build(),
            Kind::SyncData => opcode::Fsync::new(fd).flags(types::FsyncFlags::DATASYNC).build(),
        }
        .user_data(id)
    }

    /// Takes `n` transferred bytes off the front.
    fn advance(&mut self, mut n: usize) {
        self.offset += n as u64;
        while n > 0 {
            let v = &mut self.iov.0[self.first];
            if n >= v.iov_len {
                n -= v.iov_len;
                self.first += 1;
            } else {
                // SAFETY: stays inside the same slice, which has more than `n` bytes left.
                v.iov_base = unsafe { v.iov_base.cast::<u8>().add(n) }.cast();
                v.iov_len -= n;
                n = 0;
            }
        }
    }
}

/// What one completion means for its request.
enum Outcome {
    Finished(io::Result<()>),
    Again,
}

fn outcome(r: &mut Request, res: i32) -> Outcome {
    if res < 0 {
        return match -res {
            libc::EINTR | libc::EAGAIN => Outcome::Again,
            e => Outcome::Finished(Err(io::Error::from_raw_os_error(e))),
        };
    }
    if r.kind == Kind::SyncData {
        return Outcome::Finished(Ok(()));
    }
    let (n, left) = (res as usize, r.remaining());
    if n >= left {
        return Outcome::Finished(Ok(()));
    }
    if n == 0 {
        let kind = if r.kind == Kind::Read { io::ErrorKind::UnexpectedEof } else { io::ErrorKind::WriteZero };
        return Outcome::Finished(Err(kind.into()));
    }
    r.advance(n);
    Outcome::Again
}

struct Shared {
    ring: IoUring,
    /// Held while pushing to the submission queue (one producer at a time).
    sq: Mutex<()>,
    requests: Mutex<Requests>,
    closing: AtomicBool,
}

#[derive(Default)]
struct Requests {
    next: u64,
    live: HashMap<u64, Request>,
}

/// An io_uring instance and its reaper thread. Share it as `Arc<Ring>`.
pub struct Ring {
    shared: Arc<Shared>,
}

impl Ring {
    /// Sets up a ring with room for `entries` queued submissions (completions
    /// beyond the queue's size wait in the kernel) and starts its reaper,
    /// named `name`. Fails where the kernel has no io_uring or forbids it
    /// (`kernel.io_uring_disabled`, seccomp in a container).
    pub fn new(name: &str, entries: u32) -> io::Result<Arc<Ring>> {
        let ring = IoUring::builder().dontfork().build(entries)?;
        if !ring.params().is_feature_nodrop() {
            return Err(io::Error::new(io::ErrorKind::Unsupported, "io_uring without IORING_FEAT_NODROP"));
        }
        let shared = Arc::new(Shared {
            ring,
            sq: Mutex::new(()),
            requests: Mutex::new(Requests::default()),
            closing: AtomicBool::new(false),
        });
        let s = shared.clone();
        std::thread::Builder::new().name(name.into()).spawn(move || s.reap())?;
        Ok(Arc::new(Ring { shared }))
    }

    /// Reads `buf.len()` bytes at `offset` into `buf`, and hands `buf` back.
    pub fn read<B: ReadBuf>(
        &self,
        file: &Arc<File>,
        offset: u64,
        buf: B,
        done: impl FnOnce(B, io::Result<()>) + Send + 'static,
    ) {
        let raw = Box::into_raw(Box::new(buf));
        // SAFETY: `raw` is the only pointer to a live, boxed `B`; the slice it
        // yields stays valid until the box is rebuilt below, which happens only
        // once the kernel has finished with the read.
        let slice = unsafe { (*raw).as_mut_slice() };
        let iov = vec![libc::iovec { iov_base: slice.as_mut_ptr().cast(), iov_len: slice.len() }];
        let owner = SendPtr(raw);
        let finish: Done = Box::new(move |r| {
            let owner = owner;
            // SAFETY: the read has completed; this is the box made above, rebuilt once.
            let buf = unsafe { Box::from_raw(owner.0) };
            done(*buf, r)
        });
        self.start(Kind::Read, file, offset, iov, None, finish);
    }

    /// Writes all of `bufs` at `offset`.
    pub fn write<T: WriteBufs + ?Sized>(
        &self,
        file: &Arc<File>,
        offset: u64,
        bufs: Arc<T>,
        done: impl FnOnce(io::Result<()>) + Send + 'static,
    ) where
        Arc<T>: Send,
    {
        let iov = bufs
            .slices()
            .iter()
            .filter(|s| !s.is_empty())
            .map(|s| libc::iovec { iov_base: s.as_ptr() as *mut libc::c_void, iov_len: s.len() })
            .collect();
        self.start(Kind::Write, file, offset, iov, Some(Box::new(bufs)), Box::new(done));
    }

    /// `fdatasync`: makes the file's completed writes durable.
    pub fn sync_data(&self, file: &Arc<File>, done: impl FnOnce(io::Result<()>) + Send + 'static) {
        self.start(Kind::SyncData, file, 0, Vec::new(), None, Box::new(done));
    }

    /// Until the returned guard drops, requests this thread starts on this
    /// ring are only queued; the guard hands them to the kernel in one
    /// system call. For I/O that goes out together, such as one write to
    /// every leg.
    pub fn plug(&self) -> Plug<'_> {
        let me = Arc::as_ptr(&self.shared);
        let outer = PLUGGED.with(|p| p.replace(me));
        Plug { ring: self, outer }
    }

    /// Requests submitted and not yet completed.
    pub fn in_flight(&self) -> usize {
        self.shared.requests.lock().live.len()
    }

    fn start(
        &self,
        kind: Kind,
        file: &Arc<File>,
        offset: u64,
        iov: Vec<libc::iovec>,
        keep: Option<Keep>,
        done: Done,
    ) {
        let r = Request {
            kind,
            file: file.clone(),
            offset,
            iov: Iovecs(iov),
            first: 0,
            _keep: keep,
            done: Some(done),
        };
        let sqe = {
            let mut reqs = self.shared.requests.lock();
            let id = reqs.next;
            reqs.next += 1;
            let sqe = r.sqe(id);
            // The descriptors live on the heap: moving `r` does not move them.
            reqs.live.insert(id, r);
            sqe
        };
        self.shared.push(&sqe);
        if PLUGGED.with(|p| p.get()) != Arc::as_ptr(&self.shared) {
            self.shared.submit();
        }
    }
}

thread_local! {
    /// The ring this thread holds a [`Plug`] on, if any.
    static PLUGGED: std::cell::Cell<*const Shared> = const { std::cell::Cell::new(std::ptr::null()) };
}

/// See [`Ring::plug`].
pub struct Plug<'a> {
    ring: &'a Ring,
    /// The plug this one nests in, put back on drop.
    outer: *const Shared,
}

impl Drop for Plug<'_> {
    fn drop(&mut self) {
        PLUGGED.with(|p| p.set(self.outer));
        self.ring.shared.submit();
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        self.shared.closing.store(true, Ordering::Release);
        self.shared.push(&opcode::Nop::new().build().user_data(WAKE));
        self.shared.submit();
    }
}

struct SendPtr<B>(*mut B);
// SAFETY: it points to a boxed `B: Send` that only the holder of this value
// turns back into a box.
unsafe impl<B: Send> Send for SendPtr<B> {}

impl Shared {
    fn push(&self, sqe: &squeue::Entry) {
        loop {
            {
                let _one = self.sq.lock();
                // SAFETY: the `sq` lock makes this the only submission queue
                // handle; the entry's memory is owned by its request (see
                // `Request`) until its completion is reaped.
                let pushed = unsafe { self.ring.submission_shared().push(sqe) };
                if pushed.is_ok() {
                    return;
                }
            }
            // Full: hand what is queued to the kernel and try again.
            self.submit();
            std::thread::yield_now();
        }
    }

    fn submit(&self) {
        match self.ring.submitter().submit() {
            Ok(_) => {}
            // Busy or interrupted: the reaper submits again on its next turn.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EBUSY | libc::EAGAIN | libc::EINTR)) => {}
            Err(e) => log::error!("io_uring submit: {e}"),
        }
    }

    fn reap(&self) {
        loop {
            if let Err(e) = self.ring.submitter().submit_and_wait(1) {
                if !matches!(e.raw_os_error(), Some(libc::EBUSY | libc::EAGAIN | libc::EINTR)) {
                    log::error!("io_uring wait: {e}");
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
            }
            // SAFETY: only this thread ever takes the completion queue.
            let batch: Vec<(u64, i32)> =
                unsafe { self.ring.completion_shared() }.map(|c| (c.user_data(), c.result())).collect();
            for (id, res) in batch {
                if id != WAKE {
                    self.complete(id, res);
                }
            }
            if self.closing.load(Ordering::Acquire) && self.requests.lock().live.is_empty() {
                return;
            }
        }
    }

    fn complete(&self, id: u64, res: i32) {
        let mut reqs = self.requests.lock();
        let Some(r) = reqs.live.get_mut(&id) else { return };
        match outcome(r, res) {
            Outcome::Again => {
                let sqe = r.sqe(id);
                drop(reqs);
                self.push(&sqe);
            }
            Outcome::Finished(result) => {
                let mut r = reqs.live.remove(&id).expect("request present");
                drop(reqs);
                if let Some(done) = r.done.take() {
                    // A panicking callback must not take the reaper, and with
                    // it every later completion, down.
                    let call = std::panic::AssertUnwindSafe(move || done(result));
                    if std::panic::catch_unwind(call).is_err() {
                        log::error!("io_uring completion callback panicked");
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
