//! Verify (scrub): finds regions where the legs differ and repairs them.

mod common;
use common::*;
use std::os::unix::fs::FileExt;
use std::time::Duration;

fn wait_verify(v: &mirror::Volume) -> mirror::volume::VerifyStatus {
    wait_for("verify", Duration::from_secs(20), || !v.verify_status().running);
    v.verify_status()
}

#[test]
fn verify_reports_a_silently_corrupted_region_and_repairs_it_from_the_chosen_leg() {
    let d = Dir::new("verify");
    let cfg = config(&d, 2, 4 * MIB);
    let (v, _, events) = open(&cfg);
    write(&v, 0, &pattern(4 * MIB as usize, 1)).unwrap();
    // Bit rot on leg 1, behind the engine's back.
    let f = std::fs::OpenOptions::new().write(true).open(&cfg.legs[1].path).unwrap();
    f.write_all_at(b"rot", 3 * 65536 + 100).unwrap();
    f.sync_all().unwrap();

    v.verify_start(None).unwrap();
    let s = wait_verify(&v);
    assert_eq!((s.mismatched_regions, s.repaired_regions), (1, 0));
    assert_eq!(s.mismatched_offsets, vec![3 * 65536]);
    assert_eq!(s.done_bytes, 4 * MIB);

    v.verify_start(Some(0)).unwrap();
    assert_eq!(wait_verify(&v).repaired_regions, 1);
    assert_eq!(events.count(|e| matches!(e, mirror::Event::VerifyFinished { .. })), 2);
    v.shutdown();
    drop(v);
    assert_eq!(leg_bytes(&cfg, 0), leg_bytes(&cfg, 1));
}

#[test]
fn verify_needs_two_in_sync_legs_and_a_good_source() {
    let d = Dir::new("verify2");
    let mut cfg = config(&d, 2, MIB);
    cfg.auto_failback = false;
    let (v, _, _) = open(&cfg);
    v.fail_leg(1).unwrap();
    assert_eq!(v.verify_start(None), Err(mirror::volume::VerifyError::NothingToCompare));
    v.restore_leg(1).unwrap();
    wait_for("resync", Duration::from_secs(10), || state_name(&v, 1) == "in_sync");
    assert_eq!(v.verify_start(Some(5)), Err(mirror::volume::VerifyError::BadSource(5)));
    v.shutdown();
}
