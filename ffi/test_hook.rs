//! Test hooks: extra C entry points that a test harness finds with `dlsym`
//! (only with the `test-hooks` feature, which release builds never enable).

use crate::trampoline::guard;
use std::ffi::CStr;
use std::os::raw::{c_char, c_int};

/// Defines `int $name(const char *request)`, an extra C entry point for test
/// tools (dlsym'ed by a harness): `$f` gets the request as `&str` and returns
/// `Result<(), String>`; 0 on success, -1 (with the reason logged) otherwise.
/// Only with the `test-hooks` feature, which release builds never enable.
#[macro_export]
macro_rules! export_test_hook {
    ($name:ident, $f:path) => {
        /// A test hook; see the handler's documentation.
        ///
        /// # Safety
        /// `request` must be null or a NUL-terminated string.
        #[no_mangle]
        pub unsafe extern "C" fn $name(request: *const ::std::os::raw::c_char) -> ::std::os::raw::c_int {
            // SAFETY: forwarded from our own caller's contract.
            unsafe { $crate::test_hook::test_hook(stringify!($name), request, $f) }
        }
    };
}

/// The body of a hook defined by [`export_test_hook!`].
///
/// # Safety
/// `request` must be null or a NUL-terminated string.
pub unsafe fn test_hook(name: &str, request: *const c_char, f: fn(&str) -> Result<(), String>) -> c_int {
    if request.is_null() {
        return -1;
    }
    // SAFETY: non-null and NUL-terminated (caller's contract).
    let req = unsafe { CStr::from_ptr(request) }.to_string_lossy();
    match guard(name, || f(&req)) {
        Some(Ok(())) => 0,
        Some(Err(why)) => {
            log::error!("{name}({req:?}): {why}");
            -1
        }
        None => -1,
    }
}
