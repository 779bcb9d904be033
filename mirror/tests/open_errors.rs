//! Bad input is refused at open with a message naming what to fix, and
//! nothing on any leg or metadata file changes (invariant 7).

mod common;
use common::*;
use mirror::{OpenError, Volume, VolumeConfig};

fn refuse(cfg: &VolumeConfig) -> OpenError {
    Volume::open(cfg.clone(), Events::default().sink()).err().expect("open must be refused")
}

fn snapshot(cfg: &VolumeConfig) -> Vec<Option<Vec<u8>>> {
    cfg.legs.iter().map(|l| &l.path).chain(&cfg.metadata).map(|p| std::fs::read(p).ok()).collect()
}

#[test]
fn a_missing_leg_is_named() {
    let d = Dir::new("missing");
    let mut cfg = config(&d, 2, MIB);
    cfg.legs[1].path = d.path("nope");
    let before = snapshot(&cfg);
    let e = refuse(&cfg);
    assert!(matches!(e, OpenError::LegMissing { leg: 1, .. }), "{e}");
    assert!(e.to_string().contains("leg 1"), "{e}");
    assert_eq!(snapshot(&cfg), before);
}

#[test]
fn a_leg_smaller_than_the_volume_is_refused() {
    let d = Dir::new("small");
    let cfg = config(&d, 2, MIB);
    std::fs::File::create(&cfg.legs[0].path).unwrap().set_len(MIB / 2).unwrap();
    let e = refuse(&cfg);
    assert!(matches!(e, OpenError::LegTooSmall { leg: 0, .. }), "{e}");
    assert!(e.to_string().contains("smaller than the volume"), "{e}");
}

#[test]
fn a_leg_listed_twice_is_refused() {
    let d = Dir::new("dup");
    let mut cfg = config(&d, 2, MIB);
    cfg.legs[1].path = cfg.legs[0].path.clone();
    let e = refuse(&cfg);
    assert!(matches!(e, OpenError::LegDuplicate { leg: 1, other: 0, .. }), "{e}");
}

#[test]
fn a_leg_in_use_by_another_volume_is_refused() {
    let d = Dir::new("busy");
    let cfg = config(&d, 2, MIB);
    let (v, _, _) = open(&cfg);
    let mut other = config(&d, 2, MIB);
    other.metadata = vec![d.path("other-meta")];
    let e = refuse(&other);
    assert!(matches!(e, OpenError::LegBusy { .. }), "{e}");
    v.shutdown();
    drop(v);
}

#[test]
fn a_directory_is_not_a_leg() {
    let d = Dir::new("dir");
    let mut cfg = config(&d, 2, MIB);
    cfg.legs[1].path = d.0.clone();
    assert!(matches!(refuse(&cfg), OpenError::LegNotStorage { leg: 1, .. }));
}

#[test]
fn metadata_of_another_volume_is_refused_untouched() {
    let d = Dir::new("foreign");
    let cfg_a = config(&d, 2, MIB);
    let (v, _, _) = open(&cfg_a);
    v.shutdown();
    drop(v);
    let d2 = Dir::new("foreign2");
    let mut cfg_b = config(&d2, 2, MIB);
    cfg_b.metadata = cfg_a.metadata.clone();
    let before = snapshot(&cfg_b);
    let e = refuse(&cfg_b);
    assert!(e.to_string().contains("another volume"), "{e}");
    assert_eq!(snapshot(&cfg_b), before);
}

#[test]
fn a_leg_whose_identity_changed_is_refused() {
    let d = Dir::new("ident");
    let cfg = config(&d, 2, MIB);
    let (v, _, _) = open(&cfg);
    v.shutdown();
    drop(v);
    // Another file now sits at leg 1's path.
    // (Created before the old one goes, so the inode number differs.)
    let new = d.path("replacement");
    std::fs::File::create(&new).unwrap().set_len(MIB).unwrap();
    std::fs::rename(&new, &cfg.legs[1].path).unwrap();
    let e = refuse(&cfg);
    assert!(e.to_string().contains("not the storage the metadata records"), "{e}");
}

#[test]
fn a_metadata_file_that_is_also_a_leg_is_refused() {
    let d = Dir::new("metaleg");
    let mut cfg = config(&d, 2, MIB);
    cfg.metadata = vec![cfg.legs[0].path.clone()];
    assert!(matches!(refuse(&cfg), OpenError::MetadataIsLeg { .. }));
}

#[test]
fn two_volumes_cannot_share_metadata() {
    let d = Dir::new("metalock");
    let cfg = config(&d, 2, MIB);
    let (v, _, _) = open(&cfg);
    let d2 = Dir::new("metalock2");
    let mut other = config(&d2, 2, MIB);
    other.metadata = cfg.metadata.clone();
    let e = chain(&refuse(&other));
    assert!(e.starts_with("metadata: ") && e.contains("in use"), "{e}");
    assert_eq!(e.matches("in use").count(), 1, "the cause is told once: {e}");
    v.shutdown();
    drop(v);
}

mod preflight {
    use super::*;
    use mirror::volume::preflight;

    fn without_size(cfg: &VolumeConfig) -> VolumeConfig {
        VolumeConfig { size: 0, ..cfg.clone() }
    }

    #[test]
    fn a_good_new_config_passes_and_creates_nothing() {
        let d = Dir::new("pf-ok");
        let cfg = config(&d, 2, MIB);
        preflight(&without_size(&cfg)).unwrap();
        assert!(!cfg.metadata[0].exists(), "preflight must not create metadata");
    }

    #[test]
    fn duplicates_missing_legs_and_foreign_metadata_are_caught_before_open() {
        let d = Dir::new("pf-bad");
        let cfg = config(&d, 2, MIB);
        let mut dup = cfg.clone();
        dup.legs[1].path = dup.legs[0].path.clone();
        assert!(matches!(preflight(&dup), Err(OpenError::LegDuplicate { leg: 1, .. })));
        let mut missing = cfg.clone();
        missing.legs[0].path = d.path("absent");
        assert!(matches!(preflight(&missing), Err(OpenError::LegMissing { leg: 0, .. })));

        let (v, _, _) = open(&cfg);
        v.shutdown();
        drop(v);
        let d2 = Dir::new("pf-bad2");
        let mut foreign = config(&d2, 2, MIB);
        foreign.metadata = cfg.metadata.clone();
        let e = preflight(&without_size(&foreign)).unwrap_err();
        assert!(e.to_string().contains("another volume"), "{e}");
        // The volume's own config still passes, while it is closed or open.
        preflight(&without_size(&cfg)).unwrap();
    }
}

/// When the only leg recorded in sync is gone, the volume does not open
/// from a stale leg: the error names the leg, why it is out, and what to
/// do (and no option that does not exist).
#[test]
fn with_the_only_in_sync_leg_gone_the_error_names_it() {
    let d = Dir::new("untrusted");
    let cfg = config(&d, 2, MIB);
    let v = Volume::open(cfg.clone(), Events::default().sink()).unwrap();
    v.fail_leg(1).unwrap();
    v.shutdown();
    drop(v);
    std::fs::rename(&cfg.legs[0].path, d.path("away")).unwrap();
    let before = snapshot(&cfg);
    let e = refuse(&cfg);
    assert!(matches!(e, OpenError::NoTrustedLeg { .. }), "{e}");
    let msg = e.to_string();
    assert!(msg.contains("leg 0 (") && msg.contains("is recorded in sync but cannot be opened"), "{msg}");
    assert!(msg.contains("bring that storage back") && !msg.contains("--force-source"), "{msg}");
    assert_eq!(snapshot(&cfg), before);
}
