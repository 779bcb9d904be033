//! Crash points on the write path. A child process (this test binary again)
//! opens the volume, writes one block and is killed with SIGKILL at a chosen
//! step: bit set, leg 0 written, leg 1 written, acknowledged, bit cleared,
//! or acknowledged without leg 0 (latency priority, leg 0 still writing).
//! The parent reopens: the legs must end identical, an acknowledged write
//! must be there, and the recovery must copy only the bitmap's regions.

mod common;
use common::*;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

const OFFSET: u64 = 3 * 65536 + 4096;

/// A point ending in `-extents` runs with 4 regions per bitmap extent.
fn crash_config(dir: &Dir, point: &str) -> mirror::VolumeConfig {
    let mut cfg = config(dir, 2, 4 * MIB);
    cfg.io_timeout_ms = 60_000; // hung legs stay hung until the kill
    cfg.last_leg_grace_ms = 60_000;
    cfg.bitmap_clear_delay_ms = 200;
    if point.ends_with("-extents") {
        cfg.bitmap_extent_size = EXTENT;
    }
    cfg
}

/// Runs in the child: drives the volume to `point`, says so, then waits.
#[test]
fn crash_child() {
    let (Ok(point), Ok(dir)) = (std::env::var("HM_CRASH_POINT"), std::env::var("HM_CRASH_DIR")) else {
        return; // not a child run
    };
    let d = Dir(dir.into());
    let mut cfg = crash_config(&d, &point);
    let point = point.trim_end_matches("-extents");
    if point == "lagging" {
        cfg.write_lag_ms = 50;
    }
    let (v, faults, _) = open(&cfg);
    let rule_for = |p: &str| match p {
        "bit" => Some("op=write action=hang"),
        "leg0" => Some("leg=1 op=write action=hang"),
        "leg1" => Some("leg=0 op=write action=hang"),
        _ => None,
    };
    if let Some(r) = rule_for(point) {
        faults.add(rule(r));
        let v2 = v.clone();
        std::thread::spawn(move || write(&v2, OFFSET, &pattern(4096, 42)));
        wait_for("a leg write", Duration::from_secs(10), || faults.fired() >= 1);
        if point != "bit" {
            std::thread::sleep(Duration::from_millis(200)); // the other leg's write lands
        }
    } else {
        let lagging = point == "lagging";
        if lagging {
            // Leg 0 never returns the write; it is acknowledged without it.
            faults.add(rule("leg=0 op=write action=hang"));
        }
        write(&v, OFFSET, &pattern(4096, 42)).unwrap();
        if lagging {
            assert_eq!(state_name(&v, 0), "rebuilding");
        }
        if point == "cleared" {
            wait_for("the bit cleared", Duration::from_secs(10), || v.status().dirty_regions == 0);
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    println!("AT-POINT");
    std::thread::sleep(Duration::from_secs(120));
    std::mem::forget(d); // the parent owns the directory
}

fn crash_at(point: &str) -> (Dir, mirror::VolumeConfig) {
    let d = Dir::new(&format!("crash-{point}"));
    let cfg = crash_config(&d, point);
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env("HM_CRASH_POINT", point)
        .env("HM_CRASH_DIR", &d.0)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out = BufReader::new(child.stdout.take().unwrap());
    let reached = out.lines().map_while(Result::ok).any(|l| l.contains("AT-POINT"));
    assert!(reached, "child never reached {point}");
    child.kill().unwrap(); // SIGKILL: no clean-up runs
    child.wait().unwrap();
    (d, cfg)
}

fn reopen_and_check(point: &str, acked: bool, expect_copied: u64) {
    let (_d, mut cfg) = crash_at(point);
    cfg.io_timeout_ms = 1000;
    let (v, _, _) = open(&cfg);
    assert!(v.wait_resync_idle(Duration::from_secs(20)), "{point}: recovery did not finish");
    let first = read(&v, OFFSET, 4096).unwrap();
    assert_eq!(read(&v, OFFSET, 4096).unwrap(), first, "{point}: a re-read changed");
    if acked {
        assert_eq!(first, pattern(4096, 42), "{point}: an acknowledged write was lost");
    }
    assert_eq!(v.resync_bytes(), expect_copied, "{point}: recovery copied the wrong amount");
    v.shutdown();
    drop(v);
    assert_eq!(leg_bytes(&cfg, 0), leg_bytes(&cfg, 1), "{point}: legs differ");
}

const REGION: u64 = 65536;
const EXTENT: u64 = 4 * REGION;

#[test]
fn a_crash_after_the_bit_is_set_recovers_that_region_only() {
    reopen_and_check("bit", false, REGION);
}

#[test]
fn a_crash_after_leg_0_was_written_recovers_that_region_only() {
    reopen_and_check("leg0", false, REGION);
}

#[test]
fn a_crash_after_leg_1_was_written_recovers_that_region_only() {
    reopen_and_check("leg1", false, REGION);
}

#[test]
fn a_crash_after_the_ack_keeps_the_write() {
    reopen_and_check("ack", true, REGION);
}

#[test]
fn a_crash_after_the_bit_was_cleared_resyncs_nothing() {
    reopen_and_check("cleared", true, 0);
}

/// Leg 0, the first in-sync leg and so the usual recovery source, missed an
/// acknowledged write: the metadata says so, and the write survives. The
/// region is copied twice: by the crash recovery (from leg 1, to every leg
/// that takes writes) and by leg 0's difference resync.
#[test]
fn a_crash_after_an_ack_without_a_lagging_leg_keeps_the_write() {
    reopen_and_check("lagging", true, 2 * REGION);
}

/// With every leg in sync, the first write to a clean region marks its whole
/// extent (here 4 regions): a crash copies all of it, and nothing more.
#[test]
fn with_extents_a_crash_after_the_bit_is_set_recovers_its_extent_only() {
    reopen_and_check("bit-extents", false, EXTENT);
}

#[test]
fn with_extents_a_crash_after_the_ack_keeps_the_write() {
    reopen_and_check("ack-extents", true, EXTENT);
}

#[test]
fn with_extents_a_crash_after_the_extent_was_cleared_resyncs_nothing() {
    reopen_and_check("cleared-extents", true, 0);
}
