//! hamirror's engine: an N-way synchronous mirror over "legs" (files or block
//! devices), with a durable write-intent bitmap, invisible failover and
//! difference-only resync. It knows nothing of tcmu-runner; `handler/` drives it.
//!
//! The invariants it keeps are those of `DESIGN.md`: an acknowledged write is on
//! every in-sync leg (RPO = 0), a leg is never read where it may be stale, legs
//! hold only host data at host offsets, and a failed or hung leg never holds
//! host I/O longer than the configured detection time.
#![forbid(unsafe_code)]

pub mod backend;
pub mod buf;
pub mod config;
pub mod error;
pub mod event;
pub mod meta;
pub mod state;
pub mod volume;

pub use backend::{Backend, LegIdentity};
pub use buf::{HostReadBuf, HostWriteBuf};
pub use config::{LegConfig, VolumeConfig};
pub use error::{IoError, OpenError};
pub use event::Event;
pub use state::{FaultReason, LegState};
pub use volume::{Done, Volume};
