//! A real two-leg volume on files in a private temporary directory, served on
//! a control socket in that same directory.
#![allow(dead_code)]

use hamirror_ctl::proto::Response;
use hamirror_ctl::{serve_with, ControlServer, Options};
use mirror::config::InitialSync;
use mirror::{LegConfig, Volume, VolumeConfig};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const SIZE: u64 = 4 << 20;
pub const NAME: &str = "vol0";

pub struct Fixture {
    pub dir: PathBuf,
    pub volume: Volume,
    pub server: Option<ControlServer>,
}

/// A fresh directory, unique to this process and call, short enough for a socket path.
pub fn temp_dir() -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("hmctl-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn open_volume(dir: &Path, name: &str) -> Volume {
    let mut legs = Vec::new();
    for i in 0..2 {
        let path = dir.join(format!("{name}-leg{i}"));
        std::fs::File::create(&path).unwrap().set_len(SIZE).unwrap();
        legs.push(LegConfig { path, direct_io: None });
    }
    let cfg = VolumeConfig {
        name: name.to_string(),
        size: SIZE,
        legs,
        metadata: vec![dir.join(format!("{name}-meta"))],
        initial_sync: InitialSync::None,
        direct_io: false,
        ..Default::default()
    };
    Volume::open(cfg, Arc::new(|_: &mirror::Event| {})).expect("open the test volume")
}

impl Fixture {
    pub fn new() -> Fixture {
        Fixture::with(|_| {})
    }

    /// With the server options adjusted by `tweak`.
    pub fn with(tweak: impl FnOnce(&mut Options)) -> Fixture {
        let dir = temp_dir();
        let volume = open_volume(&dir, NAME);
        let mut opts = Options { dir: dir.clone(), ..Options::default() };
        tweak(&mut opts);
        let server = serve_with(NAME, volume.clone(), opts).expect("serve the test volume");
        Fixture { dir, volume, server: Some(server) }
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join(format!("{NAME}.sock"))
    }

    /// Runs `hamirrorctl args...` against this fixture's run directory.
    pub fn ctl(&self, args: &[&str]) -> Output {
        ctl_in(&self.dir, args)
    }

    /// Sends raw bytes on a fresh connection and reads one response line.
    pub fn raw(&self, bytes: &[u8]) -> Response {
        let mut s = UnixStream::connect(self.socket()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = s.write_all(bytes);
        read_response(&mut BufReader::new(s))
    }

    /// A host write through the engine, waited for.
    pub fn write(&self, offset: u64, data: Vec<u8>) {
        let (tx, rx) = std::sync::mpsc::channel();
        self.volume.write(offset, Arc::new(data), Box::new(move |r| drop(tx.send(r))));
        rx.recv().unwrap().expect("host write");
    }

    /// Takes leg 1 out, writes `regions` regions, pauses resync and
    /// restores leg 1: a difference resync that waits, visible in status.
    pub fn paused_difference_resync(&self, regions: u64) {
        assert_eq!(self.ctl(&["fail", NAME, "1"]).status.code(), Some(0));
        let region = self.volume.status().region_size;
        for r in 0..regions {
            self.write(r * region, vec![0x5a; 4096]);
        }
        assert_eq!(self.ctl(&["resync", NAME, "pause"]).status.code(), Some(0));
        assert_eq!(self.ctl(&["restore", NAME, "1"]).status.code(), Some(0));
        assert!(wait_for(10, || self.volume.status().resync.is_some()), "no resync started");
    }

    /// The contents of leg `i`'s file.
    pub fn leg_bytes(&self, i: usize) -> Vec<u8> {
        std::fs::read(self.dir.join(format!("{NAME}-leg{i}"))).unwrap()
    }

    /// The engine's own view of leg `i`'s state.
    pub fn leg_state(&self, i: usize) -> String {
        self.volume.status().legs[i].state.name().to_string()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Some(mut s) = self.server.take() {
            s.stop();
        }
        self.volume.shutdown();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn ctl_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hamirrorctl"))
        .args(args)
        .env("HAMIRROR_RUN_DIR", dir)
        .output()
        .expect("run hamirrorctl")
}

pub fn read_response(r: &mut impl BufRead) -> Response {
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad response {line:?}: {e}"))
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts the exit code, showing the output if it differs.
pub fn assert_exit(o: &Output, code: i32) {
    assert_eq!(o.status.code(), Some(code), "stdout:\n{}\nstderr:\n{}", stdout(o), stderr(o));
}

/// Waits up to `secs` for `cond`.
pub fn wait_for(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}
