//! Registration with tcmu-runner: the leaked `struct tcmur_handler` that
//! points at the shims of [`crate::trampoline`], `handler_init`, and an extra
//! C entry point for test tools.

use crate::sys;
use crate::trampoline::{self, panic_message, Handler};
use std::ffi::{CStr, CString};
use std::os::raw::c_int;
use std::panic::catch_unwind;

/// Names the handler gives tcmu-runner.
#[derive(Clone, Copy, Debug)]
pub struct HandlerInfo<'a> {
    /// Human-friendly name.
    pub name: &'a str,
    /// Matches `dev_config=<subtype>/...`.
    pub subtype: &'a str,
    /// What to put in the cfgstring; targetcli shows it.
    pub cfg_desc: &'a str,
}

/// Why registration failed.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error("a handler is already registered in this process")]
    AlreadyRegistered,
    #[error("the handler's {0} contains a NUL byte")]
    Nul(&'static str),
    #[error("tcmur_register_handler failed with {0}")]
    Runner(c_int),
}

/// Registers `handler` with tcmu-runner under `info`'s names, with
/// `nr_threads = 0`. The `tcmur_handler` struct and its strings are leaked:
/// the runner keeps pointers to them for the life of the process.
pub fn register<H: Handler>(handler: H, info: HandlerInfo<'_>) -> Result<(), RegisterError> {
    let leak = |s: &str, what| {
        CString::new(s).map(|c| &*Box::leak(c.into_boxed_c_str())).map_err(|_| RegisterError::Nul(what))
    };
    let (name, subtype, cfg_desc) =
        (leak(info.name, "name")?, leak(info.subtype, "subtype")?, leak(info.cfg_desc, "cfg_desc")?);
    trampoline::install(handler).map_err(|_| RegisterError::AlreadyRegistered)?;
    let table: &'static mut sys::tcmur_handler = Box::leak(Box::new(table::<H>(name, subtype, cfg_desc)));
    // SAFETY: `table` and its strings are leaked, so they live as long as the
    // runner keeps them; every callout in it is a `trampoline` shim for `H`,
    // which `trampoline::install` now holds.
    match unsafe { sys::tcmur_register_handler(table) } {
        0 => Ok(()),
        rc => Err(RegisterError::Runner(rc)),
    }
}

fn table<H: Handler>(
    name: &'static CStr,
    subtype: &'static CStr,
    cfg_desc: &'static CStr,
) -> sys::tcmur_handler {
    sys::tcmur_handler {
        name: name.as_ptr(),
        subtype: subtype.as_ptr(),
        cfg_desc: cfg_desc.as_ptr(),
        opaque: std::ptr::null_mut(),
        check_config: Some(trampoline::check_config::<H>),
        reconfig: Some(trampoline::reconfig::<H>),
        open: Some(trampoline::open::<H>),
        close: Some(trampoline::close::<H>),
        nr_threads: 0,
        handle_cmd: None,
        read: Some(trampoline::read::<H>),
        write: Some(trampoline::write::<H>),
        flush: Some(trampoline::flush::<H>),
        unmap: Some(trampoline::unmap::<H>),
        writesame: Some(trampoline::writesame::<H>),
        caw: Some(trampoline::caw::<H>),
        report_event: None,
        lock: None,
        unlock: None,
        get_lock_tag: None,
        get_lock_state: None,
        _is_dbus_handler: false,
        update_logdir: None,
        init: None,
        destroy: None,
    }
}

/// Runs `handler_init`'s body: `init` registers, errors and panics are logged
/// and become a non-zero return.
pub fn handler_init(init: fn() -> Result<(), RegisterError>) -> c_int {
    match catch_unwind(init) {
        Ok(Ok(())) => 0,
        Ok(Err(e)) => {
            log::error!("cannot register the handler: {e}");
            -libc::EINVAL
        }
        Err(panic) => {
            log::error!("handler_init panicked: {}", panic_message(&*panic));
            -libc::EINVAL
        }
    }
}

/// Defines `int handler_init(void)`, the symbol tcmu-runner looks up in each
/// handler `.so`, calling `$init` (a `fn() -> Result<(), RegisterError>` that
/// calls [`register`]) with panics caught.
#[macro_export]
macro_rules! export_handler_init {
    ($init:path) => {
        /// tcmu-runner's entry point into this handler.
        #[no_mangle]
        pub extern "C" fn handler_init() -> ::std::os::raw::c_int {
            $crate::register::handler_init($init)
        }
    };
}
