//! Stable identities of legs, so that another disk appearing at a leg's path
//! is never trusted as in sync (invariant 6).

use std::fmt;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

/// What a leg is, independent of the path it was found at.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LegIdentity(String);

impl LegIdentity {
    /// Identity of an open leg, from its metadata (and sysfs for block devices).
    pub fn of(meta: &fs::Metadata) -> Self {
        if meta.file_type().is_block_device() {
            let (maj, min) = (major(meta.rdev()), minor(meta.rdev()));
            return LegIdentity(format!("block:{}", block_stable_id(maj, min)));
        }
        LegIdentity(format!("file:dev={},ino={}", meta.dev(), meta.ino()))
    }

    pub fn from_recorded(s: &str) -> Self {
        LegIdentity(s.to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for LegIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn major(dev: u64) -> u64 {
    ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff)
}

fn minor(dev: u64) -> u64 {
    (dev & 0xff) | ((dev >> 12) & !0xff)
}

/// The most stable name sysfs offers for a block device: a SCSI/NVMe WWID or
/// serial, a device-mapper UUID or name, a loop device's backing file; the
/// device number only as a last resort.
fn block_stable_id(maj: u64, min: u64) -> String {
    let sys = format!("/sys/dev/block/{maj}:{min}");
    let probes: [(&str, &str); 6] = [
        ("wwid", "device/wwid"),
        ("wwid", "wwid"),
        ("serial", "device/serial"),
        ("dm-uuid", "dm/uuid"),
        ("dm-name", "dm/name"),
        ("loop", "loop/backing_file"),
    ];
    for (label, rel) in probes {
        if let Some(v) = read_trimmed(&Path::new(&sys).join(rel)) {
            return format!("{label}={v}");
        }
    }
    format!("devt={maj}:{min}")
}

fn read_trimmed(p: &Path) -> Option<String> {
    let s = fs::read_to_string(p).ok()?;
    let s = s.trim();
    (!s.is_empty()).then(|| s.chars().take(100).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_known_by_device_and_inode() {
        let p = std::env::temp_dir().join(format!("hm-ident-{}", std::process::id()));
        fs::write(&p, b"x").unwrap();
        let m = fs::metadata(&p).unwrap();
        let id = LegIdentity::of(&m);
        assert_eq!(id.as_str(), format!("file:dev={},ino={}", m.dev(), m.ino()));
        fs::remove_file(&p).unwrap();
    }

    #[test]
    fn device_numbers_split_like_glibc() {
        // makedev(253, 3) and makedev(259, 70000)
        assert_eq!((major(0xfd03), minor(0xfd03)), (253, 3));
        let big = (259u64 << 8) | (70000 & 0xff) | ((70000u64 & !0xff) << 12);
        assert_eq!((major(big), minor(big)), (259, 70000));
    }
}
