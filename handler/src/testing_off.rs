//! The release build's side of [`testing`](self): the same calls as the
//! `fault-injection` build's `testing.rs`, doing nothing, so that the
//! handler's code carries no test state and no `cfg` of its own. Each call
//! is empty and inlined away.

use crate::lun::Callout;
use mirror::volume::EventSink;
use mirror::{OpenError, Volume, VolumeConfig};
use std::sync::Arc;
use toml::Table;

/// No test keys exist in a release build.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TestOptions;

impl TestOptions {
    /// A release build takes no test keys: each is refused as unknown.
    #[inline(always)]
    pub(crate) fn absorb_inline(_table: &mut Table, _key: &str, _value: &str) -> bool {
        false
    }

    #[inline(always)]
    pub(crate) fn take_from(_table: &mut Table) -> Result<TestOptions, String> {
        Ok(TestOptions)
    }
}

/// No test controls exist in a release build.
pub struct TestState;

impl TestState {
    #[inline(always)]
    pub fn new(_opts: &TestOptions) -> Arc<TestState> {
        Arc::new(TestState)
    }

    #[inline(always)]
    pub fn open(&self, cfg: VolumeConfig, sink: EventSink) -> Result<Volume, OpenError> {
        Volume::open(cfg, sink)
    }

    #[inline(always)]
    pub fn maybe_panic(&self, _callout: Callout) {}
}

#[inline(always)]
pub fn maybe_panic(_opts: &TestOptions, _callout: Callout) {}

#[inline(always)]
pub fn register(_name: &str, _state: Arc<TestState>) {}

#[inline(always)]
pub fn unregister(_name: &str) {}
