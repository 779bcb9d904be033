//! Making a new volume's copies, and telling whether a volume exists.
//!
//! Each copy is written whole under a temporary name, made durable and then
//! renamed into place, so a crash leaves either no copy or a complete one.

use super::copy::{write_slots, Copy};
use super::format::{encode_page, page_offset, Geometry};
use super::header::{validate, Header};
use super::inspect::{read_contents, Contents};
use super::lock::{check_paths, io_err, open_locked, open_to_look, LockedFile, NewFile};
use super::{Bitmap, MetaError, MetaStore, Opened, Probe};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

impl MetaStore {
    /// Whether any of `paths` holds hamirror metadata (valid or not).
    pub fn probe(paths: &[PathBuf]) -> Result<Probe, MetaError> {
        check_paths(paths)?;
        for path in paths {
            let Some(file) = open_to_look(path)? else { continue };
            if read_contents(&file).map_err(|e| io_err(path, e))?.is_metadata() {
                return Ok(Probe::Present);
            }
        }
        Ok(Probe::Absent)
    }

    /// The newest valid header among the copies, read without locking or
    /// changing anything (for checks before a volume is created). `None`
    /// when no copy holds a valid header; an alien file is refused.
    pub fn peek(paths: &[PathBuf]) -> Result<Option<Header>, MetaError> {
        check_paths(paths)?;
        let mut best: Option<Header> = None;
        for path in paths {
            let Some(file) = open_to_look(path)? else { continue };
            match read_contents(&file).map_err(|e| io_err(path, e))? {
                Contents::Alien => return Err(MetaError::NotMetadata { path: path.clone() }),
                Contents::Version(found) => return Err(MetaError::Version { path: path.clone(), found }),
                Contents::Valid { header, .. } => {
                    if best.as_ref().is_none_or(|b| header.generation > b.generation) {
                        best = Some(header);
                    }
                }
                Contents::Blank | Contents::Corrupt { .. } => {}
            }
        }
        Ok(best)
    }

    /// Creates a new volume's copies at `paths`, each holding `header` (whose
    /// `volume_id` must not be all zeros: see [`Header::new`]) and an all-clear
    /// bitmap of `ceil(size / region_size)` regions, durable (files and their
    /// directories fsynced) and locked when this returns. A path must be
    /// missing or an empty file: hamirror metadata there is refused with
    /// [`MetaError::Exists`], anything else with [`MetaError::NotMetadata`],
    /// and nothing is written anywhere then. Should renaming a finished copy
    /// into place fail, the copies already in place stay; [`MetaStore::open`]
    /// completes the others.
    pub fn create(paths: &[PathBuf], header: &Header) -> Result<Opened, MetaError> {
        check_paths(paths)?;
        validate(header)?;
        let geom = header.geometry()?;
        let blanks = paths.iter().map(|p| claim_blank(p)).collect::<Result<Vec<_>, _>>()?;
        let news = paths.iter().map(|p| NewFile::begin(p, geom.file_len())).collect::<Result<Vec<_>, _>>()?;
        let (hseq, bitmap) = (1, Bitmap::repeat(false, geom.regions));
        for (new, path) in news.iter().zip(paths) {
            write_all_pages(new.file(), header, &bitmap, &geom)
                .and_then(|()| write_slots(new.file(), header, hseq))
                .map_err(|e| io_err(path, e))?;
        }
        let files = news.into_iter().map(NewFile::publish).collect::<Result<Vec<_>, _>>()?;
        drop(blanks);
        let copies =
            paths.iter().zip(files).map(|(p, f)| Copy { path: p.clone(), file: Some(f), error: None });
        let store = MetaStore::from_parts(copies.collect(), header.clone(), hseq, 0, geom);
        Ok(Opened { store, header: header.clone(), bitmap, notes: Vec::new() })
    }
}

/// Locks an existing copy path for `create`, which must be empty.
fn claim_blank(path: &Path) -> Result<Option<LockedFile>, MetaError> {
    let Some(file) = open_locked(path)? else { return Ok(None) };
    let contents = read_contents(&file).map_err(|e| io_err(path, e))?;
    match contents {
        Contents::Blank => Ok(Some(file)),
        c if c.is_metadata() => Err(MetaError::Exists { path: path.to_owned() }),
        _ => Err(MetaError::NotMetadata { path: path.to_owned() }),
    }
}

/// Writes every bitmap page of a new copy.
fn write_all_pages(file: &File, h: &Header, bitmap: &Bitmap, geom: &Geometry) -> io::Result<()> {
    (0..geom.pages).try_for_each(|p| {
        let page = encode_page(&h.volume_id, p, 0, &bitmap[geom.page_bits(p)]);
        file.write_all_at(&page, page_offset(p))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::testutil::{create, TempDir};
    use std::fs;

    #[test]
    fn creating_over_existing_metadata_is_refused() {
        let dir = TempDir::new("exists");
        let paths = dir.copies(2);
        drop(create(&paths[1..]));
        let err = MetaStore::create(&paths, &Header::for_tests()).unwrap_err();
        assert!(matches!(err, MetaError::Exists { .. }), "{err}");
        assert!(!paths[0].exists(), "nothing is created when one path is refused");
    }

    #[test]
    fn creating_over_a_foreign_file_is_refused_and_leaves_it_untouched() {
        let dir = TempDir::new("create-alien");
        let paths = dir.copies(1);
        fs::write(&paths[0], b"someone's data").unwrap();
        let err = MetaStore::create(&paths, &Header::for_tests()).unwrap_err();
        assert!(matches!(err, MetaError::NotMetadata { .. }), "{err}");
        assert_eq!(fs::read(&paths[0]).unwrap(), b"someone's data");
    }

    #[test]
    fn an_empty_file_can_hold_a_new_copy() {
        let dir = TempDir::new("create-empty");
        let paths = dir.copies(1);
        fs::write(&paths[0], b"").unwrap();
        drop(create(&paths));
        assert!(MetaStore::open(&paths).is_ok());
    }

    #[test]
    fn probe_tells_a_new_volume_from_an_existing_one() {
        let dir = TempDir::new("probe");
        let paths = dir.copies(2);
        assert_eq!(MetaStore::probe(&paths).unwrap(), Probe::Absent);
        drop(create(&paths[1..]));
        assert_eq!(MetaStore::probe(&paths).unwrap(), Probe::Present);
    }

    #[test]
    fn a_copy_in_a_missing_directory_cannot_be_created() {
        let dir = TempDir::new("create-nodir");
        let paths = vec![dir.path("m"), dir.path("no/such/dir/m")];
        let err = MetaStore::create(&paths, &Header::for_tests()).unwrap_err();
        assert!(matches!(err, MetaError::Io { .. }), "{err}");
        assert!(!paths[0].exists());
    }

    #[test]
    fn creation_leaves_only_the_copies_in_the_directory() {
        let dir = TempDir::new("create-clean");
        drop(create(&dir.copies(2)));
        let mut names: Vec<_> = fs::read_dir(dir.path("")).unwrap().map(|e| e.unwrap().file_name()).collect();
        names.sort();
        assert_eq!(names, ["meta0", "meta1"]);
    }

    #[test]
    fn an_all_zero_volume_id_is_refused() {
        let dir = TempDir::new("zero-id");
        let mut h = Header::for_tests();
        h.volume_id = [0; 16];
        let err = MetaStore::create(&dir.copies(1), &h).unwrap_err();
        assert!(matches!(err, MetaError::Invalid { .. }), "{err}");
    }
}
