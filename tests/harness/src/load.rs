//! Building and loading the handler as tcmu-runner does: `dlopen(RTLD_NOW)`,
//! then `handler_init()`, which registers through our `tcmur_register_handler`.

use crate::runner;
use hamirror_ffi::sys;
use std::ffi::{CStr, CString};
use std::os::raw::{c_char, c_int, c_void};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::Ordering;
use std::sync::OnceLock;

/// Where the harness's own handler build goes, under the target directory:
/// a separate directory, so the `fault-injection` build never replaces the
/// production `libhandler_hamirror.so` (cdylib file names carry no hash).
pub const HARNESS_TARGET_SUBDIR: &str = "harness";
/// Set to a built `.so` to test that instead of building one.
pub const SO_ENV: &str = "HAMIRROR_HANDLER_SO";

/// The loaded handler: its registered callout table and its test hook.
pub struct Runner {
    handler: &'static sys::tcmur_handler,
    control: Option<unsafe extern "C" fn(*const c_char) -> c_int>,
}

// SAFETY: the table is leaked by the handler and never changes after
// registration; its callouts may be called from any thread (the handler is
// `Send + Sync` by its trait bounds).
unsafe impl Sync for Runner {}
// SAFETY: as for `Sync`.
unsafe impl Send for Runner {}

/// The process's runner, loading the handler on first use. `Err` says why the
/// tests must be skipped (printed loudly by the caller).
pub fn runner() -> Result<&'static Runner, String> {
    static RUNNER: OnceLock<Result<Runner, String>> = OnceLock::new();
    // Each LUN serves a control socket; keep the harness's out of /run.
    if std::env::var_os("HAMIRROR_RUN_DIR").is_none() {
        let dir = std::env::temp_dir().join(format!("hm-harness-run-{}", std::process::id()));
        std::env::set_var("HAMIRROR_RUN_DIR", dir);
    }
    RUNNER.get_or_init(|| Runner::load(&handler_so()?)).as_ref().map_err(Clone::clone)
}

/// The target directory and profile directory this test executable runs from
/// (`<target>/<profile>/deps/<test>`).
pub fn target_dirs() -> (PathBuf, PathBuf) {
    let exe = std::env::current_exe().expect("the test executable's path");
    let profile_dir = exe.ancestors().nth(2).expect("<target>/<profile>/deps/<test>").to_owned();
    let target = profile_dir.parent().expect("<target>/<profile>").to_owned();
    (target, profile_dir)
}

/// A cargo profile to build the handler with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    Dev,
    Release,
}

impl Profile {
    /// The profile this test executable was built with.
    pub fn of_this_test() -> Profile {
        match target_dirs().1.file_name() {
            Some(p) if p == "release" => Profile::Release,
            _ => Profile::Dev,
        }
    }

    fn dir(self) -> &'static str {
        match self {
            Profile::Dev => "debug",
            Profile::Release => "release",
        }
    }
}

/// Runs `cargo build -p hamirror-handler` into `target_dir` with `features`
/// and `profile`, and returns the built `.so`; panics with cargo's output if
/// the build fails.
pub fn cargo_build_handler(target_dir: &Path, features: &[&str], profile: Profile) -> PathBuf {
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args(["build", "--quiet", "-p", "hamirror-handler", "--target-dir"]).arg(target_dir);
    if !features.is_empty() {
        cmd.args(["--features", &features.join(",")]);
    }
    if profile == Profile::Release {
        cmd.arg("--release");
    }
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"));
    let out = cmd.output().expect("cannot run cargo");
    assert!(
        out.status.success(),
        "building the handler failed ({cmd:?}):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    target_dir.join(profile.dir()).join("libhandler_hamirror.so")
}

/// The harness's own build of the handler, with the `fault-injection`
/// feature, always in the dev profile (quicker to build; the harness
/// checks behaviour, not speed).
pub fn build_fault_injection_handler() -> PathBuf {
    cargo_build_handler(&harness_target_dir(), &["fault-injection"], Profile::Dev)
}

/// Where the harness builds its `fault-injection` handler (see [`HARNESS_TARGET_SUBDIR`]).
pub fn harness_target_dir() -> PathBuf {
    target_dirs().0.join(HARNESS_TARGET_SUBDIR)
}

/// The `fault-injection` build of the handler, built here if need be.
fn handler_so() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os(SO_ENV) {
        let p = PathBuf::from(p);
        return if p.is_file() { Ok(p) } else { Err(format!("{SO_ENV}={} does not exist", p.display())) };
    }
    let so = build_fault_injection_handler();
    if so.is_file() {
        Ok(so)
    } else {
        Err(format!("cargo built the handler but {} is missing", so.display()))
    }
}

fn dlerror() -> String {
    // SAFETY: dlerror returns null or a NUL-terminated message owned by libc.
    let e = unsafe { libc::dlerror() };
    if e.is_null() {
        return "unknown dlopen error".into();
    }
    // SAFETY: non-null and NUL-terminated (above).
    unsafe { CStr::from_ptr(e) }.to_string_lossy().into_owned()
}

impl Runner {
    fn load(so: &Path) -> Result<Runner, String> {
        std::hint::black_box(runner::exported_functions());
        // SAFETY: installs a function with the signature `c/tcmu_log.c` expects.
        unsafe { runner::hamirror_harness_set_log_sink(runner::log_sink) };
        let path = CString::new(so.as_os_str().as_encoded_bytes()).map_err(|e| e.to_string())?;
        // SAFETY: a NUL-terminated path; RTLD_NOW|RTLD_LOCAL as tcmu-runner's main.c.
        let lib = unsafe { libc::dlopen(path.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        if lib.is_null() {
            // A real failure, not a skip: an unresolved symbol shows up here.
            panic!("dlopen({}) failed: {}", so.display(), dlerror());
        }
        let init =
            symbol(lib, c"handler_init").unwrap_or_else(|| panic!("{} has no handler_init", so.display()));
        // SAFETY: `handler_init` is `int handler_init(void)` (tcmu-runner's plugin contract).
        let init: unsafe extern "C" fn() -> c_int = unsafe { std::mem::transmute(init) };
        // SAFETY: called once, as the runner does after dlopen.
        let rc = unsafe { init() };
        assert_eq!(rc, 0, "handler_init returned {rc}");
        let table = runner::HANDLER.load(Ordering::SeqCst);
        // SAFETY: registered by `handler_init`; the handler leaks it for the process's life.
        let handler = unsafe { table.as_ref() }.expect("handler_init did not register a handler");
        // SAFETY: if present, the hook is `int hamirror_test_control(const char *)`.
        let control = symbol(lib, c"hamirror_test_control").map(|f| unsafe { std::mem::transmute(f) });
        Ok(Runner { handler, control })
    }

    pub fn handler(&self) -> &'static sys::tcmur_handler {
        self.handler
    }

    /// Sends a request to the handler's test hook (see handler/src/testing.rs).
    pub fn control(&self, request: &str) -> Result<(), String> {
        let f = self.control.ok_or("the handler was built without the fault-injection feature")?;
        let req = CString::new(request).map_err(|e| e.to_string())?;
        // SAFETY: a NUL-terminated request, as the hook expects.
        match unsafe { f(req.as_ptr()) } {
            0 => Ok(()),
            rc => Err(format!("{request:?} refused ({rc}); see the handler log")),
        }
    }

    /// Calls `check_config`, freeing the reason with `free()` as the runner does.
    pub fn check_config(&self, cfgstring: &str) -> Result<(), String> {
        let f = self.handler.check_config.expect("check_config is set");
        let cfg = CString::new(cfgstring).expect("no NUL");
        let mut reason: *mut c_char = std::ptr::null_mut();
        // SAFETY: a NUL-terminated string and a writable reason pointer.
        if unsafe { f(cfg.as_ptr(), &mut reason) } {
            return Ok(());
        }
        if reason.is_null() {
            return Err("(no reason)".into());
        }
        // SAFETY: the handler set a NUL-terminated, malloc'ed reason.
        let why = unsafe { CStr::from_ptr(reason) }.to_string_lossy().into_owned();
        // SAFETY: as the runner: the reason belongs to us and came from malloc.
        unsafe { libc::free(reason.cast::<c_void>()) };
        Err(why)
    }
}

fn symbol(lib: *mut c_void, name: &CStr) -> Option<*mut c_void> {
    // SAFETY: `lib` is a live dlopen handle and `name` is NUL-terminated.
    let p = unsafe { libc::dlsym(lib, name.as_ptr()) };
    (!p.is_null()).then_some(p)
}
