//! Resync figures, each against a baseline measured in the same run:
//! - difference resync time for X MiB dirtied on two LUN sizes (it must
//!   scale with X, not with the LUN);
//! - idle full rebuild throughput against a plain sequential copy of the
//!   same leg (target >= 0.9);
//! - host 4k random-write IOPS during a rebuild at the default floor,
//!   against the same load with no rebuild (target >= 0.7).
//!
//! Run: `cargo bench -p hamirror-mirror --bench resync`.

use mirror::config::InitialSync;
use mirror::{HostWriteBuf, LegConfig, Volume, VolumeConfig};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;

fn make_legs(dir: &Path, size: u64, fill: bool) -> Vec<PathBuf> {
    std::fs::create_dir_all(dir).unwrap();
    (0..2)
        .map(|i| {
            let p = dir.join(format!("leg{i}"));
            let f = File::create(&p).unwrap();
            f.set_len(size).unwrap();
            if fill {
                let chunk = vec![0x33u8 + i as u8; MIB as usize];
                for o in (0..size).step_by(MIB as usize) {
                    f.write_all_at(&chunk, o).unwrap();
                }
                f.sync_all().unwrap();
            }
            p
        })
        .collect()
}

fn config(dir: &Path, legs: &[PathBuf], size: u64, initial: InitialSync) -> VolumeConfig {
    let _ = std::fs::remove_file(dir.join("meta"));
    VolumeConfig {
        name: "bench".into(),
        size,
        legs: legs.iter().map(|p| LegConfig { path: p.clone(), direct_io: Some(false) }).collect(),
        metadata: vec![dir.join("meta")],
        initial_sync: initial,
        auto_failback: false,
        write_cache: true,
        ..VolumeConfig::default()
    }
}

fn sink() -> mirror::volume::EventSink {
    Arc::new(|_| {})
}

fn write(v: &Volume, off: u64, buf: &Arc<dyn HostWriteBuf>) {
    let (tx, rx) = crossbeam_channel::bounded(1);
    v.write(off, buf.clone(), Box::new(move |r| drop(tx.send(r))));
    rx.recv().unwrap().unwrap();
}

fn wait_in_sync(v: &Volume) -> Duration {
    let t0 = Instant::now();
    while !v.status().legs.iter().all(|l| l.state.is_in_sync()) {
        std::thread::sleep(Duration::from_millis(2));
    }
    t0.elapsed()
}

/// Dirties `dirty` MiB in 64 KiB writes spread over the LUN, then times the
/// difference resync.
fn difference(dir: &Path, lun: u64, dirty: u64) -> (Duration, u64) {
    let legs = make_legs(dir, lun, false);
    let v = Volume::open(config(dir, &legs, lun, InitialSync::None), sink()).unwrap();
    v.fail_leg(1).unwrap();
    let buf: Arc<dyn HostWriteBuf> = Arc::new(vec![7u8; 65536]);
    let n = dirty * MIB / 65536;
    let stride = lun / n;
    for i in 0..n {
        write(&v, i * stride / 65536 * 65536, &buf);
    }
    let before = v.resync_bytes();
    v.restore_leg(1).unwrap();
    let t = wait_in_sync(&v);
    let copied = v.resync_bytes() - before;
    v.shutdown();
    drop(v);
    let _ = std::fs::remove_dir_all(dir);
    (t, copied)
}

fn full_rebuild_vs_copy(dir: &Path, size: u64) {
    let legs = make_legs(dir, size, true);
    // Baseline: a plain sequential copy of leg 0 onto leg 1, region-sized
    // chunks, then a flush.
    let (a, b) =
        (File::open(&legs[0]).unwrap(), std::fs::OpenOptions::new().write(true).open(&legs[1]).unwrap());
    let mut chunk = vec![0u8; 256 * 1024];
    let t0 = Instant::now();
    for o in (0..size).step_by(chunk.len()) {
        a.read_exact_at(&mut chunk, o).unwrap();
        b.write_all_at(&chunk, o).unwrap();
    }
    b.sync_data().unwrap();
    let copy = t0.elapsed();
    let t0 = Instant::now();
    let v = Volume::open(config(dir, &legs, size, InitialSync::Full), sink()).unwrap();
    assert!(v.wait_resync_idle(Duration::from_secs(600)));
    let rebuild = t0.elapsed();
    v.shutdown();
    drop(v);
    let mb = |d: Duration| size as f64 / MIB as f64 / d.as_secs_f64();
    println!(
        "idle full rebuild of {} MiB: plain copy {:.0} MiB/s, rebuild {:.0} MiB/s, ratio {:.2}",
        size / MIB,
        mb(copy),
        mb(rebuild),
        mb(rebuild) / mb(copy)
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// 4k random writes from 8 threads for `secs`; IOPS.
fn host_load(v: &Volume, size: u64, secs: f64) -> f64 {
    let until = Instant::now() + Duration::from_secs_f64(secs);
    let total = std::sync::atomic::AtomicU64::new(0);
    std::thread::scope(|s| {
        for t in 0..8u64 {
            let total = &total;
            s.spawn(move || {
                let buf: Arc<dyn HostWriteBuf> = Arc::new(vec![t as u8; 4096]);
                let mut x = 0x9e3779b97f4a7c15u64 ^ t;
                let mut n = 0;
                while Instant::now() < until {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    write(v, (x % (size / 4096)) * 4096, &buf);
                    n += 1;
                }
                total.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
            });
        }
    });
    total.into_inner() as f64 / secs
}

fn host_during_rebuild(dir: &Path, size: u64) {
    let legs = make_legs(dir, size, true);
    let v = Volume::open(config(dir, &legs, size, InitialSync::None), sink()).unwrap();
    let quiet = host_load(&v, size, 3.0);
    v.shutdown();
    drop(v);
    let v = Volume::open(config(dir, &legs, size, InitialSync::Full), sink()).unwrap();
    // The other direction: leg 1 is rebuilt from leg 0 while the host writes.
    let busy = host_load(&v, size, 3.0);
    let st = v.status();
    let rebuilding = st.resync.is_some();
    v.shutdown();
    drop(v);
    println!(
        "host 4k randwrite (8 threads): {quiet:.0} IOPS alone, {busy:.0} IOPS during a full rebuild \
         (default floor {} MiB/s{}), ratio {:.2}",
        VolumeConfig::default().resync_min_mib_s,
        if rebuilding { "" } else { "; the rebuild finished early" },
        busy / quiet
    );
    let _ = std::fs::remove_dir_all(dir);
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let base = std::env::temp_dir().join(format!("hm-bench-resync-{}", std::process::id()));
    println!("== difference resync: time scales with the dirty data, not the LUN");
    for lun_gib in [1u64, 8] {
        for dirty in [16u64, 64] {
            let (t, copied) = difference(&base.join(format!("d{lun_gib}-{dirty}")), lun_gib << 30, dirty);
            println!(
                "LUN {lun_gib} GiB, {dirty} MiB dirtied: copied {} MiB in {:.2} s",
                copied / MIB,
                t.as_secs_f64()
            );
        }
    }
    println!("== full rebuild and host I/O");
    full_rebuild_vs_copy(&base.join("full"), 512 * MIB);
    host_during_rebuild(&base.join("host"), 512 * MIB);
    let _ = std::fs::remove_dir_all(&base);
}
