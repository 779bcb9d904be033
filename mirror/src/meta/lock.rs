//! Copy files: checking the list, opening them under an exclusive lock, and
//! creating new ones atomically (written under a temporary name, then renamed).
//!
//! The lock is `flock(LOCK_EX | LOCK_NB)` on our own open file description, so
//! two opens conflict even inside one process, and it lives as long as the
//! returned [`Flock`]: dropping it releases the copy.

use super::MetaError;
use crate::config::MAX_METADATA_COPIES;
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// An open copy file holding its lock.
pub type LockedFile = Flock<File>;

/// Wraps an I/O error with the path it concerns.
pub fn io_err(path: &Path, source: io::Error) -> MetaError {
    MetaError::Io { path: path.to_owned(), source }
}

/// Checks the list of copies: 1 to 4 of them, each a regular file (or not
/// there yet), no file listed twice (also through another name).
pub fn check_paths(paths: &[PathBuf]) -> Result<(), MetaError> {
    if paths.is_empty() || paths.len() > MAX_METADATA_COPIES {
        return Err(MetaError::CopyCount { count: paths.len() });
    }
    let mut seen: Vec<(&PathBuf, Option<(u64, u64)>)> = Vec::new();
    for path in paths {
        let id = match fs::metadata(path) {
            Ok(m) if !m.is_file() => return Err(MetaError::NotAFile { path: path.clone() }),
            Ok(m) => Some((m.dev(), m.ino())),
            Err(_) => None,
        };
        if let Some((other, _)) = seen.iter().find(|(p, i)| *p == path || (id.is_some() && *i == id)) {
            return Err(MetaError::DuplicateCopy { path: path.clone(), other: (*other).clone() });
        }
        seen.push((path, id));
    }
    Ok(())
}

/// Takes the exclusive lock on `file`, or says who holds it.
pub fn lock(file: File, path: &Path) -> Result<LockedFile, MetaError> {
    Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| match errno {
        Errno::EWOULDBLOCK => MetaError::Locked { path: path.to_owned() },
        e => io_err(path, e.into()),
    })
}

/// Opens `path` read-write under its lock; `None` if it does not exist.
pub fn open_locked(path: &Path) -> Result<Option<LockedFile>, MetaError> {
    match OpenOptions::new().read(true).write(true).open(path) {
        Ok(file) => lock(file, path).map(Some),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(path, e)),
    }
}

/// Opens `path` read-only without locking (to look), `None` if missing.
pub fn open_to_look(path: &Path) -> Result<Option<File>, MetaError> {
    match File::open(path) {
        Ok(file) => Ok(Some(file)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(path, e)),
    }
}

/// fsyncs the directory holding `path`, so a new name in it is durable.
pub fn sync_dir(path: &Path) -> Result<(), MetaError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io_err(dir, e))
}

/// A copy being written under a temporary name beside its real one. Dropped
/// without [`NewFile::publish`], it removes the temporary file.
pub struct NewFile {
    file: Option<LockedFile>,
    tmp: PathBuf,
    path: PathBuf,
}

impl NewFile {
    /// Starts a new copy for `path`, `len` bytes of zeros. The temporary file
    /// is locked too, so two processes creating the same copy conflict.
    pub fn begin(path: &Path, len: u64) -> Result<NewFile, MetaError> {
        let mut name = std::ffi::OsString::from(".");
        name.push(path.file_name().unwrap_or_default());
        name.push(".hamirror-new");
        let tmp = path.with_file_name(name);
        // Not truncated at open: another creator may hold it; only once locked.
        let file =
            OpenOptions::new().read(true).write(true).create(true).truncate(false).mode(0o600).open(&tmp);
        let file = lock(file.map_err(|e| io_err(&tmp, e))?, &tmp)?;
        let new = NewFile { file: Some(file), tmp, path: path.to_owned() };
        new.file().set_len(0).and_then(|()| new.file().set_len(len)).map_err(|e| io_err(&new.tmp, e))?;
        Ok(new)
    }

    /// The file to write.
    pub fn file(&self) -> &File {
        self.file.as_ref().expect("a NewFile keeps its file until published")
    }

    /// Makes the copy durable and gives it its real name, which must still be
    /// free or an empty file; then makes the name durable.
    pub fn publish(mut self) -> Result<LockedFile, MetaError> {
        self.file().sync_all().map_err(|e| io_err(&self.tmp, e))?;
        rename_into_place(&self.tmp, &self.path)?;
        sync_dir(&self.path)?;
        Ok(self.file.take().expect("published once"))
    }
}

impl Drop for NewFile {
    fn drop(&mut self) {
        if self.file.is_some() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// Renames `tmp` to `path`, never replacing anything but an empty file.
fn rename_into_place(tmp: &Path, path: &Path) -> Result<(), MetaError> {
    match fs::metadata(path) {
        Ok(m) if m.is_file() && m.len() == 0 => fs::rename(tmp, path).map_err(|e| io_err(path, e)),
        Ok(_) => Err(MetaError::NotMetadata { path: path.to_owned() }),
        Err(e) if e.kind() == ErrorKind::NotFound => rename_no_replace(tmp, path),
        Err(e) => Err(io_err(path, e)),
    }
}

fn rename_no_replace(tmp: &Path, path: &Path) -> Result<(), MetaError> {
    use nix::fcntl::{renameat2, RenameFlags};
    match renameat2(None, tmp, None, path, RenameFlags::RENAME_NOREPLACE) {
        Ok(()) => Ok(()),
        // The file system cannot refuse to replace: the check above must do.
        Err(Errno::EINVAL) => fs::rename(tmp, path).map_err(|e| io_err(path, e)),
        Err(Errno::EEXIST) => Err(MetaError::NotMetadata { path: path.to_owned() }),
        Err(e) => Err(io_err(path, e.into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::testutil::TempDir;

    #[test]
    fn a_second_lock_on_the_same_file_is_refused_in_the_same_process() {
        let dir = TempDir::new("lock-twice");
        let path = dir.path("m");
        fs::write(&path, b"x").unwrap();
        let _first = open_locked(&path).unwrap().unwrap();
        assert!(matches!(open_locked(&path), Err(MetaError::Locked { .. })));
    }

    #[test]
    fn dropping_the_lock_releases_the_file() {
        let dir = TempDir::new("lock-drop");
        let path = dir.path("m");
        fs::write(&path, b"x").unwrap();
        drop(open_locked(&path).unwrap());
        assert!(open_locked(&path).unwrap().is_some());
    }

    #[test]
    fn the_same_file_under_two_names_is_listed_twice() {
        let dir = TempDir::new("dup");
        fs::write(dir.path("a"), b"").unwrap();
        std::os::unix::fs::symlink(dir.path("a"), dir.path("b")).unwrap();
        let err = check_paths(&[dir.path("a"), dir.path("b")]).unwrap_err();
        assert!(matches!(err, MetaError::DuplicateCopy { .. }), "{err}");
    }

    #[test]
    fn a_directory_is_not_a_copy() {
        let dir = TempDir::new("notfile");
        let err = check_paths(&[dir.path("")]).unwrap_err();
        assert!(matches!(err, MetaError::NotAFile { .. }), "{err}");
    }

    #[test]
    fn an_unpublished_new_file_leaves_nothing_behind() {
        let dir = TempDir::new("unpublished");
        drop(NewFile::begin(&dir.path("m"), 100).unwrap());
        assert_eq!(fs::read_dir(dir.path("")).unwrap().count(), 0);
    }

    #[test]
    fn publishing_refuses_to_replace_a_non_empty_file() {
        let dir = TempDir::new("publish");
        let new = NewFile::begin(&dir.path("m"), 100).unwrap();
        fs::write(dir.path("m"), b"precious").unwrap();
        assert!(matches!(new.publish(), Err(MetaError::NotMetadata { .. })));
        assert_eq!(fs::read(dir.path("m")).unwrap(), b"precious");
    }
}
