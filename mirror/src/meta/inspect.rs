//! Telling what a copy file holds, without changing it.

use super::format::{has_magic, page_offset, page_volume, slot_offset, DecodeError};
use super::format::{HEADER_MAGIC, PAGE_MAGIC, PAGE_SIZE, SLOT_SIZE};
use super::header::{decode_slot, Header};
use std::fs::File;
use std::io::{self, ErrorKind};
use std::os::unix::fs::FileExt;

/// What a copy file holds.
#[derive(Debug)]
pub enum Contents {
    /// An empty file: nothing to lose.
    Blank,
    /// Data that is not hamirror metadata: no magic where ours would be.
    Alien,
    /// hamirror metadata of a format version this build does not know.
    Version(u32),
    /// hamirror metadata; its newest valid header slot holds this.
    Valid { header: Header, seq: u64 },
    /// hamirror metadata with no valid header slot.
    Corrupt {
        why: String,
        /// The volume page 0 belongs to, if page 0 is intact.
        page_volume: Option<[u8; 16]>,
    },
}

impl Contents {
    /// Whether this is hamirror metadata (valid or not).
    pub fn is_metadata(&self) -> bool {
        matches!(self, Contents::Version(_) | Contents::Valid { .. } | Contents::Corrupt { .. })
    }
}

/// Reads the header slots and page 0 of `file` and classifies them.
pub fn read_contents(file: &File) -> io::Result<Contents> {
    if file.metadata()?.len() == 0 {
        return Ok(Contents::Blank);
    }
    let slots = [read_upto(file, slot_offset(0), SLOT_SIZE)?, read_upto(file, slot_offset(1), SLOT_SIZE)?];
    let page0 = read_upto(file, page_offset(0), PAGE_SIZE)?;
    Ok(classify(&slots, &page0))
}

fn classify(slots: &[Vec<u8>; 2], page0: &[u8]) -> Contents {
    let decoded = [decode_slot(&slots[0]), decode_slot(&slots[1])];
    for d in &decoded {
        if let Err(DecodeError::Version(v)) = d {
            return Contents::Version(*v);
        }
    }
    let best = decoded.iter().filter_map(|d| d.as_ref().ok()).max_by_key(|(_, seq)| *seq);
    if let Some((header, seq)) = best {
        return Contents::Valid { header: header.clone(), seq: *seq };
    }
    let ours = slots.iter().any(|s| has_magic(s, &HEADER_MAGIC)) || has_magic(page0, &PAGE_MAGIC);
    if !ours {
        return Contents::Alien;
    }
    let err = |d: &Result<_, DecodeError>| d.as_ref().err().map(ToString::to_string).unwrap_or_default();
    let why = format!("header slot 0: {}; slot 1: {}", err(&decoded[0]), err(&decoded[1]));
    Contents::Corrupt { why, page_volume: page_volume(page0) }
}

/// Reads up to `len` bytes at `offset`; fewer at the end of the file.
pub fn read_upto(file: &File, offset: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let mut got = 0;
    while got < len {
        match file.read_at(&mut buf[got..], offset + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    buf.truncate(got);
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::header::encode_slot;

    fn valid_slot(seq: u64) -> Vec<u8> {
        encode_slot(&Header::for_tests(), seq).unwrap()
    }

    #[test]
    fn the_newest_valid_slot_wins() {
        let c = classify(&[valid_slot(4), valid_slot(5)], &[]);
        assert!(matches!(c, Contents::Valid { seq: 5, .. }), "{c:?}");
    }

    #[test]
    fn a_torn_newest_slot_falls_back_to_the_other() {
        let mut torn = valid_slot(5);
        torn[5000] ^= 1;
        let c = classify(&[valid_slot(4), torn], &[]);
        assert!(matches!(c, Contents::Valid { seq: 4, .. }), "{c:?}");
    }

    #[test]
    fn random_bytes_are_not_metadata() {
        let junk: Vec<u8> = (0..SLOT_SIZE).map(|i| (i * 7 + 3) as u8).collect();
        assert!(matches!(classify(&[junk.clone(), junk], &[1, 2, 3]), Contents::Alien));
    }

    #[test]
    fn two_torn_slots_are_corrupt_metadata() {
        let mut a = valid_slot(1);
        a[100] ^= 1;
        let c = classify(&[a, vec![0; SLOT_SIZE]], &[]);
        assert!(matches!(c, Contents::Corrupt { page_volume: None, .. }), "{c:?}");
    }

    #[test]
    fn an_unknown_version_is_never_taken_for_corruption() {
        let mut a = valid_slot(1);
        a[8..12].copy_from_slice(&9u32.to_le_bytes());
        assert!(matches!(classify(&[valid_slot(2), a], &[]), Contents::Version(9)));
    }
}
