//! Where control sockets live: `/run/hamirror/<volume>.sock`, or under
//! `$HAMIRROR_RUN_DIR` (tests, unusual installs).

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub const DEFAULT_RUN_DIR: &str = "/run/hamirror";
pub const RUN_DIR_ENV: &str = "HAMIRROR_RUN_DIR";
const SOCKET_SUFFIX: &str = ".sock";
/// `sun_path` holds 108 bytes with the terminating NUL.
const MAX_SOCKET_PATH: usize = 107;

/// The run directory in effect.
pub fn dir() -> PathBuf {
    match std::env::var_os(RUN_DIR_ENV) {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => PathBuf::from(DEFAULT_RUN_DIR),
    }
}

/// Creates `dir` if needed and makes it private (0700) when it is ours.
pub fn ensure(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    let meta = fs::metadata(dir)?;
    if !meta.is_dir() {
        return Err(io::Error::other(format!("{} is not a directory; remove it", dir.display())));
    }
    if meta.uid() == nix::unistd::geteuid().as_raw() && meta.mode() & 0o077 != 0 {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Checks that `name` can name a socket file: no path separators, no
/// leading dot, printable ASCII only.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || "._-:@+".contains(c);
    if name.is_empty() || name.starts_with('.') || !name.chars().all(ok_char) {
        return Err(format!(
            "volume name {name:?} cannot name a control socket: use letters, digits and . _ - : @ + (not first '.')"
        ));
    }
    Ok(())
}

/// The control socket of volume `name` in `dir`.
pub fn socket_path(dir: &Path, name: &str) -> Result<PathBuf, String> {
    check_name(name)?;
    let path = dir.join(format!("{name}{SOCKET_SUFFIX}"));
    if path.as_os_str().len() > MAX_SOCKET_PATH {
        return Err(format!(
            "socket path {} is longer than {MAX_SOCKET_PATH} bytes; use a shorter volume name or {RUN_DIR_ENV}",
            path.display()
        ));
    }
    Ok(path)
}

/// The lock file that makes one process the server of volume `name`.
pub fn lock_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.lock"))
}

/// The names of the volumes with a socket in `dir`, sorted. A missing
/// directory holds none.
pub fn volumes(dir: &Path) -> io::Result<Vec<String>> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut names = Vec::new();
    for entry in entries {
        let file = entry?.file_name();
        let Some(name) = file.to_str().and_then(|f| f.strip_suffix(SOCKET_SUFFIX)) else { continue };
        if check_name(name).is_ok() {
            names.push(name.to_string());
        }
    }
    names.sort();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_could_escape_the_directory_are_refused() {
        for bad in ["", ".hidden", "a/b", "../x", "sp ace", "é"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        for good in ["db0", "his-lun.1", "iqn:a@b+c_d"] {
            assert!(check_name(good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn overlong_socket_paths_are_refused_with_advice() {
        let long = "x".repeat(120);
        let e = socket_path(Path::new("/run/hamirror"), &long).unwrap_err();
        assert!(e.contains("shorter volume name"), "{e}");
        assert_eq!(socket_path(Path::new("/r"), "v").unwrap(), PathBuf::from("/r/v.sock"));
    }

    #[test]
    fn a_missing_run_directory_lists_no_volumes() {
        assert!(volumes(Path::new("/nonexistent/hamirror-test")).unwrap().is_empty());
    }
}
