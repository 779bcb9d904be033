//! A safe, borrowed view of the `struct tcmu_device` a callout receives.

use crate::status::Errno;
use crate::sys;
use std::borrow::Cow;
use std::ffi::CStr;
use std::marker::PhantomData;
use std::os::raw::c_void;
use std::ptr::NonNull;

/// The device of the current callout. It borrows tcmu-runner's device for the
/// duration of the callout and cannot leave it (it is neither `Send` nor `'static`).
#[derive(Debug)]
pub struct Device<'a> {
    raw: NonNull<sys::tcmu_device>,
    _callout: PhantomData<&'a sys::tcmu_device>,
}

impl<'a> Device<'a> {
    /// Wraps the device pointer a callout was given; `None` if it is null.
    ///
    /// # Safety
    /// `raw` must be a device tcmu-runner (or libtcmu) passed to the running
    /// callout, valid for `'a`: the runner keeps a device alive until after
    /// `close()` returns.
    pub(crate) unsafe fn from_raw(raw: *mut sys::tcmu_device) -> Option<Device<'a>> {
        NonNull::new(raw).map(|raw| Device { raw, _callout: PhantomData })
    }

    pub(crate) fn as_ptr(&self) -> *mut sys::tcmu_device {
        self.raw.as_ptr()
    }

    /// The configuration string, with tcmu-runner's `"<subtype>/"` prefix
    /// (and without `;tcmur_cmd_time_out=`, which the runner strips).
    pub fn cfgstring(&self) -> Cow<'a, str> {
        // SAFETY: `self.raw` is a live device (`from_raw`'s contract); libtcmu
        // returns its own NUL-terminated copy of the cfgstring or NULL.
        let s = unsafe { sys::tcmu_dev_get_cfgstring(self.as_ptr()) };
        if s.is_null() {
            return Cow::Borrowed("");
        }
        // SAFETY: non-null and NUL-terminated (above); the string lives in the
        // device, which outlives `'a`, and is changed only by a reconfig, which
        // the runner does not run concurrently with this callout.
        unsafe { CStr::from_ptr(s) }.to_string_lossy()
    }

    /// Number of logical blocks (`dev_size / hw_block_size`).
    pub fn num_lbas(&self) -> u64 {
        // SAFETY: `self.raw` is a live device (`from_raw`'s contract).
        unsafe { sys::tcmu_dev_get_num_lbas(self.as_ptr()) }
    }

    /// Logical block size in bytes (`hw_block_size`).
    pub fn block_size(&self) -> u32 {
        // SAFETY: `self.raw` is a live device (`from_raw`'s contract).
        unsafe { sys::tcmu_dev_get_block_size(self.as_ptr()) }
    }

    /// Size in bytes, or `None` if it overflows a `u64`.
    pub fn size_bytes(&self) -> Option<u64> {
        self.num_lbas().checked_mul(u64::from(self.block_size()))
    }

    /// Whether the host is told that a volatile write cache is on (the WCE bit).
    pub fn set_write_cache_enabled(&self, enabled: bool) {
        // SAFETY: `self.raw` is a live device (`from_raw`'s contract).
        unsafe { sys::tcmu_dev_set_write_cache_enabled(self.as_ptr(), enabled) }
    }

    /// Whether UNMAP and WRITE SAME with UNMAP are offered to the host (the
    /// LBPU/LBPWS bits). tcmu-runner 1.5.4 also reports LBPRZ=1 (unmapped
    /// blocks read as zeroes), so offer it only where that holds.
    pub fn set_unmap_enabled(&self, enabled: bool) {
        // SAFETY: `self.raw` is a live device (`from_raw`'s contract).
        unsafe { sys::tcmu_dev_set_unmap_enabled(self.as_ptr(), enabled) }
    }

    /// UNMAP GRANULARITY ALIGNMENT, in blocks. It must not be 0: tcmu-runner
    /// 1.5.4 sets 0 before `open` and then computes `lba % align` for a WRITE
    /// SAME with the UNMAP bit, a division by zero that kills the runner.
    pub fn set_unmap_gran_align(&self, blocks: u32) {
        assert!(blocks > 0, "tcmu-runner divides by the unmap alignment");
        // SAFETY: `self.raw` is a live device (`from_raw`'s contract).
        unsafe { sys::tcmu_dev_set_unmap_gran_align(self.as_ptr(), blocks) }
    }

    /// Changes the LUN's size (in configfs too) and raises a capacity-changed
    /// unit attention for the host.
    pub fn update_size(&self, bytes: u64) -> Result<(), Errno> {
        // SAFETY: `self.raw` is a live device (`from_raw`'s contract); the
        // runner's implementation only touches the device and configfs.
        match unsafe { sys::tcmur_dev_update_size(self.as_ptr(), bytes) } {
            0 => Ok(()),
            rc => Err(Errno(rc.abs())),
        }
    }

    /// The handler's private pointer (`tcmur_dev_get_private`).
    pub(crate) fn private(&self) -> *mut c_void {
        // SAFETY: `self.raw` is a live device (`from_raw`'s contract).
        unsafe { sys::tcmur_dev_get_private(self.as_ptr()) }
    }

    /// Sets the handler's private pointer (`tcmur_dev_set_private`; not
    /// `tcmu_dev_set_private`, which holds the runner's own state).
    pub(crate) fn set_private(&self, private: *mut c_void) {
        // SAFETY: `self.raw` is a live device (`from_raw`'s contract); the
        // runner stores the pointer and never dereferences it.
        unsafe { sys::tcmur_dev_set_private(self.as_ptr(), private) }
    }
}
