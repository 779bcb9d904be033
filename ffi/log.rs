//! Routes the `log` crate into tcmu-runner's log (`/var/log/tcmu-runner.log`),
//! through `tcmu_{err,warn,info,dbg}_message(dev, func, line, "%s", msg)`.
//!
//! Records logged during a callout name the callout's device (tcmu prefixes
//! the line with it); records from other threads go out without a device.
//! tcmu-runner keeps at most 255 bytes of a line, prefix included, and drops
//! the newline of a longer one: long messages go out as several lines, the
//! later ones starting with "...".

use crate::sys;
use log::{Level, LevelFilter, Log, Metadata, Record};
use std::cell::Cell;
use std::ffi::CString;
use std::os::raw::{c_char, c_int};

/// Environment variable that overrides the level (`error` … `debug`).
pub const LEVEL_ENV: &str = "HAMIRROR_LOG";

struct TcmuLogger;

static LOGGER: TcmuLogger = TcmuLogger;

thread_local! {
    static CURRENT_DEVICE: Cell<*mut sys::tcmu_device> = const { Cell::new(std::ptr::null_mut()) };
}

/// Installs the bridge as the process's logger (once; later calls only change
/// nothing). The level is `default`, or `$HAMIRROR_LOG` when set and valid;
/// tcmu-runner's own `log_level` filters further.
pub fn init(default: LevelFilter) {
    let level = std::env::var(LEVEL_ENV).ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(level);
    }
}

/// While alive, records logged on this thread name `dev`.
pub(crate) struct DeviceScope {
    previous: *mut sys::tcmu_device,
}

impl DeviceScope {
    pub(crate) fn enter(dev: *mut sys::tcmu_device) -> DeviceScope {
        DeviceScope { previous: CURRENT_DEVICE.with(|c| c.replace(dev)) }
    }
}

impl Drop for DeviceScope {
    fn drop(&mut self) {
        CURRENT_DEVICE.with(|c| c.set(self.previous));
    }
}

type MessageFn = unsafe extern "C" fn(*mut sys::tcmu_device, *const c_char, c_int, *const c_char, ...);

fn message_fn(level: Level) -> MessageFn {
    match level {
        Level::Error => sys::tcmu_err_message,
        Level::Warn => sys::tcmu_warn_message,
        Level::Info => sys::tcmu_info_message,
        Level::Debug | Level::Trace => sys::tcmu_dbg_message,
    }
}

/// The most message bytes per tcmu-runner log line (its entries hold 255,
/// of which the function, line and device prefix take the rest).
const LINE_BYTES: usize = 160;

/// `msg` cut into pieces of at most [`LINE_BYTES`], at spaces where it can
/// be; pieces after the first begin with "... ".
fn pieces(msg: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = msg;
    while !rest.is_empty() {
        let room = if out.is_empty() { LINE_BYTES } else { LINE_BYTES - 4 };
        let mut cut = rest.len().min(room);
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        if cut < rest.len() {
            if let Some(space) = rest[..cut].rfind(' ').filter(|&i| i > room / 2) {
                cut = space + 1;
            }
        }
        let (head, tail) = rest.split_at(cut);
        out.push(if out.is_empty() {
            head.trim_end().to_owned()
        } else {
            format!("... {}", head.trim_end())
        });
        rest = tail;
    }
    out
}

/// A C string of `s`, with any NUL byte replaced so nothing is cut off.
fn c_string(s: &str) -> CString {
    CString::new(s.replace('\0', "\\0")).unwrap_or_default()
}

impl Log for TcmuLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let func = c_string(record.module_path().unwrap_or(record.target()));
        let line = record.line().map_or(0, |l| c_int::try_from(l).unwrap_or(c_int::MAX));
        let dev = CURRENT_DEVICE.with(Cell::get);
        let emit = message_fn(record.level());
        for piece in pieces(&record.args().to_string()) {
            let msg = c_string(&format!("{piece}\n"));
            // SAFETY: `func`, "%s" and `msg` are NUL-terminated and outlive the
            // call; "%s" consumes exactly the one `char *` passed; `dev` is null
            // or the device of the callout running on this thread (`DeviceScope`
            // is only entered by trampolines for their own device).
            unsafe { emit(dev, func.as_ptr(), line, c"%s".as_ptr(), msg.as_ptr()) }
        }
    }

    fn flush(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_message_goes_out_as_lines_that_fit_and_lose_nothing() {
        let msg =
            "leg 1 (/dev/mapper/arrayB-lun7) holds 67108864 bytes and the volume would need 134217728; \
                   grow it first (and rescan it if it is a SAN LUN), then try again: ünïcode ok";
        let p = pieces(msg);
        assert!(p.len() == 2 && p[1].starts_with("... "), "{p:?}");
        assert!(p.iter().all(|l| l.len() <= LINE_BYTES), "{p:?}");
        let joined = p.iter().map(|l| l.trim_start_matches("... ")).collect::<Vec<_>>().join(" ");
        assert_eq!(joined, msg);
        assert_eq!(pieces("short"), ["short"]);
        let word = "x".repeat(400);
        assert!(pieces(&word).iter().all(|l| l.len() <= LINE_BYTES));
        assert!(pieces("").is_empty());
    }

    #[test]
    fn nul_bytes_do_not_cut_a_message_short() {
        assert_eq!(c_string("a\0b").as_bytes(), b"a\\0b");
    }

    #[test]
    fn a_device_scope_restores_the_previous_device() {
        let outer = 0x10 as *mut sys::tcmu_device;
        let _a = DeviceScope::enter(outer);
        {
            let _b = DeviceScope::enter(0x20 as *mut sys::tcmu_device);
            assert_eq!(CURRENT_DEVICE.with(Cell::get) as usize, 0x20);
        }
        assert_eq!(CURRENT_DEVICE.with(Cell::get), outer);
    }
}
