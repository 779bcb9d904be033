//! Changing a running volume's settings (a new cfgstring through reconfig).

mod common;
use common::*;
use mirror::volume::RetuneError;
use mirror::{FaultReason, LegState, VolumeConfig};
use std::time::{Duration, Instant};

#[test]
fn a_shorter_io_timeout_takes_effect_at_once() {
    let d = Dir::new("retune-timeout");
    let mut cfg = config(&d, 2, 4 * MIB);
    (cfg.io_timeout_ms, cfg.last_leg_grace_ms) = (20_000, 20_000);
    let (v, faults, _) = open(&cfg);
    let fast = VolumeConfig { io_timeout_ms: 300, ..cfg.clone() };
    assert_eq!(v.retune(&fast).unwrap(), vec!["io_timeout_ms"]);
    assert_eq!(v.config().io_timeout_ms, 300);
    faults.add(rule("leg=1 action=hang"));
    let t0 = Instant::now();
    write(&v, 0, &pattern(4096, 1)).expect("completes from leg 0");
    assert!(t0.elapsed() < Duration::from_secs(3), "the old 20 s deadline held: {:?}", t0.elapsed());
    let state = v.status().legs[1].state.clone();
    assert_eq!(state, LegState::Faulted(FaultReason::Timeout { ms: 300 }));
    faults.clear();
    faults.release_hangs();
    v.shutdown();
}

#[test]
fn settings_that_decide_where_data_lives_are_refused_and_nothing_changes() {
    let d = Dir::new("retune-fixed");
    let cfg = config(&d, 2, 4 * MIB);
    let (v, _, _) = open(&cfg);
    let mut other =
        VolumeConfig { region_size: 1 << 20, write_cache: true, io_timeout_ms: 299, ..cfg.clone() };
    other.legs.swap(0, 1);
    let err = v.retune(&other).unwrap_err();
    assert_eq!(err, RetuneError::Fixed { keys: vec!["leg", "region_size", "write_cache"] });
    assert!(err.to_string().starts_with("leg, region_size, write_cache cannot change while the LUN is open"));
    assert_eq!(v.config().io_timeout_ms, cfg.io_timeout_ms, "not even the tunables changed");
    let bad = VolumeConfig { resync_min_mib_s: 50, resync_max_mib_s: 10, ..cfg.clone() };
    assert!(matches!(v.retune(&bad), Err(RetuneError::Invalid(_))));
    let bigger = VolumeConfig { size: 64 * MIB, ..cfg.clone() };
    assert_eq!(v.retune(&bigger).unwrap(), Vec::<&str>::new(), "the size is the LUN's, not the config's");
    assert_eq!(v.size(), 4 * MIB);
    v.shutdown();
}
