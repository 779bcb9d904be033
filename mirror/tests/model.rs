//! The randomized model test: concurrent random reads, writes, flushes and
//! compare-and-writes under random injected faults, checked against a plain
//! in-memory reference. Each thread owns its own blocks, so the reference is
//! exact; a block whose write failed is "unknown" until written again. After
//! the run every leg is brought back and must equal the reference byte for
//! byte; a crash-and-reopen in the middle must change nothing either.

mod common;
use common::*;
use mirror::config::IoEngine;
use mirror::IoError;
use std::time::Duration;

const BLOCK: usize = 4096;
const THREADS: usize = 4;
const BLOCKS_PER_THREAD: usize = 64;
const OPS: usize = 300;

/// One thread's blocks: `Some(data)` known, `None` unknown after a failed write.
type Model = Vec<Option<Vec<u8>>>;

fn block_offset(thread: usize, i: usize) -> u64 {
    // Interleave threads' blocks so they share regions (and range locks).
    ((i * THREADS + thread) * BLOCK) as u64
}

fn run_thread(v: &mirror::Volume, thread: usize, seed: u64, model: &mut Model) {
    let mut rng = Rng(seed | 1);
    for op in 0..OPS {
        let i = rng.below(BLOCKS_PER_THREAD);
        let off = block_offset(thread, i);
        match rng.below(10) {
            0..=3 => {
                let data = pattern(BLOCK, rng.next());
                match write(v, off, &data) {
                    Ok(()) => model[i] = Some(data),
                    Err(_) => model[i] = None,
                }
            }
            4..=7 => match (read(v, off, BLOCK), &model[i]) {
                (Ok(got), Some(want)) => {
                    assert_eq!(&got, want, "seed {seed}: thread {thread} op {op} block {i}")
                }
                (Ok(_), None) | (Err(_), _) => {}
            },
            8 => {
                let _ = flush(v);
            }
            _ => {
                let Some(cur) = model[i].clone() else { continue };
                let next = pattern(BLOCK, rng.next());
                match caw(v, off, &cur, &next) {
                    Ok(()) => model[i] = Some(next),
                    Err(IoError::Miscompare { offset }) => {
                        panic!("thread {thread}: false miscompare at {offset}")
                    }
                    Err(_) => model[i] = None,
                }
            }
        }
    }
}

fn inject_random_faults(faults: &mirror::backend::fault::FaultInjector, seed: u64) {
    let mut rng = Rng(seed | 1);
    for _ in 0..6 {
        let leg = rng.below(2);
        let after = rng.below(200);
        let r = match rng.below(3) {
            0 => format!("leg={leg} op=write after={after} count=2 action=error errno=5"),
            1 => format!("leg={leg} op=read after={after} count=3 action=error errno=61"),
            _ => format!("leg={leg} op=write after={after} count=1 action=delay ms=50"),
        };
        faults.add(rule(&r));
    }
}

fn check_legs(cfg: &mirror::VolumeConfig, models: &[Model]) {
    for leg in 0..cfg.legs.len() {
        let bytes = leg_bytes(cfg, leg);
        for (t, model) in models.iter().enumerate() {
            for (i, want) in model.iter().enumerate() {
                let Some(want) = want else { continue };
                let off = block_offset(t, i) as usize;
                assert_eq!(&bytes[off..off + BLOCK], &want[..], "leg {leg} thread {t} block {i}");
            }
        }
    }
}

/// `extent`: bytes per bitmap extent (the tests' config has one region per
/// extent).
fn run_model_with(seed: u64, crash_midway: bool, engine: IoEngine, write_lag_ms: u64, extent: u64) {
    run_model_limited(
        seed,
        crash_midway,
        engine,
        write_lag_ms,
        extent,
        mirror::config::DEFAULT_BITMAP_ACTIVE_SIZE,
    );
}

/// `active`: `bitmap_active_size`, the activity log's bound.
fn run_model_limited(
    seed: u64,
    crash_midway: bool,
    engine: IoEngine,
    write_lag_ms: u64,
    extent: u64,
    active: u64,
) {
    let d = Dir::new(&format!("model-{seed}"));
    let mut cfg = config(&d, 2, 4 * MIB);
    cfg.bitmap_extent_size = extent;
    cfg.bitmap_active_size = active;
    if active < 4 * MIB {
        cfg.bitmap_clear_delay_ms = 60_000; // only evictions clear: they are what is tested
    }
    cfg.io_engine = engine;
    cfg.write_lag_ms = write_lag_ms;
    cfg.flap_limit = 100; // random faults must not park a leg for good
    let (v, faults, events) = open(&cfg);
    if write_lag_ms > 0 {
        // First, so that leg 1 is still in sync when it lags.
        faults.add(rule("leg=1 op=write count=30 action=delay ms=80"));
    }
    inject_random_faults(&faults, seed);
    let mut models: Vec<Model> = vec![vec![None; BLOCKS_PER_THREAD]; THREADS];
    let run = |v: &mirror::Volume, models: &mut Vec<Model>, salt: u64| {
        std::thread::scope(|s| {
            for (t, m) in models.iter_mut().enumerate() {
                let v = v.clone();
                s.spawn(move || run_thread(&v, t, seed * 1000 + t as u64 + salt, m));
            }
        });
    };
    run(&v, &mut models, 0);
    assert!(faults.fired() > 0, "seed {seed}: no fault fired; the test would prove nothing");
    let evictions = v.status().activity.evictions;
    if active < 4 * MIB {
        assert!(evictions > 0, "seed {seed}: no extent was evicted; the test would prove nothing");
    }
    if write_lag_ms > 0 {
        let left = events.count(|e| matches!(e, mirror::Event::LegLagging { .. }));
        assert!(left > 0, "seed {seed}: no leg was left behind; the test would prove nothing");
    }
    let v = if crash_midway {
        // A crashed process is gone only once the kernel has returned its
        // I/O; here a write acknowledged without a lagging leg may still be
        // in flight, and must not land after the reopen.
        wait_for("no leg I/O in flight", Duration::from_secs(10), || {
            v.status().legs.iter().all(|l| l.inflight == 0)
        });
        v.abandon();
        drop(v);
        let (v2, _, _) = open(&cfg);
        assert!(v2.wait_resync_idle(Duration::from_secs(30)));
        run(&v2, &mut models, 7);
        v2
    } else {
        v
    };
    faults.clear();
    for leg in 0..2 {
        let _ = v.restore_leg(leg);
    }
    wait_for("every leg in sync", Duration::from_secs(30), || {
        v.status().legs.iter().all(|l| l.state.is_in_sync())
    });
    assert!(v.wait_resync_idle(Duration::from_secs(30)));
    v.shutdown();
    drop(v);
    check_legs(&cfg, &models);
}

#[test]
fn random_concurrent_io_under_random_faults_matches_the_reference() {
    for seed in 1..=3 {
        run_model(seed, false, IoEngine::IoUring, 0);
    }
}

#[test]
fn random_io_with_a_crash_midway_matches_the_reference() {
    for seed in 11..=12 {
        run_model(seed, true, IoEngine::IoUring, 0);
    }
}

fn run_model(seed: u64, crash_midway: bool, engine: IoEngine, write_lag_ms: u64) {
    run_model_with(seed, crash_midway, engine, write_lag_ms, 64 << 10);
}

/// Bitmap extents of 4 regions: a first write marks its neighbours too, and
/// their bits are cleared together; while a leg is out, writes mark only
/// their own regions.
#[test]
fn random_io_with_bitmap_extents_matches_the_reference() {
    run_model_with(21, false, IoEngine::IoUring, 0, 256 << 10);
    run_model_with(22, true, IoEngine::IoUring, 0, 256 << 10);
    run_model_with(23, false, IoEngine::IoUring, 20, 256 << 10);
}

/// An activity log of 4 extents over 64: writes to new extents clear the
/// least recently used idle ones (after a flush), under random faults and a
/// crash, and no acknowledged write is lost.
#[test]
fn random_io_with_a_small_activity_log_matches_the_reference() {
    run_model_limited(31, false, IoEngine::IoUring, 0, 64 << 10, 256 << 10);
    run_model_limited(32, true, IoEngine::IoUring, 0, 64 << 10, 256 << 10);
    run_model_limited(33, true, IoEngine::Threads, 0, 256 << 10, 512 << 10);
}

/// The same on the blocking path (`io_engine=threads`, or a kernel without
/// io_uring).
#[test]
fn random_io_on_leg_threads_matches_the_reference() {
    run_model(4, false, IoEngine::Threads, 0);
    run_model(13, true, IoEngine::Threads, 0);
}

/// With latency priority (`write_lag_ms=20`): 80 ms delays of 30 leg 1 writes
/// leave it behind, and writes are acknowledged without it.
#[test]
fn random_io_with_legs_left_behind_matches_the_reference() {
    run_model(5, false, IoEngine::IoUring, 20);
    run_model(14, true, IoEngine::IoUring, 20);
    run_model(6, false, IoEngine::Threads, 20);
}
