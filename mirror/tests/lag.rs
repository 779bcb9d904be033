//! Write priority (`write_lag_ms`): with latency priority a leg that lags
//! behind the others is left behind (rebuilding, not faulted) and writes are
//! acknowledged without it; with the default redundancy priority a write
//! waits for every in-sync leg.

mod common;
use common::*;
use mirror::backend::fault::FaultInjector;
use mirror::{Event, HostWriteBuf, LegState, Volume, VolumeConfig};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn lag_config(d: &Dir, lag_ms: u64) -> VolumeConfig {
    let mut cfg = config(d, 2, 4 * MIB);
    cfg.io_timeout_ms = 10_000; // the slow leg is never faulted here
    cfg.last_leg_grace_ms = 10_000;
    cfg.write_lag_ms = lag_ms;
    cfg
}

/// Writes `data` at `offset`; returns how long the acknowledgement took
/// and whether the engine still held the host's buffer when it came.
fn timed_write(v: &Volume, offset: u64, data: &[u8]) -> (Duration, bool) {
    let buf: Arc<dyn HostWriteBuf> = Arc::new(data.to_vec());
    let (tx, rx) = crossbeam_channel::bounded(1);
    let t0 = Instant::now();
    v.write(offset, buf.clone(), Box::new(move |r| drop(tx.send(r))));
    rx.recv_timeout(Duration::from_secs(30)).expect("acknowledged").expect("write ok");
    let took = t0.elapsed();
    // The callback has run: only the engine can still hold a reference.
    (took, Arc::strong_count(&buf) > 1)
}

fn lagging_events(events: &Events) -> usize {
    events.count(|e| matches!(e, Event::LegLagging { leg: 1, .. }))
}

/// Writes a block with the delay `rule` (of `delay_ms`) in force and checks
/// that the write waited for it and that leg 1 was not left behind. Returns
/// whether the engine still held the host's buffer at the acknowledgement.
fn write_waits_for_the_delay(v: &Volume, faults: &FaultInjector, events: &Events, rule_text: &str) -> bool {
    let delay_ms: u64 = rule_text.rsplit("ms=").next().unwrap().parse().unwrap();
    faults.add(rule(rule_text));
    let (took, held) = timed_write(v, 0, &pattern(4096, delay_ms));
    assert!(took >= Duration::from_millis(delay_ms), "acknowledged before the delayed leg had it: {took:?}");
    assert_eq!(state_name(v, 1), "in_sync");
    assert_eq!(lagging_events(events), 0, "a leg was left behind");
    held
}

#[test]
fn with_write_lag_a_slow_leg_is_left_behind_and_catches_up() {
    let d = Dir::new("lag-behind");
    let cfg = lag_config(&d, 50);
    let (v, faults, events) = open(&cfg);
    faults.add(rule("leg=1 op=write count=1 action=delay ms=3000"));
    let data = pattern(8192, 7);
    let (took, held) = timed_write(&v, 65536, &data);
    assert!(took < Duration::from_millis(2000), "the write waited for the slow leg: {took:?}");
    assert!(!held, "a leg still writes from the host's buffer after the acknowledgement");
    assert_eq!(state_name(&v, 1), "rebuilding", "left behind, not faulted");
    assert_eq!(lagging_events(&events), 1);
    assert_eq!(read(&v, 65536, 8192).unwrap(), data, "read after the ack sees the write");
    // The late write lands, then the resync brings the leg back.
    wait_for("leg 1 back in sync", Duration::from_secs(20), || state_name(&v, 1) == "in_sync");
    let faulted = events.count(|e| matches!(e, Event::LegStateChanged { to: LegState::Faulted(_), .. }));
    assert_eq!(faulted, 0, "a lagging leg is never faulted for the lag");
    assert_eq!(v.status().legs[1].timeouts, 0);
    v.shutdown();
    drop(v);
    assert_eq!(leg_bytes(&cfg, 0), leg_bytes(&cfg, 1));
    assert_eq!(&leg_bytes(&cfg, 1)[65536..65536 + 8192], &data[..]);
}

#[test]
fn without_write_lag_a_write_waits_for_the_slow_leg() {
    let d = Dir::new("lag-off");
    let cfg = lag_config(&d, 0);
    let (v, faults, events) = open(&cfg);
    let held = write_waits_for_the_delay(&v, &faults, &events, "leg=1 op=write count=1 action=delay ms=600");
    assert!(!held);
    v.shutdown();
    drop(v);
    assert_eq!(leg_bytes(&cfg, 0), leg_bytes(&cfg, 1));
}

#[test]
fn legs_that_are_equally_slow_are_not_left_behind() {
    let d = Dir::new("lag-both");
    let cfg = lag_config(&d, 50);
    let (v, faults, events) = open(&cfg);
    // No leg stores the write before the other.
    write_waits_for_the_delay(&v, &faults, &events, "op=write count=2 action=delay ms=300");
    assert_eq!(state_name(&v, 0), "in_sync");
    v.shutdown();
    drop(v);
}

#[test]
fn overlapping_writes_keep_their_order_on_a_leg_left_behind() {
    let d = Dir::new("lag-many");
    let cfg = lag_config(&d, 50);
    let (v, faults, _) = open(&cfg);
    // Every write to leg 1 is slow for a while.
    faults.add(rule("leg=1 op=write count=40 action=delay ms=150"));
    let mut expect = vec![0u8; 4 * MIB as usize];
    for i in 0..40u64 {
        // Half the writes hit the same block: the later one must win on both legs.
        let off = if i % 2 == 0 { 8192 } else { i * 65536 };
        let data = pattern(4096, 100 + i);
        write(&v, off, &data).unwrap();
        expect[off as usize..off as usize + 4096].copy_from_slice(&data);
        assert_eq!(read(&v, off, 4096).unwrap(), data, "write {i} reads back");
    }
    wait_for("leg 1 back in sync", Duration::from_secs(30), || state_name(&v, 1) == "in_sync");
    v.shutdown();
    drop(v);
    assert_eq!(leg_bytes(&cfg, 0), expect);
    assert_eq!(leg_bytes(&cfg, 1), expect, "leg 1 caught up in the right order");
}

#[test]
fn the_last_in_sync_leg_is_waited_for_not_left_behind() {
    let d = Dir::new("lag-last");
    let cfg = lag_config(&d, 50);
    let (v, faults, events) = open(&cfg);
    v.fail_leg(0).unwrap();
    write_waits_for_the_delay(&v, &faults, &events, "leg=1 op=write count=1 action=delay ms=300");
    v.shutdown();
    drop(v);
}

#[test]
fn write_lag_can_be_turned_on_and_off_while_the_volume_runs() {
    let d = Dir::new("lag-retune");
    let cfg = lag_config(&d, 0);
    let (v, faults, _) = open(&cfg);
    let on = VolumeConfig { write_lag_ms: 50, ..cfg.clone() };
    assert_eq!(v.retune(&on).unwrap(), vec!["write_lag_ms"]);
    faults.add(rule("leg=1 op=write count=1 action=delay ms=2000"));
    let (took, _) = timed_write(&v, 0, &pattern(4096, 4));
    assert!(took < Duration::from_millis(1500), "{took:?}");
    wait_for("leg 1 back in sync", Duration::from_secs(20), || state_name(&v, 1) == "in_sync");
    assert_eq!(v.retune(&cfg).unwrap(), vec!["write_lag_ms"]);
    let bad = VolumeConfig { write_lag_ms: 10_000, ..cfg.clone() };
    let e = v.retune(&bad).unwrap_err();
    assert!(e.to_string().contains("write_lag_ms 10000 must be below io_timeout_ms 10000"), "{e}");
    assert_eq!(v.tunables().write_lag_ms, 0, "a refused change changes nothing");
    v.shutdown();
    drop(v);
}

#[test]
fn a_leg_left_behind_rejoins_only_once_it_holds_every_acknowledged_write() {
    let d = Dir::new("lag-rejoin");
    let mut cfg = lag_config(&d, 50);
    cfg.bitmap_clear_delay_ms = 60_000; // the bits written below stay set
    let (v, faults, _) = open(&cfg);
    write(&v, 0, &pattern(4096, 10)).unwrap(); // region 0, on both legs
                                               // Region 8: leg 1 lags and is left behind; its resync copies region 0,
                                               // then waits for region 8 until leg 1 returns that write.
    faults.add(rule("leg=1 op=write count=1 action=delay ms=400"));
    write(&v, 8 * 65536, &pattern(4096, 11)).unwrap();
    assert_eq!(state_name(&v, 1), "rebuilding");
    wait_for("region 0 resynced", Duration::from_secs(10), || {
        v.status().resync.is_some_and(|r| r.done_bytes >= 65536)
    });
    // A write to region 0, behind the resync's cursor, is acknowledged
    // without leg 1 and reaches it only after the resync has ended.
    faults.add(rule("leg=1 op=write count=1 action=delay ms=1500"));
    let late = pattern(4096, 12);
    write(&v, 0, &late).unwrap();
    wait_for("leg 1 back in sync", Duration::from_secs(20), || state_name(&v, 1) == "in_sync");
    assert_eq!(&leg_bytes(&cfg, 1)[..4096], &late[..], "leg 1 rejoined without an acknowledged write");
    v.shutdown();
    drop(v);
    assert_eq!(leg_bytes(&cfg, 0), leg_bytes(&cfg, 1));
}
