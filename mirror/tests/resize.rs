//! Growing a running volume, and a LUN re-created at another size.
//!
//! The bytes past the old end differ from leg to leg (each leg file's tail
//! is filled with its own pattern): the host must never see that, and the
//! legs must end up identical over the whole new size.

mod common;
use common::*;
use mirror::volume::ResizeError;
use mirror::{Event, VolumeConfig};
use parking_lot::Mutex;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::Duration;

/// A read buffer that hands its bytes to the test.
struct Capture(usize, Arc<Mutex<Vec<u8>>>);

impl mirror::HostReadBuf for Capture {
    fn len(&self) -> usize {
        self.0
    }
    fn fill_from(&mut self, src: &[u8]) {
        *self.1.lock() = src.to_vec();
    }
}

/// Grows every leg file to `size`, filling `[from, size)` with a pattern of
/// its own per leg.
fn grow_legs(cfg: &VolumeConfig, from: u64, size: u64) {
    for (i, l) in cfg.legs.iter().enumerate() {
        let f = std::fs::OpenOptions::new().write(true).open(&l.path).unwrap();
        f.set_len(size).unwrap();
        f.write_all_at(&pattern((size - from) as usize, 900 + i as u64), from).unwrap();
    }
}

fn legs_identical(cfg: &VolumeConfig, size: u64) {
    let c = VolumeConfig { size, ..cfg.clone() };
    let a = leg_bytes(&c, 0);
    for i in 1..cfg.legs.len() {
        assert!(a == leg_bytes(&c, i), "leg {i} differs from leg 0 within {size} bytes");
    }
}

const OLD: u64 = 8 * MIB + 4096; // not a whole number of 64 KiB regions
const NEW: u64 = 16 * MIB;

#[test]
fn a_grown_volume_serves_the_new_capacity_and_copies_only_it() {
    let d = Dir::new("grow");
    let cfg = config(&d, 2, OLD);
    let (v, _, events) = open(&cfg);
    write(&v, 0, &pattern(4096, 1)).unwrap();
    grow_legs(&cfg, OLD, NEW);
    assert!(matches!(write(&v, OLD, &[7; 4096]), Err(mirror::IoError::OutOfRange { .. })));
    let before = v.resync_bytes();
    v.grow(NEW).unwrap();
    assert_eq!((v.size(), v.status().size), (NEW, NEW));
    write(&v, NEW - 4096, &pattern(4096, 2)).unwrap();
    assert_eq!(read(&v, NEW - 4096, 4096).unwrap(), pattern(4096, 2));
    assert!(v.wait_resync_idle(Duration::from_secs(20)));
    // The last old region (partly new) and everything after it.
    let copied = v.resync_bytes() - before;
    assert_eq!(copied, NEW - (OLD / (64 << 10)) * (64 << 10), "only the new capacity is copied");
    assert_eq!(events.count(|e| matches!(e, Event::Resized { from: OLD, to: NEW })), 1);
    wait_for("the copied regions' bits to clear", Duration::from_secs(5), || v.status().dirty_regions <= 2);
    v.shutdown();
    drop(v);
    legs_identical(&cfg, NEW);
    let grown = VolumeConfig { size: NEW, ..cfg.clone() };
    let (v, _, _) = open(&grown);
    assert_eq!(read(&v, 0, 4096).unwrap(), pattern(4096, 1), "the old data is where it was");
    assert_eq!(v.resync_bytes(), 0, "a clean reopen at the new size copies nothing");
    v.shutdown();
}

#[test]
fn until_it_is_copied_the_new_capacity_reads_the_same_from_every_request() {
    let d = Dir::new("grow-reads");
    let cfg = config(&d, 2, OLD);
    let (v, _, _) = open(&cfg);
    v.pause_resync(true);
    grow_legs(&cfg, OLD, NEW);
    v.grow(NEW).unwrap();
    // Leg 0, the first in sync, is the source: its tail is what the host sees.
    let want = pattern((NEW - OLD) as usize, 900);
    for _ in 0..4 {
        // Many reads at once: balancing would spread them over both legs.
        let (tx, rx) = crossbeam_channel::unbounded();
        let chunks = (NEW - OLD) / 4096;
        for c in 0..chunks {
            let (tx, got) = (tx.clone(), Arc::new(Mutex::new(Vec::new())));
            let buf = Box::new(Capture(4096, got.clone()));
            v.read(OLD + c * 4096, buf, Box::new(move |r| drop(tx.send((c, r, got)))));
        }
        for _ in 0..chunks {
            let (c, r, got) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
            r.unwrap();
            let at = (c * 4096) as usize;
            assert!(
                *got.lock() == want[at..at + 4096],
                "a read at {} returned another leg's bytes",
                OLD + c * 4096
            );
        }
    }
    v.pause_resync(false);
    assert!(v.wait_resync_idle(Duration::from_secs(20)));
    v.shutdown();
    drop(v);
    legs_identical(&cfg, NEW);
}

#[test]
fn host_writes_during_a_grow_and_its_copy_are_all_kept() {
    let d = Dir::new("grow-writes");
    let cfg = config(&d, 2, OLD);
    let (v, _, _) = open(&cfg);
    grow_legs(&cfg, OLD, NEW);
    let writer = {
        let v = v.clone();
        std::thread::spawn(move || {
            for i in 0..400u64 {
                let off = (i * 37 % (OLD / 4096)) * 4096;
                write(&v, off, &pattern(4096, i)).unwrap();
            }
        })
    };
    v.grow(NEW).unwrap();
    for i in 0..64u64 {
        let off = OLD - 4096 + i * 65536;
        write(&v, off, &pattern(4096, 10_000 + i)).unwrap();
    }
    writer.join().unwrap();
    assert!(v.wait_resync_idle(Duration::from_secs(20)));
    for i in 0..64u64 {
        let off = OLD - 4096 + i * 65536;
        assert_eq!(read(&v, off, 4096).unwrap(), pattern(4096, 10_000 + i), "write at {off}");
    }
    v.shutdown();
    drop(v);
    legs_identical(&cfg, NEW);
}

#[test]
fn a_grow_past_a_leg_that_is_too_small_is_refused_and_changes_nothing() {
    let d = Dir::new("grow-small");
    let cfg = config(&d, 2, OLD);
    let (v, _, _) = open(&cfg);
    std::fs::OpenOptions::new().write(true).open(&cfg.legs[0].path).unwrap().set_len(NEW).unwrap();
    let err = v.grow(NEW).unwrap_err();
    assert!(matches!(err, ResizeError::LegTooSmall { leg: 1, have: OLD, need: NEW, .. }), "{err:?}");
    assert!(err.to_string().contains("grow it first"), "{err}");
    let err = v.grow(NEW + 1).unwrap_err();
    assert!(err.to_string().contains("not a multiple of the 512-byte block size"), "{err}");
    let err = v.grow(OLD - 4096).unwrap_err();
    assert!(matches!(err, ResizeError::Shrink { .. }), "{err:?}");
    assert!(err.to_string().contains("shrink the filesystem"), "{err}");
    assert_eq!(v.size(), OLD);
    v.grow(OLD).unwrap(); // the same size: nothing to do
    v.shutdown();
    drop(v);
    let (v, _, _) = open(&cfg);
    assert_eq!(v.status().size, OLD, "the metadata still records the old size");
    v.shutdown();
}

#[test]
fn a_faulted_leg_gets_the_new_capacity_with_its_difference_resync() {
    let d = Dir::new("grow-faulted");
    let mut cfg = config(&d, 3, OLD);
    cfg.auto_failback = false;
    let (v, _, _) = open(&cfg);
    v.fail_leg(2).unwrap();
    grow_legs(&cfg, OLD, NEW);
    v.grow(NEW).unwrap();
    write(&v, NEW - 8192, &pattern(8192, 3)).unwrap();
    assert!(v.wait_resync_idle(Duration::from_secs(20)));
    assert!(v.status().dirty_regions > 0, "leg 2 still needs the new capacity");
    v.restore_leg(2).unwrap();
    wait_for("leg 2 back", Duration::from_secs(20), || state_name(&v, 2) == "in_sync");
    v.shutdown();
    drop(v);
    legs_identical(&cfg, NEW);
}

#[test]
fn a_crash_after_a_grow_recovers_the_new_capacity_at_either_size() {
    let d = Dir::new("grow-crash");
    let cfg = config(&d, 2, OLD);
    let (v, _, _) = open(&cfg);
    v.pause_resync(true);
    grow_legs(&cfg, OLD, NEW);
    v.grow(NEW).unwrap();
    write(&v, OLD + 65536, &pattern(4096, 4)).unwrap();
    v.abandon(); // crash before the new capacity was copied
    drop(v);
    // The kernel may still know the old size (the runner died before it
    // answered): the LUN opens at that size, ...
    let (v, _, _) = open(&cfg);
    assert_eq!(v.size(), OLD);
    assert!(v.wait_resync_idle(Duration::from_secs(20)));
    v.shutdown();
    drop(v);
    // ... and grows again when asked, copying the new capacity once more.
    let grown = VolumeConfig { size: NEW, ..cfg.clone() };
    let (v, _, _) = open(&grown);
    assert!(v.wait_resync_idle(Duration::from_secs(20)));
    assert!(v.resync_bytes() >= NEW - OLD, "the new capacity was copied at open");
    v.shutdown();
    drop(v);
    legs_identical(&cfg, NEW);
}

#[test]
fn a_lun_re_created_larger_grows_at_open_and_smaller_keeps_its_data() {
    let d = Dir::new("grow-open");
    let cfg = config(&d, 2, OLD);
    let (v, _, _) = open(&cfg);
    write(&v, 4096, &pattern(4096, 5)).unwrap();
    v.shutdown();
    drop(v);
    grow_legs(&cfg, OLD, NEW);
    let grown = VolumeConfig { size: NEW, ..cfg.clone() };
    let (v, _, events) = open(&grown);
    let new_capacity =
        |e: &Event| matches!(e, Event::ResyncFinished { kind: mirror::event::ResyncKind::NewCapacity, .. });
    assert!(v.wait_resync_idle(Duration::from_secs(20)));
    // The event follows the copy's end by a moment.
    wait_for("the copy's event", Duration::from_secs(5), || events.count(new_capacity) == 1);
    v.shutdown();
    drop(v);
    legs_identical(&cfg, NEW);
    let small = VolumeConfig { size: 4 * MIB, ..cfg.clone() };
    let (v, _, _) = open(&small);
    assert_eq!(v.status().size, 4 * MIB);
    assert_eq!(read(&v, 4096, 4096).unwrap(), pattern(4096, 5));
    assert_eq!(v.resync_bytes(), 0, "shrinking copies nothing");
    v.shutdown();
}

#[test]
fn a_grow_during_a_full_rebuild_leaves_every_leg_identical() {
    let d = Dir::new("grow-rebuild");
    let mut cfg = config(&d, 2, OLD);
    cfg.initial_sync = mirror::config::InitialSync::Full;
    (cfg.resync_max_mib_s, cfg.resync_min_mib_s) = (4, 1); // keep the initial copy going
    std::fs::write(&cfg.legs[0].path, pattern(OLD as usize, 6)).unwrap();
    let (v, _, _) = open(&cfg);
    wait_for("the rebuild to start", Duration::from_secs(5), || v.status().resync.is_some());
    assert_eq!(state_name(&v, 1), "rebuilding");
    grow_legs(&cfg, OLD, NEW);
    v.grow(NEW).unwrap();
    write(&v, NEW - 4096, &pattern(4096, 7)).unwrap();
    v.set_resync_rate(0);
    assert!(v.wait_resync_idle(Duration::from_secs(30)));
    assert_eq!(state_name(&v, 1), "in_sync");
    assert_eq!(read(&v, NEW - 4096, 4096).unwrap(), pattern(4096, 7));
    v.shutdown();
    drop(v);
    legs_identical(&cfg, NEW);
}

#[test]
fn a_grow_during_crash_recovery_leaves_every_leg_identical() {
    let d = Dir::new("grow-recovery");
    // The bits stay set until the crash: only a dirty region can differ.
    let cfg = VolumeConfig { bitmap_clear_delay_ms: 60_000, ..config(&d, 2, OLD) };
    let (v, _, _) = open(&cfg);
    for i in 0..64u64 {
        write(&v, i * 65536, &pattern(4096, i)).unwrap();
    }
    assert_eq!(v.status().dirty_regions, 64);
    v.abandon();
    drop(v);
    // Make the dirty regions differ, as a crash between the legs' writes can.
    {
        let f = std::fs::OpenOptions::new().write(true).open(&cfg.legs[1].path).unwrap();
        for i in 0..64u64 {
            f.write_all_at(&[0xee; 4096], i * 65536).unwrap();
        }
    }
    let slow = VolumeConfig { resync_max_mib_s: 1, resync_min_mib_s: 1, ..cfg.clone() };
    let (v, _, _) = open(&slow);
    grow_legs(&cfg, OLD, NEW);
    v.grow(NEW).unwrap();
    v.set_resync_rate(0);
    assert!(v.wait_resync_idle(Duration::from_secs(30)));
    for i in 0..64u64 {
        assert_eq!(read(&v, i * 65536, 4096).unwrap(), pattern(4096, i), "region {i}");
    }
    v.shutdown();
    drop(v);
    legs_identical(&cfg, NEW);
}
