//! Property test: decoding arbitrary or mutated bytes never panics, and a
//! mutation is never accepted with a checksum it does not match.

use super::format::{decode_page, encode_page, seal, HEADER_MAGIC, PAGE_MAGIC, SLOT_SIZE};
use super::header::{decode_slot, encode_slot};
use super::testutil::full_header;
use bitvec::prelude::*;

/// xorshift64*: a small deterministic PRNG for the mutation loop.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Overwrites a few bytes (half the time within the first `hot` bytes,
/// where the fields are), sometimes truncates, and mostly re-seals the frame
/// so the decoder's field checks are reached, not only the CRC. Returns the
/// bytes and whether they were re-sealed.
fn mutate(rng: &mut Rng, good: &[u8], magic: &[u8; 8], hot: usize) -> (Vec<u8>, bool) {
    let mut b = good.to_vec();
    for _ in 0..1 + rng.below(8) {
        let at = if rng.below(2) == 0 { rng.below(hot) } else { rng.below(b.len()) };
        b[at] = rng.next() as u8;
    }
    let sealed = rng.below(4) != 0;
    if sealed {
        seal(&mut b, magic);
    }
    if rng.below(16) == 0 {
        b.truncate(rng.below(b.len() + 1));
    }
    (b, sealed)
}

#[test]
fn decoding_mutated_slots_never_panics_and_accepts_only_encodable_headers() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let slot = encode_slot(&full_header(), 3).unwrap();
    let mut decoded = 0;
    for _ in 0..5000 {
        let (bytes, sealed) = mutate(&mut rng, &slot, &HEADER_MAGIC, 4600);
        if let Ok((h, seq)) = decode_slot(&bytes) {
            assert!(sealed || bytes == slot, "an unsealed change passed the checksum");
            assert_eq!(encode_slot(&h, seq).unwrap().len(), SLOT_SIZE);
            decoded += 1;
        }
    }
    assert!(decoded > 0, "some mutations should still decode");
}

#[test]
fn decoding_mutated_pages_never_panics() {
    let mut rng = Rng(0xD1B5_4A32_D192_ED03);
    let page = encode_page(&[7; 16], 2, 5, &bitvec![u64, Lsb0; 1; 1000]);
    for _ in 0..5000 {
        let (bytes, sealed) = mutate(&mut rng, &page, &PAGE_MAGIC, 64);
        if decode_page(&bytes, 2, &[7; 16]).is_ok() {
            assert!(sealed || bytes == page, "an unsealed change passed the checksum");
        }
    }
}

#[test]
fn decoding_random_bytes_of_any_length_never_panics() {
    let mut rng = Rng(42);
    for len in (0..SLOT_SIZE + 64).step_by(61) {
        let junk: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        assert!(decode_slot(&junk).is_err());
        assert!(decode_page(&junk, 0, &[0; 16]).is_err());
        let mut framed = junk.clone();
        if framed.len() >= 16 {
            seal(&mut framed, &HEADER_MAGIC);
            let _ = decode_slot(&framed);
        }
    }
}
