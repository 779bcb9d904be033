//! tcmu-runner's and libtcmu's side of the handler API, played by this
//! process: the functions a handler `.so` leaves undefined, exported from the
//! test executable (`build.rs` links with `--export-dynamic`), over fake
//! devices and commands that this crate owns.
//!
//! The C-variadic log functions are in `c/tcmu_log.c`; they hand each line to
//! [`log_sink`].

use hamirror_ffi::sys;
use parking_lot::{Condvar, Mutex};
use std::cell::UnsafeCell;
use std::ffi::{CStr, CString};
use std::os::raw::{c_char, c_int, c_void};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The device the runner would create for a backstore.
pub struct FakeDevice {
    cfgstring: CString,
    num_lbas: AtomicU64,
    block_size: u32,
    write_cache: AtomicBool,
    /// What the handler told the runner about UNMAP.
    pub unmap_enabled: AtomicBool,
    pub unmap_gran_align: AtomicU32,
    private: AtomicPtr<c_void>,
    /// How often the handler asked for a size change.
    pub size_updates: AtomicU32,
}

impl FakeDevice {
    pub fn new(cfgstring: &str, size: u64, block_size: u32) -> Box<FakeDevice> {
        Box::new(FakeDevice {
            cfgstring: CString::new(cfgstring).expect("a cfgstring without NUL"),
            num_lbas: AtomicU64::new(size / u64::from(block_size)),
            block_size,
            write_cache: AtomicBool::new(false),
            // As tcmu-runner 1.5.4 sets them before `open`.
            unmap_enabled: AtomicBool::new(true),
            unmap_gran_align: AtomicU32::new(0),
            private: AtomicPtr::new(std::ptr::null_mut()),
            size_updates: AtomicU32::new(0),
        })
    }

    /// The pointer the handler gets; only the functions below dereference it.
    pub fn as_raw(&self) -> *mut sys::tcmu_device {
        (self as *const FakeDevice).cast_mut().cast()
    }

    pub fn write_cache_enabled(&self) -> bool {
        self.write_cache.load(Ordering::SeqCst)
    }

    pub fn has_private(&self) -> bool {
        !self.private.load(Ordering::SeqCst).is_null()
    }
}

/// # Safety
/// `dev` must come from [`FakeDevice::as_raw`] of a device that is still alive.
unsafe fn fake<'a>(dev: *mut sys::tcmu_device) -> &'a FakeDevice {
    // SAFETY: the caller's contract; the handler only passes back devices it got from us.
    unsafe { &*dev.cast::<FakeDevice>() }
}

/// One command as the runner allocates it: `struct tcmur_cmd` first (the
/// handler's pointer to it is a pointer to the whole), then its `tcmulib_cmd`
/// with the sense buffer.
#[repr(C)]
pub struct FakeCmd {
    tcmur: UnsafeCell<sys::tcmur_cmd>,
    lib: UnsafeCell<sys::tcmulib_cmd>,
    status: Mutex<Option<c_int>>,
    done: Condvar,
    completions: AtomicU32,
}

// SAFETY: the C structs are written by us before the command is submitted and
// afterwards only by the handler through `tcmu_sense_set_info` before it
// completes the command; we read the sense buffer only after the completion,
// which `status`'s mutex orders after that write.
unsafe impl Send for FakeCmd {}
// SAFETY: as for `Send`.
unsafe impl Sync for FakeCmd {}

/// Commands the handler completed more than once (must stay 0).
pub static DOUBLE_COMPLETIONS: AtomicU64 = AtomicU64::new(0);

impl FakeCmd {
    /// A command over `iov_cnt` iovecs at `iov`. It lives in an `Arc` from
    /// the start: its `tcmur_cmd` points to its own `tcmulib_cmd`.
    pub fn new(iov: *mut sys::iovec, iov_cnt: usize) -> Arc<FakeCmd> {
        let cmd = Arc::new(FakeCmd {
            // SAFETY: both C structs are plain data for which all-zero is a
            // valid value (null pointers, zero counts, no `done`).
            tcmur: UnsafeCell::new(unsafe { std::mem::zeroed() }),
            // SAFETY: as above.
            lib: UnsafeCell::new(unsafe { std::mem::zeroed() }),
            status: Mutex::new(None),
            done: Condvar::new(),
            completions: AtomicU32::new(0),
        });
        // SAFETY: the command is not shared yet; the `Arc` gives both fields
        // a stable address for the `lib_cmd` link.
        unsafe {
            (*cmd.lib.get()).iovec = iov;
            (*cmd.lib.get()).iov_cnt = iov_cnt;
            (*cmd.tcmur.get()).lib_cmd = cmd.lib.get();
            (*cmd.tcmur.get()).iovec = iov;
            (*cmd.tcmur.get()).iov_cnt = iov_cnt;
        }
        cmd
    }

    pub fn as_raw(&self) -> *mut sys::tcmur_cmd {
        self.tcmur.get()
    }

    /// What the runner does when a callout returns an error: completes it itself.
    pub fn complete_by_runner(&self, status: c_int) {
        *self.status.lock() = Some(status);
    }

    fn complete_by_handler(&self, status: c_int) {
        if self.completions.fetch_add(1, Ordering::SeqCst) > 0 {
            DOUBLE_COMPLETIONS.fetch_add(1, Ordering::SeqCst);
            return;
        }
        *self.status.lock() = Some(status);
        self.done.notify_all();
    }

    /// How often the handler called `tcmur_cmd_complete` for this command.
    pub fn handler_completions(&self) -> u32 {
        self.completions.load(Ordering::SeqCst)
    }

    /// Waits for the completion; `None` after `timeout`.
    pub fn wait(&self, timeout: Duration) -> Option<c_int> {
        let deadline = Instant::now() + timeout;
        let mut status = self.status.lock();
        while status.is_none() {
            if self.done.wait_until(&mut status, deadline).timed_out() {
                break;
            }
        }
        *status
    }

    /// The INFORMATION field of the sense data, if its VALID bit is set.
    pub fn sense_info(&self) -> Option<u32> {
        let _completed = self.status.lock();
        // SAFETY: read after completion, ordered by the lock (see `Sync`).
        let sense = unsafe { (*self.lib.get()).sense_buf };
        (sense[0] & 0x80 != 0).then(|| u32::from_be_bytes([sense[3], sense[4], sense[5], sense[6]]))
    }
}

/// The handler table `handler_init` registered.
pub static HANDLER: AtomicPtr<sys::tcmur_handler> = AtomicPtr::new(std::ptr::null_mut());

/// One line the handler logged.
#[derive(Clone, Debug)]
pub struct LogLine {
    pub level: c_int,
    pub func: String,
    pub msg: String,
}

/// Everything the handler logged, in order.
pub static LOG: Mutex<Vec<LogLine>> = Mutex::new(Vec::new());

/// Receives each formatted line from `c/tcmu_log.c`.
///
/// # Safety
/// `func` and `msg` are null or NUL-terminated.
pub unsafe extern "C" fn log_sink(
    level: c_int,
    _dev: *mut sys::tcmu_device,
    func: *const c_char,
    _line: c_int,
    msg: *const c_char,
) {
    let text = |p: *const c_char| {
        if p.is_null() {
            return String::new();
        }
        // SAFETY: non-null and NUL-terminated (the caller's contract).
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    };
    let line = LogLine { level, func: text(func), msg: text(msg).trim_end().to_owned() };
    if std::env::var_os("HAMIRROR_HARNESS_LOG").is_some() {
        eprintln!("[handler {}] {}: {}", line.level, line.func, line.msg);
    }
    LOG.lock().push(line);
}

extern "C" {
    /// Installs the sink the C log functions call (`c/tcmu_log.c`).
    pub fn hamirror_harness_set_log_sink(
        sink: unsafe extern "C" fn(c_int, *mut sys::tcmu_device, *const c_char, c_int, *const c_char),
    );
}

#[no_mangle]
pub extern "C" fn tcmur_register_handler(handler: *mut sys::tcmur_handler) -> c_int {
    match HANDLER.compare_exchange(std::ptr::null_mut(), handler, Ordering::SeqCst, Ordering::SeqCst) {
        Ok(_) => 0,
        Err(_) => -libc::EEXIST,
    }
}

/// # Safety
/// `data` is a command this crate submitted (a [`FakeCmd`]).
#[no_mangle]
pub unsafe extern "C" fn tcmur_cmd_complete(_dev: *mut sys::tcmu_device, data: *mut c_void, rc: c_int) {
    // SAFETY: the handler completes the `tcmur_cmd` pointer it was given,
    // which is the first field of a `FakeCmd` we keep alive.
    let cmd = unsafe { &*data.cast::<FakeCmd>() };
    cmd.complete_by_handler(rc);
}

/// # Safety
/// `dev` is a live fake device.
#[no_mangle]
pub unsafe extern "C" fn tcmur_dev_set_private(dev: *mut sys::tcmu_device, private: *mut c_void) {
    // SAFETY: the caller's contract.
    unsafe { fake(dev) }.private.store(private, Ordering::SeqCst);
}

/// # Safety
/// `dev` is a live fake device.
#[no_mangle]
pub unsafe extern "C" fn tcmur_dev_get_private(dev: *mut sys::tcmu_device) -> *mut c_void {
    // SAFETY: the caller's contract.
    unsafe { fake(dev) }.private.load(Ordering::SeqCst)
}

/// # Safety
/// `dev` is a live fake device.
#[no_mangle]
pub unsafe extern "C" fn tcmur_dev_update_size(dev: *mut sys::tcmu_device, new_size: u64) -> c_int {
    // SAFETY: the caller's contract.
    let d = unsafe { fake(dev) };
    if new_size == 0 {
        return -libc::EINVAL;
    }
    d.num_lbas.store(new_size / u64::from(d.block_size), Ordering::SeqCst);
    d.size_updates.fetch_add(1, Ordering::SeqCst);
    0
}

/// # Safety
/// `dev` is a live fake device.
#[no_mangle]
pub unsafe extern "C" fn tcmu_dev_get_cfgstring(dev: *mut sys::tcmu_device) -> *mut c_char {
    // SAFETY: the caller's contract; the handler only reads the string.
    unsafe { fake(dev) }.cfgstring.as_ptr().cast_mut()
}

/// # Safety
/// `dev` is a live fake device.
#[no_mangle]
pub unsafe extern "C" fn tcmu_dev_get_num_lbas(dev: *mut sys::tcmu_device) -> u64 {
    // SAFETY: the caller's contract.
    unsafe { fake(dev) }.num_lbas.load(Ordering::SeqCst)
}

/// # Safety
/// `dev` is a live fake device.
#[no_mangle]
pub unsafe extern "C" fn tcmu_dev_get_block_size(dev: *mut sys::tcmu_device) -> u32 {
    // SAFETY: the caller's contract.
    unsafe { fake(dev) }.block_size
}

/// # Safety
/// `dev` is a live fake device.
#[no_mangle]
pub unsafe extern "C" fn tcmu_dev_set_write_cache_enabled(dev: *mut sys::tcmu_device, enabled: bool) {
    // SAFETY: the caller's contract.
    unsafe { fake(dev) }.write_cache.store(enabled, Ordering::SeqCst);
}

/// # Safety
/// `dev` is a device this harness created.
#[no_mangle]
pub unsafe extern "C" fn tcmu_dev_set_unmap_enabled(dev: *mut sys::tcmu_device, enabled: bool) {
    // SAFETY: the caller's contract.
    unsafe { fake(dev) }.unmap_enabled.store(enabled, Ordering::SeqCst);
}

/// # Safety
/// `dev` is a device this harness created.
#[no_mangle]
pub unsafe extern "C" fn tcmu_dev_set_unmap_gran_align(dev: *mut sys::tcmu_device, align: u32) {
    // SAFETY: the caller's contract.
    unsafe { fake(dev) }.unmap_gran_align.store(align, Ordering::SeqCst);
}

/// Fixed-format sense data, INFORMATION field: VALID bit and bytes 3..7 (SPC).
///
/// # Safety
/// `sense_buf` points to at least 18 writable bytes.
#[no_mangle]
pub unsafe extern "C" fn tcmu_sense_set_info(sense_buf: *mut u8, info: u32) {
    // SAFETY: the caller's contract (a command's 96-byte sense buffer).
    let sense = unsafe { std::slice::from_raw_parts_mut(sense_buf, 18) };
    sense.fill(0);
    sense[3..7].copy_from_slice(&info.to_be_bytes());
    sense[0] |= 0x80;
}

/// Every function above, referenced so that the linker keeps them all in the
/// test executable (nothing in it calls them; the handler does, at run time).
pub fn exported_functions() -> [*const c_void; 12] {
    [
        tcmur_register_handler as *const c_void,
        tcmur_cmd_complete as *const c_void,
        tcmur_dev_set_private as *const c_void,
        tcmur_dev_get_private as *const c_void,
        tcmur_dev_update_size as *const c_void,
        tcmu_dev_get_cfgstring as *const c_void,
        tcmu_dev_get_num_lbas as *const c_void,
        tcmu_dev_get_block_size as *const c_void,
        tcmu_dev_set_write_cache_enabled as *const c_void,
        tcmu_dev_set_unmap_enabled as *const c_void,
        tcmu_dev_set_unmap_gran_align as *const c_void,
        tcmu_sense_set_info as *const c_void,
    ]
}
