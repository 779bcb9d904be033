//! A client that leaves before its answer must not kill the process that
//! serves the socket (tcmu-runner does not ignore SIGPIPE for us). Alone in
//! this test binary because it restores SIGPIPE's default action, which Rust
//! test binaries otherwise ignore.

mod common;

use common::{Fixture, NAME};
use hamirror_ctl::proto::Command;
use hamirror_ctl::view::StatusView;
use nix::sys::signal::{signal, SigHandler, Signal};
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::time::Duration;

#[test]
fn a_client_that_leaves_before_its_answer_does_not_raise_sigpipe() {
    // SAFETY: SIG_DFL installs no handler, so no async-signal-safety
    // requirement applies; this test binary has no other test to disturb.
    unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) }.unwrap();
    let f = Fixture::new();
    for _ in 0..50 {
        let mut s = UnixStream::connect(f.socket()).unwrap();
        s.write_all(b"{\"version\":1,\"cmd\":\"events\"}\n{\"version\":1,\"cmd\":\"status\"}\n").unwrap();
        drop(s);
    }
    std::thread::sleep(Duration::from_millis(300));
    let s: StatusView =
        hamirror_ctl::client::request(&f.dir, NAME, &Command::Status, Duration::from_secs(5)).unwrap();
    assert_eq!(s.legs.len(), 2);
}
