//! The handler driven through its C callouts, as tcmu-runner would drive it,
//! over real leg files. Faults come from the handler's `fault-injection` build.

use hamirror_harness::{log_lines_with, runner_or_skip, sts, Dev, Legs, Op, Rng, Runner};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;
const BS: u32 = 512;

/// Opens a 2-leg volume over fresh files with `extra` cfgstring settings.
fn open(r: &'static Runner, tag: &str, extra: &str) -> (Legs, Dev) {
    let legs = Legs::new(tag, 2, 8 * MIB);
    let dev = Dev::open(r, &legs.cfgstring(extra), legs.size, BS).expect("open");
    (legs, dev)
}

fn pattern(seed: u64, len: usize) -> Vec<u8> {
    Rng(seed | 1).bytes(len)
}

fn wait_for_log(needle: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if !log_lines_with(needle).is_empty() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn concurrent_scattered_io_lands_byte_for_byte_on_every_leg() {
    let Some(r) = runner_or_skip("concurrent io") else { return };
    let (legs, dev) = open(r, "conc", "");
    const THREADS: u64 = 4;
    let span = legs.size / THREADS;
    let models: Vec<BTreeMap<u64, Vec<u8>>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..THREADS)
            .map(|t| {
                let dev = &dev;
                s.spawn(move || worker(dev, t * span, span, t + 7))
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    assert_eq!(dev.flush(), sts::OK);
    dev.close();
    for model in &models {
        for (&off, block) in model {
            for leg in 0..2 {
                assert_eq!(&legs.leg_bytes(leg, off, block.len()), block, "leg {leg} at {off}");
            }
        }
    }
    assert_eq!(legs.leg_bytes(0, 0, legs.size as usize), legs.leg_bytes(1, 0, legs.size as usize));
    assert_no_double_completion();
}

/// Random writes, reads, flushes, unmaps and compare-and-writes in `[base, base+span)`,
/// checked against a block-by-block model, which it returns.
fn worker(dev: &Dev, base: u64, span: u64, seed: u64) -> BTreeMap<u64, Vec<u8>> {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut model: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    let blocks = span / u64::from(BS);
    for _ in 0..150 {
        let n = 1 + rng.below(64);
        let off = base + rng.below(blocks - n) * u64::from(BS);
        let len = (n * u64::from(BS)) as usize;
        match rng.below(10) {
            0..=4 => {
                let data = rng.bytes(len);
                assert_eq!(dev.write(off, &data, &rng.split()), sts::OK, "write {off}+{len}");
                for (i, b) in data.chunks(BS as usize).enumerate() {
                    model.insert(off + i as u64 * u64::from(BS), b.to_vec());
                }
            }
            5..=7 => {
                let c = dev.read(off, len, &rng.split());
                assert_eq!(c.status, sts::OK, "read {off}+{len}");
                assert_eq!(c.data, expected(&model, off, len), "read {off}+{len} returned other data");
            }
            8 if rng.below(2) == 0 => assert_eq!(dev.flush(), sts::OK),
            8 => unmap_and_learn(dev, &mut model, off, len),
            _ => {
                let off = base + rng.below(blocks) * u64::from(BS);
                let old = expected(&model, off, BS as usize);
                let new = rng.bytes(BS as usize);
                let op = Op::CompareAndWrite { offset: off, compare: &old, data: &new };
                assert_eq!(dev.run(&op, &rng.split()).status, sts::OK, "caw {off}");
                model.insert(off, new);
            }
        }
    }
    model
}

/// Unmaps a range and records what it now reads as: per block, zeroes or
/// the old data (the engine may skip an unmap that some leg cannot do).
fn unmap_and_learn(dev: &Dev, model: &mut BTreeMap<u64, Vec<u8>>, off: u64, len: usize) {
    assert_eq!(
        dev.run(&Op::Unmap { offset: off, len: len as u64 }, &[]).status,
        sts::OK,
        "unmap {off}+{len}"
    );
    let old = expected(model, off, len);
    let now = dev.read(off, len, &[]);
    assert_eq!(now.status, sts::OK);
    for (i, (was, is)) in old.chunks(BS as usize).zip(now.data.chunks(BS as usize)).enumerate() {
        assert!(
            is == was || is.iter().all(|&b| b == 0),
            "unmapped block {i} at {off} is neither old nor zero"
        );
        model.insert(off + i as u64 * u64::from(BS), is.to_vec());
    }
}

fn expected(model: &BTreeMap<u64, Vec<u8>>, off: u64, len: usize) -> Vec<u8> {
    (0..len as u64 / u64::from(BS))
        .flat_map(|i| model.get(&(off + i * u64::from(BS))).cloned().unwrap_or(vec![0; BS as usize]))
        .collect()
}

fn assert_no_double_completion() {
    let n = hamirror_harness::runner::DOUBLE_COMPLETIONS.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(n, 0, "commands completed twice");
}

#[test]
fn a_write_with_one_leg_failing_is_acknowledged_and_stored_on_the_other() {
    let Some(r) = runner_or_skip("one leg failing") else { return };
    let (legs, dev) = open(r, "onefail", ";fault=leg=1 op=write action=error errno=5");
    let data = pattern(1, 64 * 1024);
    assert_eq!(dev.write(4096, &data, &[4096, 100, 7000]), sts::OK);
    assert_eq!(legs.leg_bytes(0, 4096, data.len()), data);
    let faulted = format!("leg 1 ({})", legs.legs[1].display());
    assert!(
        log_lines_with(&faulted).iter().any(|l| l.contains("faulted")),
        "the failing leg was not reported faulted"
    );
    let back = dev.read(4096, data.len(), &[512]);
    assert_eq!((back.status, back.data == data), (sts::OK, true));
    dev.close();
}

#[test]
fn a_write_no_leg_can_store_is_a_write_medium_error() {
    let Some(r) = runner_or_skip("every leg failing") else { return };
    let (_legs, dev) = open(r, "allfail", ";fault=op=write action=error errno=5");
    assert_eq!(dev.write(0, &pattern(2, 4096), &[]), sts::WR_ERR);
    dev.close();
}

#[test]
fn a_read_error_is_served_from_the_other_leg_and_repaired() {
    let Some(r) = runner_or_skip("read repair") else { return };
    let (legs, dev) = open(r, "repair", "");
    let data = pattern(3, 8192);
    assert_eq!(dev.write(MIB, &data, &[]), sts::OK);
    r.control(&format!("fault {} op=read count=1 action=error errno=5", legs.name())).unwrap();
    let back = dev.read(MIB, data.len(), &[1000, 24]);
    assert_eq!(back.status, sts::OK);
    assert_eq!(back.data, data);
    assert!(wait_for_log("repaired from another leg", Duration::from_secs(10)), "no repair logged");
    for leg in 0..2 {
        assert_eq!(legs.leg_bytes(leg, MIB, data.len()), data);
    }
    dev.close();
}

#[test]
fn a_read_no_leg_can_serve_is_a_read_medium_error() {
    let Some(r) = runner_or_skip("read failing everywhere") else { return };
    let (legs, dev) = open(r, "rdfail", "");
    assert_eq!(dev.write(0, &pattern(4, 4096), &[]), sts::OK);
    r.control(&format!("fault {} op=read action=error errno=5", legs.name())).unwrap();
    assert_eq!(dev.read(0, 4096, &[]).status, sts::RD_ERR);
    r.control(&format!("clear {}", legs.name())).unwrap();
    dev.close();
}

#[test]
fn a_miscompare_reports_the_first_differing_byte_and_leaves_the_data_untouched() {
    let Some(r) = runner_or_skip("miscompare") else { return };
    let (legs, dev) = open(r, "miscmp", "");
    let stored = pattern(5, 2048);
    assert_eq!(dev.write(8192, &stored, &[]), sts::OK);
    let mut compare = stored.clone();
    compare[700] ^= 0xFF;
    let new = pattern(6, 2048);
    let c = dev.run(&Op::CompareAndWrite { offset: 8192, compare: &compare, data: &new }, &[300, 2000]);
    assert_eq!(c.status, sts::MISCOMPARE);
    assert_eq!(c.sense_info, Some(700));
    for leg in 0..2 {
        assert_eq!(legs.leg_bytes(leg, 8192, stored.len()), stored, "leg {leg} changed");
    }
    let c = dev.run(&Op::CompareAndWrite { offset: 8192, compare: &stored, data: &new }, &[1]);
    assert_eq!(c.status, sts::OK);
    assert_eq!(legs.leg_bytes(1, 8192, new.len()), new);
    dev.close();
}

#[test]
fn write_same_repeats_the_block_on_every_leg() {
    let Some(r) = runner_or_skip("write same") else { return };
    let (legs, dev) = open(r, "wsame", "");
    let block = pattern(7, BS as usize);
    let c = dev.run(&Op::WriteSame { offset: 3 * MIB, len: 64 * u64::from(BS), block: &block }, &[]);
    assert_eq!(c.status, sts::OK);
    dev.close();
    for leg in 0..2 {
        assert_eq!(legs.leg_bytes(leg, 3 * MIB, 64 * BS as usize), block.repeat(64));
    }
}

#[test]
fn unmap_leaves_the_legs_identical() {
    let Some(r) = runner_or_skip("unmap") else { return };
    let (legs, dev) = open(r, "unmap", "");
    assert_eq!(dev.write(0, &pattern(8, 256 * 1024), &[]), sts::OK);
    assert_eq!(dev.run(&Op::Unmap { offset: 64 * 1024, len: 128 * 1024 }, &[]).status, sts::OK);
    let seen = dev.read(0, 256 * 1024, &[]);
    assert_eq!(seen.status, sts::OK);
    dev.close();
    assert_eq!(legs.leg_bytes(0, 0, 256 * 1024), seen.data);
    assert_eq!(legs.leg_bytes(1, 0, 256 * 1024), seen.data);
}

#[test]
fn a_range_beyond_the_lun_is_refused_as_out_of_range() {
    let Some(r) = runner_or_skip("out of range") else { return };
    let (legs, dev) = open(r, "range", "");
    assert_eq!(dev.read(legs.size - 512, 1024, &[]).status, sts::RANGE);
    assert_eq!(dev.write(legs.size, &[0; 512], &[]), sts::RANGE);
    dev.close();
}

#[test]
fn a_panic_in_a_command_callout_is_a_hardware_error_and_the_lun_carries_on() {
    let Some(r) = runner_or_skip("panic in read") else { return };
    let (legs, dev) = open(r, "panicrd", "");
    r.control(&format!("panic {} read", legs.name())).unwrap();
    assert_eq!(dev.read(0, 4096, &[]).status, sts::HW_ERR);
    assert!(!log_lines_with("panic in the read callout").is_empty());
    r.control(&format!("panic {} none", legs.name())).unwrap();
    assert_eq!(dev.read(0, 4096, &[]).status, sts::OK);
    dev.close();
}

#[test]
fn a_panic_in_open_fails_the_open_without_taking_the_process_down() {
    let Some(r) = runner_or_skip("panic in open") else { return };
    let legs = Legs::new("panicop", 2, 4 * MIB);
    let rc = Dev::open(r, &legs.cfgstring(";fault_panic=open"), legs.size, BS).err();
    assert_eq!(rc, Some(-libc::EIO));
    assert!(!log_lines_with("panic in the open callout").is_empty());
}

#[test]
fn a_panic_in_check_config_is_a_refusal() {
    let Some(r) = runner_or_skip("panic in check_config") else { return };
    let legs = Legs::new("panicck", 2, MIB);
    let why = r.check_config(&legs.cfgstring(";fault_panic=check_config")).unwrap_err();
    assert!(why.contains("internal error"), "{why}");
}

#[test]
fn check_config_accepts_a_good_config_and_says_what_to_fix_in_a_bad_one() {
    let Some(r) = runner_or_skip("check_config") else { return };
    let legs = Legs::new("check", 2, MIB);
    assert_eq!(r.check_config(&legs.cfgstring("")), Ok(()));
    let why = r.check_config("hamirror/leg=/nonexistent/a;leg=/nonexistent/b;meta=/tmp/x.meta").unwrap_err();
    assert_eq!(why, "leg 0 (/nonexistent/a): does not exist; check the path or create the file");
    let why = r.check_config(&legs.cfgstring(";colour=red")).unwrap_err();
    assert!(why.starts_with("unknown key `colour`"), "{why}");
}

#[test]
fn a_bad_cfgstring_fails_open_with_einval_and_changes_nothing() {
    let Some(r) = runner_or_skip("bad cfgstring") else { return };
    let legs = Legs::new("badcfg", 2, MIB);
    let rc = Dev::open(r, &legs.cfgstring(";region_size=3K"), legs.size, BS).err();
    assert_eq!(rc, Some(-libc::EINVAL));
    assert!(!legs.meta.exists(), "a refused open wrote metadata");
}

#[test]
fn open_reports_the_configured_write_cache_and_reconfig_guards_it() {
    let Some(r) = runner_or_skip("write cache") else { return };
    let (_l, plain) = open(r, "wc0", "");
    assert!(!plain.fake().write_cache_enabled());
    assert_eq!(plain.reconfig_write_cache(true), 0, "showing a cache over stable writes is safe");
    plain.close();
    let (_l, cached) = open(r, "wc1", ";write_cache=true");
    assert!(cached.fake().write_cache_enabled());
    assert_eq!(cached.reconfig_write_cache(false), -libc::EOPNOTSUPP);
    cached.close();
}

#[test]
fn reconfig_grows_the_lun_once_the_legs_are_big_enough_and_never_shrinks_it() {
    let Some(r) = runner_or_skip("reconfig size") else { return };
    let (legs, dev) = open(r, "resize", "");
    let (old, new) = (legs.size, legs.size * 2);
    assert_eq!(dev.reconfig_size(old), 0, "the same size is no change");
    let grow_leg =
        |i: usize| std::fs::OpenOptions::new().write(true).open(&legs.legs[i]).unwrap().set_len(new);
    grow_leg(0).unwrap();
    assert_eq!(dev.reconfig_size(new), -libc::EOPNOTSUPP, "leg 1 is still too small");
    assert!(wait_for_log(
        "holds 8388608 bytes and the volume would need 16777216; grow it first",
        Duration::from_secs(5)
    ));
    grow_leg(1).unwrap();
    assert_eq!(dev.reconfig_size(new), 0);
    let data = pattern(21, 8192);
    assert_eq!(dev.write(new - 8192, &data, &[4096]), sts::OK);
    assert_eq!(dev.read(new - 8192, 8192, &[]).data, data);
    assert_eq!(dev.flush(), sts::OK);
    for i in 0..2 {
        assert_eq!(legs.leg_bytes(i, new - 8192, 8192), data, "leg {i} holds the write past the old end");
    }
    assert_eq!(dev.reconfig_size(old), -libc::EOPNOTSUPP);
    assert!(wait_for_log("shrink the filesystem", Duration::from_secs(5)));
    dev.close();
}

#[test]
fn a_new_cfgstring_changes_the_tunables_at_once_and_nothing_else() {
    let Some(r) = runner_or_skip("reconfig cfgstring") else { return };
    let (legs, dev) = open(r, "retune", ";io_timeout_ms=3000");
    assert_eq!(dev.reconfig_cfgstring(&legs.cfgstring(";io_timeout_ms=3000")), 0, "the same settings");
    let tuned = legs.cfgstring(";io_timeout_ms=800;resync_max_mib_s=50;flap_limit=5");
    assert_eq!(dev.reconfig_cfgstring(&tuned), 0);
    assert!(wait_for_log(
        "settings changed: io_timeout_ms, resync_max_mib_s, flap_limit",
        Duration::from_secs(5)
    ));
    // Where data lives cannot change under a running LUN.
    let moved = legs.cfgstring(";io_timeout_ms=800;region_size=1M;bitmap_extent_size=1M;write_cache=true");
    assert_eq!(dev.reconfig_cfgstring(&moved), -libc::EOPNOTSUPP);
    assert!(wait_for_log(
        "region_size, bitmap_extent_size, write_cache cannot change while the LUN is open",
        Duration::from_secs(5)
    ));
    assert_eq!(dev.reconfig_cfgstring(&legs.cfgstring(";io_timeout_ms=5")), -libc::EOPNOTSUPP);
    assert!(wait_for_log("io_timeout_ms", Duration::from_secs(5)));
    assert_eq!(dev.reconfig_cfgstring("hamirror/leg=/nowhere"), -libc::EOPNOTSUPP);
    assert_eq!(dev.write(0, &pattern(3, 4096), &[]), sts::OK, "the LUN serves on");
    dev.close();
}

#[test]
fn two_devices_side_by_side_keep_their_data_apart() {
    let Some(r) = runner_or_skip("two devices") else { return };
    let (la, a) = open(r, "twoa", "");
    let (lb, b) = open(r, "twob", ";direct_io=false");
    let (da, db) = (pattern(9, 128 * 1024), pattern(10, 128 * 1024));
    std::thread::scope(|s| {
        s.spawn(|| assert_eq!(a.write(0, &da, &[4096, 333]), sts::OK));
        s.spawn(|| assert_eq!(b.write(0, &db, &[65536]), sts::OK));
    });
    assert_eq!(a.read(0, da.len(), &[]).data, da);
    assert_eq!(b.read(0, db.len(), &[]).data, db);
    a.close();
    b.close();
    for leg in 0..2 {
        assert_eq!(la.leg_bytes(leg, 0, da.len()), da);
        assert_eq!(lb.leg_bytes(leg, 0, db.len()), db);
    }
}

#[test]
fn data_survives_a_close_and_reopen() {
    let Some(r) = runner_or_skip("reopen") else { return };
    let (legs, dev) = open(r, "reopen", "");
    let data = pattern(11, 32 * 1024);
    assert_eq!(dev.write(5 * MIB, &data, &[]), sts::OK);
    dev.close();
    let dev = Dev::open(r, &legs.cfgstring(""), legs.size, BS).expect("reopen");
    assert_eq!(dev.read(5 * MIB, data.len(), &[]).data, data);
    dev.close();
}

#[test]
fn open_sets_a_nonzero_unmap_alignment_and_offers_unmap_only_where_it_reads_back_zeroes() {
    use std::sync::atomic::Ordering;
    let Some(r) = runner_or_skip("unmap settings") else { return };
    // tcmu-runner 1.5.4 divides by the alignment for WRITE SAME with UNMAP.
    let (_l, plain) = open(r, "um0", "");
    assert_ne!(plain.fake().unmap_gran_align.load(Ordering::SeqCst), 0);
    // Leg files on this file system punch holes that read back zeroes, or
    // not; either way the flag must match what the engine can promise.
    let (_l2, filled) = open(r, "um1", ";unmap_zero_fill=true");
    assert!(filled.fake().unmap_enabled.load(Ordering::SeqCst), "zero fill always reads back zeroes");
    assert_ne!(filled.fake().unmap_gran_align.load(Ordering::SeqCst), 0);
}
