//! Bringing every copy up to the chosen header while merging the bitmap.
//!
//! The bitmap is built one page at a time (so memory stays at one bitmap plus
//! a page per copy): a page is the OR of every copy's valid version of it.
//! Only copies whose header is the chosen one are trusted to hold the newest
//! version of a page; if none of them has it intact, the page's regions are
//! all marked dirty rather than taken from an older copy that may miss bits.

use super::copy::{write_slots, Copy};
use super::format::{decode_page, encode_page, or_into, page_offset, same_bits, Geometry, Page, PAGE_SIZE};
use super::header::Header;
use super::inspect::{read_upto, Contents};
use super::lock::{io_err, LockedFile, NewFile};
use super::open::{Candidate, Found};
use super::{Bitmap, CopyNote, MetaError};
use bitvec::order::Lsb0;
use bitvec::slice::BitSlice;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

/// What to do with one copy.
enum Action {
    /// Up to date: only pages that are unreadable or differ are rewritten.
    Keep,
    /// Ours but corrupt or stale: rewritten in place, pages then header.
    Rewrite(String),
    /// Missing or empty: written under a temporary name, then renamed.
    Recreate(String),
}

struct Work {
    copy: usize,
    path: PathBuf,
    /// The existing file: read from, and written to unless recreated.
    file: Option<LockedFile>,
    new: Option<NewFile>,
    action: Action,
    pages_fixed: usize,
    /// Set once the copy is lost; it is then left alone.
    error: Option<String>,
}

/// The copies, repaired, with what the store needs to carry on.
pub(super) struct Repaired {
    pub copies: Vec<Copy>,
    pub header: Header,
    /// The newest bitmap page sequence found.
    pub pseq: u64,
    pub geom: Geometry,
    pub bitmap: Bitmap,
    pub notes: Vec<CopyNote>,
}

/// Repairs the copies against `header` (header sequence `seq`) and merges
/// their bitmaps.
pub(super) fn run(cands: Vec<Candidate>, header: Header, seq: u64) -> Result<Repaired, MetaError> {
    let geom = header.geometry()?;
    let mut works: Vec<Work> =
        cands.into_iter().enumerate().map(|(i, c)| Work::plan(i, c, &header, seq, &geom)).collect();
    let mut bitmap = Bitmap::repeat(false, geom.regions);
    let (mut lost_pages, mut pseq) = (0, 0);
    for page in 0..geom.pages {
        let (trusted, page_seq) = merge_page(&mut works, &mut bitmap, page, &header.volume_id, &geom);
        lost_pages += usize::from(!trusted);
        pseq = pseq.max(page_seq);
    }
    let mut notes = Vec::new();
    if lost_pages > 0 {
        notes.push(CopyNote::PagesLost { pages: lost_pages });
    }
    let copies: Vec<Copy> = works.into_iter().map(|w| w.finish(&header, seq, &geom, &mut notes)).collect();
    if copies.iter().all(|c| c.error.is_some()) {
        let why: Vec<String> = copies
            .iter()
            .map(|c| format!("{}: {}", c.path.display(), c.error.as_deref().unwrap_or("")))
            .collect();
        return Err(MetaError::AllCopiesFailed(io::Error::other(why.join("; "))));
    }
    Ok(Repaired { copies, header, pseq, geom, bitmap, notes })
}

/// Merges page `page` into `bitmap` and writes it where needed. Returns
/// whether an up-to-date copy had it intact, and its newest page sequence.
fn merge_page(
    works: &mut [Work],
    bitmap: &mut Bitmap,
    page: usize,
    id: &[u8; 16],
    geom: &Geometry,
) -> (bool, u64) {
    let bits = &mut bitmap[geom.page_bits(page)];
    let images: Vec<Option<Page>> = works.iter().map(|w| w.read_page(page, id)).collect();
    let trusted = works.iter().zip(&images).any(|(w, img)| matches!(w.action, Action::Keep) && img.is_some());
    if trusted {
        images.iter().flatten().for_each(|img| or_into(bits, &img.words));
    } else {
        bits.fill(true);
    }
    let seq = images.iter().flatten().map(|img| img.seq).max().unwrap_or(0);
    let encoded = encode_page(id, page, seq, bits);
    for (w, img) in works.iter_mut().zip(&images) {
        w.put_page(page, img.as_ref(), bits, &encoded);
    }
    (trusted, seq)
}

impl Work {
    fn plan(copy: usize, c: Candidate, header: &Header, seq: u64, geom: &Geometry) -> Work {
        let (action, error) = match c.found {
            Found::Missing => (Action::Recreate("missing".into()), None),
            Found::Is(Contents::Blank) => (Action::Recreate("empty".into()), None),
            Found::Unreadable(e) => (Action::Keep, Some(e)),
            Found::Is(Contents::Corrupt { why, .. }) => (Action::Rewrite(why), None),
            Found::Is(Contents::Valid { header: h, seq: s })
                if (h.generation, s) < (header.generation, seq) =>
            {
                let why = format!(
                    "out of date (generation {}, sequence {s}; the newest is generation {}, sequence {seq})",
                    h.generation, header.generation
                );
                (Action::Rewrite(why), None)
            }
            Found::Is(Contents::Valid { .. }) => (Action::Keep, None),
            Found::Is(other) => (Action::Keep, Some(format!("left untouched: {other:?}"))),
        };
        let mut w = Work { copy, path: c.path, file: c.file, new: None, action, pages_fixed: 0, error };
        if matches!(w.action, Action::Recreate(_)) && w.error.is_none() {
            match NewFile::begin(&w.path, geom.file_len()) {
                Ok(new) => w.new = Some(new),
                Err(e) => w.error = Some(e.to_string()),
            }
        }
        w
    }

    /// The page as this copy holds it, if it is a source and the page is intact.
    fn read_page(&self, page: usize, id: &[u8; 16]) -> Option<Page> {
        if self.error.is_some() || self.new.is_some() {
            return None;
        }
        let buf = read_upto(self.file.as_ref()?, page_offset(page), PAGE_SIZE).ok()?;
        decode_page(&buf, page, id).ok()
    }

    fn target(&self) -> Option<&File> {
        match &self.new {
            Some(new) => Some(new.file()),
            None => self.file.as_deref(),
        }
    }

    /// Writes the merged page if this copy needs it.
    fn put_page(&mut self, page: usize, had: Option<&Page>, bits: &BitSlice<u64, Lsb0>, encoded: &[u8]) {
        let keep = matches!(self.action, Action::Keep);
        if self.error.is_some() || (keep && had.is_some_and(|p| same_bits(bits, &p.words))) {
            return;
        }
        let Some(file) = self.target() else { return };
        match file.write_all_at(encoded, page_offset(page)) {
            Ok(()) => self.pages_fixed += usize::from(keep),
            Err(e) => self.error = Some(e.to_string()),
        }
    }

    /// Completes the copy's repair: syncs, writes the header, publishes.
    fn finish(mut self, header: &Header, seq: u64, geom: &Geometry, notes: &mut Vec<CopyNote>) -> Copy {
        let why = match self.error {
            Some(_) => None,
            None => match self.complete(header, seq, geom) {
                Ok(why) => why,
                Err(e) => {
                    self.error = Some(e.to_string());
                    None
                }
            },
        };
        let (copy, path) = (self.copy, self.path.clone());
        match (&self.error, why) {
            (Some(error), _) => notes.push(CopyNote::Lost { copy, path, error: error.clone() }),
            (None, Some(why)) => notes.push(CopyNote::Repaired { copy, path, why }),
            (None, None) => {}
        }
        Copy { path: self.path, file: self.file, error: self.error }
    }

    /// The repair's last writes; returns what was repaired, if anything.
    fn complete(&mut self, header: &Header, seq: u64, geom: &Geometry) -> Result<Option<String>, MetaError> {
        match &self.action {
            Action::Keep if self.pages_fixed == 0 => Ok(None),
            Action::Keep => {
                let file = self.file.as_ref().expect("a kept copy has its file");
                file.sync_data().map_err(|e| io_err(&self.path, e))?;
                Ok(Some(format!("{} bitmap pages unreadable or out of date; rewritten", self.pages_fixed)))
            }
            Action::Rewrite(why) => {
                let file = self.file.as_ref().expect("a rewritten copy has its file");
                let rewrite = || {
                    file.sync_data()?;
                    file.set_len(geom.file_len())?;
                    write_slots(file, header, seq)
                };
                rewrite().map_err(|e| io_err(&self.path, e))?;
                Ok(Some(format!("{why}; rewritten")))
            }
            Action::Recreate(why) => {
                let why = format!("{why}; recreated");
                let new = self.new.take().expect("a recreated copy has its new file");
                write_slots(new.file(), header, seq).map_err(|e| io_err(&self.path, e))?;
                self.file = Some(new.publish()?);
                Ok(Some(why))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::meta::testutil::{create, tear_page, TempDir};
    use crate::meta::{CopyNote, MetaStore};

    fn dirty_volume(dir: &TempDir, n: usize) -> Vec<std::path::PathBuf> {
        let paths = dir.copies(n);
        let opened = create(&paths);
        let mut bits = opened.bitmap.clone();
        bits.set(3, true);
        bits.set(700, true);
        opened.store.write_bitmap_pages(&bits, &[0]).unwrap();
        paths
    }

    #[test]
    fn a_corrupt_page_in_one_copy_is_repaired_from_another() {
        let dir = TempDir::new("page-repair");
        let paths = dirty_volume(&dir, 2);
        tear_page(&paths[0], 0);
        let opened = MetaStore::open(&paths).unwrap();
        assert_eq!(opened.bitmap.iter_ones().collect::<Vec<_>>(), vec![3, 700]);
        assert!(matches!(&opened.notes[..], [CopyNote::Repaired { copy: 0, .. }]), "{:?}", opened.notes);
        drop(opened.store);
        std::fs::remove_file(&paths[1]).unwrap();
        let again = MetaStore::open(&paths).unwrap();
        assert_eq!(again.bitmap.iter_ones().collect::<Vec<_>>(), vec![3, 700]);
    }

    #[test]
    fn a_page_corrupt_in_every_copy_becomes_all_dirty() {
        let dir = TempDir::new("page-lost");
        let paths = dirty_volume(&dir, 2);
        tear_page(&paths[0], 0);
        tear_page(&paths[1], 0);
        let opened = MetaStore::open(&paths).unwrap();
        assert!(opened.bitmap.all());
        assert!(opened.notes.contains(&CopyNote::PagesLost { pages: 1 }), "{:?}", opened.notes);
    }

    #[test]
    fn the_bitmap_is_the_union_of_the_copies() {
        let dir = TempDir::new("union");
        let paths = dirty_volume(&dir, 2);
        let saved = std::fs::read(&paths[1]).unwrap();
        let opened = MetaStore::open(&paths).unwrap();
        let mut bits = opened.bitmap.clone();
        bits.set(3, false);
        bits.set(9, true);
        opened.store.write_bitmap_pages(&bits, &[0]).unwrap();
        drop(opened.store);
        // Copy 1 back to before the write, header included: it is current
        // only if its header sequence matches, so splice its page alone.
        let mut now = std::fs::read(&paths[1]).unwrap();
        let at = crate::meta::format::page_offset(0) as usize;
        now[at..at + crate::meta::PAGE_SIZE].copy_from_slice(&saved[at..at + crate::meta::PAGE_SIZE]);
        std::fs::write(&paths[1], now).unwrap();
        let reopened = MetaStore::open(&paths).unwrap();
        assert_eq!(reopened.bitmap.iter_ones().collect::<Vec<_>>(), vec![3, 9, 700]);
    }
}
