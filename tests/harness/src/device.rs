//! A device opened through the handler, and SCSI-like commands on it with
//! scattered host buffers, completed and checked as tcmu-runner would.

use crate::load::Runner;
use crate::runner::{FakeCmd, FakeDevice};
use hamirror_ffi::sys;
use parking_lot::Mutex;
use std::os::raw::c_int;
use std::sync::Arc;
use std::time::Duration;

/// How long a command may take before the test fails.
pub const COMMAND_DEADLINE: Duration = Duration::from_secs(60);

/// Host memory of one command, as the ring would hold it: separate chunks.
struct HostMem {
    chunks: Vec<Box<[u8]>>,
    iov: Vec<sys::iovec>,
}

// SAFETY: the iovecs point into `chunks`, which move with them.
unsafe impl Send for HostMem {}

impl HostMem {
    /// `data` cut into chunks of the sizes in `split` (cycled; the last one
    /// takes what remains). An empty `split` means one chunk.
    fn new(data: &[u8], split: &[usize]) -> HostMem {
        let mut chunks = Vec::new();
        let mut at = 0;
        let mut sizes = split.iter().copied().filter(|&s| s > 0).cycle();
        while at < data.len() {
            let n = sizes.next().unwrap_or(data.len()).min(data.len() - at);
            chunks.push(data[at..at + n].to_vec().into_boxed_slice());
            at += n;
        }
        let iov = chunks
            .iter_mut()
            .map(|c| sys::iovec { iov_base: c.as_mut_ptr().cast(), iov_len: c.len() })
            .collect();
        HostMem { chunks, iov }
    }

    fn bytes(&self) -> Vec<u8> {
        self.chunks.concat()
    }
}

/// A command on the way: returned by [`Dev::submit`], finished by [`Dev::wait`].
pub struct Pending {
    cmd: Arc<FakeCmd>,
    mem: HostMem,
    /// The callout refused the command; the runner completed it at once.
    immediate: bool,
}

/// How a command ended.
#[derive(Debug)]
pub struct Completion {
    pub status: c_int,
    /// For reads: the host buffer after completion.
    pub data: Vec<u8>,
    /// The sense data's INFORMATION field, if set.
    pub sense_info: Option<u32>,
}

/// What to send.
pub enum Op<'a> {
    Read { offset: u64, len: usize },
    Write { offset: u64, data: &'a [u8] },
    Flush,
    Unmap { offset: u64, len: u64 },
    WriteSame { offset: u64, len: u64, block: &'a [u8] },
    CompareAndWrite { offset: u64, compare: &'a [u8], data: &'a [u8] },
}

/// An open device. Commands may be submitted from many threads at once.
pub struct Dev {
    runner: &'static Runner,
    fake: Box<FakeDevice>,
    /// Finished commands' memory, kept until close: the engine may still
    /// hold a write buffer of a hung leg, as the ring stays mapped in tcmu.
    retired: Mutex<Vec<Pending>>,
    closed: bool,
}

impl Dev {
    /// Opens a device as the runner does: sets its size, then calls `open`.
    pub fn open(runner: &'static Runner, cfgstring: &str, size: u64, block_size: u32) -> Result<Dev, c_int> {
        let fake = FakeDevice::new(cfgstring, size, block_size);
        let open = runner.handler().open.expect("open is set");
        // SAFETY: a live fake device, as the runner passes to open().
        match unsafe { open(fake.as_raw(), false) } {
            0 => Ok(Dev { runner, fake, retired: Mutex::new(Vec::new()), closed: false }),
            rc => Err(rc),
        }
    }

    pub fn fake(&self) -> &FakeDevice {
        &self.fake
    }

    /// Calls the command's callout. Scattered buffers follow `split`.
    pub fn submit(&self, op: &Op<'_>, split: &[usize]) -> Pending {
        let h = self.runner.handler();
        let dev = self.fake.as_raw();
        let mut mem = match op {
            Op::Read { len, .. } => HostMem::new(&vec![0xEE; *len], split),
            Op::Write { data, .. } => HostMem::new(data, split),
            Op::WriteSame { block, .. } => HostMem::new(block, &[]),
            Op::CompareAndWrite { compare, data, .. } => HostMem::new(&[*compare, *data].concat(), split),
            Op::Flush | Op::Unmap { .. } => HostMem::new(&[], &[]),
        };
        let (iov, cnt) = (mem.iov.as_mut_ptr(), mem.iov.len());
        let cmd = FakeCmd::new(iov, cnt);
        let c = cmd.as_raw();
        // SAFETY: for every callout: a live fake device, a command that stays
        // alive (`cmd` is kept in `Pending`, then in `retired`) and iovecs
        // over `mem`, which moves into `Pending` without moving its chunks.
        let rc = unsafe {
            match *op {
                Op::Read { offset, len } => h.read.unwrap()(dev, c, iov, cnt, len, offset as sys::off_t),
                Op::Write { offset, data } => {
                    h.write.unwrap()(dev, c, iov, cnt, data.len(), offset as sys::off_t)
                }
                Op::Flush => h.flush.unwrap()(dev, c),
                Op::Unmap { offset, len } => h.unmap.unwrap()(dev, c, offset, len),
                Op::WriteSame { offset, len, .. } => h.writesame.unwrap()(dev, c, offset, len, iov, cnt),
                Op::CompareAndWrite { offset, compare, .. } => {
                    h.caw.unwrap()(dev, c, offset, compare.len() as u64, iov, cnt)
                }
            }
        };
        let immediate = rc != sys::TCMU_STS_OK;
        if immediate {
            cmd.complete_by_runner(rc);
        }
        Pending { cmd, mem, immediate }
    }

    /// Waits for a submitted command; panics if it never completes or is
    /// completed twice, or both by the runner and by the handler.
    pub fn wait(&self, p: Pending) -> Completion {
        let status = p.cmd.wait(COMMAND_DEADLINE).expect("a command never completed");
        let by_handler = p.cmd.handler_completions();
        assert_eq!(
            by_handler,
            u32::from(!p.immediate),
            "completions by the handler (refused: {})",
            p.immediate
        );
        let c = Completion { status, data: p.mem.bytes(), sense_info: p.cmd.sense_info() };
        self.retired.lock().push(p);
        c
    }

    /// Submits and waits.
    pub fn run(&self, op: &Op<'_>, split: &[usize]) -> Completion {
        let p = self.submit(op, split);
        self.wait(p)
    }

    pub fn read(&self, offset: u64, len: usize, split: &[usize]) -> Completion {
        self.run(&Op::Read { offset, len }, split)
    }

    pub fn write(&self, offset: u64, data: &[u8], split: &[usize]) -> c_int {
        self.run(&Op::Write { offset, data }, split).status
    }

    pub fn flush(&self) -> c_int {
        self.run(&Op::Flush, &[]).status
    }

    /// Calls `reconfig` as libtcmu does for one change; returns its result.
    fn reconfig(&self, type_: sys::tcmulib_cfg_type, data: sys::tcmulib_cfg_info__bindgen_ty_1) -> c_int {
        let f = self.runner.handler().reconfig.expect("reconfig is set");
        let mut cfg = sys::tcmulib_cfg_info { type_, data };
        // SAFETY: a live fake device and a valid cfg_info; a string in `data`
        // is the caller's and outlives the call.
        unsafe { f(self.fake.as_raw(), &mut cfg) }
    }

    /// Calls `reconfig` with a new size; returns its result.
    pub fn reconfig_size(&self, size: u64) -> c_int {
        let data = sys::tcmulib_cfg_info__bindgen_ty_1 { dev_size: size };
        self.reconfig(sys::tcmulib_cfg_type_TCMULIB_CFG_DEV_SIZE, data)
    }

    /// Calls `reconfig` with a new cfgstring (an admin wrote `dev_config`);
    /// returns its result.
    pub fn reconfig_cfgstring(&self, cfgstring: &str) -> c_int {
        let text = std::ffi::CString::new(cfgstring).expect("no NUL in a cfgstring");
        let data = sys::tcmulib_cfg_info__bindgen_ty_1 { dev_cfgstring: text.as_ptr().cast_mut() };
        self.reconfig(sys::tcmulib_cfg_type_TCMULIB_CFG_DEV_CFGSTR, data)
    }

    /// Calls `reconfig` to switch the write cache; returns its result.
    pub fn reconfig_write_cache(&self, on: bool) -> c_int {
        let data = sys::tcmulib_cfg_info__bindgen_ty_1 { write_cache: on };
        self.reconfig(sys::tcmulib_cfg_type_TCMULIB_CFG_WRITE_CACHE, data)
    }

    /// Closes the device as the runner does once no command is in flight.
    pub fn close(mut self) {
        self.close_now();
    }

    fn close_now(&mut self) {
        if self.closed {
            return;
        }
        self.closed = true;
        let close = self.runner.handler().close.expect("close is set");
        // SAFETY: a live fake device that open() succeeded on.
        unsafe { close(self.fake.as_raw()) };
        assert!(!self.fake.has_private(), "close left the private pointer set");
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            self.close_now();
        }
    }
}
