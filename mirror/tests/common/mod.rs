//! Shared set-up for the engine's integration tests: real leg files in a
//! private directory, a volume over them, and blocking wrappers around the
//! asynchronous API.
#![allow(dead_code)]

use mirror::backend::fault::{FaultInjector, Rule};
use mirror::config::InitialSync;
use mirror::{Event, IoError, LegConfig, Volume, VolumeConfig};
use parking_lot::Mutex;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub const MIB: u64 = 1 << 20;

/// A private directory removed when the test ends.
pub struct Dir(pub PathBuf);

impl Dir {
    pub fn new(tag: &str) -> Dir {
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("hm-it-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Dir(p)
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A config for `legs` leg files of `size` bytes in `dir` (created, zeroed).
pub fn config(dir: &Dir, legs: usize, size: u64) -> VolumeConfig {
    let legs = (0..legs)
        .map(|i| {
            let p = dir.path(&format!("leg{i}"));
            if !p.exists() {
                std::fs::File::create(&p).unwrap().set_len(size).unwrap();
            }
            LegConfig { path: p, direct_io: None }
        })
        .collect();
    VolumeConfig {
        name: "test".into(),
        size,
        legs,
        metadata: vec![dir.path("meta0"), dir.path("meta1")],
        region_size: 64 * 1024,
        io_timeout_ms: 300,
        last_leg_grace_ms: 600,
        failback_delay_ms: 50,
        bitmap_clear_delay_ms: 100,
        // One region per extent: tests count copied regions exactly. The
        // extents' own tests set it.
        bitmap_extent_size: 64 * 1024,
        initial_sync: InitialSync::None,
        leg_threads: 4,
        ..VolumeConfig::default()
    }
}

/// Collects events for assertions.
#[derive(Clone, Default)]
pub struct Events(pub Arc<Mutex<Vec<Event>>>);

impl Events {
    pub fn sink(&self) -> mirror::volume::EventSink {
        let e = self.0.clone();
        Arc::new(move |ev: &Event| e.lock().push(ev.clone()))
    }
    pub fn count(&self, f: impl Fn(&Event) -> bool) -> usize {
        self.0.lock().iter().filter(|e| f(e)).count()
    }
}

pub fn open(cfg: &VolumeConfig) -> (Volume, Arc<FaultInjector>, Events) {
    let faults = FaultInjector::new();
    let events = Events::default();
    let v = Volume::open_with_faults(cfg.clone(), events.sink(), faults.clone()).expect("open");
    (v, faults, events)
}

pub fn rule(text: &str) -> Rule {
    Rule::parse(text).unwrap()
}

fn wait<T: Send + 'static>(f: impl FnOnce(Box<dyn FnOnce(T) + Send>)) -> T {
    let (tx, rx) = crossbeam_channel::bounded(1);
    f(Box::new(move |r| drop(tx.send(r))));
    rx.recv_timeout(Duration::from_secs(30)).expect("I/O completed within 30 s")
}

pub fn write(v: &Volume, offset: u64, data: &[u8]) -> Result<(), IoError> {
    let buf: Arc<dyn mirror::HostWriteBuf> = Arc::new(data.to_vec());
    wait(|d| v.write(offset, buf, d))
}

pub fn read(v: &Volume, offset: u64, len: usize) -> Result<Vec<u8>, IoError> {
    let out = Arc::new(Mutex::new(vec![0u8; len]));
    let target = Box::new(Shared(out.clone()));
    wait(|d| v.read(offset, target, d))?;
    let data = out.lock().clone();
    Ok(data)
}

pub fn flush(v: &Volume) -> Result<(), IoError> {
    wait(|d| v.flush(d))
}

pub fn caw(v: &Volume, offset: u64, cmp: &[u8], data: &[u8]) -> Result<(), IoError> {
    let (c, d): (Arc<dyn mirror::HostWriteBuf>, Arc<dyn mirror::HostWriteBuf>) =
        (Arc::new(cmp.to_vec()), Arc::new(data.to_vec()));
    wait(|done| v.compare_and_write(offset, c, d, done))
}

pub fn unmap(v: &Volume, offset: u64, len: u64) -> Result<(), IoError> {
    wait(|d| v.unmap(offset, len, d))
}

pub fn write_same(v: &Volume, offset: u64, len: u64, block: &[u8]) -> Result<(), IoError> {
    let b: Arc<dyn mirror::HostWriteBuf> = Arc::new(block.to_vec());
    wait(|d| v.write_same(offset, len, b, d))
}

struct Shared(Arc<Mutex<Vec<u8>>>);

impl mirror::HostReadBuf for Shared {
    fn len(&self) -> usize {
        self.0.lock().len()
    }
    fn fill_from(&mut self, src: &[u8]) {
        self.0.lock().copy_from_slice(src);
    }
}

/// A small xorshift generator: random tests that replay from their seed.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e3779b97f4a7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

pub fn leg_bytes(cfg: &VolumeConfig, leg: usize) -> Vec<u8> {
    let mut b = std::fs::read(&cfg.legs[leg].path).unwrap();
    b.truncate(cfg.size as usize);
    b
}

pub fn state_name(v: &Volume, leg: usize) -> &'static str {
    v.status().legs[leg].state.name()
}

pub fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let until = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < until {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("timed out waiting for {what}");
}

/// `e` and its sources, as the handler logs them.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s = format!("{s}: {c}");
        cur = c.source();
    }
    s
}

pub fn exists(p: &Path) -> bool {
    p.exists()
}
