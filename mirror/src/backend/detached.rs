//! A leg whose storage could not be opened when the volume started (an array
//! that is down while tcmu-runner restarts). It keeps the leg's recorded
//! identity and place; every I/O fails with `ENODEV` until the monitor or an
//! administrator reopens the real device.

use super::{Backend, Caps, LegIdentity};
use std::io::{self, IoSlice};

pub struct DetachedBackend {
    name: String,
    identity: LegIdentity,
    size: u64,
    why: String,
}

impl DetachedBackend {
    pub fn new(name: &str, identity: LegIdentity, size: u64, why: String) -> Self {
        DetachedBackend { name: name.to_owned(), identity, size, why }
    }

    fn gone() -> io::Error {
        io::Error::from_raw_os_error(libc::ENODEV)
    }
}

impl Backend for DetachedBackend {
    fn name(&self) -> &str {
        &self.name
    }
    fn identity(&self) -> &LegIdentity {
        &self.identity
    }
    fn size(&self) -> u64 {
        self.size
    }
    fn alignment(&self) -> usize {
        1
    }
    fn caps(&self) -> Caps {
        Caps::default()
    }
    fn read_at(&self, _: &mut [u8], _: u64) -> io::Result<()> {
        Err(Self::gone())
    }
    fn write_vectored_at(&self, _: &[IoSlice<'_>], _: u64) -> io::Result<()> {
        Err(Self::gone())
    }
    fn flush(&self) -> io::Result<()> {
        Err(Self::gone())
    }
    fn discard(&self, _: u64, _: u64) -> io::Result<()> {
        Err(Self::gone())
    }
    fn write_zeroes(&self, _: u64, _: u64) -> io::Result<()> {
        Err(Self::gone())
    }
    fn detached(&self) -> Option<&str> {
        Some(&self.why)
    }
}
