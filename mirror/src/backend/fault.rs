//! Scripted fault injection: a [`FaultyBackend`] wraps a real leg and consults
//! a [`FaultInjector`] shared by all legs of a volume before each operation.
//!
//! A [`Rule`] says which leg, which operation, which byte range, after how
//! many matching operations, how many times, and what happens: an error, a
//! hang (until released), a delay or a torn write. Rules read as text, e.g.
//! `leg=1 op=write range=0-65536 after=10 count=1 action=error errno=5`.
//!
//! A faulty backend runs its writes one at a time where the leg it wraps
//! does ([`Backend::writes_one_at_a_time`]): on a buffered file leg, delayed
//! or hung writes hold the writes behind them, as a write stuck inside the
//! kernel holds the file's inode lock. To stand for a slow array, whose
//! I/Os overlap, wrap an `O_DIRECT` leg or a block device.

use super::{Backend, Caps, LegIdentity, Op};
use parking_lot::{Condvar, Mutex};
use std::io::{self, IoSlice};
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Fail with this errno.
    Error(i32),
    /// Block until [`FaultInjector::release_hangs`] (or forever).
    Hang,
    /// Sleep, then perform the operation.
    Delay(Duration),
    /// Write only the first `n` bytes, then fail with EIO.
    Torn(usize),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub leg: Option<usize>,
    /// The operation it fires for (`None`: any).
    pub op: Option<Op>,
    /// Byte range `[start, end)` the operation must overlap.
    pub range: Option<(u64, u64)>,
    /// Matching operations to let through before the rule fires.
    pub after: u64,
    /// How many times it fires (`None`: forever).
    pub count: Option<u64>,
    pub action: Action,
}

/// A rule that could not be parsed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RuleError {
    #[error("unknown word {0:?} in fault rule; use leg=, op=, range=A-B, after=, count=, action=error|hang|delay|torn, errno=, ms=, bytes=")]
    Unknown(String),
    #[error("bad value {value:?} for {key} in fault rule")]
    Value { key: String, value: String },
    #[error("fault rule has no action=")]
    NoAction,
}

impl Rule {
    pub fn parse(text: &str) -> Result<Rule, RuleError> {
        let mut r = Rule { leg: None, op: None, range: None, after: 0, count: None, action: Action::Hang };
        let (mut action, mut errno, mut ms, mut bytes) = (None, libc::EIO, 0u64, 0usize);
        for word in text.split_whitespace() {
            let (k, v) = word.split_once('=').ok_or_else(|| RuleError::Unknown(word.into()))?;
            let bad = || RuleError::Value { key: k.into(), value: v.into() };
            let num = || v.parse::<u64>().map_err(|_| bad());
            match k {
                "leg" => r.leg = Some(num()? as usize),
                "op" => r.op = parse_op(v).ok_or_else(bad)?,
                "range" => {
                    let (a, b) = v.split_once('-').ok_or_else(bad)?;
                    r.range = Some((a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?));
                }
                "after" => r.after = num()?,
                "count" => r.count = Some(num()?),
                "action" => action = Some(v.to_owned()),
                "errno" => errno = num()? as i32,
                "ms" => ms = num()?,
                "bytes" => bytes = num()? as usize,
                _ => return Err(RuleError::Unknown(word.into())),
            }
        }
        r.action = match action.as_deref() {
            Some("error") => Action::Error(errno),
            Some("hang") => Action::Hang,
            Some("delay") => Action::Delay(Duration::from_millis(ms)),
            Some("torn") => Action::Torn(bytes),
            Some(other) => return Err(RuleError::Value { key: "action".into(), value: other.into() }),
            None => return Err(RuleError::NoAction),
        };
        Ok(r)
    }

    fn matches(&self, leg: usize, op: Op, off: u64, len: u64) -> bool {
        self.leg.is_none_or(|l| l == leg)
            && self.op.is_none_or(|o| o == op)
            && self.range.is_none_or(|(a, b)| off < b && off + len.max(1) > a)
    }
}

/// `Some(None)` for `any`.
fn parse_op(v: &str) -> Option<Option<Op>> {
    Some(Some(match v {
        "read" => Op::Read,
        "write" => Op::Write,
        "flush" => Op::Flush,
        "discard" => Op::Discard,
        "any" => return Some(None),
        _ => return None,
    }))
}

struct Armed {
    rule: Rule,
    seen: u64,
    fired: u64,
}

/// The rules of one volume's legs, changeable while I/O runs.
#[derive(Default)]
pub struct FaultInjector {
    rules: Mutex<Vec<Armed>>,
    hang_epoch: Mutex<u64>,
    released: Condvar,
}

impl FaultInjector {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn add(&self, rule: Rule) {
        self.rules.lock().push(Armed { rule, seen: 0, fired: 0 });
    }

    /// Removes every rule (hangs already in progress keep hanging until released).
    pub fn clear(&self) {
        self.rules.lock().clear();
    }

    /// Lets every hung operation go on (and perform its I/O).
    pub fn release_hangs(&self) {
        *self.hang_epoch.lock() += 1;
        self.released.notify_all();
    }

    /// How many times rules have fired in all.
    pub fn fired(&self) -> u64 {
        self.rules.lock().iter().map(|a| a.fired).sum()
    }

    /// Whether some rule could still fire for this operation (it matches,
    /// and its count is not used up). Counts nothing.
    fn may_fire(&self, leg: usize, op: Op, off: u64, len: u64) -> bool {
        self.rules
            .lock()
            .iter()
            .any(|a| a.rule.matches(leg, op, off, len) && a.rule.count.is_none_or(|c| a.fired < c))
    }

    fn decide(&self, leg: usize, op: Op, off: u64, len: u64) -> Option<Action> {
        let mut rules = self.rules.lock();
        for a in rules.iter_mut() {
            if !a.rule.matches(leg, op, off, len) {
                continue;
            }
            a.seen += 1;
            if a.seen <= a.rule.after || a.rule.count.is_some_and(|c| a.fired >= c) {
                continue;
            }
            a.fired += 1;
            return Some(a.rule.action.clone());
        }
        None
    }

    fn hang(&self) {
        let mut epoch = self.hang_epoch.lock();
        let start = *epoch;
        while *epoch == start {
            self.released.wait(&mut epoch);
        }
    }
}

impl crate::Volume {
    /// Like [`Volume::open`](crate::Volume::open), with scripted faults in
    /// front of every leg (reapplied to a leg that is reopened).
    pub fn open_with_faults(
        cfg: crate::VolumeConfig,
        sink: crate::volume::EventSink,
        faults: Arc<FaultInjector>,
    ) -> Result<crate::Volume, crate::OpenError> {
        let wrap = Arc::new(move |leg: usize, inner: Box<dyn Backend>| -> Box<dyn Backend> {
            Box::new(FaultyBackend::new(leg, inner, faults.clone()))
        });
        crate::Volume::open_wrapped(cfg, sink, wrap)
    }
}

/// A leg with faults injected in front of the real I/O.
pub struct FaultyBackend {
    leg: usize,
    inner: Box<dyn Backend>,
    faults: Arc<FaultInjector>,
}

impl FaultyBackend {
    pub fn new(leg: usize, inner: Box<dyn Backend>, faults: Arc<FaultInjector>) -> Self {
        FaultyBackend { leg, inner, faults }
    }

    /// Applies the first matching rule; `Some(result)` if the rule replaces the I/O.
    fn before(&self, op: Op, off: u64, len: u64) -> Option<io::Result<()>> {
        match self.faults.decide(self.leg, op, off, len)? {
            Action::Error(errno) => Some(Err(io::Error::from_raw_os_error(errno))),
            Action::Hang => {
                self.faults.hang();
                None
            }
            Action::Delay(d) => {
                std::thread::sleep(d);
                None
            }
            Action::Torn(_) if op != Op::Write => Some(Err(io::Error::from_raw_os_error(libc::EIO))),
            Action::Torn(_) => None,
        }
    }
}

impl Backend for FaultyBackend {
    super::delegate_to_inner!();

    /// An operation no rule can fire for goes to the real leg asynchronously
    /// (it would pass untouched, and uncounted, anyway); one that a rule may
    /// fire for takes the blocking path, where `FaultInjector::decide`
    /// counts it and applies the rule.
    fn async_file(&self, op: Op, offset: u64, len: u64) -> Option<&Arc<std::fs::File>> {
        if self.faults.may_fire(self.leg, op, offset, len) {
            return None;
        }
        self.inner.async_file(op, offset, len)
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        if let Some(r) = self.before(Op::Read, offset, buf.len() as u64) {
            return r;
        }
        self.inner.read_at(buf, offset)
    }

    fn write_vectored_at(&self, bufs: &[IoSlice<'_>], offset: u64) -> io::Result<()> {
        let len: u64 = bufs.iter().map(|b| b.len() as u64).sum();
        match self.faults.decide(self.leg, Op::Write, offset, len) {
            Some(Action::Torn(n)) => {
                let all: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
                let n = n.min(all.len());
                self.inner.write_vectored_at(&[IoSlice::new(&all[..n])], offset)?;
                Err(io::Error::from_raw_os_error(libc::EIO))
            }
            Some(Action::Error(e)) => Err(io::Error::from_raw_os_error(e)),
            Some(Action::Hang) => {
                self.faults.hang();
                self.inner.write_vectored_at(bufs, offset)
            }
            Some(Action::Delay(d)) => {
                std::thread::sleep(d);
                self.inner.write_vectored_at(bufs, offset)
            }
            None => self.inner.write_vectored_at(bufs, offset),
        }
    }

    fn flush(&self) -> io::Result<()> {
        if let Some(r) = self.before(Op::Flush, 0, 0) {
            return r;
        }
        self.inner.flush()
    }

    fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        if let Some(r) = self.before(Op::Discard, offset, len) {
            return r;
        }
        self.inner.discard(offset, len)
    }

    fn write_zeroes(&self, offset: u64, len: u64) -> io::Result<()> {
        if let Some(r) = self.before(Op::Write, offset, len) {
            return r;
        }
        self.inner.write_zeroes(offset, len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::conformance;
    use crate::backend::file::{FileBackend, OpenMode};

    fn leg(tag: &str) -> (std::path::PathBuf, FileBackend) {
        let p = std::env::temp_dir().join(format!("hm-fault-{tag}-{}", std::process::id()));
        std::fs::File::create(&p).unwrap().set_len(4 << 20).unwrap();
        let b = FileBackend::open(&p, OpenMode { direct_io: false, sync_writes: false }).unwrap();
        (p, b)
    }

    #[test]
    fn rules_parse_from_text() {
        let r = Rule::parse("leg=1 op=write range=0-4096 after=2 count=3 action=error errno=28").unwrap();
        assert_eq!(r.leg, Some(1));
        assert_eq!(r.op, Some(Op::Write));
        assert_eq!(r.range, Some((0, 4096)));
        assert_eq!((r.after, r.count), (2, Some(3)));
        assert_eq!(r.action, Action::Error(28));
        assert_eq!(Rule::parse("op=read"), Err(RuleError::NoAction));
        assert!(matches!(Rule::parse("bogus"), Err(RuleError::Unknown(_))));
        assert!(matches!(Rule::parse("action=explode"), Err(RuleError::Value { .. })));
    }

    #[test]
    fn a_faulty_backend_without_rules_passes_the_conformance_suite() {
        let (p, b) = leg("conf");
        conformance::run_all(&FaultyBackend::new(0, Box::new(b), FaultInjector::new()));
        std::fs::remove_file(p).unwrap();
    }

    #[test]
    fn a_rule_fires_after_n_matches_for_count_times_on_its_range() {
        let (p, b) = leg("count");
        let fi = FaultInjector::new();
        fi.add(Rule::parse("leg=0 op=write range=0-4096 after=1 count=2 action=error").unwrap());
        let fb = FaultyBackend::new(0, Box::new(b), fi.clone());
        let d = [0u8; 512];
        let w = |off| fb.write_vectored_at(&[IoSlice::new(&d)], off);
        assert!(w(8192).is_ok(), "outside the range");
        assert!(w(0).is_ok(), "the first match is let through");
        assert!(w(0).is_err());
        assert!(w(512).is_err());
        assert!(w(0).is_ok(), "count exhausted");
        assert_eq!(fi.fired(), 2);
        std::fs::remove_file(p).unwrap();
    }

    #[test]
    fn a_torn_write_stores_only_its_head() {
        let (p, b) = leg("torn");
        let fi = FaultInjector::new();
        fi.add(Rule::parse("op=write count=1 action=torn bytes=512").unwrap());
        let fb = FaultyBackend::new(0, Box::new(b), fi);
        let d = vec![7u8; 4096];
        assert!(fb.write_vectored_at(&[IoSlice::new(&d)], 0).is_err());
        let mut back = vec![0u8; 4096];
        fb.read_at(&mut back, 0).unwrap();
        assert!(back[..512].iter().all(|&x| x == 7));
        assert!(back[512..].iter().all(|&x| x == 0));
        std::fs::remove_file(p).unwrap();
    }

    #[test]
    fn a_hung_operation_goes_on_when_released() {
        let (p, b) = leg("hang");
        let fi = FaultInjector::new();
        fi.add(Rule::parse("op=read count=1 action=hang").unwrap());
        let fb = Arc::new(FaultyBackend::new(0, Box::new(b), fi.clone()));
        let t = {
            let fb = fb.clone();
            std::thread::spawn(move || fb.read_at(&mut [0u8; 512], 0))
        };
        std::thread::sleep(Duration::from_millis(50));
        assert!(!t.is_finished());
        fi.release_hangs();
        assert!(t.join().unwrap().is_ok());
        std::fs::remove_file(p).unwrap();
    }
}
