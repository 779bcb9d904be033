//! Opening an existing volume: lock and read every copy, refuse what is not
//! this volume's, and choose the header to trust. `repair` does the rest.

use super::header::{hex, Header};
use super::inspect::{read_contents, Contents};
use super::lock::{check_paths, open_locked, LockedFile};
use super::MetaError;
use std::path::{Path, PathBuf};

/// One listed copy as found at open.
pub struct Candidate {
    pub path: PathBuf,
    /// Open and locked, if it exists and could be opened.
    pub file: Option<LockedFile>,
    pub found: Found,
}

/// What was found at a copy's path.
pub enum Found {
    Missing,
    /// Could not be opened or read; left alone.
    Unreadable(String),
    Is(Contents),
}

/// Locks and reads the metadata copies `paths`, and chooses the header to
/// trust (with its sequence number); `repair` then brings every copy to it.
pub(super) fn find(paths: &[PathBuf]) -> Result<(Vec<Candidate>, Header, u64), MetaError> {
    check_paths(paths)?;
    let cands = paths.iter().map(|p| load(p)).collect::<Result<Vec<_>, _>>()?;
    refuse_unusable(&cands)?;
    let (header, seq) = choose(&cands)?;
    refuse_foreign(&cands, &header)?;
    Ok((cands, header, seq))
}

/// Locks and reads one copy. Only a lock held elsewhere is fatal: a copy
/// that cannot be read is lost, and the others carry on.
fn load(path: &Path) -> Result<Candidate, MetaError> {
    let (file, found) = match open_locked(path) {
        Ok(None) => (None, Found::Missing),
        Ok(Some(file)) => match read_contents(&file) {
            Ok(contents) => (Some(file), Found::Is(contents)),
            Err(e) => (Some(file), Found::Unreadable(e.to_string())),
        },
        Err(MetaError::Io { source, .. }) => (None, Found::Unreadable(source.to_string())),
        Err(e) => return Err(e),
    };
    Ok(Candidate { path: path.to_owned(), file, found })
}

/// Refuses files that are not hamirror metadata, or of a format this build
/// does not know: they are never overwritten.
fn refuse_unusable(cands: &[Candidate]) -> Result<(), MetaError> {
    for c in cands {
        match c.found {
            Found::Is(Contents::Alien) => return Err(MetaError::NotMetadata { path: c.path.clone() }),
            Found::Is(Contents::Version(found)) => {
                return Err(MetaError::Version { path: c.path.clone(), found })
            }
            _ => {}
        }
    }
    Ok(())
}

/// The valid header with the highest generation, ties broken by the header
/// sequence number (which every header write bumps).
fn choose(cands: &[Candidate]) -> Result<(Header, u64), MetaError> {
    let best = cands
        .iter()
        .filter_map(|c| match &c.found {
            Found::Is(Contents::Valid { header, seq }) => Some((header, *seq)),
            _ => None,
        })
        .max_by_key(|(h, seq)| (h.generation, *seq));
    match best {
        Some((h, seq)) => Ok((h.clone(), seq)),
        None => Err(MetaError::NoValidCopy { details: describe(cands) }),
    }
}

fn describe(cands: &[Candidate]) -> String {
    let one = |c: &Candidate| match &c.found {
        Found::Missing => "missing".to_owned(),
        Found::Unreadable(e) => format!("unreadable: {e}"),
        Found::Is(Contents::Blank) => "empty".to_owned(),
        Found::Is(Contents::Corrupt { why, .. }) => why.clone(),
        Found::Is(other) => format!("{other:?}"),
    };
    let all: Vec<String> = cands.iter().map(|c| format!("{}: {}", c.path.display(), one(c))).collect();
    all.join("; ")
}

/// Refuses copies that belong to another volume: by their header, or by
/// their first bitmap page when no header slot is readable.
fn refuse_foreign(cands: &[Candidate], header: &Header) -> Result<(), MetaError> {
    for c in cands {
        let theirs = match &c.found {
            Found::Is(Contents::Valid { header: h, .. }) => Some(h.volume_id),
            Found::Is(Contents::Corrupt { page_volume, .. }) => *page_volume,
            _ => None,
        };
        match theirs {
            Some(id) if id != header.volume_id => {
                return Err(MetaError::Foreign {
                    path: c.path.clone(),
                    theirs: hex(&id),
                    ours: header.id_hex(),
                })
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::meta::testutil::{create, tear_slot, TempDir};
    use crate::meta::{CopyNote, MetaError, MetaStore};
    use std::fs;

    #[test]
    fn a_created_volume_opens_with_its_header_and_a_clean_bitmap() {
        let dir = TempDir::new("roundtrip");
        let paths = dir.copies(2);
        let created = create(&paths);
        drop(created.store);
        let opened = MetaStore::open(&paths).unwrap();
        assert_eq!(opened.header, created.header);
        assert_eq!(opened.bitmap.len(), 1024);
        assert!(opened.bitmap.not_any());
        assert!(opened.notes.is_empty(), "{:?}", opened.notes);
    }

    #[test]
    fn a_second_open_while_the_first_is_alive_is_locked() {
        let dir = TempDir::new("locked");
        let paths = dir.copies(2);
        let _first = create(&paths);
        let err = MetaStore::open(&paths).unwrap_err();
        assert!(matches!(err, MetaError::Locked { .. }), "{err}");
    }

    #[test]
    fn a_torn_newest_header_slot_falls_back_to_the_previous_one() {
        let dir = TempDir::new("torn-slot");
        let paths = dir.copies(1);
        let opened = create(&paths);
        let mut h = opened.header.clone();
        h.generation = 2;
        opened.store.write_header(&h).unwrap();
        h.generation = 3;
        opened.store.write_header(&h).unwrap(); // sequence 3: slot 1
        drop(opened.store);
        tear_slot(&paths[0], 1);
        let reopened = MetaStore::open(&paths).unwrap();
        assert_eq!(reopened.header.generation, 2);
    }

    #[test]
    fn a_copy_of_another_volume_is_refused_and_left_untouched() {
        let dir = TempDir::new("foreign");
        let paths = dir.copies(2);
        drop(create(&paths[..1]));
        drop(create(&paths[1..]));
        let before = fs::read(&paths[1]).unwrap();
        let err = MetaStore::open(&paths).unwrap_err();
        assert!(matches!(err, MetaError::Foreign { .. }), "{err}");
        assert_eq!(fs::read(&paths[1]).unwrap(), before);
    }

    #[test]
    fn a_garbage_file_is_refused_and_left_untouched() {
        let dir = TempDir::new("garbage");
        let paths = dir.copies(2);
        drop(create(&paths[..1]));
        let junk: Vec<u8> = (0..50_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        fs::write(&paths[1], &junk).unwrap();
        let err = MetaStore::open(&paths).unwrap_err();
        assert!(matches!(err, MetaError::NotMetadata { .. }), "{err}");
        assert_eq!(fs::read(&paths[1]).unwrap(), junk);
    }

    #[test]
    fn a_missing_copy_is_recreated_and_reported() {
        let dir = TempDir::new("missing");
        let paths = dir.copies(2);
        drop(create(&paths));
        fs::remove_file(&paths[1]).unwrap();
        let opened = MetaStore::open(&paths).unwrap();
        assert!(matches!(&opened.notes[..], [CopyNote::Repaired { copy: 1, .. }]), "{:?}", opened.notes);
        drop(opened.store);
        fs::remove_file(&paths[0]).unwrap();
        assert!(MetaStore::open(&paths).unwrap().notes.len() == 1);
    }

    #[test]
    fn a_stale_copy_is_rewritten_from_the_newest() {
        let dir = TempDir::new("stale");
        let paths = dir.copies(2);
        drop(create(&paths));
        let old = fs::read(&paths[1]).unwrap();
        let opened = MetaStore::open(&paths).unwrap();
        let mut h = opened.header.clone();
        h.generation = 7;
        opened.store.write_header(&h).unwrap();
        drop(opened.store);
        fs::write(&paths[1], old).unwrap();
        let reopened = MetaStore::open(&paths).unwrap();
        assert_eq!(reopened.header.generation, 7);
        assert!(matches!(&reopened.notes[..], [CopyNote::Repaired { copy: 1, .. }]), "{:?}", reopened.notes);
        drop(reopened.store);
        fs::remove_file(&paths[0]).unwrap();
        assert_eq!(MetaStore::open(&paths).unwrap().header.generation, 7);
    }

    #[test]
    fn no_trustworthy_copy_is_refused_with_each_copys_problem() {
        let dir = TempDir::new("novalid");
        let paths = dir.copies(2);
        drop(create(&paths[..1]));
        tear_slot(&paths[0], 1);
        let err = MetaStore::open(&paths).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, MetaError::NoValidCopy { .. }), "{text}");
        assert!(text.contains("checksum") && text.contains("missing"), "{text}");
    }

    #[test]
    fn opening_paths_that_hold_nothing_says_no_copy_is_valid() {
        let dir = TempDir::new("nothing");
        let err = MetaStore::open(&dir.copies(1)).unwrap_err();
        assert!(matches!(err, MetaError::NoValidCopy { .. }), "{err}");
    }

    #[test]
    fn a_copy_that_cannot_be_recreated_is_lost_and_the_volume_opens() {
        let dir = TempDir::new("lost-dir");
        fs::create_dir(dir.path("gone")).unwrap();
        let paths = vec![dir.path("m"), dir.path("gone/m")];
        drop(create(&paths));
        fs::remove_dir_all(dir.path("gone")).unwrap();
        let opened = MetaStore::open(&paths).unwrap();
        assert!(matches!(&opened.notes[..], [CopyNote::Lost { copy: 1, .. }]), "{:?}", opened.notes);
        let health = opened.store.health();
        assert!(health[0].live && !health[1].live && health[1].error.is_some(), "{health:?}");
    }
}
