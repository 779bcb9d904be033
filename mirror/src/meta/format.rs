//! The on-disk layout of one metadata copy, and the bitmap page codec.
//!
//! ```text
//! offset            size        what
//! 0                 8 KiB       header slot 0   (written when the sequence is even)
//! 8 KiB             8 KiB       header slot 1   (written when the sequence is odd)
//! 16 KiB + 4 KiB*i  4 KiB       bitmap page i, for i in 0..pages
//! ```
//!
//! Every slot and page starts with the same 16-byte frame: an 8-byte magic, the
//! format version (u32) and a CRC-32 (u32) of the whole slot or page computed
//! with the CRC field as zero. All integers are little-endian. A torn write
//! fails the CRC; the two header slots are written alternately, so one of them
//! always holds the previous complete header.
//!
//! A bitmap page: frame (16) | page index u64 | page sequence u64 |
//! volume id \[16\] | 16 reserved zero bytes | 504 little-endian u64 words, the
//! bits of regions `index * REGIONS_PER_PAGE ..` (bit k of word w is region
//! `w * 64 + k` of the page).

use super::MetaError;
use bitvec::field::BitField;
use bitvec::order::Lsb0;
use bitvec::slice::BitSlice;
use std::ops::Range;

/// The version of the layout this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;
/// Bytes of one header slot.
pub const SLOT_SIZE: usize = 8192;
/// Header slots per copy.
pub const SLOTS: usize = 2;
/// Bytes of one bitmap page.
pub const PAGE_SIZE: usize = 4096;
/// Where bitmap page 0 starts.
pub const PAGES_OFFSET: u64 = (SLOT_SIZE * SLOTS) as u64;
/// Bytes before the bits in a page.
pub const PAGE_HEADER: usize = 64;
/// Bitmap words in one page.
pub const PAGE_WORDS: usize = (PAGE_SIZE - PAGE_HEADER) / 8;
/// Regions (bits) one bitmap page covers.
pub const REGIONS_PER_PAGE: usize = PAGE_WORDS * 64;
/// First bytes of a header slot.
pub const HEADER_MAGIC: [u8; 8] = *b"HAMIRHDR";
/// First bytes of a bitmap page.
pub const PAGE_MAGIC: [u8; 8] = *b"HAMIRBMP";
/// Bytes of the common frame (magic, version, CRC).
pub const FRAME: usize = 16;
const CRC_AT: Range<usize> = 12..16;

/// Why a slot or page could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Not a hamirror slot or page.
    #[error("no hamirror magic")]
    Magic,
    /// A format version this build does not know.
    #[error("format version {0}, this hamirror reads version {FORMAT_VERSION}")]
    Version(u32),
    /// The CRC does not match: a torn or corrupt write.
    #[error("checksum mismatch (torn or corrupt write)")]
    Checksum,
    /// Shorter than a slot or page, or a field runs past the payload.
    #[error("truncated")]
    Truncated,
    /// A field holds a value the format does not allow.
    #[error("invalid {0}")]
    Field(&'static str),
    /// A page stored at the wrong place.
    #[error("holds page {found} where page {expected} belongs")]
    Index { found: u64, expected: u64 },
    /// A page of another volume.
    #[error("belongs to another volume")]
    Volume,
}

/// Byte offset of header slot `slot`.
pub fn slot_offset(slot: usize) -> u64 {
    (slot * SLOT_SIZE) as u64
}

/// Byte offset of bitmap page `page`.
pub fn page_offset(page: usize) -> u64 {
    PAGES_OFFSET + (page as u64) * PAGE_SIZE as u64
}

/// The bitmap's shape, derived from a header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// Bits in the bitmap: `ceil(size / region_size)`.
    pub regions: usize,
    /// Bitmap pages in a copy.
    pub pages: usize,
}

impl Geometry {
    /// The geometry of a volume of `size` bytes in `region_size` regions
    /// (of `block_size` blocks); refuses sizes that make no bitmap.
    pub fn new(size: u64, block_size: u32, region_size: u64) -> Result<Self, MetaError> {
        if size == 0 || region_size == 0 || block_size == 0 {
            return Err(MetaError::Invalid {
                what: format!(
                    "size {}, block_size {} and region_size {} must all be positive",
                    size, block_size, region_size
                ),
            });
        }
        let regions = usize::try_from(size.div_ceil(region_size))
            .map_err(|_| MetaError::Invalid { what: format!("size {} needs too many regions", size) })?;
        Ok(Geometry { regions, pages: regions.div_ceil(REGIONS_PER_PAGE) })
    }

    /// The length of a complete copy file.
    pub fn file_len(&self) -> u64 {
        page_offset(self.pages)
    }

    /// The regions page `page` covers.
    pub fn page_bits(&self, page: usize) -> Range<usize> {
        let start = page * REGIONS_PER_PAGE;
        start..(start + REGIONS_PER_PAGE).min(self.regions)
    }
}

/// CRC-32 of `buf` with its CRC field taken as zero.
fn checksum(buf: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&buf[..CRC_AT.start]);
    h.update(&[0; 4]);
    h.update(&buf[CRC_AT.end..]);
    h.finalize()
}

/// Fills in the frame of a slot or page whose body is already in `buf`.
pub fn seal(buf: &mut [u8], magic: &[u8; 8]) {
    buf[..8].copy_from_slice(magic);
    buf[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    let crc = checksum(buf);
    buf[CRC_AT].copy_from_slice(&crc.to_le_bytes());
}

/// Checks the frame of a slot or page: magic, then version, then CRC.
pub fn check_frame(buf: &[u8], magic: &[u8; 8], len: usize) -> Result<(), DecodeError> {
    if buf.len() < FRAME || buf[..8] != magic[..] {
        return Err(DecodeError::Magic);
    }
    let version = le_u32(&buf[8..12]);
    if version != FORMAT_VERSION {
        return Err(DecodeError::Version(version));
    }
    if buf.len() != len {
        return Err(DecodeError::Truncated);
    }
    if le_u32(&buf[CRC_AT]) != checksum(buf) {
        return Err(DecodeError::Checksum);
    }
    Ok(())
}

/// Whether `buf` begins with `magic` (the copy is hamirror's, valid or not).
pub fn has_magic(buf: &[u8], magic: &[u8; 8]) -> bool {
    buf.len() >= 8 && buf[..8] == magic[..]
}

fn le_u32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

/// A decoded bitmap page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page {
    /// The page sequence number it was written with.
    pub seq: u64,
    /// Its bits, word by word.
    pub words: Vec<u64>,
}

/// Encodes page `index` holding `bits` (at most [`REGIONS_PER_PAGE`] of them).
pub fn encode_page(volume_id: &[u8; 16], index: usize, seq: u64, bits: &BitSlice<u64, Lsb0>) -> Vec<u8> {
    debug_assert!(bits.len() <= REGIONS_PER_PAGE);
    let mut buf = vec![0u8; PAGE_SIZE];
    buf[16..24].copy_from_slice(&(index as u64).to_le_bytes());
    buf[24..32].copy_from_slice(&seq.to_le_bytes());
    buf[32..48].copy_from_slice(volume_id);
    for (w, chunk) in bits.chunks(64).enumerate() {
        let at = PAGE_HEADER + w * 8;
        buf[at..at + 8].copy_from_slice(&chunk.load_le::<u64>().to_le_bytes());
    }
    seal(&mut buf, &PAGE_MAGIC);
    buf
}

/// Decodes page `index` of volume `volume_id`; never panics on any input.
pub fn decode_page(buf: &[u8], index: usize, volume_id: &[u8; 16]) -> Result<Page, DecodeError> {
    check_frame(buf, &PAGE_MAGIC, PAGE_SIZE)?;
    let found = le_u64(&buf[16..24]);
    if found != index as u64 {
        return Err(DecodeError::Index { found, expected: index as u64 });
    }
    if buf[32..48] != volume_id[..] {
        return Err(DecodeError::Volume);
    }
    let words = buf[PAGE_HEADER..].chunks_exact(8).map(le_u64).collect();
    Ok(Page { seq: le_u64(&buf[24..32]), words })
}

/// The volume id a page claims, if its frame is valid.
pub fn page_volume(buf: &[u8]) -> Option<[u8; 16]> {
    check_frame(buf, &PAGE_MAGIC, PAGE_SIZE).ok()?;
    let mut id = [0; 16];
    id.copy_from_slice(&buf[32..48]);
    Some(id)
}

/// ORs a decoded page's words into `bits` (the page's regions).
pub fn or_into(bits: &mut BitSlice<u64, Lsb0>, words: &[u64]) {
    for (chunk, word) in bits.chunks_mut(64).zip(words) {
        let v = chunk.load_le::<u64>() | word;
        chunk.store_le(v);
    }
}

/// Whether `bits` (the page's regions) hold exactly the words of a page.
pub fn same_bits(bits: &BitSlice<u64, Lsb0>, words: &[u64]) -> bool {
    let mask = |len: usize| if len == 64 { u64::MAX } else { (1u64 << len) - 1 };
    bits.chunks(64).zip(words).all(|(c, w)| c.load_le::<u64>() == w & mask(c.len()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitvec::vec::BitVec;

    const ID: [u8; 16] = [7; 16];

    fn sample_bits(n: usize) -> BitVec<u64, Lsb0> {
        (0..n).map(|i| i % 3 == 0 || i % 7 == 1).collect()
    }

    #[test]
    fn a_page_round_trips_its_bits() {
        let bits = sample_bits(1000);
        let buf = encode_page(&ID, 5, 42, &bits);
        let page = decode_page(&buf, 5, &ID).unwrap();
        assert_eq!(page.seq, 42);
        let mut back: BitVec<u64, Lsb0> = BitVec::repeat(false, 1000);
        or_into(&mut back, &page.words);
        assert_eq!(back, bits);
        assert!(same_bits(&bits, &page.words));
    }

    #[test]
    fn a_flipped_byte_in_a_page_fails_the_checksum() {
        let mut buf = encode_page(&ID, 0, 1, &sample_bits(REGIONS_PER_PAGE));
        buf[PAGE_SIZE - 1] ^= 0x10;
        assert_eq!(decode_page(&buf, 0, &ID), Err(DecodeError::Checksum));
    }

    #[test]
    fn a_page_at_the_wrong_index_or_of_another_volume_is_refused() {
        let buf = encode_page(&ID, 3, 1, &sample_bits(64));
        assert_eq!(decode_page(&buf, 4, &ID), Err(DecodeError::Index { found: 3, expected: 4 }));
        assert_eq!(decode_page(&buf, 3, &[8; 16]), Err(DecodeError::Volume));
    }

    #[test]
    fn an_unknown_version_is_reported_before_the_checksum() {
        let mut buf = encode_page(&ID, 0, 1, &sample_bits(64));
        buf[8..12].copy_from_slice(&2u32.to_le_bytes());
        assert_eq!(decode_page(&buf, 0, &ID), Err(DecodeError::Version(2)));
    }

    #[test]
    fn geometry_rounds_regions_and_pages_up() {
        let region_size = 64 << 10;
        let g = Geometry::new((REGIONS_PER_PAGE as u64 + 1) * region_size - 1, 512, region_size).unwrap();
        assert_eq!(g.regions, REGIONS_PER_PAGE + 1);
        assert_eq!(g.pages, 2);
        assert_eq!(g.page_bits(1), REGIONS_PER_PAGE..REGIONS_PER_PAGE + 1);
        assert_eq!(g.file_len(), PAGES_OFFSET + 2 * PAGE_SIZE as u64);
    }

    #[test]
    fn one_tib_at_256_kib_regions_fits_the_memory_budget() {
        let g = Geometry::new(1 << 40, 512, 256 << 10).unwrap();
        assert!(g.regions / 8 <= 512 << 10);
    }
}
