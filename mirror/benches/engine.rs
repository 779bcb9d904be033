//! The engine against direct I/O on the same files, in one run, as ratios.
//!
//! Writes: the baseline writes both leg files in parallel directly (the
//! physical limit of a 2-way mirror). A second baseline, "handed off", does
//! the same writes through a thread pool per file, as an engine that must not
//! block its caller has to: the mirror's ratio to it is the engine's own cost.
//! Reads with latency legs: each leg adds a fixed delay per I/O (independent
//! arrays); two balanced legs against one.
//! Write priority: one leg adds 20 ms to every write; latency priority
//! (`write_lag_ms`) against the default redundancy priority.
//! Run: `cargo bench -p hamirror-mirror --bench engine` (HM_BENCH_SECS=N;
//! HM_BENCH_ONLY=TEXT runs only the cases whose name contains TEXT, for
//! profiling one of them; `HM_BENCH_ONLY="fresh LUN"` runs only the
//! comparison of bitmap extents on a fresh LUN).

use mirror::backend::fault::{FaultInjector, Rule};
use mirror::config::{InitialSync, IoEngine};
use mirror::{HostReadBuf, HostWriteBuf, LegConfig, Volume, VolumeConfig};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SIZE: u64 = 256 << 20;

struct Case {
    name: &'static str,
    bs: usize,
    qd: usize,
    write: bool,
    random: bool,
}

const CASES: [Case; 8] = [
    Case { name: "4k randwrite qd1", bs: 4096, qd: 1, write: true, random: true },
    Case { name: "4k randwrite qd32", bs: 4096, qd: 32, write: true, random: true },
    Case { name: "1M seqwrite qd1", bs: 1 << 20, qd: 1, write: true, random: false },
    Case { name: "1M seqwrite qd32", bs: 1 << 20, qd: 32, write: true, random: false },
    Case { name: "4k randread qd1", bs: 4096, qd: 1, write: false, random: true },
    Case { name: "4k randread qd32", bs: 4096, qd: 32, write: false, random: true },
    Case { name: "1M seqread qd1", bs: 1 << 20, qd: 1, write: false, random: false },
    Case { name: "1M seqread qd32", bs: 1 << 20, qd: 32, write: false, random: false },
];

/// `HM_BENCH_ONLY`, if set.
fn only() -> Option<String> {
    std::env::var("HM_BENCH_ONLY").ok().filter(|s| !s.is_empty())
}

fn secs() -> Duration {
    let s = std::env::var("HM_BENCH_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(2.0);
    Duration::from_secs_f64(s)
}

struct Offsets {
    x: u64,
    next_seq: u64,
    bs: u64,
    random: bool,
}

impl Offsets {
    /// Worker `t` of `qd`: its own random stream, or its own stretch of the
    /// file for sequential I/O.
    fn for_worker(t: usize, qd: usize, bs: usize, random: bool) -> Offsets {
        let (t, qd, bs) = (t as u64, qd as u64, bs as u64);
        Offsets { x: 0x9e37 + t * 7919, next_seq: (t * (SIZE / qd)) / bs * bs, bs, random }
    }

    fn next(&mut self) -> u64 {
        if self.random {
            self.x ^= self.x << 13;
            self.x ^= self.x >> 7;
            self.x ^= self.x << 17;
            (self.x % (SIZE / self.bs)) * self.bs
        } else {
            let o = self.next_seq;
            self.next_seq = (self.next_seq + self.bs) % SIZE;
            o
        }
    }
}

/// Runs `qd` workers for the bench time; returns completed I/Os per second.
fn run_qd(qd: usize, op: impl Fn(&mut Offsets) + Sync, bs: usize, random: bool) -> f64 {
    let until = Instant::now() + secs();
    let total = std::sync::atomic::AtomicU64::new(0);
    std::thread::scope(|s| {
        for t in 0..qd {
            let (op, total) = (&op, &total);
            s.spawn(move || {
                let mut o = Offsets::for_worker(t, qd, bs, random);
                let mut n = 0;
                while Instant::now() < until {
                    op(&mut o);
                    n += 1;
                }
                total.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
            });
        }
    });
    total.into_inner() as f64 / secs().as_secs_f64()
}

/// Drives the volume as tcmu-runner does: one thread keeps `qd` commands in
/// flight and submits the next when one completes (completions arrive on the
/// engine's threads). Returns completed I/Os per second.
fn run_async(qd: usize, start: impl Fn(u64, mirror::Done), bs: usize, random: bool) -> f64 {
    let (tx, rx) = crossbeam_channel::unbounded::<()>();
    let mut o = Offsets::for_worker(0, 1, bs, random);
    let submit = |o: &mut Offsets| {
        let tx = tx.clone();
        start(o.next(), Box::new(move |r| r.map(|()| tx.send(()).unwrap()).unwrap()));
    };
    let until = Instant::now() + secs();
    for _ in 0..qd {
        submit(&mut o);
    }
    let (mut outstanding, mut n) = (qd, 0u64);
    while outstanding > 0 {
        rx.recv().unwrap();
        outstanding -= 1;
        n += 1;
        if Instant::now() < until {
            submit(&mut o);
            outstanding += 1;
        }
    }
    n as f64 / secs().as_secs_f64()
}

/// The physical limit of a 2-way mirror: each worker writes leg 0 itself and
/// leg 1 through a companion thread, in parallel, and waits for both.
fn run_qd_pair(qd: usize, files: &[File], data: &[u8], bs: usize, random: bool) -> f64 {
    let (f0, f1) = (&files[0], &files[1]);
    let until = Instant::now() + secs();
    let total = std::sync::atomic::AtomicU64::new(0);
    std::thread::scope(|s| {
        for t in 0..qd {
            let total = &total;
            let (req_tx, req_rx) = crossbeam_channel::bounded::<u64>(1);
            let (ack_tx, ack_rx) = crossbeam_channel::bounded::<()>(1);
            s.spawn(move || {
                while let Ok(off) = req_rx.recv() {
                    f1.write_all_at(data, off).unwrap();
                    ack_tx.send(()).unwrap();
                }
            });
            s.spawn(move || {
                let mut o = Offsets::for_worker(t, qd, bs, random);
                let mut n = 0;
                while Instant::now() < until {
                    let off = o.next();
                    req_tx.send(off).unwrap();
                    f0.write_all_at(data, off).unwrap();
                    ack_rx.recv().unwrap();
                    n += 1;
                }
                total.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
            });
        }
    });
    total.into_inner() as f64 / secs().as_secs_f64()
}

/// The same writes handed off as the engine must hand them off (its caller,
/// tcmu-runner's thread, must never block): one thread keeps `qd` writes in
/// flight, a pool of threads per file writes them, the last file's thread
/// completes the write. Against this, what is left is the engine's own cost,
/// not the hand-offs any non-blocking mirror pays.
fn run_handed_off(qd: usize, files: &[File], data: &[u8], bs: usize, random: bool) -> f64 {
    type Job = (u64, Arc<(std::sync::atomic::AtomicUsize, parking_lot::Mutex<Option<mirror::Done>>)>);
    std::thread::scope(|s| {
        let queues: Vec<crossbeam_channel::Sender<Job>> = files
            .iter()
            .map(|f| {
                let (tx, rx) = crossbeam_channel::unbounded::<Job>();
                for _ in 0..qd {
                    let rx = rx.clone();
                    s.spawn(move || {
                        while let Ok((off, io)) = rx.recv() {
                            f.write_all_at(data, off).unwrap();
                            if io.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel) == 1 {
                                io.1.lock().take().unwrap()(Ok(()));
                            }
                        }
                    });
                }
                tx
            })
            .collect();
        let n = files.len();
        run_async(
            qd,
            |off, done| {
                let io =
                    Arc::new((std::sync::atomic::AtomicUsize::new(n), parking_lot::Mutex::new(Some(done))));
                for q in &queues {
                    q.send((off, io.clone())).unwrap();
                }
            },
            bs,
            random,
        )
    })
}

fn sync_io<T: Send + 'static>(f: impl FnOnce(Box<dyn FnOnce(T) + Send>)) -> T {
    let (tx, rx) = crossbeam_channel::bounded(1);
    f(Box::new(move |r| drop(tx.send(r))));
    rx.recv().unwrap()
}

/// Host data at a page-aligned address, as in the tcmu ring.
struct Aligned(mirror::buf::AlignedBuf);
impl HostWriteBuf for Aligned {
    fn len(&self) -> usize {
        self.0.len()
    }
    fn slices(&self) -> Vec<std::io::IoSlice<'_>> {
        vec![std::io::IoSlice::new(self.0.as_slice())]
    }
}

struct Sink(usize);
impl HostReadBuf for Sink {
    fn len(&self) -> usize {
        self.0
    }
    fn fill_from(&mut self, _src: &[u8]) {}
}

fn legs(dir: &Path) -> Vec<PathBuf> {
    (0..2)
        .map(|i| {
            let p = dir.join(format!("leg{i}"));
            let f = File::create(&p).unwrap();
            f.set_len(SIZE).unwrap();
            // Allocate for real, so reads and writes hit data, not holes.
            let chunk = vec![0x5au8; 1 << 20];
            for o in (0..SIZE).step_by(1 << 20) {
                f.write_all_at(&chunk, o).unwrap();
            }
            f.sync_all().unwrap();
            p
        })
        .collect()
}

fn volume(dir: &Path, paths: &[PathBuf], faults: Option<Arc<FaultInjector>>) -> Volume {
    volume_with(dir, paths, faults, 32, true, false, IoEngine::Auto)
}

/// `leg_threads` bounds how many I/Os a leg serves at once (an array's depth).
fn volume_with(
    dir: &Path,
    paths: &[PathBuf],
    faults: Option<Arc<FaultInjector>>,
    leg_threads: usize,
    bitmap: bool,
    direct: bool,
    io_engine: IoEngine,
) -> Volume {
    let cfg = VolumeConfig { leg_threads, bitmap, io_engine, ..bench_config(dir, paths, direct) };
    open_fresh(dir, cfg, faults)
}

/// The bench's volume over `paths` (`O_DIRECT` if `direct`), with its
/// metadata in `dir`.
fn bench_config(dir: &Path, paths: &[PathBuf], direct: bool) -> VolumeConfig {
    VolumeConfig {
        name: "bench".into(),
        size: SIZE,
        legs: paths.iter().map(|p| LegConfig { path: p.clone(), direct_io: Some(direct) }).collect(),
        metadata: vec![dir.join("meta")],
        initial_sync: InitialSync::None,
        write_cache: true,
        io_timeout_ms: 30_000,
        last_leg_grace_ms: 30_000,
        ..VolumeConfig::default()
    }
}

/// Opens `cfg` over new metadata: every region starts clean.
fn open_fresh(dir: &Path, cfg: VolumeConfig, faults: Option<Arc<FaultInjector>>) -> Volume {
    let _ = std::fs::remove_file(dir.join("meta"));
    let sink: mirror::volume::EventSink = Arc::new(|_| {});
    match faults {
        Some(f) => Volume::open_with_faults(cfg, sink, f).unwrap(),
        None => Volume::open(cfg, sink).unwrap(),
    }
}

fn bench_dir(dir: &Path, label: &str) {
    std::fs::create_dir_all(dir).unwrap();
    let paths = legs(dir);
    let files: Vec<File> =
        paths.iter().map(|p| std::fs::OpenOptions::new().read(true).write(true).open(p).unwrap()).collect();
    println!("\n== {label}: {} (buffered files, no O_DIRECT)", dir.display());
    println!(
        "{:<20} {:>12} {:>12} {:>7}   {:>12} {:>7}",
        "case", "direct IOPS", "mirror IOPS", "ratio", "handed off", "ratio"
    );
    let v = volume(dir, &paths, None);
    for c in CASES.iter().filter(|c| only().is_none_or(|o| c.name.contains(&o))) {
        let data = vec![0xa5u8; c.bs];
        let base = if c.write {
            run_qd_pair(c.qd, &files, &data, c.bs, c.random)
        } else {
            run_qd(
                c.qd,
                |o| {
                    let mut b = vec![0u8; c.bs];
                    files[0].read_exact_at(&mut b, o.next()).unwrap();
                },
                c.bs,
                c.random,
            )
        };
        let buf: Arc<dyn HostWriteBuf> = Arc::new(data.clone());
        let mirror = if c.write {
            run_async(c.qd, |off, d| v.write(off, buf.clone(), d), c.bs, c.random)
        } else {
            run_async(c.qd, |off, d| v.read(off, Box::new(Sink(c.bs)), d), c.bs, c.random)
        };
        if c.write {
            let handed = run_handed_off(c.qd, &files, &data, c.bs, c.random);
            println!(
                "{:<20} {:>12.0} {:>12.0} {:>7.2}   {:>12.0} {:>7.2}",
                c.name,
                base,
                mirror,
                mirror / base,
                handed,
                mirror / handed
            );
        } else {
            println!("{:<20} {:>12.0} {:>12.0} {:>7.2}", c.name, base, mirror, mirror / base);
        }
    }
    if let Some(o) = only() {
        v.shutdown();
        drop(v);
        if COLD.contains(&o) {
            cold_regions(dir, &paths);
        }
        let _ = std::fs::remove_dir_all(dir);
        return;
    }
    // Added latency per 4 KiB I/O at QD1.
    let w = CASES[0].bs;
    let lat = |iops: f64| 1e6 / iops;
    let data = vec![1u8; w];
    let buf: Arc<dyn HostWriteBuf> = Arc::new(data.clone());
    let d = run_qd_pair(1, &files, &data, w, true);
    let m = run_async(1, |off, d| v.write(off, buf.clone(), d), w, true);
    println!("added latency, 4k write qd1: {:.1} us ({:.1} -> {:.1} us)", lat(m) - lat(d), lat(d), lat(m));
    v.shutdown();
    drop(v);

    // Balanced reads over legs that each add 1 ms per I/O.
    let faults = FaultInjector::new();
    faults.add(Rule::parse("op=read action=delay ms=1").unwrap());
    let v = volume_with(dir, &paths, Some(faults), 8, true, false, IoEngine::Auto);
    let two = run_async(32, |off, d| v.read(off, Box::new(Sink(4096)), d), 4096, true);
    v.fail_leg(1).unwrap();
    let one = run_async(32, |off, d| v.read(off, Box::new(Sink(4096)), d), 4096, true);
    println!("4k randread qd32, legs with 1 ms latency and 8 I/Os at once each: one leg {one:.0} IOPS, two legs {two:.0} IOPS, ratio {:.2}", two / one);
    v.shutdown();
    drop(v);
    slow_leg_writes(dir, &paths);
    bitmap_overhead(dir, &paths);
    cold_regions(dir, &paths);
    let _ = std::fs::remove_dir_all(dir);
}

/// 4k random writes at QD1 while leg 1 adds 20 ms to every write: the
/// default (redundancy) waits for it, `write_lag_ms=10` (latency) leaves it
/// behind and acknowledges from leg 0. Leg 1 stands for a slow array, so the
/// legs are `O_DIRECT` and leg 1 serves its writes side by side; buffered
/// file legs would take them one at a time (the file's inode lock), and the
/// leg left behind could then never catch up with the host.
fn slow_leg_writes(dir: &Path, paths: &[PathBuf]) {
    let buf: Arc<dyn HostWriteBuf> = Arc::new(Aligned(mirror::buf::AlignedBuf::from_slice(&[7u8; 4096])));
    let mut iops = Vec::new();
    for lag in [0, 10] {
        let faults = FaultInjector::new();
        faults.add(Rule::parse("leg=1 op=write action=delay ms=20").unwrap());
        let v = volume_with(dir, paths, Some(faults.clone()), 8, true, true, IoEngine::Auto);
        v.retune(&VolumeConfig { write_lag_ms: lag, ..v.config() }).unwrap();
        iops.push(run_async(1, |off, d| v.write(off, buf.clone(), d), 4096, true));
        // The writes still queued for leg 1 run without the delay.
        faults.clear();
        v.shutdown();
    }
    let ms = |iops: f64| 1e3 / iops;
    println!(
        "4k randwrite qd1, leg 1 +20 ms per write: redundancy {:.2} ms, latency (write_lag_ms=10) {:.2} ms per write, ratio {:.2}",
        ms(iops[0]),
        ms(iops[1]),
        iops[1] / iops[0]
    );
}

/// 4k random writes at QD32 with the write-intent bitmap (every region
/// already dirty: warm) against `bitmap = false`, alternating rounds.
fn bitmap_overhead(dir: &Path, paths: &[PathBuf]) {
    let buf: Arc<dyn HostWriteBuf> = Arc::new(vec![3u8; 4096]);
    let mut with = Vec::new();
    let mut without = Vec::new();
    for _ in 0..3 {
        for bitmap in [true, false] {
            let v = volume_with(dir, paths, None, 32, bitmap, false, IoEngine::Auto);
            let warm: Arc<dyn HostWriteBuf> = Arc::new(vec![0u8; 4096]);
            for r in (0..SIZE).step_by(256 * 1024) {
                sync_io(|d| v.write(r, warm.clone(), d)).unwrap();
            }
            let iops = run_async(32, |off, d| v.write(off, buf.clone(), d), 4096, true);
            if bitmap {
                with.push(iops)
            } else {
                without.push(iops)
            }
            v.shutdown();
        }
    }
    let (w, wo) = (median(&mut with), median(&mut without));
    println!(
        "4k randwrite qd32, warm regions: bitmap {w:.0} IOPS, no bitmap {wo:.0} IOPS, overhead {:.1}% (median of 3)",
        (1.0 - w / wo) * 100.0
    );
}

/// 4k random writes at QD1 over a fresh LUN, where most writes find their
/// region clean and wait for a metadata write: bitmap extents of 4 MiB (the
/// default), one region (256 KiB) per extent, and no bitmap. Alternating
/// rounds, median of 3.
const COLD: &str = "4k randwrite qd1, fresh LUN";

fn cold_regions(dir: &Path, paths: &[PathBuf]) {
    let buf: Arc<dyn HostWriteBuf> = Arc::new(vec![4u8; 4096]);
    let setups = [
        ("extents 4 MiB", mirror::config::DEFAULT_BITMAP_EXTENT_SIZE, true),
        ("one region per extent", mirror::config::DEFAULT_REGION_SIZE, true),
        ("no bitmap", mirror::config::DEFAULT_REGION_SIZE, false),
    ];
    let mut iops = vec![Vec::new(); setups.len()];
    for _ in 0..3 {
        for (i, &(_, extent, bitmap)) in setups.iter().enumerate() {
            let cfg = VolumeConfig { bitmap_extent_size: extent, bitmap, ..bench_config(dir, paths, false) };
            let v = open_fresh(dir, cfg, None);
            iops[i].push(run_async(1, |off, d| v.write(off, buf.clone(), d), 4096, true));
            v.shutdown();
        }
    }
    let median: Vec<f64> = iops.iter_mut().map(|v| median(v)).collect();
    let none = median[2];
    let line: Vec<String> = setups
        .iter()
        .zip(&median)
        .map(|((name, _, _), m)| format!("{name} {m:.0} IOPS ({:.2})", m / none))
        .collect();
    println!("{COLD} (ratio to no bitmap): {} (median of 3)", line.join(", "));
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Writes with `O_DIRECT` legs (the product's default), against `O_DIRECT`
/// writes of both files in parallel.
fn bench_direct(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let paths = legs(dir);
    let files: Vec<File> = paths
        .iter()
        .map(|p| {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new().read(true).write(true).custom_flags(libc::O_DIRECT).open(p).unwrap()
        })
        .collect();
    println!("\n== files on disk with O_DIRECT: {}", dir.display());
    println!(
        "{:<20} {:>12} {:>9} {:>6} {:>9} {:>6}   {:>10} {:>6} {:>6}",
        "case", "direct IOPS", "io_uring", "ratio", "threads", "ratio", "handed off", "uring", "thr"
    );
    let cases: Vec<&Case> =
        CASES.iter().filter(|c| c.write && only().is_none_or(|o| c.name.contains(&o))).collect();
    let aligned = |bs: usize| mirror::buf::AlignedBuf::from_slice(&vec![0xa5u8; bs]);
    // Per engine, per case: the mirror's IOPS, with the baseline measured
    // right before it (the disk drifts between rounds).
    let mut rows = vec![Vec::new(); cases.len()];
    let handed_off: Vec<f64> = cases
        .iter()
        .map(|c| run_handed_off(c.qd, &files, aligned(c.bs).as_slice(), c.bs, c.random))
        .collect();
    for engine in [IoEngine::IoUring, IoEngine::Threads] {
        let v = volume_with(dir, &paths, None, 32, true, true, engine);
        for (i, c) in cases.iter().enumerate() {
            let base = run_qd_pair(c.qd, &files, aligned(c.bs).as_slice(), c.bs, c.random);
            let buf: Arc<dyn HostWriteBuf> = Arc::new(Aligned(aligned(c.bs)));
            let m = run_async(c.qd, |off, d| v.write(off, buf.clone(), d), c.bs, c.random);
            rows[i].push((base, m));
        }
        v.shutdown();
        drop(v);
    }
    for ((c, r), h) in cases.iter().zip(rows).zip(handed_off) {
        let (b, u, t) = ((r[0].0 + r[1].0) / 2.0, r[0].1, r[1].1);
        println!(
            "{:<20} {:>12.0} {:>9.0} {:>6.2} {:>9.0} {:>6.2}   {:>10.0} {:>6.2} {:>6.2}",
            c.name,
            b,
            u,
            u / r[0].0,
            t,
            t / r[1].0,
            h,
            u / h,
            t / h
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let pid = std::process::id();
    bench_dir(&std::env::temp_dir().join(format!("hm-bench-{pid}")), "files on disk");
    bench_direct(&std::env::temp_dir().join(format!("hm-bench-direct-{pid}")));
    if Path::new("/dev/shm").is_dir() {
        bench_dir(Path::new(&format!("/dev/shm/hm-bench-{pid}")), "tmpfs (CPU overhead only)");
    }
}
