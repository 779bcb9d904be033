//! The control socket against a real volume, spoken to directly.

mod common;

use common::{open_volume, read_response, temp_dir, wait_for, Fixture, NAME};
use hamirror_ctl::proto::{Command, ErrorCode, Response, MAX_REQUEST_BYTES};
use hamirror_ctl::view::StatusView;
use hamirror_ctl::{serve_with, Client, Options};
use std::io::{BufReader, ErrorKind, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::{Duration, Instant};

fn assert_bad_request(r: &Response, needle: &str) {
    assert!(!r.ok, "{r:?}");
    assert_eq!(r.code, Some(ErrorCode::BadRequest), "{r:?}");
    let msg = r.error.as_deref().unwrap_or_default();
    assert!(msg.contains(needle), "{msg:?} lacks {needle:?}");
    assert!(r.data.is_none());
}

/// Leg states and generation: what a wrongly accepted request would change.
fn fingerprint(f: &Fixture) -> (Vec<String>, u64) {
    let s = f.volume.status();
    (s.legs.iter().map(|l| l.state.to_string()).collect(), s.generation)
}

#[test]
fn malformed_json_gets_an_error_and_changes_nothing() {
    let f = Fixture::new();
    let before = fingerprint(&f);
    let r = f.raw(b"{\"version\":1,\"cmd\":\"fail\",\"leg\":1\n");
    assert_bad_request(&r, "not valid JSON");
    assert_eq!(r.version, 1);
    assert_bad_request(&f.raw(b"fail 1\n"), "not valid JSON");
    assert_eq!(fingerprint(&f), before);
}

#[test]
fn oversized_request_gets_an_error_and_changes_nothing() {
    let f = Fixture::new();
    let before = fingerprint(&f);
    let pad = "x".repeat(MAX_REQUEST_BYTES + 10);
    let line = format!("{{\"version\":1,\"cmd\":\"fail\",\"leg\":1,\"pad\":\"{pad}\"}}\n");
    assert_bad_request(&f.raw(line.as_bytes()), "longer than 65536 bytes");
    assert_eq!(fingerprint(&f), before);
    assert_eq!(f.leg_state(1), "in_sync");
}

#[test]
fn unknown_version_gets_an_error_and_changes_nothing() {
    let f = Fixture::new();
    let before = fingerprint(&f);
    assert_bad_request(&f.raw(b"{\"version\":2,\"cmd\":\"fail\",\"leg\":1}\n"), "version 2 is not supported");
    assert_bad_request(&f.raw(b"{\"cmd\":\"fail\",\"leg\":1}\n"), "no \"version\"");
    assert_eq!(fingerprint(&f), before);
}

#[test]
fn unknown_command_or_field_gets_an_error_and_changes_nothing() {
    let f = Fixture::new();
    let before = fingerprint(&f);
    assert_bad_request(&f.raw(b"{\"version\":1,\"cmd\":\"wipe\",\"leg\":1}\n"), "unknown command \"wipe\"");
    assert_bad_request(
        &f.raw(b"{\"version\":1,\"cmd\":\"fail\",\"leg\":1,\"force\":true}\n"),
        "unknown field",
    );
    assert_bad_request(&f.raw(b"{\"version\":1,\"cmd\":\"fail\"}\n"), "fail needs \"leg\"");
    assert_eq!(fingerprint(&f), before);
}

#[test]
fn a_bad_request_leaves_the_connection_usable() {
    let f = Fixture::new();
    let mut s = UnixStream::connect(f.socket()).unwrap();
    s.write_all(b"nonsense\n{\"version\":1,\"cmd\":\"status\"}\n").unwrap();
    let mut r = BufReader::new(s);
    assert_bad_request(&read_response(&mut r), "not valid JSON");
    let ok = read_response(&mut r);
    assert!(ok.ok, "{ok:?}");
    let status: StatusView = serde_json::from_value(ok.data.unwrap()).unwrap();
    assert_eq!(status.name, NAME);
}

#[test]
fn several_requests_on_one_connection_are_answered_in_order() {
    let f = Fixture::new();
    let mut c = Client::connect(&f.dir, NAME, Duration::from_secs(10)).unwrap();
    c.call(&Command::Fail(1)).unwrap();
    let s: StatusView = c.get(&Command::Status).unwrap();
    assert_eq!(s.legs[1].state, "offline");
    c.call(&Command::Restore(1)).unwrap();
    assert!(wait_for(20, || f.leg_state(1) == "in_sync"));
}

#[test]
fn an_engine_refusal_comes_back_as_refused_with_the_engines_reason() {
    let f = Fixture::new();
    let mut c = Client::connect(&f.dir, NAME, Duration::from_secs(10)).unwrap();
    let e = c.call(&Command::Restore(0)).unwrap_err();
    assert_eq!(e.exit_code(), 1);
    assert!(e.to_string().contains("only a faulted or offline leg can be restored"), "{e}");
    let e = c.call(&Command::Fail(7)).unwrap_err();
    assert!(e.to_string().contains("no leg 7: this volume has legs 0 to 1"), "{e}");
}

#[test]
fn many_clients_at_once_all_get_answers() {
    let f = Fixture::new();
    let threads: Vec<_> = (0..16)
        .map(|_| {
            let dir = f.dir.clone();
            std::thread::spawn(move || {
                for _ in 0..20 {
                    let s: StatusView =
                        hamirror_ctl::client::request(&dir, NAME, &Command::Status, Duration::from_secs(20))
                            .unwrap_or_else(|e| panic!("{e}"));
                    assert_eq!(s.legs.len(), 2);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn a_silent_client_does_not_block_another() {
    let f = Fixture::new();
    let _silent = UnixStream::connect(f.socket()).unwrap();
    let mut half = UnixStream::connect(f.socket()).unwrap();
    half.write_all(b"{\"version\":1,\"cmd\":").unwrap();
    let start = Instant::now();
    let s: StatusView =
        Client::connect(&f.dir, NAME, Duration::from_secs(5)).unwrap().get(&Command::Status).unwrap();
    assert_eq!(s.name, NAME);
    assert!(start.elapsed() < Duration::from_secs(2), "took {:?}", start.elapsed());
}

#[test]
fn an_idle_client_is_disconnected_after_the_timeout() {
    let f = Fixture::with(|o| o.idle_timeout = Duration::from_millis(200));
    let mut s = UnixStream::connect(f.socket()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 16];
    let n = s.read(&mut buf).unwrap();
    assert_eq!(n, 0, "expected EOF");
}

#[test]
fn a_client_that_vanishes_mid_request_leaves_the_server_serving() {
    let f = Fixture::new();
    for _ in 0..5 {
        let mut s = UnixStream::connect(f.socket()).unwrap();
        s.write_all(b"{\"version\":1,\"cmd\":\"sta").unwrap();
    }
    let mut unread = UnixStream::connect(f.socket()).unwrap();
    unread.write_all(b"{\"version\":1,\"cmd\":\"events\"}\n").unwrap();
    drop(unread);
    let s: StatusView =
        Client::connect(&f.dir, NAME, Duration::from_secs(5)).unwrap().get(&Command::Status).unwrap();
    assert_eq!(s.legs_in_sync(), 2);
}

#[test]
fn more_clients_than_the_limit_get_a_busy_answer() {
    let f = Fixture::with(|o| o.max_clients = 2);
    let _a = UnixStream::connect(f.socket()).unwrap();
    let _b = UnixStream::connect(f.socket()).unwrap();
    // Let the server register both before the third arrives.
    std::thread::sleep(Duration::from_millis(200));
    let r = f.raw(b"{\"version\":1,\"cmd\":\"status\"}\n");
    assert_eq!(r.code, Some(ErrorCode::Busy), "{r:?}");
    assert!(r.error.unwrap().contains("try again"));
}

#[test]
fn a_second_server_for_the_same_volume_is_refused() {
    let f = Fixture::new();
    let e = serve_with(NAME, f.volume.clone(), Options { dir: f.dir.clone(), ..Options::default() })
        .err()
        .expect("second server refused");
    assert_eq!(e.kind(), ErrorKind::AddrInUse);
    assert!(e.to_string().contains("volume vol0 is already served by another process"), "{e}");
    assert!(f.socket().exists(), "the live socket must stay");
    assert!(f.raw(b"{\"version\":1,\"cmd\":\"status\"}\n").ok);
}

#[test]
fn a_stale_socket_is_replaced_and_a_live_one_is_not() {
    let dir = temp_dir();
    let path = dir.join("vol0.sock");
    drop(UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let volume = open_volume(&dir, NAME);
    let server =
        serve_with(NAME, volume.clone(), Options { dir: dir.clone(), ..Options::default() }).unwrap();
    assert!(UnixStream::connect(&path).is_ok());
    drop(server);
    assert!(!path.exists(), "stop removes the socket");

    let _live = UnixListener::bind(&path).unwrap();
    let e =
        serve_with(NAME, volume.clone(), Options { dir: dir.clone(), ..Options::default() }).err().unwrap();
    assert!(e.to_string().contains("already served by another process"), "{e}");
    assert!(path.exists(), "a live socket is never removed");
    volume.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_file_in_the_sockets_place_is_left_alone() {
    let dir = temp_dir();
    let path = dir.join("vol0.sock");
    std::fs::write(&path, b"precious").unwrap();
    let volume = open_volume(&dir, NAME);
    let e =
        serve_with(NAME, volume.clone(), Options { dir: dir.clone(), ..Options::default() }).err().unwrap();
    assert!(e.to_string().contains("is not a socket; move it away"), "{e}");
    assert_eq!(std::fs::read(&path).unwrap(), b"precious");
    volume.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn stop_removes_the_socket_and_disconnects_clients() {
    let mut f = Fixture::new();
    let mut idle = UnixStream::connect(f.socket()).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let start = Instant::now();
    f.server.take().unwrap().stop();
    assert!(start.elapsed() < Duration::from_secs(2), "stop took {:?}", start.elapsed());
    assert!(!f.socket().exists());
    assert_eq!(idle.read(&mut [0u8; 8]).unwrap(), 0);
}

#[test]
fn the_socket_and_its_directory_are_private() {
    let f = Fixture::new();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&f.socket()), 0o600);
    assert_eq!(mode(&f.dir), 0o700);
}

#[test]
fn a_peer_that_is_neither_root_nor_the_server_is_refused() {
    // The live path runs in cli.rs as uid 65534; here, the rule itself.
    use hamirror_ctl::auth::{authorize, DENIED};
    assert_eq!(authorize(65534, 0), Err(DENIED));
    assert_eq!(authorize(0, 0), Ok(()));
    assert!(DENIED.starts_with("permission denied: hamirrorctl must run as root"));
}
