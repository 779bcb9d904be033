//! `handler_hamirror.so`: tcmu-runner's `hamirror` subtype. A LIO LUN whose
//! reads, writes, flushes, unmaps, WRITE SAMEs and COMPARE AND WRITEs are
//! carried out by the mirror engine on two or more legs.
//!
//! This crate is thin and safe: [`config`] turns the cfgstring into the
//! engine's configuration, [`status`] maps engine errors to SCSI status, and
//! `lun` hands each command to the engine; `hamirror-ffi` does the C side.
#![forbid(unsafe_code)]

mod bufs;
pub mod config;
mod lun;
pub mod status;
/// Test controls (`fault-injection` feature); a release build compiles
/// `testing_off.rs`, whose calls do nothing.
#[cfg_attr(not(feature = "fault-injection"), path = "testing_off.rs")]
pub mod testing;

pub use lun::{check_config, init, Callout, Hamirror, Lun, CFG_DESC};

hamirror_ffi::export_handler_init!(lun::init);

#[cfg(feature = "fault-injection")]
hamirror_ffi::export_test_hook!(hamirror_test_control, testing::control);
