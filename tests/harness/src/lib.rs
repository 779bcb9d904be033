//! A host-side stand-in for tcmu-runner: it exports the runner's and
//! libtcmu's functions from the test executable, `dlopen`s the built
//! `handler_hamirror.so` and drives its callouts with real cfgstrings over
//! real files, checking every completion and every byte on the legs.
//!
//! - [`runner`]: the C functions the handler calls, over fake devices and commands;
//! - [`load`]: building (with the `fault-injection` feature) and loading the handler;
//! - [`device`]: an open device and commands with scattered buffers;
//! - [`fixture`]: leg and metadata files in a temporary directory.
//!
//! Tests call [`runner_or_skip`], which prints a loud SKIPPED line and
//! returns `None` only when no handler `.so` can be had.

pub mod device;
pub mod fixture;
pub mod load;
pub mod runner;

pub use device::{Completion, Dev, Op, Pending};
pub use fixture::{Legs, Rng};
pub use load::Runner;

/// `TCMU_STS_*` values the tests compare against.
pub mod sts {
    use hamirror_ffi::sys;
    use std::os::raw::c_int;

    pub const OK: c_int = sys::TCMU_STS_OK;
    pub const BUSY: c_int = sys::TCMU_STS_BUSY;
    pub const WR_ERR: c_int = sys::TCMU_STS_WR_ERR;
    pub const RD_ERR: c_int = sys::TCMU_STS_RD_ERR;
    pub const MISCOMPARE: c_int = sys::TCMU_STS_MISCOMPARE;
    pub const HW_ERR: c_int = sys::TCMU_STS_HW_ERR;
    pub const RANGE: c_int = sys::TCMU_STS_RANGE;
}

/// The loaded handler, or `None` after printing why the test is skipped.
pub fn runner_or_skip(test: &str) -> Option<&'static Runner> {
    match load::runner() {
        Ok(r) => Some(r),
        Err(why) => {
            eprintln!("\n*** SKIPPED {test}: no handler .so to test: {why} ***\n");
            None
        }
    }
}

/// The log lines the handler has written so far that contain `needle`.
pub fn log_lines_with(needle: &str) -> Vec<String> {
    runner::LOG.lock().iter().filter(|l| l.msg.contains(needle)).map(|l| l.msg.clone()).collect()
}
