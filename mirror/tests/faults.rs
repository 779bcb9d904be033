//! Every fault path of the I/O engine, on real files with injected faults.

mod common;
use common::*;
use mirror::{IoError, LegState, Volume};
use std::time::{Duration, Instant};

#[test]
fn a_write_lands_on_every_leg_at_the_host_offset() {
    let d = Dir::new("basic");
    let cfg = config(&d, 3, 4 * MIB);
    let (v, _, _) = open(&cfg);
    let data = pattern(128 * 1024, 1);
    write(&v, 512 * 1024, &data).unwrap();
    assert_eq!(read(&v, 512 * 1024, data.len()).unwrap(), data);
    v.shutdown();
    drop(v);
    for leg in 0..3 {
        // Native format: byte i of the leg is byte i of the LUN.
        assert_eq!(&leg_bytes(&cfg, leg)[512 * 1024..640 * 1024], &data[..]);
    }
}

#[test]
fn write_with_one_leg_failing_is_acknowledged_and_marks_region_dirty() {
    let d = Dir::new("wfail");
    let cfg = config(&d, 2, 4 * MIB);
    let (v, faults, _) = open(&cfg);
    faults.add(rule("leg=1 op=write action=error errno=5"));
    write(&v, 0, &pattern(4096, 2)).expect("one leg stored it: success");
    assert_eq!(state_name(&v, 1), "faulted");
    assert!(v.status().dirty_regions >= 1);
    // The fault is durable: after a crash the stale leg is still out.
    v.abandon();
    drop(v);
    let (v2, _, _) = open(&cfg);
    let st = v2.status();
    assert!(
        matches!(st.legs[1].state, LegState::Faulted(_) | LegState::Rebuilding),
        "{:?}",
        st.legs[1].state
    );
    assert!(st.legs[0].state.is_in_sync());
    v2.shutdown();
}

#[test]
fn both_legs_failing_the_same_block_fails_the_write_and_keeps_both_legs() {
    let d = Dir::new("bothfail");
    let cfg = config(&d, 2, 4 * MIB);
    let (v, faults, _) = open(&cfg);
    faults.add(rule("op=write range=8192-12288 action=error errno=5"));
    let err = write(&v, 8192, &pattern(4096, 3)).unwrap_err();
    assert!(matches!(err, IoError::WriteFailed { .. }), "{err:?}");
    // Neither leg is dropped: they are the only copies.
    assert_eq!(state_name(&v, 0), "in_sync");
    assert_eq!(state_name(&v, 1), "in_sync");
    write(&v, 0, &pattern(4096, 4)).expect("other blocks still work");
    v.shutdown();
    drop(v);
}

#[test]
fn a_read_error_is_retried_on_another_leg_and_repaired() {
    let d = Dir::new("rrepair");
    let cfg = config(&d, 2, 4 * MIB);
    let (v, faults, events) = open(&cfg);
    let data = pattern(8192, 5);
    write(&v, 65536, &data).unwrap();
    // The first leg tried fails (a medium error), once.
    faults.add(rule("op=read range=65536-73728 count=1 action=error errno=61"));
    assert_eq!(read(&v, 65536, 8192).unwrap(), data);
    wait_for("the repair", Duration::from_secs(5), || {
        events.count(|e| matches!(e, mirror::Event::ReadRepaired { .. })) == 1
    });
    assert_eq!(state_name(&v, 0), "in_sync");
    assert_eq!(state_name(&v, 1), "in_sync");
    v.shutdown();
    drop(v);
}

#[test]
fn a_read_that_no_leg_can_serve_is_a_read_error() {
    let d = Dir::new("rfail");
    let cfg = config(&d, 2, 4 * MIB);
    let (v, faults, _) = open(&cfg);
    faults.add(rule("op=read range=0-4096 action=error errno=5"));
    assert!(matches!(read(&v, 0, 4096), Err(IoError::ReadFailed { .. })));
    v.shutdown();
    drop(v);
}

#[test]
fn read_errors_past_the_budget_fault_the_leg() {
    let d = Dir::new("budget");
    let mut cfg = config(&d, 2, 4 * MIB);
    cfg.read_error_budget = 2;
    cfg.auto_failback = false;
    let (v, faults, _) = open(&cfg);
    faults.add(rule("leg=0 op=read action=error errno=5"));
    // Scattered reads (a sequential stream would stay on leg 1). Each waits
    // until no leg has I/O in flight (the repair of the last error may still
    // be writing leg 0), so that balancing has a tie and picks leg 0, which
    // fails each one. Without the wait, a slow repair write on a loaded
    // machine kept leg 0 busy and every read went to leg 1.
    let idle = |v: &Volume| v.status().legs.iter().all(|l| l.inflight == 0);
    for i in (0..200).rev() {
        wait_for("no leg I/O in flight", Duration::from_secs(10), || idle(&v));
        read(&v, i * 8192, 4096).expect("served by leg 1");
        if state_name(&v, 0) == "faulted" {
            break;
        }
    }
    assert_eq!(state_name(&v, 0), "faulted");
    assert_eq!(v.status().legs[0].read_errors, 3, "faulted on the error past the budget of 2");
    v.shutdown();
    drop(v);
}

#[test]
fn a_leg_that_hangs_forever_is_dropped_within_the_deadline() {
    let d = Dir::new("hang");
    let cfg = config(&d, 2, 4 * MIB);
    let (v, faults, _) = open(&cfg);
    faults.add(rule("leg=1 action=hang"));
    let t0 = Instant::now();
    write(&v, 0, &pattern(4096, 6)).expect("completes from leg 0");
    let stall = t0.elapsed();
    assert!(stall < Duration::from_millis(cfg.io_timeout_ms) * 3, "stalled {stall:?}");
    assert_eq!(state_name(&v, 1), "faulted");
    // The others keep serving, without waiting.
    let t1 = Instant::now();
    for i in 0..20 {
        write(&v, i * 4096, &pattern(4096, i)).unwrap();
        read(&v, i * 4096, 4096).unwrap();
    }
    assert!(t1.elapsed() < Duration::from_millis(cfg.io_timeout_ms));
    // While its I/O is stuck in the kernel, the leg is not brought back.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(state_name(&v, 1), "faulted");
    assert!(v.status().legs[1].inflight > 0);
    faults.clear();
    faults.release_hangs();
    wait_for("failback and resync", Duration::from_secs(10), || state_name(&v, 1) == "in_sync");
    v.shutdown();
    drop(v);
    assert_eq!(leg_bytes(&cfg, 0), leg_bytes(&cfg, 1));
}

#[test]
fn the_last_in_sync_leg_is_never_faulted_for_a_timeout() {
    let d = Dir::new("lastleg");
    let mut cfg = config(&d, 2, 4 * MIB);
    cfg.auto_failback = false;
    let (v, faults, events) = open(&cfg);
    v.fail_leg(1).unwrap();
    faults.add(rule("leg=0 op=write count=1 action=delay ms=1000"));
    write(&v, 0, &pattern(4096, 7)).expect("the slow last leg is waited for");
    assert_eq!(state_name(&v, 0), "in_sync");
    assert_eq!(events.count(|e| matches!(e, mirror::Event::LastLegSlow { .. })), 1);
    v.shutdown();
    drop(v);
}

#[test]
fn a_flapping_leg_stays_out_until_restored_by_hand() {
    let d = Dir::new("flap");
    let mut cfg = config(&d, 2, 4 * MIB);
    cfg.flap_limit = 3;
    let (v, faults, _) = open(&cfg);
    for round in 0..3u64 {
        faults.add(rule("leg=1 op=write count=1 action=error errno=5"));
        write(&v, round * 4096, &pattern(4096, round)).unwrap();
        if round < 2 {
            wait_for("failback", Duration::from_secs(10), || state_name(&v, 1) == "in_sync");
        }
    }
    match &v.status().legs[1].state {
        LegState::Faulted(r) => assert!(!r.is_recoverable(), "{r}"),
        s => panic!("leg 1 is {s}"),
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(state_name(&v, 1), "faulted", "no automatic retry loop");
    v.restore_leg(1).unwrap();
    wait_for("manual restore", Duration::from_secs(10), || state_name(&v, 1) == "in_sync");
    v.shutdown();
    drop(v);
    assert_eq!(leg_bytes(&cfg, 0), leg_bytes(&cfg, 1));
}

#[test]
fn a_miscompare_returns_the_offset_and_writes_nothing() {
    let d = Dir::new("caw");
    let cfg = config(&d, 2, 4 * MIB);
    let (v, _, _) = open(&cfg);
    let old = pattern(4096, 8);
    write(&v, 0, &old).unwrap();
    let mut wrong = old.clone();
    wrong[1000] ^= 1;
    let err = caw(&v, 0, &wrong, &pattern(4096, 9)).unwrap_err();
    assert!(matches!(err, IoError::Miscompare { offset: 1000 }), "{err:?}");
    assert_eq!(read(&v, 0, 4096).unwrap(), old);
    caw(&v, 0, &old, &pattern(4096, 9)).unwrap();
    assert_eq!(read(&v, 0, 4096).unwrap(), pattern(4096, 9));
    v.shutdown();
    drop(v);
}

#[test]
fn compare_and_write_is_atomic_against_plain_writes() {
    // A counter incremented by CAW retries while plain writes hit the same
    // block; a CAW that interleaved with a write would lose an update.
    let d = Dir::new("cawrace");
    let cfg = config(&d, 2, 4 * MIB);
    let (v, _, _) = open(&cfg);
    write(&v, 0, &[0u8; 512]).unwrap();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let v = v.clone();
            std::thread::spawn(move || {
                let mut done = 0;
                while done < 25 {
                    let cur = read(&v, 0, 512).unwrap();
                    let mut next = cur.clone();
                    let n = u64::from_le_bytes(cur[..8].try_into().unwrap()) + 1;
                    next[..8].copy_from_slice(&n.to_le_bytes());
                    if caw(&v, 0, &cur, &next).is_ok() {
                        done += 1;
                    }
                }
            })
        })
        .collect();
    // Plain writes to the same block that keep the counter (bytes 8.. only).
    let writer = {
        let v = v.clone();
        std::thread::spawn(move || {
            for i in 0..50u8 {
                let cur = read(&v, 0, 512).unwrap();
                let mut next = cur.clone();
                next[8..].fill(i);
                // Racy by design: the CAWs must still count exactly.
                let _ = caw(&v, 0, &cur, &next);
            }
        })
    };
    for t in threads {
        t.join().unwrap();
    }
    writer.join().unwrap();
    let n = u64::from_le_bytes(read(&v, 0, 512).unwrap()[..8].try_into().unwrap());
    assert_eq!(n, 100);
    v.shutdown();
    drop(v);
}

#[test]
fn a_failed_flush_rearms_and_faults_the_leg() {
    let d = Dir::new("flush");
    let mut cfg = config(&d, 2, 4 * MIB);
    cfg.auto_failback = false;
    cfg.write_cache = true;
    let (v, faults, _) = open(&cfg);
    flush(&v).expect("nothing to flush");
    write(&v, 0, &pattern(4096, 10)).unwrap();
    faults.add(rule("leg=1 op=flush action=error errno=5"));
    flush(&v).expect("leg 0 flushed");
    assert_eq!(state_name(&v, 1), "faulted");
    v.shutdown();
    drop(v);
}

#[test]
fn flush_reaches_only_legs_written_since_their_last_flush() {
    let d = Dir::new("flushonly");
    let mut cfg = config(&d, 2, 4 * MIB);
    cfg.write_cache = true;
    let (v, faults, _) = open(&cfg);
    write(&v, 0, &pattern(4096, 11)).unwrap();
    flush(&v).unwrap();
    // No write since: a failing flush rule must not even be reached.
    faults.add(rule("op=flush action=error errno=5"));
    flush(&v).unwrap();
    assert_eq!(faults.fired(), 0);
    assert_eq!(state_name(&v, 0), "in_sync");
    v.shutdown();
    drop(v);
}

#[test]
fn unmap_is_a_noop_unless_every_leg_reads_back_zeroes() {
    let d = Dir::new("unmap");
    let cfg = config(&d, 2, 4 * MIB);
    let (v, _, _) = open(&cfg);
    let data = pattern(65536, 12);
    write(&v, 0, &data).unwrap();
    unmap(&v, 0, 65536).unwrap();
    let back = read(&v, 0, 65536).unwrap();
    // Files on this file system punch holes (zeroes) or keep data; either
    // way the legs stay identical.
    assert!(back == data || back.iter().all(|&b| b == 0));
    v.shutdown();
    drop(v);
    assert_eq!(leg_bytes(&cfg, 0), leg_bytes(&cfg, 1));
}

#[test]
fn write_same_repeats_the_block_and_zeroes_use_write_zeroes() {
    let d = Dir::new("wsame");
    let cfg = config(&d, 2, 4 * MIB);
    let (v, _, _) = open(&cfg);
    let block = pattern(512, 13);
    write_same(&v, 4096, 3 * MIB, &block).unwrap();
    let back = read(&v, 4096, 3 * MIB as usize).unwrap();
    assert!(back.chunks(512).all(|c| c == &block[..]));
    write_same(&v, 4096, 8192, &[0u8; 512]).unwrap();
    assert!(read(&v, 4096, 8192).unwrap().iter().all(|&b| b == 0));
    v.shutdown();
    drop(v);
    assert_eq!(leg_bytes(&cfg, 0), leg_bytes(&cfg, 1));
}

#[test]
fn out_of_range_and_unaligned_io_is_refused() {
    let d = Dir::new("range");
    let cfg = config(&d, 2, 4 * MIB);
    let (v, _, _) = open(&cfg);
    assert!(matches!(write(&v, 4 * MIB, &[0u8; 512]), Err(IoError::OutOfRange { .. })));
    assert!(matches!(read(&v, 4 * MIB - 512, 1024), Err(IoError::OutOfRange { .. })));
    assert!(matches!(write(&v, 100, &[0u8; 512]), Err(IoError::Unaligned { .. })));
    v.shutdown();
    drop(v);
}

#[test]
fn io_queued_behind_a_hung_leg_never_runs_after_it_was_given_up() {
    // One worker per leg, hung: the writes behind it are timed out while
    // still queued. When the hang ends they must not be performed (their
    // host buffers may be gone), so the leg never sees them. (Only threads
    // queue: with io_uring every write is in the kernel at once.)
    let d = Dir::new("queued");
    let mut cfg = config(&d, 2, 4 * MIB);
    cfg.io_engine = mirror::config::IoEngine::Threads;
    cfg.leg_threads = 1;
    cfg.auto_failback = false;
    let (v, faults, _) = open(&cfg);
    faults.add(rule("leg=1 op=write count=1 action=hang"));
    // Four writes at once: the first hangs in leg 1's only worker, the
    // other three wait in its queue when the deadline passes.
    std::thread::scope(|s| {
        for i in 0..4u64 {
            let v = v.clone();
            s.spawn(move || write(&v, i * 4096, &pattern(4096, 100 + i)).unwrap());
        }
    });
    assert_eq!(state_name(&v, 1), "faulted");
    faults.release_hangs();
    wait_for("leg 1 drained", Duration::from_secs(5), || v.status().legs[1].inflight == 0);
    let st = v.status();
    assert_eq!(st.legs[1].writes, 1, "only the write that was already in the kernel ran");
    v.shutdown();
}

#[test]
fn a_write_stored_only_on_a_leg_that_left_meanwhile_fails() {
    let d = Dir::new("leftwrite");
    let cfg = config(&d, 2, 4 * MIB);
    let (v, faults, _) = open(&cfg);
    write(&v, 0, &pattern(4096, 1)).unwrap();
    // Leg 0 fails the write; leg 1 stores it, but is taken out by the
    // administrator before it returns. Leg 0 is then the last in-sync leg,
    // cannot be faulted, and does not hold the write: acknowledging it would
    // let the next read return the old data.
    faults.add(rule("leg=0 op=write count=1 action=error errno=5"));
    faults.add(rule("leg=1 op=write count=1 action=delay ms=300"));
    let v2 = v.clone();
    let w = std::thread::spawn(move || write(&v2, 0, &pattern(4096, 2)));
    std::thread::sleep(Duration::from_millis(100));
    v.fail_leg(1).unwrap();
    let r = w.join().unwrap();
    assert!(matches!(r, Err(IoError::WriteFailed { .. })), "{r:?}");
    assert_eq!(state_name(&v, 0), "in_sync");
    assert_eq!(read(&v, 0, 4096).unwrap(), pattern(4096, 1), "what the host reads is what it was told");
    v.shutdown();
    drop(v);
}
