//! A leg with a volatile write cache, for power-cut tests (the
//! `fault-injection` feature only).
//!
//! A [`VolatileDevice`] wraps a leg's real storage. Writes go through to the
//! file at once, so reads see the newest data, as a device's cache serves
//! them; but each write not yet flushed keeps what it overwrote. A flush
//! makes every write that completed before it started stable. A simulated
//! [`power_cut`](VolatileDevice::power_cut) then decides, for each write
//! still unflushed, whether it reached the media or not, tears one of them
//! at sector granularity, and rewrites the file to what would have survived:
//! per sector, the last write that reached the media, else what was there
//! before the first unflushed write. Each device decides independently.
//!
//! A device opened for stable writes (`O_DSYNC`, `write_cache = false`)
//! keeps nothing: every completed write is on the media.

use super::{Backend, Caps, LegIdentity, Op};
use crate::config::VolumeConfig;
use crate::volume::EventSink;
use crate::{OpenError, Volume};
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::{self, IoSlice};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;

/// The unit a power cut tears at.
pub const SECTOR: u64 = 512;

/// One leg's simulated device cache.
pub struct VolatileDevice {
    path: PathBuf,
    stable_writes: bool,
    /// Writes not yet flushed, in the order they completed.
    unflushed: Mutex<Vec<Unflushed>>,
    /// The number the next write completes with.
    next: std::sync::atomic::AtomicU64,
}

struct Unflushed {
    /// Its place in completion order: a flush retires those before its start.
    seq: u64,
    offset: u64,
    old: Vec<u8>,
    new: Vec<u8>,
}

/// What a power cut did to one device.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cut {
    /// Unflushed writes when the power went.
    pub unflushed: usize,
    /// Of those, writes lost whole.
    pub lost: usize,
    /// Whether one write was torn (some of its sectors kept, some lost).
    pub torn: bool,
}

impl VolatileDevice {
    /// The device of the leg file at `path`; `stable_writes` for a leg
    /// written `O_DSYNC`.
    pub fn new(path: impl Into<PathBuf>, stable_writes: bool) -> Arc<VolatileDevice> {
        Arc::new(VolatileDevice {
            path: path.into(),
            stable_writes,
            unflushed: Mutex::new(Vec::new()),
            next: 0.into(),
        })
    }

    /// How many writes are not yet flushed.
    pub fn unflushed(&self) -> usize {
        self.unflushed.lock().len()
    }

    /// Puts this device's cache in front of `inner` (the leg's storage).
    pub fn wrap(self: &Arc<Self>, inner: Box<dyn Backend>) -> Box<dyn Backend> {
        Box::new(VolatileBackend { dev: self.clone(), inner })
    }

    /// Cuts the power: each unflushed write reaches the media or not, as
    /// `keep(i)` says for write `i`, except write `torn` (if any), whose
    /// sectors `keep_sector(s)` decides one by one. Rewrites the leg file to
    /// what survived. Call with nothing in flight on the device.
    pub fn power_cut(
        &self,
        mut keep: impl FnMut(usize) -> bool,
        torn: Option<usize>,
        mut keep_sector: impl FnMut(u64) -> bool,
    ) -> io::Result<Cut> {
        let writes = std::mem::take(&mut *self.unflushed.lock());
        let mut cut = Cut { unflushed: writes.len(), ..Cut::default() };
        // Per sector: what was there before the first unflushed write.
        let mut media: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
        for w in &writes {
            for (s, old) in sectors(w.offset, &w.old) {
                media.entry(s).or_insert_with(|| old.to_vec());
            }
        }
        for (i, w) in writes.iter().enumerate() {
            let is_torn = torn == Some(i);
            let kept = if is_torn { true } else { keep(i) };
            cut.lost += usize::from(!kept);
            cut.torn |= is_torn;
            for (s, new) in sectors(w.offset, &w.new) {
                if kept && (!is_torn || keep_sector(s)) {
                    media.insert(s, new.to_vec());
                }
            }
        }
        let file = OpenOptions::new().write(true).open(&self.path)?;
        for (s, data) in &media {
            file.write_all_at(data, s * SECTOR)?;
        }
        file.sync_data()?;
        Ok(cut)
    }

    /// Runs a write on `inner`, keeping what it overwrites until a flush.
    fn write(
        &self,
        inner: &dyn Backend,
        offset: u64,
        new: Vec<u8>,
        write: impl FnOnce() -> io::Result<()>,
    ) -> io::Result<()> {
        if self.stable_writes {
            return write();
        }
        // One write at a time on the device: the old bytes are what this
        // write replaces. (The engine never overlaps writes to a leg.)
        let mut unflushed = self.unflushed.lock();
        let mut old = vec![0; new.len()];
        inner.read_at(&mut old, offset)?;
        write()?;
        let seq = self.next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        unflushed.push(Unflushed { seq, offset, old, new });
        Ok(())
    }
}

/// `data` at byte `offset`, sector by sector: (sector number, its bytes).
fn sectors(offset: u64, data: &[u8]) -> impl Iterator<Item = (u64, &[u8])> {
    debug_assert!(offset.is_multiple_of(SECTOR) && (data.len() as u64).is_multiple_of(SECTOR));
    data.chunks(SECTOR as usize).enumerate().map(move |(i, c)| (offset / SECTOR + i as u64, c))
}

struct VolatileBackend {
    dev: Arc<VolatileDevice>,
    inner: Box<dyn Backend>,
}

impl Backend for VolatileBackend {
    super::delegate_to_inner!();

    /// Every operation takes the blocking path, through the cache.
    fn async_file(&self, _op: Op, _offset: u64, _len: u64) -> Option<&Arc<std::fs::File>> {
        None
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.inner.read_at(buf, offset)
    }

    fn write_vectored_at(&self, bufs: &[IoSlice<'_>], offset: u64) -> io::Result<()> {
        let new: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
        self.dev.write(&*self.inner, offset, new, || self.inner.write_vectored_at(bufs, offset))
    }

    /// Every write that completed before the flush began is stable after
    /// it (flushes may overlap: each retires only what it covers).
    fn flush(&self) -> io::Result<()> {
        let upto = {
            let _order = self.dev.unflushed.lock();
            self.dev.next.load(std::sync::atomic::Ordering::SeqCst)
        };
        self.inner.flush()?;
        self.dev.unflushed.lock().retain(|w| w.seq >= upto);
        Ok(())
    }

    fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        let zeroes = vec![0; len as usize];
        self.dev.write(&*self.inner, offset, zeroes, || self.inner.discard(offset, len))
    }

    fn write_zeroes(&self, offset: u64, len: u64) -> io::Result<()> {
        let zeroes = vec![0; len as usize];
        self.dev.write(&*self.inner, offset, zeroes, || self.inner.write_zeroes(offset, len))
    }
}

impl Volume {
    /// Like [`Volume::open`], with `devices[i]`'s volatile cache in front of
    /// leg `i` (reapplied to a leg that is reopened), and `faults`, if any,
    /// in front of the caches (a delayed write is in flight, not cached).
    pub fn open_with_volatile_legs(
        cfg: VolumeConfig,
        sink: EventSink,
        devices: Vec<Arc<VolatileDevice>>,
        faults: Option<Arc<super::fault::FaultInjector>>,
    ) -> Result<Volume, OpenError> {
        let wrap = Arc::new(move |leg: usize, inner: Box<dyn Backend>| {
            let cached = devices[leg].wrap(inner);
            match &faults {
                Some(f) => {
                    Box::new(super::fault::FaultyBackend::new(leg, cached, f.clone())) as Box<dyn Backend>
                }
                None => cached,
            }
        });
        Volume::open_wrapped(cfg, sink, wrap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::file::{FileBackend, OpenMode};

    fn device(tag: &str, stable: bool) -> (PathBuf, Arc<VolatileDevice>, Box<dyn Backend>) {
        let p = std::env::temp_dir().join(format!("hm-volatile-{tag}-{}", std::process::id()));
        std::fs::write(&p, vec![0u8; 8192]).unwrap();
        let inner = FileBackend::open(&p, OpenMode { direct_io: false, sync_writes: false }).unwrap();
        let dev = VolatileDevice::new(&p, stable);
        let b = dev.wrap(Box::new(inner));
        (p, dev, b)
    }

    fn put(b: &dyn Backend, offset: u64, byte: u8, len: usize) {
        b.write_vectored_at(&[IoSlice::new(&vec![byte; len])], offset).unwrap();
    }

    #[test]
    fn a_cut_keeps_what_was_flushed_and_each_sector_shows_its_last_surviving_write() {
        let (p, dev, b) = device("cut", false);
        put(&*b, 0, 1, 1024);
        b.flush().unwrap();
        put(&*b, 0, 2, 1024); // write 0: lost
        put(&*b, 512, 3, 1024); // write 1: kept
        put(&*b, 2048, 4, 1024); // write 2: torn, its first sector kept
        assert_eq!(dev.unflushed(), 3);
        let cut = dev.power_cut(|i| i == 1, Some(2), |s| s == 4).unwrap();
        assert_eq!(cut, Cut { unflushed: 3, lost: 1, torn: true });
        let f = std::fs::read(&p).unwrap();
        assert!(f[..512].iter().all(|&x| x == 1), "flushed, then a lost write: the flushed data");
        assert!(f[512..1536].iter().all(|&x| x == 3), "a kept write over a lost one");
        assert!(f[2048..2560].iter().all(|&x| x == 4) && f[2560..3072].iter().all(|&x| x == 0), "torn");
        let _ = std::fs::remove_file(p);
    }

    #[test]
    fn stable_writes_survive_any_cut() {
        let (p, dev, b) = device("stable", true);
        put(&*b, 0, 7, 512);
        assert_eq!(dev.unflushed(), 0);
        dev.power_cut(|_| false, None, |_| false).unwrap();
        assert!(std::fs::read(&p).unwrap()[..512].iter().all(|&x| x == 7));
        let _ = std::fs::remove_file(p);
    }
}
