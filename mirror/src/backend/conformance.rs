//! The behaviour every [`Backend`] must show, written once over `&dyn Backend`
//! and run against each implementation.

use super::Backend;
use crate::buf::AlignedBuf;
use std::io::IoSlice;

pub fn run_all(b: &dyn Backend) {
    reads_back_what_was_written(b);
    scattered_writes_land_in_order(b);
    writes_at_the_last_block_work(b);
    reads_beyond_the_end_fail(b);
    write_zeroes_reads_back_zeroes(b);
    discard_reads_back_zeroes_when_supported(b);
    flush_succeeds(b);
    identity_is_stable(b);
}

fn pattern(len: usize, seed: u8) -> AlignedBuf {
    let mut b = AlignedBuf::zeroed(len);
    for (i, x) in b.as_mut_slice().iter_mut().enumerate() {
        *x = (i as u8).wrapping_mul(31).wrapping_add(seed);
    }
    b
}

fn read(b: &dyn Backend, off: u64, len: usize) -> Vec<u8> {
    let mut buf = AlignedBuf::zeroed(len);
    b.read_at(buf.as_mut_slice(), off).expect("read");
    buf.as_slice().to_vec()
}

fn reads_back_what_was_written(b: &dyn Backend) {
    for (off, len) in [(0u64, 4096usize), (8192, 65536), (1 << 20, 512)] {
        let data = pattern(len, off as u8);
        b.write_vectored_at(&[IoSlice::new(data.as_slice())], off).unwrap();
        assert_eq!(read(b, off, len), data.as_slice(), "{}: at {off}+{len}", b.name());
    }
}

fn scattered_writes_land_in_order(b: &dyn Backend) {
    let parts = [pattern(4096, 1), pattern(8192, 2), pattern(512, 3)];
    let slices: Vec<IoSlice<'_>> = parts.iter().map(|p| IoSlice::new(p.as_slice())).collect();
    b.write_vectored_at(&slices, 65536).unwrap();
    let want: Vec<u8> = parts.iter().flat_map(|p| p.as_slice().to_vec()).collect();
    assert_eq!(read(b, 65536, want.len()), want);
}

fn writes_at_the_last_block_work(b: &dyn Backend) {
    let off = b.size() - 4096;
    let data = pattern(4096, 9);
    b.write_vectored_at(&[IoSlice::new(data.as_slice())], off).unwrap();
    assert_eq!(read(b, off, 4096), data.as_slice());
}

fn reads_beyond_the_end_fail(b: &dyn Backend) {
    let mut buf = AlignedBuf::zeroed(4096);
    assert!(b.read_at(buf.as_mut_slice(), b.size()).is_err(), "{}: read past end", b.name());
}

fn write_zeroes_reads_back_zeroes(b: &dyn Backend) {
    let data = pattern(16384, 5);
    b.write_vectored_at(&[IoSlice::new(data.as_slice())], 131072).unwrap();
    b.write_zeroes(131072 + 4096, 8192).unwrap();
    let back = read(b, 131072, 16384);
    assert_eq!(&back[..4096], &data.as_slice()[..4096]);
    assert!(back[4096..12288].iter().all(|&x| x == 0));
    assert_eq!(&back[12288..], &data.as_slice()[12288..]);
}

fn discard_reads_back_zeroes_when_supported(b: &dyn Backend) {
    let data = pattern(8192, 6);
    b.write_vectored_at(&[IoSlice::new(data.as_slice())], 262144).unwrap();
    match b.discard(262144, 4096) {
        Ok(()) => {
            assert!(b.caps().discard_zeroes);
            assert!(read(b, 262144, 4096).iter().all(|&x| x == 0));
            assert_eq!(read(b, 262144 + 4096, 4096), &data.as_slice()[4096..]);
        }
        Err(e) => {
            assert_eq!(e.kind(), std::io::ErrorKind::Unsupported, "{}: {e}", b.name());
            assert_eq!(read(b, 262144, 8192), data.as_slice(), "a refused discard changes nothing");
        }
    }
}

fn flush_succeeds(b: &dyn Backend) {
    b.flush().unwrap();
}

fn identity_is_stable(b: &dyn Backend) {
    assert_eq!(b.identity(), b.identity());
    assert!(!b.identity().as_str().is_empty());
}
