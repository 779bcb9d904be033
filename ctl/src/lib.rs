//! hamirrorctl and the control socket it talks to.
//!
//! The handler serves each open volume with [`server::serve`]; the
//! `hamirrorctl` binary ([`cli`]) is the client. [`proto`] is the wire
//! protocol, [`view`] the data it carries.

pub mod auth;
pub mod cli;
pub mod client;
mod dispatch;
pub mod proto;
pub mod rundir;
pub mod server;
pub mod view;

pub use client::{Client, ClientError};
pub use server::{serve, serve_with, ControlServer, Options};
