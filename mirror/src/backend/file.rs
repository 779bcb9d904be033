//! Regular files and block devices as legs.
//!
//! Block devices are opened `O_EXCL`, so the kernel refuses a second claim
//! (another volume, a mounted file system, md or dm). Files get an exclusive
//! `flock`. `O_DIRECT` is used when configured and the file system allows it;
//! without a write cache reported to the host, legs are opened `O_DSYNC` so
//! each acknowledged write is stable.

use super::{Backend, Caps, LegIdentity, Op};
use crate::buf::{slices_aligned, AlignedBuf};
use nix::fcntl::{fallocate, FallocateFlags, Flock, FlockArg};
use std::fs::{self, File, OpenOptions};
use std::io::{self, IoSlice};
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

/// How to open a leg.
#[derive(Clone, Copy, Debug)]
pub struct OpenMode {
    pub direct_io: bool,
    /// `O_DSYNC`: every write is stable when it returns.
    pub sync_writes: bool,
}

/// Why a leg could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum LegOpenError {
    #[error("does not exist")]
    Missing,
    #[error("not a regular file or block device")]
    NotStorage,
    #[error("in use by another process or volume")]
    Busy,
    #[error("cannot open")]
    Open(#[source] io::Error),
}

pub struct FileBackend {
    name: String,
    /// Shared with in-flight asynchronous I/O, which keeps the descriptor
    /// (and a block device's exclusive claim) until it returns.
    file: Arc<File>,
    /// A file leg's exclusive `flock`, on a duplicate of `file`'s descriptor
    /// (the lock belongs to the open file both share); released on drop.
    _lock: Option<Flock<File>>,
    identity: LegIdentity,
    size: AtomicU64,
    alignment: usize,
    caps: Caps,
    is_block: bool,
}

impl FileBackend {
    pub fn open(path: &Path, mode: OpenMode) -> Result<Self, LegOpenError> {
        let meta = match fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(LegOpenError::Missing),
            Err(e) => return Err(LegOpenError::Open(e)),
        };
        let is_block = meta.file_type().is_block_device();
        if !is_block && !meta.file_type().is_file() {
            return Err(LegOpenError::NotStorage);
        }
        let file = open_file(path, mode, is_block)?;
        let lock = if is_block {
            // A block device's exclusive claim lives as long as its descriptor.
            None
        } else {
            let dup = file.try_clone().map_err(LegOpenError::Open)?;
            Some(Flock::lock(dup, FlockArg::LockExclusiveNonblock).map_err(|(_, e)| {
                if e == nix::errno::Errno::EWOULDBLOCK {
                    LegOpenError::Busy
                } else {
                    LegOpenError::Open(e.into())
                }
            })?)
        };
        let f = &file;
        let size = file_size(f, is_block).map_err(LegOpenError::Open)?;
        // Not `mode.direct_io`: the file system may have refused O_DIRECT.
        let alignment = if opened_direct(f) { block_alignment(path, is_block) } else { 1 };
        let caps = Caps { discard_zeroes: probe_discard(f, size) };
        Ok(FileBackend {
            name: path.display().to_string(),
            identity: LegIdentity::of(&meta),
            file: Arc::new(file),
            _lock: lock,
            size: AtomicU64::new(size),
            alignment,
            caps,
            is_block,
        })
    }

    pub fn is_block_device(&self) -> bool {
        self.is_block
    }

    fn file(&self) -> &File {
        &self.file
    }
}

fn open_file(path: &Path, mode: OpenMode, is_block: bool) -> Result<File, LegOpenError> {
    let mut flags = 0;
    if is_block {
        flags |= libc::O_EXCL;
    }
    if mode.sync_writes {
        flags |= libc::O_DSYNC;
    }
    let open = |flags: i32| OpenOptions::new().read(true).write(true).custom_flags(flags).open(path);
    let res = if mode.direct_io {
        match open(flags | libc::O_DIRECT) {
            // tmpfs and some FUSE file systems refuse O_DIRECT: fall back to
            // buffered I/O (with O_DSYNC or flushes it is still durable).
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) && !is_block => {
                log::warn!("{}: O_DIRECT not supported here, using buffered I/O", path.display());
                open(flags)
            }
            r => r,
        }
    } else {
        open(flags)
    };
    res.map_err(|e| match e.raw_os_error() {
        Some(libc::EBUSY) => LegOpenError::Busy,
        Some(libc::ENOENT) => LegOpenError::Missing,
        _ => LegOpenError::Open(e),
    })
}

fn file_size(f: &File, is_block: bool) -> io::Result<u64> {
    if is_block {
        // lseek(SEEK_END) yields a block device's size without an ioctl.
        let end = nix::unistd::lseek(f.as_raw_fd(), 0, nix::unistd::Whence::SeekEnd)?;
        Ok(end as u64)
    } else {
        Ok(f.metadata()?.len())
    }
}

/// Whether `f` was really opened with `O_DIRECT`.
fn opened_direct(f: &File) -> bool {
    nix::fcntl::fcntl(f.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFL).is_ok_and(|fl| fl & libc::O_DIRECT != 0)
}

/// O_DIRECT alignment: the device's logical block size (sysfs), 512 for files.
fn block_alignment(path: &Path, is_block: bool) -> usize {
    if !is_block {
        return 512;
    }
    let name =
        fs::canonicalize(path).ok().and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
    let read = |p: PathBuf| fs::read_to_string(p).ok()?.trim().parse::<usize>().ok();
    name.and_then(|n| {
        read(Path::new("/sys/class/block").join(&n).join("queue/logical_block_size"))
            .or_else(|| read(Path::new("/sys/class/block").join(&n).join("../queue/logical_block_size")))
    })
    .unwrap_or(512)
}

/// Whether punching a hole works (files on most file systems; block devices
/// that can write zeroes without falling back to plain writes). Probed on a
/// zero-length range, which changes nothing.
fn probe_discard(f: &File, size: u64) -> bool {
    let flags = FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE;
    if size == 0 {
        return false;
    }
    // A zero-length fallocate is EINVAL everywhere; probe with the last
    // 4 KiB only if it already reads as zeroes, so nothing is lost.
    let probe_len = 4096.min(size);
    let off = size - probe_len;
    let mut buf = vec![0u8; probe_len as usize];
    if f.read_at(&mut buf, off).is_err() || buf.iter().any(|&b| b != 0) {
        return fallocate_supported_without_probe(f);
    }
    fallocate(f.as_raw_fd(), flags, off as i64, probe_len as i64).is_ok()
}

fn fallocate_supported_without_probe(f: &File) -> bool {
    // Unknown: treat as unsupported; unmap then follows the configured policy.
    let _ = f;
    false
}

impl Backend for FileBackend {
    fn name(&self) -> &str {
        &self.name
    }
    fn identity(&self) -> &LegIdentity {
        &self.identity
    }
    fn size(&self) -> u64 {
        self.size.load(Relaxed)
    }
    fn refresh_size(&self) -> io::Result<u64> {
        let size = file_size(self.file(), self.is_block)?;
        self.size.store(size, Relaxed);
        Ok(size)
    }
    fn alignment(&self) -> usize {
        self.alignment
    }
    fn writes_one_at_a_time(&self) -> bool {
        // O_DIRECT overwrites share the inode lock; a block device has none.
        !self.is_block && self.alignment <= 1
    }
    fn caps(&self) -> Caps {
        self.caps
    }

    fn async_file(&self, _op: Op, _offset: u64, _len: u64) -> Option<&Arc<File>> {
        Some(&self.file)
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let a = self.alignment;
        if a > 1 && (!(buf.as_ptr() as usize).is_multiple_of(a) || !buf.len().is_multiple_of(a)) {
            let mut bounce = AlignedBuf::uninit(buf.len());
            self.file().read_exact_at(bounce.as_mut_slice(), offset)?;
            buf.copy_from_slice(bounce.as_slice());
            return Ok(());
        }
        self.file().read_exact_at(buf, offset)
    }

    fn write_vectored_at(&self, bufs: &[IoSlice<'_>], offset: u64) -> io::Result<()> {
        if !slices_aligned(bufs, self.alignment) {
            return self.write_bounced(bufs, offset);
        }
        write_all_vectored_at(self.file(), bufs, offset)
    }

    fn flush(&self) -> io::Result<()> {
        self.file().sync_data()
    }

    fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        if !self.caps.discard_zeroes {
            return Err(io::ErrorKind::Unsupported.into());
        }
        let flags = FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE;
        fallocate(self.file().as_raw_fd(), flags, offset as i64, len as i64)?;
        Ok(())
    }

    fn write_zeroes(&self, offset: u64, len: u64) -> io::Result<()> {
        let flags = FallocateFlags::FALLOC_FL_ZERO_RANGE | FallocateFlags::FALLOC_FL_KEEP_SIZE;
        match fallocate(self.file().as_raw_fd(), flags, offset as i64, len as i64) {
            Ok(()) => Ok(()),
            Err(_) => super::write_zeroes_slowly(self, offset, len),
        }
    }
}

impl FileBackend {
    /// O_DIRECT needs aligned memory: copy into an aligned buffer first.
    fn write_bounced(&self, bufs: &[IoSlice<'_>], offset: u64) -> io::Result<()> {
        let len: usize = bufs.iter().map(|b| b.len()).sum();
        let mut bounce = AlignedBuf::uninit(len);
        let mut at = 0;
        for b in bufs {
            bounce.as_mut_slice()[at..at + b.len()].copy_from_slice(b);
            at += b.len();
        }
        self.file().write_all_at(bounce.as_slice(), offset)
    }
}

/// `pwritev` until everything is written (short writes are legal).
fn write_all_vectored_at(f: &File, bufs: &[IoSlice<'_>], mut offset: u64) -> io::Result<()> {
    let mut storage: Vec<IoSlice<'_>> = bufs.iter().filter(|b| !b.is_empty()).copied().collect();
    let mut slices: &mut [IoSlice<'_>] = &mut storage;
    while !slices.is_empty() {
        let batch = &slices[..slices.len().min(1024)];
        let n = match nix::sys::uio::pwritev(f, batch, offset as i64) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        };
        offset += n as u64;
        IoSlice::advance_slices(&mut slices, n);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::conformance;

    fn temp_leg(tag: &str, size: u64) -> PathBuf {
        let p = std::env::temp_dir().join(format!("hm-file-{tag}-{}", std::process::id()));
        let f = File::create(&p).unwrap();
        f.set_len(size).unwrap();
        p
    }

    const MODES: [OpenMode; 2] =
        [OpenMode { direct_io: false, sync_writes: false }, OpenMode { direct_io: true, sync_writes: true }];

    #[test]
    fn file_backend_passes_the_conformance_suite() {
        for (i, mode) in MODES.into_iter().enumerate() {
            let p = temp_leg(&format!("conf{i}"), 8 << 20);
            let b = FileBackend::open(&p, mode).unwrap();
            conformance::run_all(&b);
            drop(b);
            fs::remove_file(p).unwrap();
        }
    }

    #[test]
    fn a_second_open_of_a_file_leg_is_refused_as_busy() {
        let p = temp_leg("busy", 1 << 20);
        let mode = MODES[0];
        let _first = FileBackend::open(&p, mode).unwrap();
        assert!(matches!(FileBackend::open(&p, mode), Err(LegOpenError::Busy)));
        fs::remove_file(p).unwrap();
    }

    #[test]
    fn alignment_and_write_lane_follow_the_open_file_not_the_config() {
        let p = temp_leg("align", 1 << 20);
        let buffered = FileBackend::open(&p, MODES[0]).unwrap();
        assert_eq!(buffered.alignment(), 1);
        assert!(buffered.writes_one_at_a_time(), "a buffered file's writes hold its inode lock");
        drop(buffered);
        let direct = FileBackend::open(&p, MODES[1]).unwrap();
        assert_eq!(direct.alignment() > 1, opened_direct(direct.file()));
        assert_eq!(direct.writes_one_at_a_time(), !opened_direct(direct.file()));
        drop(direct);
        fs::remove_file(p).unwrap();

        // ramfs refuses O_DIRECT (tmpfs did too before Linux 6.6): the leg
        // falls back to buffered I/O and must not ask for aligned buffers.
        let dir = std::env::temp_dir().join(format!("hm-ramfs-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "ramfs", "hm-test"])
            .arg(&dir)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if mounted {
            let leg = dir.join("leg");
            File::create(&leg).unwrap().set_len(1 << 20).unwrap();
            let fallen_back = FileBackend::open(&leg, MODES[1])
                .map(|b| (b.alignment(), opened_direct(b.file()), b.writes_one_at_a_time()));
            let _ = std::process::Command::new("umount").arg(&dir).status();
            assert_eq!(fallen_back.unwrap(), (1, false, true));
        } else {
            eprintln!("skipped the O_DIRECT fallback: cannot mount ramfs here (not root?)");
        }
        let _ = fs::remove_dir(&dir);
    }

    #[test]
    fn a_missing_leg_is_reported_as_missing() {
        let p = Path::new("/nonexistent/hamirror/leg");
        assert!(matches!(FileBackend::open(p, MODES[0]), Err(LegOpenError::Missing)));
    }

    #[test]
    fn a_directory_is_not_storage() {
        assert!(matches!(FileBackend::open(&std::env::temp_dir(), MODES[0]), Err(LegOpenError::NotStorage)));
    }

    #[test]
    fn unaligned_buffers_are_bounced_under_direct_io() {
        let p = temp_leg("bounce", 1 << 20);
        let b = FileBackend::open(&p, MODES[1]).unwrap();
        let data: Vec<u8> = (0..8192u32).map(|i| (i * 7) as u8).collect();
        // Two slices that split a 512-byte sector: not aligned.
        b.write_vectored_at(&[IoSlice::new(&data[..100]), IoSlice::new(&data[100..])], 4096).unwrap();
        let mut back = vec![0u8; 8192];
        b.read_at(&mut back, 4096).unwrap();
        assert_eq!(back, data);
        drop(b);
        fs::remove_file(p).unwrap();
    }
}
