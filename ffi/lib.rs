//! All of hamirror's FFI unsafe code (the io_uring syscalls are in `uring/`):
//! tcmu-runner 1.5.4's handler API, seen through safe, borrowed types.
//!
//! - [`sys`]: the bindgen output (`build.rs`), raw.
//! - [`Device`], [`Cmd`], [`IoVecs`]: views of a callout's device, command and
//!   buffers, whose constructors carry the unsafe contracts.
//! - [`Handler`]: a safe trait, and the generic `extern "C"` shims
//!   tcmu-runner calls, which catch panics ([`trampoline`]);
//! - [`register`](fn@register): the leaked handler table, `handler_init` and
//!   the test hook macros ([`register`](mod@register)).
//! - [`log`](mod@log): the `log` crate routed into tcmu-runner's log.

pub mod cmd;
pub mod device;
pub mod iovec;
pub mod log;
pub mod register;
pub mod status;
pub mod sys;
#[cfg(feature = "test-hooks")]
pub mod test_hook;
pub mod trampoline;

pub use cmd::Cmd;
pub use device::Device;
pub use iovec::{IoVecError, IoVecs};
pub use register::{register, HandlerInfo, RegisterError};
pub use status::{Errno, Status};
pub use trampoline::{Handler, Reconfig};
