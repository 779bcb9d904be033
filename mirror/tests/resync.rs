//! Difference resync, full rebuild, restarts and the resync direction.

mod common;
use common::*;
use mirror::{Event, IoError, OpenError, Volume};
use std::time::Duration;

#[test]
fn failback_after_n_mib_of_writes_copies_about_n_mib() {
    let d = Dir::new("diff");
    let mut cfg = config(&d, 2, 64 * MIB);
    cfg.auto_failback = false;
    let (v, _, _) = open(&cfg);
    v.fail_leg(1).unwrap();
    // 2 MiB in 4 KiB writes spread over 32 regions of 64 KiB.
    for i in 0..512u64 {
        write(&v, (i % 32) * 2 * MIB + (i / 32) * 4096, &pattern(4096, i)).unwrap();
    }
    v.restore_leg(1).unwrap();
    wait_for("resync", Duration::from_secs(20), || state_name(&v, 1) == "in_sync");
    let copied = v.resync_bytes();
    assert_eq!(copied, 32 * 64 * 1024, "only the dirty regions, not the 64 MiB LUN");
    v.shutdown();
    drop(v);
    assert_eq!(leg_bytes(&cfg, 0), leg_bytes(&cfg, 1));
}

#[test]
fn a_new_volume_copies_leg_0_onto_the_others() {
    let d = Dir::new("initial");
    let mut cfg = config(&d, 2, 8 * MIB);
    cfg.initial_sync = mirror::config::InitialSync::Full;
    std::fs::write(&cfg.legs[0].path, pattern(8 * MIB as usize, 1)).unwrap();
    let (v, _, _) = open(&cfg);
    assert!(v.wait_resync_idle(Duration::from_secs(20)));
    assert_eq!(v.resync_bytes(), 8 * MIB);
    v.shutdown();
    drop(v);
    assert_eq!(leg_bytes(&cfg, 0), leg_bytes(&cfg, 1));
}

#[test]
fn resync_racing_host_writes_to_the_same_regions_ends_identical() {
    let d = Dir::new("race");
    let mut cfg = config(&d, 2, 16 * MIB);
    cfg.auto_failback = false;
    let (v, _, _) = open(&cfg);
    v.fail_leg(1).unwrap();
    for i in 0..256u64 {
        write(&v, i * 65536, &pattern(4096, i)).unwrap();
    }
    v.restore_leg(1).unwrap();
    // Keep hammering the regions being resynced.
    for round in 0..4u64 {
        for i in 0..256u64 {
            write(&v, i * 65536 + 4096 * (round + 1), &pattern(4096, 1000 * round + i)).unwrap();
        }
    }
    wait_for("resync", Duration::from_secs(20), || state_name(&v, 1) == "in_sync");
    v.shutdown();
    drop(v);
    assert_eq!(leg_bytes(&cfg, 0), leg_bytes(&cfg, 1));
}

#[test]
fn a_restart_in_the_middle_of_a_resync_continues_where_it_was() {
    let d = Dir::new("restart");
    let mut cfg = config(&d, 2, 32 * MIB);
    cfg.initial_sync = mirror::config::InitialSync::Full;
    cfg.resync_max_mib_s = 8;
    cfg.resync_min_mib_s = 4;
    std::fs::write(&cfg.legs[0].path, pattern(32 * MIB as usize, 2)).unwrap();
    let (v, _, _) = open(&cfg);
    std::thread::sleep(Duration::from_millis(2500));
    let first = v.resync_bytes();
    v.shutdown();
    drop(v);
    assert!(first > 0 && first < 32 * MIB, "copied {first}");
    cfg.resync_max_mib_s = 0;
    let (v, _, _) = open(&cfg);
    assert!(v.wait_resync_idle(Duration::from_secs(20)));
    let second = v.resync_bytes();
    v.shutdown();
    drop(v);
    assert!(first + second < 32 * MIB + 4 * MIB, "restarted from scratch: {first} + {second}");
    assert_eq!(leg_bytes(&cfg, 0), leg_bytes(&cfg, 1));
}

#[test]
fn a_leg_that_missed_writes_is_refused_as_the_source() {
    let d = Dir::new("wrongsrc");
    let mut cfg = config(&d, 2, 4 * MIB);
    cfg.auto_failback = false;
    let (v, _, _) = open(&cfg);
    v.fail_leg(1).unwrap();
    write(&v, 0, &pattern(4096, 3)).unwrap();
    v.shutdown();
    drop(v);
    cfg.source = Some(1);
    let err = Volume::open(cfg.clone(), Events::default().sink()).err().expect("refused");
    assert!(matches!(err, OpenError::Mismatch { .. }), "{err}");
    assert!(err.to_string().contains("cannot be the source"), "{err}");
    // The right source is accepted and rebuilds the other leg fully.
    cfg.source = Some(0);
    let (v, _, _) = open(&cfg);
    assert!(v.wait_resync_idle(Duration::from_secs(20)));
    assert_eq!(v.resync_bytes(), 4 * MIB);
    v.shutdown();
    drop(v);
    assert_eq!(leg_bytes(&cfg, 0), leg_bytes(&cfg, 1));
}

#[test]
fn the_resync_direction_follows_the_metadata_after_a_restart() {
    // Leg 1 was out while leg 0 took writes; after a restart leg 0 is the
    // source and leg 1 gets the difference, never the other way round.
    let d = Dir::new("direction");
    let mut cfg = config(&d, 2, 4 * MIB);
    cfg.auto_failback = false;
    let (v, _, _) = open(&cfg);
    v.fail_leg(1).unwrap();
    let data = pattern(65536, 4);
    write(&v, 0, &data).unwrap();
    v.shutdown();
    drop(v);
    cfg.auto_failback = true;
    let (v, _, _) = open(&cfg);
    assert_eq!(read(&v, 0, 65536).unwrap(), data);
    v.restore_leg(1).unwrap();
    wait_for("resync", Duration::from_secs(10), || state_name(&v, 1) == "in_sync");
    v.shutdown();
    drop(v);
    assert_eq!(&leg_bytes(&cfg, 1)[..65536], &data[..]);
}

#[test]
fn an_existing_volume_starts_without_a_missing_leg_and_takes_it_back() {
    let d = Dir::new("degraded");
    let cfg = config(&d, 2, 4 * MIB);
    let (v, _, _) = open(&cfg);
    write(&v, 0, &pattern(65536, 1)).unwrap();
    v.shutdown();
    drop(v);
    // The array behind leg 1 is down while the runner restarts.
    let away = d.path("leg1.away");
    std::fs::rename(&cfg.legs[1].path, &away).unwrap();
    let (v, _, _) = open(&cfg);
    assert_eq!(state_name(&v, 1), "faulted");
    let data = pattern(65536, 2);
    write(&v, 65536, &data).expect("serves from leg 0");
    assert_eq!(read(&v, 65536, 65536).unwrap(), data);
    // The same device comes back: it is taken back and resynced.
    std::fs::rename(&away, &cfg.legs[1].path).unwrap();
    wait_for("reattach and resync", Duration::from_secs(10), || state_name(&v, 1) == "in_sync");
    assert!(v.resync_bytes() <= 2 * 65536, "a difference resync, not {}", v.resync_bytes());
    v.shutdown();
    drop(v);
    assert_eq!(leg_bytes(&cfg, 0), leg_bytes(&cfg, 1));
}

#[test]
fn a_new_volume_refuses_a_missing_leg() {
    let d = Dir::new("newmissing");
    let mut cfg = config(&d, 2, MIB);
    cfg.legs[1].path = d.path("absent");
    let e = Volume::open(cfg, Events::default().sink()).err().expect("refused");
    assert!(matches!(e, OpenError::LegMissing { leg: 1, .. }), "{e}");
}

#[test]
fn replace_takes_a_new_disk_at_the_path_and_rebuilds_it_fully() {
    let d = Dir::new("replace");
    let mut cfg = config(&d, 2, 4 * MIB);
    cfg.auto_failback = false;
    let (v, _, _) = open(&cfg);
    write(&v, 0, &pattern(4 * MIB as usize, 3)).unwrap();
    v.fail_leg(1).unwrap();
    // A new, blank disk at the same path.
    let new = d.path("new");
    std::fs::File::create(&new).unwrap().set_len(4 * MIB).unwrap();
    std::fs::rename(&new, &cfg.legs[1].path).unwrap();
    assert!(v.restore_leg(1).is_ok(), "restore reopens nothing: the old leg is still open");
    wait_for("resync", Duration::from_secs(10), || state_name(&v, 1) == "in_sync");
    v.fail_leg(1).unwrap();
    let before = v.resync_bytes();
    v.replace_leg(1).unwrap();
    wait_for("full rebuild", Duration::from_secs(10), || state_name(&v, 1) == "in_sync");
    assert_eq!(v.resync_bytes() - before, 4 * MIB);
    // In place: the same file (its lock held by the old handle) is taken anew.
    v.fail_leg(1).unwrap();
    let before = v.resync_bytes();
    v.replace_leg(1).unwrap();
    wait_for("second full rebuild", Duration::from_secs(10), || state_name(&v, 1) == "in_sync");
    assert_eq!(v.resync_bytes() - before, 4 * MIB);
    v.shutdown();
    drop(v);
    assert_eq!(leg_bytes(&cfg, 0), leg_bytes(&cfg, 1));
    // The new identity is recorded: the volume opens with it.
    let (v, _, _) = open(&cfg);
    assert_eq!(state_name(&v, 1), "in_sync");
    v.shutdown();
}

#[test]
fn without_a_bitmap_a_returning_leg_and_a_crash_resync_everything() {
    let d = Dir::new("nobitmap");
    let mut cfg = config(&d, 2, 4 * MIB);
    cfg.bitmap = false;
    cfg.auto_failback = false;
    let (v, _, _) = open(&cfg);
    write(&v, 0, &pattern(65536, 1)).unwrap();
    assert_eq!(v.status().dirty_regions, 0, "no write-intent bits are kept");
    v.fail_leg(1).unwrap();
    write(&v, 65536, &pattern(65536, 2)).unwrap();
    v.restore_leg(1).unwrap();
    wait_for("full resync", Duration::from_secs(10), || state_name(&v, 1) == "in_sync");
    assert_eq!(v.resync_bytes(), 4 * MIB, "a returning leg gets everything");
    write(&v, 0, &pattern(65536, 3)).unwrap();
    v.abandon(); // a crash
    drop(v);
    let (v, _, _) = open(&cfg);
    assert!(v.wait_resync_idle(Duration::from_secs(20)));
    assert_eq!(v.resync_bytes(), 4 * MIB, "a crash without a bitmap resyncs everything");
    assert_eq!(read(&v, 0, 65536).unwrap(), pattern(65536, 3));
    v.shutdown();
    drop(v);
    assert_eq!(leg_bytes(&cfg, 0), leg_bytes(&cfg, 1));
}

#[test]
fn a_source_request_is_honoured_once_per_token() {
    let d = Dir::new("srconce");
    let mut cfg = config(&d, 2, 4 * MIB);
    cfg.auto_failback = false;
    let (v, _, _) = open(&cfg);
    write(&v, 0, &pattern(4096, 1)).unwrap();
    v.shutdown();
    drop(v);
    // A put-back: leg 0 served alone; leg 1 is rebuilt from it, once.
    cfg.source = Some(0);
    cfg.source_token = "putback-1".into();
    let (v, _, _) = open(&cfg);
    assert!(v.wait_resync_idle(Duration::from_secs(20)));
    assert_eq!(v.resync_bytes(), 4 * MIB);
    v.shutdown();
    drop(v);
    // The request stays in the LUN's configuration: a restart is a plain open.
    let (v, _, _) = open(&cfg);
    assert!(v.wait_resync_idle(Duration::from_secs(20)));
    assert_eq!(v.resync_bytes(), 0, "an honoured request must not rebuild again");
    // Even when leg 0 has failed since, the volume opens (from leg 1).
    v.fail_leg(0).unwrap();
    write(&v, 4096, &pattern(4096, 2)).unwrap();
    v.shutdown();
    drop(v);
    let (v, _, _) = open(&cfg);
    assert_eq!(state_name(&v, 0), "offline");
    assert_eq!(read(&v, 4096, 4096).unwrap(), pattern(4096, 2));
    v.shutdown();
    drop(v);
    // A new put-back (a new token) is honoured again.
    cfg.source = Some(1);
    cfg.source_token = "putback-2".into();
    let (v, _, _) = open(&cfg);
    assert!(v.wait_resync_idle(Duration::from_secs(20)));
    assert_eq!(v.resync_bytes(), 4 * MIB);
    v.shutdown();
    drop(v);
    assert_eq!(leg_bytes(&cfg, 0), leg_bytes(&cfg, 1));
}

/// A rebuild pass that is copying when its leg fails and comes back (auto
/// failback) must end: the leg missed a write behind the pass's cursor, and
/// only a new pass from region 0 copies it. Left to run, the old pass would
/// bring the leg in sync without that write.
#[test]
fn a_leg_that_fails_and_returns_during_a_rebuild_pass_gets_a_new_pass() {
    let d = Dir::new("repass");
    let mut cfg = config(&d, 2, 4 * MIB);
    cfg.failback_delay_ms = 20;
    let (v, faults, _) = open(&cfg);
    v.fail_leg(1).unwrap();
    write(&v, 0, &pattern(4 * MIB as usize, 1)).unwrap(); // every region to copy
                                                          // The pass copies 1 MiB spans: reading the second from leg 0 is slow,
                                                          // and a host write at 0 (after the pass's own copy there) fails on leg 1.
    faults.add(rule("leg=0 op=read range=1048576-2097152 count=1 action=delay ms=600"));
    faults.add(rule("leg=1 op=write range=0-4096 after=1 count=1 action=error errno=5"));
    v.restore_leg(1).unwrap();
    wait_for("the first span copied", Duration::from_secs(10), || v.resync_bytes() >= MIB);
    write(&v, 0, &pattern(4096, 2)).expect("leg 0 stored it");
    assert_eq!(state_name(&v, 1), "faulted", "leg 1 failed the write");
    wait_for("leg 1 back", Duration::from_secs(10), || state_name(&v, 1) != "faulted");
    wait_for("leg 1 in sync", Duration::from_secs(20), || state_name(&v, 1) == "in_sync");
    assert!(v.wait_resync_idle(Duration::from_secs(20)));
    v.shutdown();
    drop(v);
    let (a, b) = (leg_bytes(&cfg, 0), leg_bytes(&cfg, 1));
    assert_eq!(&a[..4096], &pattern(4096, 2)[..]);
    assert!(a[..4096] == b[..4096], "leg 1 was brought in sync without the write it missed");
    assert!(a == b, "legs differ");
}

/// With the default 4 MiB extents, a first write while every leg is in sync
/// marks its whole extent; while a leg is out, a write marks only its own
/// region. The leg's difference resync copies what it may lack: not the
/// regions only an extent's marking set, which no write has touched.
#[test]
fn with_extents_a_returning_leg_still_gets_only_the_regions_it_missed() {
    let d = Dir::new("extents");
    let mut cfg = config(&d, 2, 16 * MIB);
    cfg.bitmap_extent_size = mirror::config::DEFAULT_BITMAP_EXTENT_SIZE;
    cfg.auto_failback = false;
    cfg.bitmap_clear_delay_ms = 60_000;
    let (v, _, _) = open(&cfg);
    write(&v, 4096, &pattern(4096, 1)).unwrap();
    assert_eq!(v.status().dirty_regions, 64, "one write marks its 4 MiB extent of 64 KiB regions");
    v.fail_leg(1).unwrap();
    // Three regions of the second and third extents, none of the first.
    for (i, off) in [4 * MIB, 4 * MIB + 65536, 9 * MIB].into_iter().enumerate() {
        write(&v, off, &pattern(4096, 10 + i as u64)).unwrap();
    }
    assert_eq!(v.status().dirty_regions, 64 + 3, "a leg is out: one bit per written region");
    v.restore_leg(1).unwrap();
    wait_for("resync", Duration::from_secs(20), || state_name(&v, 1) == "in_sync");
    // The region written before the fault (its bit is still set) and the
    // three written while leg 1 was out; not the 63 marked with the first.
    assert_eq!(v.resync_bytes(), 4 * 65536);
    v.shutdown();
    drop(v);
    assert_eq!(leg_bytes(&cfg, 0), leg_bytes(&cfg, 1));
}

/// A region the last in-sync leg cannot read is recorded, reported and
/// retried with back-off; the rest is copied; the leg stays rebuilding (it
/// lacks the region), and a host read there fails as a medium error. Once
/// the region reads again, the retry copies it and the leg comes in sync.
/// Without the record, the rebuild retried the same span at once, forever.
#[test]
fn a_region_the_last_in_sync_leg_cannot_read_is_reported_skipped_and_retried() {
    let d = Dir::new("unreadable");
    let cfg = config(&d, 2, 4 * MIB);
    let (v, faults, events) = open(&cfg);
    v.fail_leg(1).unwrap();
    write(&v, 0, &pattern(4 * MIB as usize, 1)).unwrap(); // every region to copy
    faults.add(rule("leg=0 op=read range=1048576-1052672 action=error errno=5"));
    let fired_before = faults.fired();
    v.restore_leg(1).unwrap();
    let unreadable = |e: &Event| matches!(e, Event::SourceUnreadable { leg: 0, target: 1, .. });
    wait_for("the unreadable region reported", Duration::from_secs(10), || events.count(unreadable) == 1);
    wait_for("the rest copied", Duration::from_secs(10), || v.resync_bytes() == 4 * MIB - 65536);
    std::thread::sleep(Duration::from_millis(500));
    // The 1 MiB span, then its first region alone; the first retry comes after 1 s.
    assert!(
        faults.fired() - fired_before <= 3,
        "the rebuild spins: {} failed reads",
        faults.fired() - fired_before
    );
    assert_eq!(state_name(&v, 1), "rebuilding", "leg 1 lacks a region: it must not be in sync");
    let st = v.status().resync.expect("a rebuild is under way");
    assert_eq!(st.unreadable, vec![(MIB, 65536)]);
    assert!(matches!(read(&v, MIB, 4096), Err(IoError::ReadFailed { .. })), "a medium error for the host");
    assert_eq!(
        read(&v, MIB + 65536, 4096).unwrap(),
        pattern(4 * MIB as usize, 1)[MIB as usize + 65536..][..4096]
    );
    faults.clear();
    wait_for("leg 1 in sync after a retry", Duration::from_secs(10), || state_name(&v, 1) == "in_sync");
    assert_eq!(events.count(unreadable), 1, "reported once");
    v.shutdown();
    drop(v);
    assert!(leg_bytes(&cfg, 0) == leg_bytes(&cfg, 1), "legs differ");
}

/// A restart while a region is unreadable resumes the rebuild at that
/// region: the recorded cursor never passes it, so the leg is not brought in
/// sync without it.
#[test]
fn a_restart_retries_an_unreadable_region_before_the_leg_comes_in_sync() {
    let d = Dir::new("unreadable-restart");
    let mut cfg = config(&d, 2, 4 * MIB);
    // A pass of about 2 s: its 1 s checkpoint comes after the region.
    (cfg.resync_max_mib_s, cfg.resync_min_mib_s) = (2, 1);
    let (v, faults, events) = open(&cfg);
    v.fail_leg(1).unwrap();
    write(&v, 0, &pattern(4 * MIB as usize, 1)).unwrap();
    faults.add(rule("leg=0 op=read range=1048576-1052672 action=error errno=5"));
    v.restore_leg(1).unwrap();
    let unreadable = |e: &Event| matches!(e, Event::SourceUnreadable { .. });
    wait_for("the unreadable region reported", Duration::from_secs(10), || events.count(unreadable) == 1);
    wait_for("the rest copied", Duration::from_secs(10), || v.resync_bytes() == 4 * MIB - 65536);
    v.shutdown();
    drop(v);
    let h = mirror::meta::MetaStore::open(&cfg.metadata).unwrap().header;
    assert!(h.legs[1].rebuild_cursor <= 16, "cursor {} passed region 16", h.legs[1].rebuild_cursor);
    // Reopened without the fault: the region reads again.
    let (v, _, _) = open(&cfg);
    wait_for("leg 1 in sync", Duration::from_secs(10), || state_name(&v, 1) == "in_sync");
    assert!(v.resync_bytes() >= 65536, "the region was copied after the restart");
    v.shutdown();
    drop(v);
    assert!(leg_bytes(&cfg, 0) == leg_bytes(&cfg, 1), "leg 1 came in sync without the unreadable region");
}
