//! The activity log's bound (`bitmap_active_size`): under writes spread over
//! the whole LUN, what a crash would leave to copy stays within the limit,
//! at every moment and after a crash, and every acknowledged write survives.

mod common;
use common::*;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

const EXTENT: u64 = 256 << 10;

/// 4 threads × 100 random 4 KiB writes over 64 MiB; returns the blocks
/// written (offset → seed) and the most the status ever showed to copy.
fn spread_writes(v: &mirror::Volume) -> (HashMap<u64, u64>, u64) {
    let written = Mutex::new(HashMap::new());
    let (stop, peak) = (AtomicBool::new(false), AtomicU64::new(0));
    std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(v.status().activity.crash_copy_bytes, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        let writers: Vec<_> = (0..4u64)
            .map(|t| {
                let written = &written;
                s.spawn(move || {
                    let mut x = 0x9e3779b97f4a7c15u64.wrapping_mul(t + 1);
                    for i in 0..100 {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        // Each thread its own quarter, so no two race on a block.
                        let offset = (t * 16 * MIB) + (x % (16 * MIB / 4096)) * 4096;
                        let seed = t * 1000 + i;
                        write(v, offset, &pattern(4096, seed)).unwrap();
                        written.lock().insert(offset, seed);
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        stop.store(true, Ordering::Relaxed);
    });
    (written.into_inner(), peak.load(Ordering::Relaxed))
}

fn crash_after_spread_writes(active: u64) -> (u64, u64) {
    let d = Dir::new("activity");
    let mut cfg = config(&d, 2, 64 * MIB);
    cfg.bitmap_extent_size = EXTENT;
    cfg.bitmap_active_size = active;
    cfg.bitmap_clear_delay_ms = 60_000; // the limit alone bounds the bits
    let (v, _, _) = open(&cfg);
    let (written, peak) = spread_writes(&v);
    v.abandon(); // a crash: nothing more reaches the metadata
    drop(v);
    let (v, _, _) = open(&cfg);
    assert!(v.wait_resync_idle(Duration::from_secs(30)));
    let copied = v.resync_bytes();
    for (&offset, &seed) in &written {
        assert_eq!(read(&v, offset, 4096).unwrap(), pattern(4096, seed), "acknowledged write at {offset}");
    }
    v.shutdown();
    drop(v);
    assert!(leg_bytes(&cfg, 0) == leg_bytes(&cfg, 1), "legs differ after recovery");
    (peak, copied)
}

#[test]
fn a_crash_after_writes_over_the_whole_lun_copies_at_most_the_limit() {
    let limit = 4 * EXTENT;
    let (peak, copied) = crash_after_spread_writes(limit);
    assert!(peak <= limit, "status showed {peak} bytes to copy, over the {limit}-byte limit");
    assert!(copied <= limit, "the crash recovery copied {copied} bytes, over the {limit}-byte limit");
    // The same writes without the limit leave far more: the bound is real.
    let (unbounded_peak, unbounded_copied) = crash_after_spread_writes(0);
    eprintln!("limit {limit}: peak {peak}, copied {copied}; no limit: peak {unbounded_peak}, copied {unbounded_copied}");
    assert!(
        unbounded_copied > 8 * limit,
        "without a limit: {unbounded_copied} bytes (peak {unbounded_peak})"
    );
}

#[test]
fn status_shows_the_activity_log() {
    let d = Dir::new("activity-status");
    let mut cfg = config(&d, 2, 16 * MIB);
    cfg.bitmap_extent_size = EXTENT;
    cfg.bitmap_active_size = 2 * EXTENT;
    let (v, _, _) = open(&cfg);
    for e in 0..3 {
        write(&v, e * EXTENT, &pattern(4096, e)).unwrap();
    }
    let a = v.status().activity;
    assert_eq!((a.active_extents, a.limit_extents, a.extent_bytes), (2, 2, EXTENT));
    assert_eq!((a.crash_copy_bytes, a.evictions, a.waits), (2 * EXTENT, 1, 0));
    v.shutdown();
}
