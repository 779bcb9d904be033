//! The [`Handler`] trait and the generic `extern "C"` shims tcmu-runner calls
//! (registered by [`crate::register()`]).
//!
//! Every shim turns raw arguments into the safe views of this crate, finds the
//! handler (registered once per process) and the device's state (a
//! `Box<H::Device>` given to C with `Box::into_raw` at open and taken back
//! with `Box::from_raw` at close), and runs the trait method inside
//! `catch_unwind`. A panic never crosses into C: it is logged and becomes a
//! hardware error (commands), `-EIO` (device callouts) or a refusal
//! (`check_config`).

use crate::cmd::Cmd;
use crate::device::Device;
use crate::iovec::IoVecs;
use crate::log::DeviceScope;
use crate::status::{Errno, Status};
use crate::sys;
use std::any::Any;
use std::ffi::{CStr, CString};
use std::os::raw::{c_char, c_int};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::OnceLock;

/// The handler of this process, set once by [`crate::register()`].
static HANDLER: OnceLock<Box<dyn Any + Send + Sync>> = OnceLock::new();

/// Makes `h` the handler the shims call; an `Err` if one already is.
pub(crate) fn install<H: Handler>(h: H) -> Result<(), ()> {
    HANDLER.set(Box::new(h)).map_err(drop)
}

/// The registered handler, if it is an `H`.
fn handler<H: Handler>() -> Option<&'static H> {
    HANDLER.get()?.downcast_ref::<H>()
}

/// A tcmu-runner handler, written against safe types.
///
/// With `nr_threads = 0` the command callouts run on the device's command
/// thread and must not block: each receives a [`Cmd`] to complete later, from
/// any thread. Buffers ([`IoVecs`]) stay valid until that completion.
pub trait Handler: Send + Sync + 'static {
    /// What the handler keeps per open device.
    type Device: Send + Sync + 'static;

    /// Checks a cfgstring before a device is created (targetcli, via D-Bus).
    /// `Err` is the reason shown to the administrator.
    fn check_config(&self, cfgstring: &str) -> Result<(), String>;
    /// Opens a device (`reopen` after a connection loss). Log why on failure.
    fn open(&self, dev: &Device<'_>, reopen: bool) -> Result<Self::Device, Errno>;
    /// Closes a device; no command is in flight any more.
    fn close(&self, dev: &Device<'_>, state: Box<Self::Device>);
    /// Applies a change the administrator made to the device.
    fn reconfig(&self, dev: &Device<'_>, state: &Self::Device, change: Reconfig<'_>) -> Result<(), Errno>;

    /// READ: fill `buf` from byte `offset`.
    fn read(&self, state: &Self::Device, cmd: Cmd, buf: IoVecs, offset: u64);
    /// WRITE: store `buf` at byte `offset`.
    fn write(&self, state: &Self::Device, cmd: Cmd, buf: IoVecs, offset: u64);
    /// SYNCHRONIZE CACHE.
    fn flush(&self, state: &Self::Device, cmd: Cmd);
    /// UNMAP (one descriptor).
    fn unmap(&self, state: &Self::Device, cmd: Cmd, offset: u64, len: u64);
    /// WRITE SAME: repeat the one-block `block` over `len` bytes from `offset`.
    fn write_same(&self, state: &Self::Device, cmd: Cmd, offset: u64, len: u64, block: IoVecs);
    /// COMPARE AND WRITE: if the data at `offset` equals `compare`, write
    /// `data` there (the two of the same length).
    fn compare_and_write(&self, state: &Self::Device, cmd: Cmd, offset: u64, compare: IoVecs, data: IoVecs);
}

/// A reconfiguration request (`struct tcmulib_cfg_info`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reconfig<'a> {
    /// A new cfgstring was written to the device's `dev_config`.
    CfgString(&'a str),
    /// A new size in bytes (`dev_size`).
    Size(u64),
    /// The host-visible write cache was switched (`emulate_write_cache`).
    WriteCache(bool),
}

impl Reconfig<'_> {
    /// What was asked, in a few words for a log line.
    pub fn what(&self) -> String {
        match self {
            Reconfig::CfgString(_) => "new configuration".into(),
            Reconfig::Size(bytes) => format!("resize to {bytes} bytes"),
            Reconfig::WriteCache(on) => format!("write cache {}", if *on { "on" } else { "off" }),
        }
    }
}

/// The text of a panic payload.
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

/// Runs `f`, turning a panic into `None` and a log line naming `callout`.
pub(crate) fn guard<R>(callout: &str, f: impl FnOnce() -> R) -> Option<R> {
    catch_unwind(AssertUnwindSafe(f))
        .map_err(|panic| log::error!("panic in the {callout} callout: {}", panic_message(&*panic)))
        .ok()
}

/// The state `open` stored for this device, if any.
fn state<'d, H: Handler>(dev: &'d Device<'_>) -> Option<&'d H::Device> {
    let p = dev.private().cast::<H::Device>();
    // SAFETY: the private pointer is null or the `Box<H::Device>` that `open`
    // leaked; `close` clears it before freeing the box, and the runner never
    // runs `close` concurrently with another callout of the same device, so
    // the box outlives this borrow (tied to the callout's `Device`).
    unsafe { p.as_ref() }
}

/// C strings for `check_config`'s reason must come from `malloc`: the runner `free`s them.
fn malloc_c_string(s: &str) -> *mut c_char {
    let c = CString::new(s.replace('\0', " ")).unwrap_or_default();
    // SAFETY: `c` is NUL-terminated; strdup copies it into malloc'ed memory
    // (or returns null, which the runner tolerates as "unknown").
    unsafe { libc::strdup(c.as_ptr()) }
}

/// `bool (*check_config)(const char *cfgstring, char **reason)`.
///
/// # Safety
/// `cfgstring` is null or NUL-terminated; `reason` is null or writable.
pub(crate) unsafe extern "C" fn check_config<H: Handler>(
    cfgstring: *const c_char,
    reason: *mut *mut c_char,
) -> bool {
    let verdict = guard("check_config", || {
        let h = handler::<H>().ok_or_else(|| "the handler is not registered".to_owned())?;
        if cfgstring.is_null() {
            return Err("no configuration string given".to_owned());
        }
        // SAFETY: non-null and NUL-terminated (the runner passes the D-Bus string).
        let cfg = unsafe { CStr::from_ptr(cfgstring) }.to_string_lossy();
        h.check_config(&cfg)
    })
    .unwrap_or_else(|| Err("internal error while checking the configuration (see the log)".to_owned()));
    match verdict {
        Ok(()) => true,
        Err(why) => {
            if !reason.is_null() {
                // SAFETY: `reason` is non-null and writable (the runner's local).
                unsafe { *reason = malloc_c_string(&why) };
            }
            false
        }
    }
}

/// `int (*open)(struct tcmu_device *dev, bool reopen)`.
///
/// # Safety
/// `dev` is the device being opened (see `Device::from_raw`).
pub(crate) unsafe extern "C" fn open<H: Handler>(dev: *mut sys::tcmu_device, reopen: bool) -> c_int {
    let _scope = DeviceScope::enter(dev);
    // SAFETY: the runner passes a live device for the whole callout.
    let Some(device) = (unsafe { Device::from_raw(dev) }) else { return Errno::EINVAL.to_c() };
    let opened = guard("open", || {
        let h = handler::<H>().ok_or(Errno::EINVAL)?;
        h.open(&device, reopen)
    });
    match opened {
        Some(Ok(state)) => {
            device.set_private(Box::into_raw(Box::new(state)).cast());
            0
        }
        Some(Err(errno)) => errno.to_c(),
        None => Errno::EIO.to_c(),
    }
}

/// `void (*close)(struct tcmu_device *dev)`.
///
/// # Safety
/// `dev` is a device `open` succeeded on, with no command in flight.
pub(crate) unsafe extern "C" fn close<H: Handler>(dev: *mut sys::tcmu_device) {
    let _scope = DeviceScope::enter(dev);
    // SAFETY: the runner passes a live device for the whole callout.
    let Some(device) = (unsafe { Device::from_raw(dev) }) else { return };
    let p = device.private().cast::<H::Device>();
    if p.is_null() {
        log::warn!("close of a device that has no state");
        return;
    }
    device.set_private(std::ptr::null_mut());
    // SAFETY: `p` is the `Box<H::Device>` leaked by `open` for this device;
    // the private pointer is cleared, so this is the only owner from now on.
    let state = unsafe { Box::from_raw(p) };
    guard("close", || match handler::<H>() {
        Some(h) => h.close(&device, state),
        None => drop(state),
    });
}

/// `int (*reconfig)(struct tcmu_device *dev, struct tcmulib_cfg_info *cfg)`.
///
/// # Safety
/// `dev` is an open device; `cfg` is null or a valid `tcmulib_cfg_info`.
pub(crate) unsafe extern "C" fn reconfig<H: Handler>(
    dev: *mut sys::tcmu_device,
    cfg: *mut sys::tcmulib_cfg_info,
) -> c_int {
    let _scope = DeviceScope::enter(dev);
    // SAFETY: the runner passes a live device for the whole callout.
    let Some(device) = (unsafe { Device::from_raw(dev) }) else { return Errno::EINVAL.to_c() };
    // SAFETY: `cfg` is null or valid for the callout (libtcmu's local).
    let Some(change) = (unsafe { reconfig_change(cfg) }) else { return Errno::EINVAL.to_c() };
    let done = guard("reconfig", || {
        let (h, s) = handler::<H>().zip(state::<H>(&device)).ok_or(Errno::EINVAL)?;
        h.reconfig(&device, s, change)
    });
    match done {
        Some(Ok(())) => 0,
        Some(Err(errno)) => errno.to_c(),
        None => Errno::EIO.to_c(),
    }
}

/// Reads the union of a `tcmulib_cfg_info` according to its type.
///
/// # Safety
/// `cfg` is null or points to a valid `tcmulib_cfg_info` that outlives `'a`.
unsafe fn reconfig_change<'a>(cfg: *const sys::tcmulib_cfg_info) -> Option<Reconfig<'a>> {
    // SAFETY: null or valid (caller's contract).
    let cfg = unsafe { cfg.as_ref() }?;
    Some(match cfg.type_ {
        sys::tcmulib_cfg_type_TCMULIB_CFG_DEV_CFGSTR => {
            // SAFETY: `type_` says `dev_cfgstring` is the member libtcmu set.
            let s = unsafe { cfg.data.dev_cfgstring };
            if s.is_null() {
                return None;
            }
            // SAFETY: non-null, NUL-terminated (a netlink string attribute),
            // alive for the callout.
            Reconfig::CfgString(unsafe { CStr::from_ptr(s) }.to_str().ok()?)
        }
        // SAFETY: `type_` says `dev_size` is the member that was set.
        sys::tcmulib_cfg_type_TCMULIB_CFG_DEV_SIZE => Reconfig::Size(unsafe { cfg.data.dev_size }),
        sys::tcmulib_cfg_type_TCMULIB_CFG_WRITE_CACHE => {
            // SAFETY: `type_` says `write_cache` is the member that was set.
            Reconfig::WriteCache(unsafe { cfg.data.write_cache })
        }
        _ => return None,
    })
}

/// Common path of every command callout. `prepare` builds what the handler
/// needs from the raw arguments (an error status completes the command at
/// once, by the runner); then the handler gets the command and the shim
/// returns "queued". A panic inside the handler drops the `Cmd`, whose `Drop`
/// completes it with a hardware error, so the command completes exactly once.
///
/// # Safety
/// `dev` and `cmd` are the arguments of a command callout (see `Cmd::from_raw`).
unsafe fn submit<H: Handler, A>(
    callout: &str,
    dev: *mut sys::tcmu_device,
    cmd: *mut sys::tcmur_cmd,
    prepare: impl FnOnce() -> Result<A, Status>,
    run: impl FnOnce(&H, &H::Device, Cmd, A),
) -> c_int {
    let _scope = DeviceScope::enter(dev);
    // SAFETY: the runner passes a live device for the whole callout.
    let Some(device) = (unsafe { Device::from_raw(dev) }) else { return Status::HardwareError.code() };
    let Some((h, s)) = handler::<H>().zip(state::<H>(&device)) else {
        log::error!("{callout} on a device that is not open");
        return Status::HardwareError.code();
    };
    let args = match guard(callout, prepare) {
        Some(Ok(args)) => args,
        Some(Err(status)) => return status.code(),
        None => return Status::HardwareError.code(),
    };
    // SAFETY: a command callout's arguments, and we return TCMU_STS_OK below
    // whatever happens, so the runner leaves completion to this `Cmd`.
    let Some(cmd) = (unsafe { Cmd::from_raw(dev, cmd) }) else { return Status::HardwareError.code() };
    guard(callout, || run(h, s, cmd, args));
    Status::Ok.code()
}

/// Views a command's iovecs for `submit`'s `prepare` step.
///
/// # Safety
/// As `IoVecs::from_raw`: the iovecs of a command callout.
unsafe fn view(iov: *mut sys::iovec, cnt: usize) -> Result<IoVecs, Status> {
    // SAFETY: the runner passes the command's iovec array and its buffers,
    // which stay valid and ours until `tcmur_cmd_complete` (the `Cmd`).
    unsafe { IoVecs::from_raw(iov, cnt) }.map_err(|e| {
        log::error!("bad iovec list: {e}");
        Status::HardwareError
    })
}

/// The first `len` bytes of a command's iovecs, which must hold that many.
///
/// # Safety
/// As `view`.
unsafe fn buffers(iov: *mut sys::iovec, cnt: usize, len: usize) -> Result<IoVecs, Status> {
    // SAFETY: forwarded from our caller's contract.
    let bufs = unsafe { view(iov, cnt) }?;
    if bufs.len() < len {
        log::error!("the iovecs hold {} bytes, the command needs {len}", bufs.len());
        return Err(Status::HardwareError);
    }
    Ok(bufs.truncated(len))
}

fn offset(off: sys::off_t) -> Result<u64, Status> {
    u64::try_from(off).map_err(|_| Status::Range)
}

/// `int (*read)(dev, cmd, iovec, iov_cnt, len, off)`.
///
/// # Safety
/// The runner's arguments for a READ (see `submit` and `buffers`).
pub(crate) unsafe extern "C" fn read<H: Handler>(
    dev: *mut sys::tcmu_device,
    cmd: *mut sys::tcmur_cmd,
    iov: *mut sys::iovec,
    cnt: usize,
    len: usize,
    off: sys::off_t,
) -> c_int {
    // SAFETY: the runner's READ arguments, passed through unchanged.
    let prepare = || Ok((unsafe { buffers(iov, cnt, len) }?, offset(off)?));
    // SAFETY: the runner's command callout arguments.
    unsafe { submit::<H, _>("read", dev, cmd, prepare, |h, s, c, (b, o)| h.read(s, c, b, o)) }
}

/// `int (*write)(dev, cmd, iovec, iov_cnt, len, off)`.
///
/// # Safety
/// The runner's arguments for a WRITE (see `submit` and `buffers`).
pub(crate) unsafe extern "C" fn write<H: Handler>(
    dev: *mut sys::tcmu_device,
    cmd: *mut sys::tcmur_cmd,
    iov: *mut sys::iovec,
    cnt: usize,
    len: usize,
    off: sys::off_t,
) -> c_int {
    // SAFETY: the runner's WRITE arguments, passed through unchanged.
    let prepare = || Ok((unsafe { buffers(iov, cnt, len) }?, offset(off)?));
    // SAFETY: the runner's command callout arguments.
    unsafe { submit::<H, _>("write", dev, cmd, prepare, |h, s, c, (b, o)| h.write(s, c, b, o)) }
}

/// `int (*flush)(dev, cmd)`.
///
/// # Safety
/// The runner's arguments for a SYNCHRONIZE CACHE.
pub(crate) unsafe extern "C" fn flush<H: Handler>(
    dev: *mut sys::tcmu_device,
    cmd: *mut sys::tcmur_cmd,
) -> c_int {
    // SAFETY: the runner's command callout arguments.
    unsafe { submit::<H, _>("flush", dev, cmd, || Ok(()), |h, s, c, ()| h.flush(s, c)) }
}

/// `int (*unmap)(dev, cmd, off, len)`.
///
/// # Safety
/// The runner's arguments for one UNMAP descriptor.
pub(crate) unsafe extern "C" fn unmap<H: Handler>(
    dev: *mut sys::tcmu_device,
    cmd: *mut sys::tcmur_cmd,
    off: u64,
    len: u64,
) -> c_int {
    // SAFETY: the runner's command callout arguments.
    unsafe { submit::<H, _>("unmap", dev, cmd, || Ok(()), |h, s, c, ()| h.unmap(s, c, off, len)) }
}

/// `int (*writesame)(dev, cmd, off, len, iovec, iov_cnt)`; the iovecs hold one block.
///
/// # Safety
/// The runner's arguments for a WRITE SAME.
pub(crate) unsafe extern "C" fn writesame<H: Handler>(
    dev: *mut sys::tcmu_device,
    cmd: *mut sys::tcmur_cmd,
    off: u64,
    len: u64,
    iov: *mut sys::iovec,
    cnt: usize,
) -> c_int {
    // SAFETY: the runner's WRITE SAME buffers (one block), passed through.
    let prepare = || unsafe { view(iov, cnt) };
    // SAFETY: the runner's command callout arguments.
    unsafe {
        submit::<H, _>("writesame", dev, cmd, prepare, |h, s, c, block| h.write_same(s, c, off, len, block))
    }
}

/// `int (*caw)(dev, cmd, off, len, iovec, iov_cnt)`; `len` is one half of the iovecs.
///
/// # Safety
/// The runner's arguments for a COMPARE AND WRITE.
pub(crate) unsafe extern "C" fn caw<H: Handler>(
    dev: *mut sys::tcmu_device,
    cmd: *mut sys::tcmur_cmd,
    off: u64,
    len: u64,
    iov: *mut sys::iovec,
    cnt: usize,
) -> c_int {
    // The one place the command's two halves are told apart: `len` bytes to
    // compare, then `len` bytes to write, in one iovec list.
    let prepare = || {
        let half = usize::try_from(len).map_err(|_| Status::InvalidCdb)?;
        let both = half.checked_mul(2).ok_or(Status::InvalidCdb)?;
        // SAFETY: the runner's COMPARE AND WRITE buffers, passed through.
        let bufs = unsafe { buffers(iov, cnt, both) }?;
        bufs.split_at(half).map_err(|_| Status::HardwareError)
    };
    // SAFETY: the runner's command callout arguments.
    unsafe {
        submit::<H, _>("caw", dev, cmd, prepare, |h, s, c, (compare, data)| {
            h.compare_and_write(s, c, off, compare, data)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panic_messages_are_recovered_from_str_and_string_payloads() {
        let a = catch_unwind(|| panic!("plain")).unwrap_err();
        assert_eq!(panic_message(&*a), "plain");
        let b = catch_unwind(|| panic!("with {}", 1)).unwrap_err();
        assert_eq!(panic_message(&*b), "with 1");
    }

    #[test]
    fn negative_offsets_are_out_of_range() {
        assert_eq!(offset(-1), Err(Status::Range));
        assert_eq!(offset(4096), Ok(4096));
    }

    #[test]
    fn a_reconfig_of_each_type_is_read_from_its_union_member() {
        let mut cfg = sys::tcmulib_cfg_info {
            type_: sys::tcmulib_cfg_type_TCMULIB_CFG_DEV_SIZE,
            data: sys::tcmulib_cfg_info__bindgen_ty_1 { dev_size: 1 << 30 },
        };
        // SAFETY: `cfg` is a valid, live `tcmulib_cfg_info`.
        assert_eq!(unsafe { reconfig_change(&cfg) }, Some(Reconfig::Size(1 << 30)));
        cfg.type_ = sys::tcmulib_cfg_type_TCMULIB_CFG_WRITE_CACHE;
        cfg.data.write_cache = true;
        // SAFETY: as above, with the write_cache member set.
        assert_eq!(unsafe { reconfig_change(&cfg) }, Some(Reconfig::WriteCache(true)));
        let s = c"hamirror/legs=/a,/b";
        cfg.type_ = sys::tcmulib_cfg_type_TCMULIB_CFG_DEV_CFGSTR;
        cfg.data.dev_cfgstring = s.as_ptr().cast_mut();
        // SAFETY: as above, with a cfgstring that outlives the call.
        assert_eq!(unsafe { reconfig_change(&cfg) }, Some(Reconfig::CfgString("hamirror/legs=/a,/b")));
        // SAFETY: null is allowed.
        assert_eq!(unsafe { reconfig_change(std::ptr::null()) }, None);
    }
}
