//! Test-only controls, compiled with the `fault-injection` feature (never in a
//! production build, which compiles `testing_off.rs` in its place: the same
//! calls, doing nothing).
//!
//! Configuration keys (inline or in the TOML file):
//! - `fault=RULE` (repeatable; in TOML `fault = ["RULE", ...]`): a leg fault
//!   rule in the engine's syntax, e.g. `fault=leg=1 op=write action=error errno=5`,
//!   armed from open;
//! - `fault_panic=CALLOUT`: panic inside that callout (`check_config`, `open`,
//!   `close`, `reconfig`, `read`, `write`, `flush`, `unmap`, `writesame`, `caw`)
//!   to prove a panic never crosses into tcmu-runner.
//!
//! At run time, the exported C function `int hamirror_test_control(const char *)`
//! takes one request (returns 0, or -1 with the reason logged):
//! - `fault VOLUME RULE...`: arm a rule on a volume's legs;
//! - `clear VOLUME`: remove every rule;
//! - `release VOLUME`: let hung leg I/O go on;
//! - `panic VOLUME CALLOUT|none`: set or clear the panicking callout.

use crate::lun::Callout;
use mirror::backend::fault::{FaultInjector, Rule};
use mirror::volume::EventSink;
use mirror::{OpenError, Volume, VolumeConfig};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, OnceLock};
use toml::{Table, Value};

const FAULT_KEY: &str = "fault";
const PANIC_KEY: &str = "fault_panic";

impl FromStr for Callout {
    type Err = String;

    fn from_str(s: &str) -> Result<Callout, String> {
        Ok(match s {
            "check_config" => Callout::CheckConfig,
            "open" => Callout::Open,
            "close" => Callout::Close,
            "reconfig" => Callout::Reconfig,
            "read" => Callout::Read,
            "write" => Callout::Write,
            "flush" => Callout::Flush,
            "unmap" => Callout::Unmap,
            "writesame" => Callout::WriteSame,
            "caw" => Callout::Caw,
            _ => return Err(format!("`{s}` is no callout; use check_config, open, close, reconfig, read, write, flush, unmap, writesame or caw")),
        })
    }
}

/// The test keys of one configuration.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TestOptions {
    pub faults: Vec<Rule>,
    pub panic_at: Option<Callout>,
}

impl TestOptions {
    /// Files an inline `fault=`/`fault_panic=` pair into `table`; false for other keys.
    pub(crate) fn absorb_inline(table: &mut Table, key: &str, value: &str) -> bool {
        match key {
            FAULT_KEY => {
                let list = table.entry(FAULT_KEY).or_insert_with(|| Value::Array(Vec::new()));
                if let Value::Array(a) = list {
                    a.push(Value::String(value.to_owned()));
                }
                true
            }
            PANIC_KEY => {
                table.insert(PANIC_KEY.to_owned(), Value::String(value.to_owned()));
                true
            }
            _ => false,
        }
    }

    /// Removes the test keys from `table` and parses them.
    pub(crate) fn take_from(table: &mut Table) -> Result<TestOptions, String> {
        let mut opts = TestOptions::default();
        if let Some(v) = table.remove(FAULT_KEY) {
            let Value::Array(rules) = v else { return Err("fault must be a list of rules".into()) };
            for r in rules {
                let text = r.as_str().ok_or("each fault rule must be a string")?;
                opts.faults.push(Rule::parse(text).map_err(|e| format!("fault={text}: {e}"))?);
            }
        }
        if let Some(v) = table.remove(PANIC_KEY) {
            opts.panic_at = Some(v.as_str().ok_or("fault_panic must be a callout name")?.parse()?);
        }
        Ok(opts)
    }
}

/// The test controls of one open volume.
pub struct TestState {
    pub faults: Arc<FaultInjector>,
    panic_at: Mutex<Option<Callout>>,
}

impl TestState {
    pub fn new(opts: &TestOptions) -> Arc<TestState> {
        let faults = FaultInjector::new();
        for r in &opts.faults {
            faults.add(r.clone());
        }
        Arc::new(TestState { faults, panic_at: Mutex::new(opts.panic_at) })
    }

    /// Opens the volume with this state's faults in front of its legs.
    pub fn open(&self, cfg: VolumeConfig, sink: EventSink) -> Result<Volume, OpenError> {
        Volume::open_with_faults(cfg, sink, self.faults.clone())
    }

    /// Panics if the tests asked for a panic in `callout`.
    pub fn maybe_panic(&self, callout: Callout) {
        if *self.panic_at.lock() == Some(callout) {
            panic!("fault_panic: injected panic in {callout:?}");
        }
    }
}

/// Panics if `opts` asks for a panic in `callout` (for callouts without a volume).
pub fn maybe_panic(opts: &TestOptions, callout: Callout) {
    if opts.panic_at == Some(callout) {
        panic!("fault_panic: injected panic in {callout:?}");
    }
}

fn registry() -> &'static Mutex<HashMap<String, Arc<TestState>>> {
    static REGISTRY: OnceLock<Mutex<HashMap<String, Arc<TestState>>>> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

/// Makes a volume's controls reachable by name for [`control`].
pub fn register(name: &str, state: Arc<TestState>) {
    registry().lock().insert(name.to_owned(), state);
}

pub fn unregister(name: &str) {
    registry().lock().remove(name);
}

/// Carries out one `hamirror_test_control` request.
pub fn control(request: &str) -> Result<(), String> {
    let mut words = request.split_whitespace();
    let (verb, volume) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let rest: Vec<&str> = words.collect();
    let state =
        registry().lock().get(volume).cloned().ok_or_else(|| format!("no open volume named `{volume}`"))?;
    match verb {
        "fault" => state.faults.add(Rule::parse(&rest.join(" ")).map_err(|e| e.to_string())?),
        "clear" => state.faults.clear(),
        "release" => state.faults.release_hangs(),
        "panic" => {
            let at = match rest.first() {
                Some(&"none") => None,
                Some(c) => Some(c.parse()?),
                None => return Err("panic needs a callout or none".into()),
            };
            *state.panic_at.lock() = at;
        }
        _ => return Err(format!("unknown request `{verb}`; use fault, clear, release or panic")),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_fault_keys_accumulate_and_parse() {
        let mut t = Table::new();
        assert!(TestOptions::absorb_inline(&mut t, "fault", "leg=1 op=write action=error errno=5"));
        assert!(TestOptions::absorb_inline(&mut t, "fault", "leg=0 op=read action=error"));
        assert!(TestOptions::absorb_inline(&mut t, "fault_panic", "read"));
        assert!(!TestOptions::absorb_inline(&mut t, "legs", "/a"));
        let o = TestOptions::take_from(&mut t).unwrap();
        assert_eq!(o.faults.len(), 2);
        assert_eq!(o.panic_at, Some(Callout::Read));
        assert!(t.is_empty());
    }

    #[test]
    fn a_bad_rule_or_callout_is_refused_with_the_reason() {
        let mut t = Table::new();
        TestOptions::absorb_inline(&mut t, "fault", "op=read");
        assert!(TestOptions::take_from(&mut t).unwrap_err().contains("no action="));
        let mut t = Table::new();
        TestOptions::absorb_inline(&mut t, "fault_panic", "explode");
        assert!(TestOptions::take_from(&mut t).unwrap_err().contains("is no callout"));
    }

    #[test]
    fn control_requests_reach_a_registered_volume() {
        let state = TestState::new(&TestOptions::default());
        register("ctl-test", state.clone());
        control("fault ctl-test leg=0 op=write action=error").unwrap();
        control("panic ctl-test read").unwrap();
        assert_eq!(*state.panic_at.lock(), Some(Callout::Read));
        control("panic ctl-test none").unwrap();
        control("clear ctl-test").unwrap();
        assert!(control("fault nowhere leg=0 action=hang").unwrap_err().contains("no open volume"));
        assert!(control("dance ctl-test").unwrap_err().contains("unknown request"));
        unregister("ctl-test");
    }
}
