//! The handler proper: tcmu-runner's callouts carried out by a [`Volume`].

use crate::bufs::{HostRead, HostWrite};
use crate::config::{ConfigError, HandlerConfig, SUBTYPE};
use crate::status;
use hamirror_ffi::{Cmd, Device, Errno, Handler, HandlerInfo, IoVecs, Reconfig, RegisterError, Status};
use log::{Level, LevelFilter};
use mirror::volume::EventSink;
use mirror::{Done, Event, IoError, OpenError, Volume};
use std::error::Error;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::testing::{self, TestState};

/// What targetcli shows an administrator creating a `user:hamirror` backstore.
pub const CFG_DESC: &str =
    "leg=/dev/A;leg=/dev/B[;leg=...];meta=/var/lib/hamirror/NAME.meta[;meta=/other/NAME.meta]\
[;name=NAME][;io_timeout_ms=5000][;write_cache=false][;region_size=256K][;source=N]... \
(no commas: LIO splits the string there) or the absolute path of a TOML file with the same keys \
[;source=N]. At most 246 characters; size and block size come from the backstore.";

/// The hamirror handler (one per process).
pub struct Hamirror;

/// Registers the handler with tcmu-runner (called by `handler_init`).
pub fn init() -> Result<(), RegisterError> {
    hamirror_ffi::log::init(LevelFilter::Info);
    let info =
        HandlerInfo { name: "hamirror: synchronous N-way mirror", subtype: SUBTYPE, cfg_desc: CFG_DESC };
    hamirror_ffi::register(Hamirror, info)
}

/// One open LUN. Dropping it shuts the volume down cleanly.
pub struct Lun {
    volume: Volume,
    name: Arc<str>,
    /// `/run/hamirror/NAME.sock` for hamirrorctl; stopped before the volume
    /// shuts down, so that its handle on the volume goes first.
    control: Option<hamirror_ctl::ControlServer>,
    test: Arc<TestState>,
}

impl Drop for Lun {
    fn drop(&mut self) {
        if let Some(mut c) = self.control.take() {
            c.stop();
        }
        self.volume.shutdown();
        testing::unregister(&self.name);
        log::info!("{}: closed", self.name);
    }
}

/// Why a LUN could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenLunError {
    #[error("bad configuration")]
    Config(#[from] ConfigError),
    #[error("the LUN's size ({lbas} blocks of {block_size} bytes) does not fit in 64 bits")]
    Size { lbas: u64, block_size: u32 },
    #[error("cannot open volume {name}")]
    Engine {
        name: String,
        #[source]
        source: OpenError,
    },
}

impl OpenLunError {
    fn errno(&self) -> Errno {
        match self {
            OpenLunError::Config(_) | OpenLunError::Size { .. } => Errno::EINVAL,
            OpenLunError::Engine { source: OpenError::LegBusy { .. }, .. } => Errno(libc::EBUSY),
            OpenLunError::Engine { source: OpenError::LegMissing { .. }, .. } => Errno(libc::ENOENT),
            OpenLunError::Engine { .. } => Errno::EIO,
        }
    }
}

/// `e` and its sources, as one line.
pub fn chain(e: &dyn Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Parses a cfgstring and checks what can be checked without the LUN's size
/// and without changing anything (the engine's preflight): legs exist, are
/// storage and distinct; existing metadata belongs to these legs. The reason
/// names what to fix. Leg sizes and locks are checked at open.
pub fn check_config(cfgstring: &str) -> Result<(), String> {
    let cfg = HandlerConfig::parse(cfgstring).map_err(|e| chain(&e))?;
    testing::maybe_panic(&cfg.test, Callout::CheckConfig);
    mirror::volume::preflight(&cfg.volume).map_err(|e| chain(&e))
}

fn open_lun(dev: &Device<'_>, reopen: bool) -> Result<Lun, OpenLunError> {
    let cfg = HandlerConfig::parse(&dev.cfgstring())?;
    testing::maybe_panic(&cfg.test, Callout::Open);
    let (lbas, block_size) = (dev.num_lbas(), dev.block_size());
    let size = dev.size_bytes().ok_or(OpenLunError::Size { lbas, block_size })?;
    let volume_cfg = cfg.for_device(size, block_size)?;
    let name: Arc<str> = volume_cfg.name.as_str().into();
    let write_cache = volume_cfg.write_cache;
    let test = TestState::new(&cfg.test);
    let volume = test
        .open(volume_cfg, event_sink(name.clone()))
        .map_err(|source| OpenLunError::Engine { name: name.to_string(), source })?;
    dev.set_write_cache_enabled(write_cache);
    // Never 0: tcmu-runner 1.5.4 divides by it (see Device::set_unmap_gran_align).
    dev.set_unmap_gran_align(1);
    // tcmu-runner reports LBPRZ=1: offer UNMAP only if it reads back zeroes.
    let unmap = volume.unmap_zeroes();
    dev.set_unmap_enabled(unmap);
    testing::register(&name, test.clone());
    log::info!(
        "{name}: {} ({size} bytes, write cache {}, unmap {})",
        if reopen { "reopened" } else { "opened" },
        on(write_cache),
        if unmap {
            "on (reads back zeroes)"
        } else {
            "off (a leg cannot discard to zeroes; see unmap_zero_fill)"
        }
    );
    // The LUN serves even if its control socket cannot be made; say so.
    let control = match hamirror_ctl::serve(&name, volume.clone()) {
        Ok(c) => Some(c),
        Err(e) => {
            log::error!("{name}: no control socket, hamirrorctl cannot reach this volume: {e}");
            None
        }
    };
    Ok(Lun { volume, name, control, test })
}

fn on(b: bool) -> &'static str {
    if b {
        "on"
    } else {
        "off"
    }
}

/// Logs the engine's events under the volume's name.
fn event_sink(name: Arc<str>) -> EventSink {
    Arc::new(move |e: &Event| log::log!(event_level(e), "{name}: {e}"))
}

fn event_level(e: &Event) -> Level {
    match e {
        Event::LegStateChanged { .. }
        | Event::LastLegSlow { .. }
        | Event::LegLagging { .. }
        | Event::ReadRepaired { .. } => Level::Warn,
        Event::ResyncFailed { .. } | Event::MetadataCopyLost { .. } | Event::SourceUnreadable { .. } => {
            Level::Error
        }
        Event::ResyncStarted { .. }
        | Event::ResyncFinished { .. }
        | Event::MetadataCopyRepaired { .. }
        | Event::VerifyFinished { .. }
        | Event::Resized { .. } => Level::Info,
    }
}

/// Completes `cmd` with the engine's result; failures are logged here, once.
fn completion(cmd: Cmd, name: Arc<str>, what: &'static str) -> Done {
    Box::new(move |result: Result<(), IoError>| match result {
        Ok(()) => cmd.complete(Status::Ok),
        Err(e) => fail(cmd, &name, what, &e),
    })
}

fn fail(cmd: Cmd, name: &str, what: &str, e: &IoError) {
    let out = status::outcome(e);
    log::log!(status::level(e), "{name}: {what} failed ({:?}): {}", out.status, chain(e));
    match out.info {
        Some(info) => cmd.complete_with_info(out.status, info),
        None => cmd.complete(out.status),
    }
}

/// A read's completion also fails if its buffer could not be filled.
fn read_completion(cmd: Cmd, name: Arc<str>, unfilled: Arc<AtomicBool>) -> Done {
    Box::new(move |result: Result<(), IoError>| match result {
        Ok(()) if unfilled.load(Ordering::Acquire) => cmd.complete(Status::HardwareError),
        Ok(()) => cmd.complete(Status::Ok),
        Err(e) => fail(cmd, &name, "read", &e),
    })
}

/// The callouts, by name (the `fault-injection` feature can make one panic).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Callout {
    CheckConfig,
    Open,
    Close,
    Reconfig,
    Read,
    Write,
    Flush,
    Unmap,
    WriteSame,
    Caw,
}

impl Lun {
    /// Panics if a test asked for a panic in `callout`; nothing in production builds.
    fn maybe_panic(&self, callout: Callout) {
        self.test.maybe_panic(callout);
    }

    fn reconfig(&self, dev: &Device<'_>, change: Reconfig<'_>) -> Result<(), String> {
        let cfg = &self.volume.config();
        match change {
            Reconfig::Size(bytes) => self.volume.grow(bytes).map_err(|e| e.to_string()),
            Reconfig::WriteCache(on) if on || !cfg.write_cache => {
                // Reporting a cache while writes stay stable before they are
                // acknowledged is safe; the reverse is not.
                dev.set_write_cache_enabled(on);
                Ok(())
            }
            Reconfig::WriteCache(_) => Err("the volume acknowledges writes before they are stable \
                 (write_cache=true); re-create it with write_cache=false to turn the cache off"
                .into()),
            Reconfig::CfgString(s) => self.new_config(s, dev),
        }
    }

    /// A new cfgstring (an admin wrote the LUN's `dev_config`, or the TOML
    /// file it names changed and was handed over again): its tunables take
    /// effect at once; a change to anything else is refused, naming the keys.
    fn new_config(&self, cfgstring: &str, dev: &Device<'_>) -> Result<(), String> {
        let new = HandlerConfig::parse(cfgstring).map_err(|e| chain(&e))?;
        // The size is the LUN's, not the cfgstring's: it may have grown.
        let new = new.for_device(self.volume.size(), dev.block_size()).map_err(|e| chain(&e))?;
        let changed = self.volume.retune(&new).map_err(|e| e.to_string())?;
        if changed.is_empty() {
            log::info!("{}: new configuration: nothing changed", self.name);
        }
        Ok(())
    }
}

impl Handler for Hamirror {
    type Device = Lun;

    fn check_config(&self, cfgstring: &str) -> Result<(), String> {
        check_config(cfgstring)
    }

    fn open(&self, dev: &Device<'_>, reopen: bool) -> Result<Lun, Errno> {
        open_lun(dev, reopen).map_err(|e| {
            log::error!("open failed: {}", chain(&e));
            e.errno()
        })
    }

    fn close(&self, _dev: &Device<'_>, lun: Box<Lun>) {
        lun.maybe_panic(Callout::Close);
        drop(lun);
    }

    fn reconfig(&self, dev: &Device<'_>, lun: &Lun, change: Reconfig<'_>) -> Result<(), Errno> {
        lun.maybe_panic(Callout::Reconfig);
        lun.reconfig(dev, change).map_err(|why| {
            log::warn!("{}: {} refused: {why}", lun.name, change.what());
            Errno::EOPNOTSUPP
        })
    }

    fn read(&self, lun: &Lun, cmd: Cmd, buf: IoVecs, offset: u64) {
        lun.maybe_panic(Callout::Read);
        let (buf, unfilled) = HostRead::new(buf);
        lun.volume.read(offset, Box::new(buf), read_completion(cmd, lun.name.clone(), unfilled));
    }

    fn write(&self, lun: &Lun, cmd: Cmd, buf: IoVecs, offset: u64) {
        lun.maybe_panic(Callout::Write);
        lun.volume.write(offset, Arc::new(HostWrite(buf)), completion(cmd, lun.name.clone(), "write"));
    }

    fn flush(&self, lun: &Lun, cmd: Cmd) {
        lun.maybe_panic(Callout::Flush);
        lun.volume.flush(completion(cmd, lun.name.clone(), "flush"));
    }

    fn unmap(&self, lun: &Lun, cmd: Cmd, offset: u64, len: u64) {
        lun.maybe_panic(Callout::Unmap);
        lun.volume.unmap(offset, len, completion(cmd, lun.name.clone(), "unmap"));
    }

    fn write_same(&self, lun: &Lun, cmd: Cmd, offset: u64, len: u64, block: IoVecs) {
        lun.maybe_panic(Callout::WriteSame);
        let done = completion(cmd, lun.name.clone(), "write same");
        lun.volume.write_same(offset, len, Arc::new(HostWrite(block)), done);
    }

    fn compare_and_write(&self, lun: &Lun, cmd: Cmd, offset: u64, compare: IoVecs, data: IoVecs) {
        lun.maybe_panic(Callout::Caw);
        let done = completion(cmd, lun.name.clone(), "compare and write");
        lun.volume.compare_and_write(offset, Arc::new(HostWrite(compare)), Arc::new(HostWrite(data)), done);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn an_error_chain_reads_as_one_line() {
        let inner = std::io::Error::from_raw_os_error(libc::ENOENT);
        let e = ConfigError::ReadFile { path: PathBuf::from("/x.toml"), source: inner };
        assert_eq!(
            chain(&OpenLunError::Config(e)),
            "bad configuration: cannot read the configuration file /x.toml: No such file or directory (os error 2)"
        );
    }

    #[test]
    fn open_failures_map_to_the_errno_that_names_them() {
        let engine = |source| OpenLunError::Engine { name: "v".into(), source };
        let path = PathBuf::from("/dev/a");
        assert_eq!(OpenLunError::Config(ConfigError::Empty).errno(), Errno::EINVAL);
        assert_eq!(engine(OpenError::LegBusy { leg: 0, path: path.clone() }).errno(), Errno(libc::EBUSY));
        assert_eq!(engine(OpenError::LegMissing { leg: 0, path }).errno(), Errno(libc::ENOENT));
        assert_eq!(engine(OpenError::NoTrustedLeg { detail: String::new() }).errno(), Errno::EIO);
    }

    #[test]
    fn check_config_names_a_leg_that_does_not_exist() {
        let why =
            check_config("hamirror/leg=/nonexistent/a;leg=/nonexistent/b;meta=/tmp/m.meta").unwrap_err();
        assert_eq!(why, "leg 0 (/nonexistent/a): does not exist; check the path or create the file");
    }

    #[test]
    fn check_config_refuses_a_leg_listed_twice() {
        let dir = std::env::temp_dir().join(format!("hm-cc-dup-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let leg = dir.join("leg");
        std::fs::write(&leg, [0u8; 4096]).unwrap();
        let cfg = format!("hamirror/leg={0};leg={0};meta={1}", leg.display(), dir.join("m").display());
        let why = check_config(&cfg).unwrap_err();
        assert!(why.contains("the same storage as leg 0"), "{why}");
        assert!(!dir.join("m").exists(), "check_config changes nothing");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn check_config_passes_a_parse_error_through() {
        assert_eq!(
            check_config("leg=/a").unwrap_err(),
            "no metadata file given; add meta=PATH (on storage other than the legs), e.g. meta=/var/lib/hamirror/v0.meta"
        );
    }

    #[test]
    fn leg_trouble_is_logged_as_a_warning_and_lost_metadata_as_an_error() {
        let lost = Event::MetadataCopyLost { copy: 0, path: "/m".into(), error: "EIO".into() };
        assert_eq!(event_level(&lost), Level::Error);
        let slow = Event::LastLegSlow { leg: 0, waited_ms: 1 };
        assert_eq!(event_level(&slow), Level::Warn);
        let lagging = Event::LegLagging { leg: 1, lag_ms: 50 };
        assert_eq!(event_level(&lagging), Level::Warn);
    }
}
