//! A queued SCSI command that the handler completes exactly once, from any thread.

use crate::status::Status;
use crate::sys;
use std::ptr::NonNull;

/// One command handed to the handler with `nr_threads = 0`: the callout
/// returned "queued" and whoever holds the `Cmd` must complete it.
///
/// Completion consumes the handle, so it happens at most once; if a `Cmd` is
/// dropped without being completed (a bug, or a panic unwinding through its
/// owner) it completes itself with a hardware error, so it also happens at
/// least once and the host never waits for `cmd_time_out`.
#[derive(Debug)]
pub struct Cmd {
    dev: NonNull<sys::tcmu_device>,
    cmd: NonNull<sys::tcmur_cmd>,
    completed: bool,
}

// SAFETY: a `Cmd` only carries the two pointers to `tcmur_cmd_complete` (and
// the sense buffer of a command it owns). tcmu-runner allows completion from
// any thread (LIO-VM.md §6, tcmur_aio.c), and keeps both the device and the
// command alive until the command is completed (`Cmd::from_raw`'s contract).
unsafe impl Send for Cmd {}

impl Cmd {
    /// Takes charge of a command a callout received.
    ///
    /// # Safety
    /// `dev` and `cmd` must be the arguments of a read, write, flush, unmap,
    /// writesame or caw callout of a handler with `nr_threads = 0` that will
    /// return `TCMU_STS_OK` ("queued"): the runner then keeps both alive until
    /// `tcmur_cmd_complete` is called for `cmd`, which only this `Cmd` may do.
    pub(crate) unsafe fn from_raw(dev: *mut sys::tcmu_device, cmd: *mut sys::tcmur_cmd) -> Option<Cmd> {
        Some(Cmd { dev: NonNull::new(dev)?, cmd: NonNull::new(cmd)?, completed: false })
    }

    /// Completes the command with `status`.
    pub fn complete(mut self, status: Status) {
        self.finish(status);
    }

    /// Completes the command with `status` after putting `info` into the
    /// INFORMATION field of its sense data (for MISCOMPARE: the offset of the
    /// first differing byte). Without a sense buffer, only the status is sent.
    pub fn complete_with_info(mut self, status: Status, info: u32) {
        self.set_sense_info(info);
        self.finish(status);
    }

    fn set_sense_info(&mut self, info: u32) {
        // SAFETY: the command is live and owned by us until completed
        // (`from_raw`'s contract); `lib_cmd` is set by the runner when it
        // allocates the command and is only read here.
        let lib_cmd = unsafe { (*self.cmd.as_ptr()).lib_cmd };
        if lib_cmd.is_null() {
            log::warn!("command without a sense buffer; sense information {info} not set");
            return;
        }
        // SAFETY: `lib_cmd` points to the live `tcmulib_cmd` of our command,
        // whose sense buffer nobody else touches before completion;
        // `tcmu_sense_set_info` writes within its first 18 bytes.
        unsafe { sys::tcmu_sense_set_info((*lib_cmd).sense_buf.as_mut_ptr(), info) }
    }

    fn finish(&mut self, status: Status) {
        debug_assert!(!self.completed, "a command completed twice");
        self.completed = true;
        // SAFETY: both pointers are live until this call (`from_raw`'s
        // contract) and `completed` guarantees it happens once; the runner
        // frees or reuses the command afterwards, and we never touch it again.
        unsafe { sys::tcmur_cmd_complete(self.dev.as_ptr(), self.cmd.as_ptr().cast(), status.code()) }
    }
}

impl Drop for Cmd {
    fn drop(&mut self) {
        if !self.completed {
            log::error!("a command was dropped without being completed; failing it with a hardware error");
            self.finish(Status::HardwareError);
        }
    }
}
