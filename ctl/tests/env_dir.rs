//! `serve` puts the socket where `HAMIRROR_RUN_DIR` says (alone in this test
//! binary because it sets a process-wide variable).

mod common;

use common::{ctl_in, open_volume, temp_dir, NAME};

#[test]
fn serve_creates_the_run_directory_named_by_the_environment() {
    let base = temp_dir();
    let dir = base.join("run");
    std::env::set_var("HAMIRROR_RUN_DIR", &dir);
    let volume = open_volume(&base, NAME);
    let server = hamirror_ctl::serve(NAME, volume.clone()).expect("serve");
    assert_eq!(server.path(), dir.join("vol0.sock"));
    let o = ctl_in(&dir, &["status", NAME]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    drop(server);
    assert!(!dir.join("vol0.sock").exists());
    volume.shutdown();
    let _ = std::fs::remove_dir_all(&base);
}
