//! Who may use a control socket: root, or the user the server runs as.
//!
//! The socket is already mode 0600 in a 0700 directory; checking the peer's
//! credentials as well keeps a mis-set mode from opening the volume to anyone.

use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use std::os::unix::net::UnixStream;

pub const DENIED: &str = "permission denied: hamirrorctl must run as root (try sudo hamirrorctl ...)";

/// Whether a peer with `peer_uid` may send requests to a server running as `server_uid`.
pub fn authorize(peer_uid: u32, server_uid: u32) -> Result<(), &'static str> {
    if peer_uid == 0 || peer_uid == server_uid {
        Ok(())
    } else {
        Err(DENIED)
    }
}

/// The uid of the process at the other end of `stream`.
pub fn peer_uid(stream: &UnixStream) -> std::io::Result<u32> {
    let cred = getsockopt(stream, PeerCredentials).map_err(std::io::Error::from)?;
    Ok(cred.uid())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_and_the_servers_own_user_are_let_in() {
        assert!(authorize(0, 0).is_ok());
        assert!(authorize(0, 1000).is_ok());
        assert!(authorize(1000, 1000).is_ok());
    }

    #[test]
    fn any_other_user_is_refused_with_advice() {
        assert_eq!(authorize(65534, 0), Err(DENIED));
        assert_eq!(authorize(1001, 1000), Err(DENIED));
        assert!(DENIED.contains("must run as root"));
    }

    #[test]
    fn peer_uid_is_this_process_uid_for_a_socket_pair() {
        let (a, _b) = UnixStream::pair().unwrap();
        assert_eq!(peer_uid(&a).unwrap(), nix::unistd::geteuid().as_raw());
    }
}
