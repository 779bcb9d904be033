//! [`MetaStore`]: writes headers and bitmap pages to every live copy.
//!
//! A write goes to each live copy in turn and is made durable there
//! (`fdatasync`) before the call returns. A copy whose write fails is lost: it
//! is written no more, reported by [`MetaStore::health`] and
//! [`MetaStore::take_notes`], and, so that a later open can tell it is out of
//! date, the header is rewritten on the survivors with a higher sequence
//! number. A call fails only if no copy took the write.

use super::copy::Copy;
use super::format::{encode_page, page_offset, slot_offset, Geometry, REGIONS_PER_PAGE, SLOTS};
use super::header::{encode_slot, validate, Header};
use super::{CopyHealth, CopyNote, MetaError, Opened};
use bitvec::order::Lsb0;
use bitvec::slice::BitSlice;
use parking_lot::Mutex;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

/// A volume's metadata copies, locked for the store's lifetime.
pub struct MetaStore {
    inner: Mutex<Inner>,
}

struct Inner {
    copies: Vec<Copy>,
    /// The header last written.
    header: Header,
    /// Header sequence: bumped by every header write, picks the slot.
    hseq: u64,
    /// Page sequence: bumped by every bitmap write.
    pseq: u64,
    geom: Geometry,
    notes: Vec<CopyNote>,
}

impl MetaStore {
    /// Opens an existing volume. Every copy is locked (a copy in use elsewhere
    /// fails with [`MetaError::Locked`]) and read. The header trusted is the
    /// valid one with the highest generation, ties broken by the header
    /// sequence number. A file that is not hamirror metadata, is of an unknown
    /// format version, or belongs to another volume is refused and never
    /// written. Copies that are missing, empty, corrupt or out of date are
    /// rewritten from the others ([`CopyNote::Repaired`]); one that cannot be
    /// read or repaired is lost ([`CopyNote::Lost`]). The bitmap returned is
    /// the OR of every valid copy's pages; a page no up-to-date copy has intact
    /// is all ones ([`CopyNote::PagesLost`]). With no valid header anywhere:
    /// [`MetaError::NoValidCopy`], naming each copy's problem.
    pub fn open(paths: &[PathBuf]) -> Result<Opened, MetaError> {
        let (cands, header, seq) = super::open::find(paths)?;
        let r = super::repair::run(cands, header, seq)?;
        let lost = r.copies.iter().any(|c| c.error.is_some());
        let store = MetaStore::from_parts(r.copies, r.header.clone(), seq, r.pseq, r.geom);
        if lost {
            store.mark_losses()?;
        }
        Ok(Opened { store, header: r.header, bitmap: r.bitmap, notes: r.notes })
    }

    pub(super) fn from_parts(
        copies: Vec<Copy>,
        header: Header,
        hseq: u64,
        pseq: u64,
        geom: Geometry,
    ) -> MetaStore {
        let inner = Inner { copies, header, hseq, pseq, geom, notes: Vec::new() };
        MetaStore { inner: Mutex::new(inner) }
    }

    /// Writes `h` to every live copy, torn-write safe: it goes to the slot
    /// not holding the previous header. The volume id, size and region size
    /// cannot change.
    pub fn write_header(&self, h: &Header) -> Result<(), MetaError> {
        let mut g = self.inner.lock();
        g.check_same_volume(h)?;
        g.put_header(h)?;
        Ok(())
    }

    /// Changes the volume's size to `h.size` (nothing else in `h` may differ
    /// from the current header but the generation, states and the like).
    ///
    /// Growing: `pages` holds the bits of every page in
    /// [`grown_pages`](Self::grown_pages). They are written and made
    /// durable on every live copy (files are extended as needed) before the
    /// header that records the new size, so a crash in between leaves the old
    /// size in force, and the new pages unused. Shrinking: only the header is
    /// written (`pages` must be empty); the bits past the new end that the
    /// last page keeps are ignored by every reader.
    pub fn resize(&self, h: &Header, pages: &[(usize, &BitSlice<u64, Lsb0>)]) -> Result<(), MetaError> {
        let mut g = self.inner.lock();
        let old = g.header.clone();
        if h.volume_id != old.volume_id || h.region_size != old.region_size || h.block_size != old.block_size
        {
            let what = "a resize cannot change the volume id, block size or region size".to_owned();
            return Err(MetaError::Invalid { what });
        }
        validate(h)?;
        let geom = h.geometry()?;
        let want: Vec<usize> = if geom.regions > g.geom.regions {
            Self::grown_pages(g.geom.regions, geom.regions).collect()
        } else {
            Vec::new()
        };
        let given: Vec<usize> = pages.iter().map(|&(p, _)| p).collect();
        let fits = pages.iter().all(|&(p, bits)| bits.len() == geom.page_bits(p).len());
        if given != want || !fits {
            let what =
                format!("a resize to {} regions must write pages {want:?}, got {given:?}", geom.regions);
            return Err(MetaError::Invalid { what });
        }
        g.put_pages(pages, Some(geom.file_len()))?;
        g.put_header(h)?;
        g.geom = geom;
        Ok(())
    }

    /// Writes bitmap pages `pages` of `bits` (the whole bitmap) to every live
    /// copy, then makes them durable.
    pub fn write_bitmap_pages(&self, bits: &BitSlice<u64, Lsb0>, pages: &[usize]) -> Result<(), MetaError> {
        let geom = {
            let g = self.inner.lock();
            g.check_pages(bits, pages)?;
            g.geom
        };
        let slices: Vec<(usize, &BitSlice<u64, Lsb0>)> =
            pages.iter().map(|&p| (p, &bits[geom.page_bits(p)])).collect();
        self.write_pages(&slices)
    }

    /// Writes bitmap pages given as their own bits (each exactly its page's
    /// regions), so that a caller need not keep a copy of the whole bitmap.
    pub fn write_pages(&self, pages: &[(usize, &BitSlice<u64, Lsb0>)]) -> Result<(), MetaError> {
        let mut g = self.inner.lock();
        for &(p, bits) in pages {
            if p >= g.geom.pages || bits.len() != g.geom.page_bits(p).len() {
                return Err(MetaError::Invalid {
                    what: format!("bitmap page {p} with {} bits does not fit this volume", bits.len()),
                });
            }
        }
        let lost = g.put_pages(pages, None)?;
        if lost > 0 {
            let h = g.header.clone();
            g.put_header(&h)?; // see `mark_losses`
        }
        Ok(())
    }

    /// Regions (bitmap bits) per bitmap page.
    pub const fn regions_per_page() -> usize {
        REGIONS_PER_PAGE
    }

    /// Bitmap page index of region `region`.
    pub const fn page_of(region: usize) -> usize {
        region / REGIONS_PER_PAGE
    }

    /// The pages a grow from `old` to `new` regions must write: from the one
    /// holding the old last region (the new size may extend that region,
    /// whose bit is then set) to the new last page.
    pub fn grown_pages(old: usize, new: usize) -> std::ops::Range<usize> {
        Self::page_of(old.max(1) - 1)..new.div_ceil(REGIONS_PER_PAGE)
    }

    /// Rewrites the current header with the next sequence number on every
    /// live copy, so that copies lost so far read as out of date at the next
    /// open (and are never trusted over the survivors).
    pub(super) fn mark_losses(&self) -> Result<(), MetaError> {
        let mut g = self.inner.lock();
        let h = g.header.clone();
        g.put_header(&h)
    }

    /// The header last written.
    pub fn header(&self) -> Header {
        self.inner.lock().header.clone()
    }

    /// Each copy's state, in the order the paths were given.
    pub fn health(&self) -> Vec<CopyHealth> {
        let g = self.inner.lock();
        let one =
            |c: &Copy| CopyHealth { path: c.path.clone(), live: c.error.is_none(), error: c.error.clone() };
        g.copies.iter().map(one).collect()
    }

    /// What happened to the copies since the last call (losses).
    pub fn take_notes(&self) -> Vec<CopyNote> {
        std::mem::take(&mut self.inner.lock().notes)
    }
}

impl std::fmt::Debug for MetaStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetaStore").field("copies", &self.health()).finish()
    }
}

impl Inner {
    fn check_same_volume(&self, h: &Header) -> Result<(), MetaError> {
        let old = &self.header;
        if h.volume_id != old.volume_id || h.size != old.size || h.region_size != old.region_size {
            let what = format!(
                "a header write cannot change the volume id, size or region size ({} {} {} -> {} {} {})",
                old.id_hex(),
                old.size,
                old.region_size,
                h.id_hex(),
                h.size,
                h.region_size
            );
            return Err(MetaError::Invalid { what });
        }
        validate(h)
    }

    fn check_pages(&self, bits: &BitSlice<u64, Lsb0>, pages: &[usize]) -> Result<(), MetaError> {
        if bits.len() != self.geom.regions {
            let what = format!("bitmap of {} bits for a volume of {} regions", bits.len(), self.geom.regions);
            return Err(MetaError::Invalid { what });
        }
        match pages.iter().find(|&&p| p >= self.geom.pages) {
            Some(p) => Err(MetaError::Invalid { what: format!("bitmap page {p} of {}", self.geom.pages) }),
            None => Ok(()),
        }
    }

    /// Writes bitmap pages with the next page sequence to every live copy,
    /// first extending a copy shorter than `extend_to` (a grow), and makes
    /// them durable.
    /// Returns how many copies were lost (see `each_live`).
    fn put_pages(
        &mut self,
        pages: &[(usize, &BitSlice<u64, Lsb0>)],
        extend_to: Option<u64>,
    ) -> Result<usize, MetaError> {
        if pages.is_empty() {
            return Ok(0);
        }
        self.pseq += 1;
        let (id, seq) = (self.header.volume_id, self.pseq);
        let images: Vec<(u64, Vec<u8>)> =
            pages.iter().map(|&(p, bits)| (page_offset(p), encode_page(&id, p, seq, bits))).collect();
        self.each_live(|f| {
            if let Some(len) = extend_to {
                if f.metadata()?.len() < len {
                    f.set_len(len)?;
                }
            }
            images.iter().try_for_each(|(at, img)| f.write_all_at(img, *at))?;
            f.sync_data()
        })
    }

    /// Writes `h` with the next header sequence to every live copy.
    fn put_header(&mut self, h: &Header) -> Result<(), MetaError> {
        let seq = self.hseq + 1;
        let slot = encode_slot(h, seq)?;
        self.hseq = seq;
        let at = slot_offset(seq as usize % SLOTS);
        self.each_live(|f| f.write_all_at(&slot, at).and_then(|()| f.sync_data()))?;
        self.header = h.clone();
        Ok(())
    }

    /// Runs `op` on every live copy; a copy it fails on is lost. Returns how
    /// many were lost, or an error if no copy took it.
    fn each_live(&mut self, mut op: impl FnMut(&File) -> io::Result<()>) -> Result<usize, MetaError> {
        let (mut took, mut lost, mut last) = (0, 0, None);
        for (i, c) in self.copies.iter_mut().enumerate() {
            let Some(file) = c.file.as_deref().filter(|_| c.error.is_none()) else { continue };
            match op(file) {
                Ok(()) => took += 1,
                Err(e) => {
                    let error = e.to_string();
                    self.notes.push(CopyNote::Lost { copy: i, path: c.path.clone(), error: error.clone() });
                    c.error = Some(error);
                    (lost, last) = (lost + 1, Some(e));
                }
            }
        }
        match took {
            0 => Err(MetaError::AllCopiesFailed(
                last.unwrap_or_else(|| io::Error::other("every copy was lost before")),
            )),
            _ => Ok(lost),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::testutil::{create, tear_page, TempDir};
    use crate::meta::{Bitmap, RecordedState};
    use nix::fcntl::{Flock, FlockArg};
    use std::fs;

    /// Points copy `copy`'s writes at /dev/full (ENOSPC on every write),
    /// leaving its real file as it was.
    fn fail_writes(store: &MetaStore, copy: usize) {
        let full = fs::OpenOptions::new().write(true).open("/dev/full").expect("/dev/full is needed");
        let full = Flock::lock(full, FlockArg::LockSharedNonblock).map_err(|(_, e)| e).unwrap();
        store.inner.lock().copies[copy].file = Some(full);
    }

    fn ones(bits: &Bitmap) -> Vec<usize> {
        bits.iter_ones().collect()
    }

    #[test]
    fn the_store_can_be_shared_between_threads() {
        fn shared<T: Send + Sync>() {}
        shared::<MetaStore>();
    }

    #[test]
    fn a_written_header_is_what_the_next_open_sees() {
        let dir = TempDir::new("header");
        let paths = dir.copies(3);
        let opened = create(&paths);
        let mut h = opened.header.clone();
        h.generation = 5;
        h.clean = true;
        h.legs[1].state = RecordedState::Rebuilding { full: true };
        h.legs[1].rebuild_cursor = 77;
        h.legs[0].reason = "write error: EIO".into();
        opened.store.write_header(&h).unwrap();
        drop(opened.store);
        assert_eq!(MetaStore::open(&paths).unwrap().header, h);
    }

    #[test]
    fn written_bitmap_pages_are_what_the_next_open_sees() {
        let dir = TempDir::new("pages");
        let paths = dir.copies(2);
        let mut h = Header::for_tests();
        h.size = 3 * REGIONS_PER_PAGE as u64 * h.region_size;
        let opened = MetaStore::create(&paths, &h).unwrap();
        let mut bits = opened.bitmap.clone();
        let far = 2 * REGIONS_PER_PAGE + 5;
        bits.set(1, true);
        bits.set(far, true);
        opened.store.write_bitmap_pages(&bits, &[MetaStore::page_of(far)]).unwrap();
        drop(opened.store);
        assert_eq!(ones(&MetaStore::open(&paths).unwrap().bitmap), vec![far]);
    }

    #[test]
    fn a_header_write_cannot_change_the_volume_shape() {
        let dir = TempDir::new("shape");
        let opened = create(&dir.copies(1));
        let mut h = opened.header.clone();
        h.size *= 2;
        assert!(matches!(opened.store.write_header(&h), Err(MetaError::Invalid { .. })));
    }

    /// `bits` grown to `regions` with the new regions set, and the pages a
    /// resize from `old` regions must write.
    fn grown(bits: &Bitmap, regions: usize) -> (Bitmap, Vec<usize>) {
        let mut b = bits.clone();
        b.resize(regions, true);
        (b, MetaStore::grown_pages(bits.len(), regions).collect())
    }

    #[test]
    fn a_grown_volume_reopens_at_the_new_size_with_its_new_regions_dirty() {
        let dir = TempDir::new("grow");
        let paths = dir.copies(2);
        let opened = create(&paths);
        let old = opened.bitmap.len();
        let mut bits = opened.bitmap.clone();
        bits.set(7, true);
        opened.store.write_bitmap_pages(&bits, &[0]).unwrap();
        let mut h = opened.header.clone();
        h.size = (REGIONS_PER_PAGE as u64 + 10) * h.region_size;
        let (big, pages) = grown(&bits, REGIONS_PER_PAGE + 10);
        let geom = h.geometry().unwrap();
        let slices: Vec<_> = pages.iter().map(|&p| (p, &big[geom.page_bits(p)])).collect();
        opened.store.resize(&h, &slices).unwrap();
        // Pages of the new geometry are accepted from now on.
        opened.store.write_bitmap_pages(&big, &[1]).unwrap();
        drop(opened.store);
        let reopened = MetaStore::open(&paths).unwrap();
        assert_eq!(reopened.header.size, h.size);
        let want: Vec<usize> = std::iter::once(7).chain(old..REGIONS_PER_PAGE + 10).collect();
        assert_eq!(ones(&reopened.bitmap), want);
        assert!(reopened.notes.is_empty(), "{:?}", reopened.notes);
    }

    #[test]
    fn a_grow_rewrites_the_full_page_holding_an_old_last_region_it_extends() {
        let dir = TempDir::new("grow-edge");
        let paths = dir.copies(1);
        let mut h = Header::for_tests();
        // The old last region is partial and the last of a full page.
        h.size = (REGIONS_PER_PAGE as u64 - 1) * h.region_size + 4096;
        let opened = MetaStore::create(&paths, &h).unwrap();
        let mut big = h.clone();
        big.size += 1 << 20;
        let geom = big.geometry().unwrap();
        let (bits, pages) = grown(&opened.bitmap, geom.regions);
        let mut bits = bits;
        bits.set(REGIONS_PER_PAGE - 1, true);
        assert_eq!(pages, vec![0, 1]);
        let slices: Vec<_> = pages.iter().map(|&p| (p, &bits[geom.page_bits(p)])).collect();
        opened.store.resize(&big, &slices).unwrap();
        drop(opened.store);
        let reopened = MetaStore::open(&paths).unwrap();
        assert!(reopened.bitmap[REGIONS_PER_PAGE - 1], "the extended old region is durably dirty");
    }

    #[test]
    fn a_resize_must_write_exactly_the_pages_the_new_size_adds() {
        let dir = TempDir::new("grow-pages");
        let opened = create(&dir.copies(1));
        let mut h = opened.header.clone();
        h.size = 2 * REGIONS_PER_PAGE as u64 * h.region_size;
        let err = opened.store.resize(&h, &[]).unwrap_err();
        assert!(err.to_string().contains("must write pages [0, 1]"), "{err}");
        let mut other = h.clone();
        other.region_size *= 2;
        assert!(matches!(opened.store.resize(&other, &[]), Err(MetaError::Invalid { .. })));
        assert_eq!(opened.store.header().size, opened.header.size, "nothing changed");
    }

    #[test]
    fn a_shrunk_volume_keeps_the_bits_of_the_regions_it_still_has() {
        let dir = TempDir::new("shrink");
        let paths = dir.copies(2);
        let opened = create(&paths);
        let mut bits = opened.bitmap.clone();
        let last = bits.len() - 1;
        bits.set(2, true);
        bits.set(last, true);
        opened.store.write_bitmap_pages(&bits, &[0]).unwrap();
        let mut h = opened.header.clone();
        h.size /= 2;
        opened.store.resize(&h, &[]).unwrap();
        drop(opened.store);
        let reopened = MetaStore::open(&paths).unwrap();
        assert_eq!((reopened.header.size, ones(&reopened.bitmap)), (h.size, vec![2]));
        // Grown back, the region that was cut off comes back dirty (with all
        // the others past the cut), not with a stale clean bit.
        let mut h2 = reopened.header.clone();
        h2.size *= 2;
        let (big, pages) = grown(&reopened.bitmap, last + 1);
        let geom = h2.geometry().unwrap();
        let slices: Vec<_> = pages.iter().map(|&p| (p, &big[geom.page_bits(p)])).collect();
        reopened.store.resize(&h2, &slices).unwrap();
        drop(reopened.store);
        let again = MetaStore::open(&paths).unwrap();
        assert_eq!(again.bitmap.count_ones(), 1 + (last + 1 - last.div_ceil(2)));
    }

    #[test]
    fn a_bitmap_of_the_wrong_length_or_page_is_refused() {
        let dir = TempDir::new("badbits");
        let opened = create(&dir.copies(1));
        let short = Bitmap::repeat(false, 3);
        assert!(matches!(opened.store.write_bitmap_pages(&short, &[0]), Err(MetaError::Invalid { .. })));
        let err = opened.store.write_bitmap_pages(&opened.bitmap, &[1]);
        assert!(matches!(err, Err(MetaError::Invalid { .. })));
    }

    #[test]
    fn a_copy_that_fails_a_write_is_lost_and_the_others_carry_on() {
        let dir = TempDir::new("one-lost");
        let paths = dir.copies(2);
        let opened = create(&paths);
        fail_writes(&opened.store, 1);
        let mut bits = opened.bitmap.clone();
        bits.set(9, true);
        opened.store.write_bitmap_pages(&bits, &[0]).unwrap();
        let health = opened.store.health();
        assert!(health[0].live && !health[1].live, "{health:?}");
        assert!(matches!(&opened.store.take_notes()[..], [CopyNote::Lost { copy: 1, .. }]));
        assert!(opened.store.take_notes().is_empty());
        opened.store.write_bitmap_pages(&bits, &[0]).unwrap();
    }

    #[test]
    fn all_copies_failing_a_write_fails_it() {
        let dir = TempDir::new("all-lost");
        let opened = create(&dir.copies(2));
        fail_writes(&opened.store, 0);
        fail_writes(&opened.store, 1);
        let err = opened.store.write_header(&opened.header).unwrap_err();
        assert!(matches!(err, MetaError::AllCopiesFailed(_)), "{err}");
        let err = opened.store.write_bitmap_pages(&opened.bitmap, &[0]).unwrap_err();
        assert!(matches!(err, MetaError::AllCopiesFailed(_)), "{err}");
    }

    #[test]
    fn a_lost_copy_is_out_of_date_at_the_next_open_and_repaired() {
        let dir = TempDir::new("lost-then-open");
        let paths = dir.copies(2);
        let opened = create(&paths);
        fail_writes(&opened.store, 1);
        let mut bits = opened.bitmap.clone();
        bits.set(9, true);
        opened.store.write_bitmap_pages(&bits, &[0]).unwrap();
        drop(opened.store);
        let reopened = MetaStore::open(&paths).unwrap();
        assert_eq!(ones(&reopened.bitmap), vec![9]);
        assert!(matches!(&reopened.notes[..], [CopyNote::Repaired { copy: 1, .. }]), "{:?}", reopened.notes);
    }

    #[test]
    fn a_torn_page_in_the_newest_copy_is_not_taken_from_a_lost_copy() {
        let dir = TempDir::new("lost-torn");
        let paths = dir.copies(2);
        let opened = create(&paths);
        fail_writes(&opened.store, 1);
        let mut bits = opened.bitmap.clone();
        bits.set(9, true);
        opened.store.write_bitmap_pages(&bits, &[0]).unwrap();
        drop(opened.store);
        tear_page(&paths[0], 0);
        let reopened = MetaStore::open(&paths).unwrap();
        assert!(reopened.bitmap.all(), "copy 1's older page lacks region 9");
        assert!(reopened.notes.contains(&CopyNote::PagesLost { pages: 1 }));
        assert_eq!(fs::metadata(&paths[1]).unwrap().len(), page_offset(1));
    }
}
