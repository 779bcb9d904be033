//! How a leg's threads (`io_engine = threads`, and buffered legs under
//! `auto`) serve its I/O: a buffered regular file takes its writes one at a
//! time, since the kernel holds every other writer on the file's inode lock
//! anyway, while its reads, and the I/O of `O_DIRECT` legs, run side by side
//! up to `leg_threads`.

mod common;
use common::*;
use mirror::{HostWriteBuf, Volume, VolumeConfig};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Two legs of 4 MiB, buffered or `O_DIRECT`, with deadlines far beyond the
/// delays the tests inject.
fn lanes_config(d: &Dir, direct: bool) -> VolumeConfig {
    let mut cfg = config(d, 2, 4 * MIB);
    for leg in &mut cfg.legs {
        leg.direct_io = Some(direct);
    }
    cfg.io_engine = mirror::config::IoEngine::Threads;
    cfg.leg_threads = 4;
    cfg.io_timeout_ms = 10_000;
    cfg.last_leg_grace_ms = 10_000;
    cfg
}

/// Starts `n` I/Os at once (`start(i, done)` starts the i-th) and returns
/// how long the last took to complete.
fn concurrently(n: u64, start: impl Fn(u64, mirror::Done)) -> Duration {
    let (tx, rx) = crossbeam_channel::unbounded();
    let t = Instant::now();
    for i in 0..n {
        let tx = tx.clone();
        start(i, Box::new(move |r| drop(tx.send(r))));
    }
    for _ in 0..n {
        rx.recv_timeout(Duration::from_secs(20)).expect("completed").expect("I/O ok");
    }
    t.elapsed()
}

/// `n` writes of 4 KiB to different blocks at once.
fn concurrent_writes(v: &Volume, n: u64) -> Duration {
    concurrently(n, |i, done| {
        let buf: Arc<dyn HostWriteBuf> = Arc::new(pattern(4096, i));
        v.write(i * 65536, buf, done)
    })
}

/// `n` reads of 4 KiB from different blocks at once.
fn concurrent_reads(v: &Volume, n: u64) -> Duration {
    concurrently(n, |i, done| v.read(i * 65536, Box::new(vec![0u8; 4096]), done))
}

#[test]
fn a_buffered_file_leg_writes_one_at_a_time_and_reads_side_by_side() {
    let d = Dir::new("lanes-buffered");
    let (v, faults, _) = open(&lanes_config(&d, false));
    // Every write slow on both legs (which also tells both that their I/O
    // is slow, so the reads below get threads at once).
    faults.add(rule("op=write count=8 action=delay ms=100"));
    let took = concurrent_writes(&v, 4);
    assert!(took >= Duration::from_millis(400), "a leg served writes side by side: {took:?}");
    assert_eq!((state_name(&v, 0), state_name(&v, 1)), ("in_sync", "in_sync"));

    faults.add(rule("op=read count=8 action=delay ms=200"));
    let took = concurrent_reads(&v, 8);
    // One at a time, four reads per leg would take 800 ms.
    assert!(took < Duration::from_millis(600), "reads waited for each other: {took:?}");
}

#[test]
fn an_o_direct_leg_writes_side_by_side() {
    let d = Dir::new("lanes-direct");
    let (v, faults, _) = open(&lanes_config(&d, true));
    faults.add(rule("leg=1 op=write count=4 action=delay ms=200"));
    let took = concurrent_writes(&v, 4);
    // One at a time would take 800 ms.
    assert!(took < Duration::from_millis(600), "leg 1 served O_DIRECT writes one at a time: {took:?}");
}

#[test]
fn writes_queued_behind_a_hung_write_on_a_buffered_leg_complete_within_the_deadline() {
    let d = Dir::new("lanes-hang");
    let mut cfg = lanes_config(&d, false);
    cfg.io_timeout_ms = 300;
    cfg.last_leg_grace_ms = 600;
    let (v, faults, _) = open(&cfg);
    // The first write hangs in leg 1's lane; three more queue behind it,
    // waiting for the lane rather than for a thread.
    faults.add(rule("leg=1 op=write count=1 action=hang"));
    let took = concurrent_writes(&v, 4);
    assert!(took < Duration::from_millis(cfg.io_timeout_ms) * 3, "the host waited {took:?} for a hung leg");
    assert_eq!(state_name(&v, 1), "faulted");
    faults.release_hangs();
}
