use super::*;
use std::os::unix::fs::FileExt;
use std::sync::mpsc;
use std::time::Duration;

fn temp_file(tag: &str, len: u64) -> (std::path::PathBuf, Arc<File>) {
    let p = std::env::temp_dir().join(format!("hm-uring-{tag}-{}", std::process::id()));
    let f = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&p).unwrap();
    f.set_len(len).unwrap();
    (p, Arc::new(f))
}

fn ring() -> Arc<Ring> {
    Ring::new("hm-uring-test", 64).expect("io_uring is available on the test machine")
}

fn wait<T: Send + 'static>(start: impl FnOnce(Box<dyn FnOnce(T) + Send>)) -> T {
    let (tx, rx) = mpsc::channel();
    start(Box::new(move |v| tx.send(v).unwrap()));
    rx.recv_timeout(Duration::from_secs(10)).expect("completion within 10 s")
}

#[test]
fn vectored_writes_land_and_read_back() {
    let (p, f) = temp_file("rw", 1 << 20);
    let r = ring();
    let chunks: Vec<Vec<u8>> = (0..3u8).map(|i| vec![i + 1; 1000 + i as usize]).collect();
    struct Chunks(Vec<Vec<u8>>);
    impl WriteBufs for Chunks {
        fn slices(&self) -> Vec<IoSlice<'_>> {
            self.0.iter().map(|c| IoSlice::new(c)).collect()
        }
    }
    wait(|d| r.write(&f, 4096, Arc::new(Chunks(chunks.clone())), d)).unwrap();
    let want: Vec<u8> = chunks.concat();
    let (back, res) = wait(|d| r.read(&f, 4096, vec![0u8; want.len()], move |b, res| d((b, res))));
    res.unwrap();
    assert_eq!(back, want);
    let mut direct = vec![0u8; want.len()];
    f.read_exact_at(&mut direct, 4096).unwrap();
    assert_eq!(direct, want);
    wait(|d| r.sync_data(&f, d)).unwrap();
    std::fs::remove_file(p).unwrap();
}

#[test]
fn more_slices_than_the_kernel_takes_at_once_are_all_written() {
    let (p, f) = temp_file("many", 1 << 20);
    let r = ring();
    let pieces: Vec<Vec<u8>> = (0..(MAX_IOV + 300)).map(|i| vec![(i % 251) as u8; 7]).collect();
    struct Pieces(Vec<Vec<u8>>);
    impl WriteBufs for Pieces {
        fn slices(&self) -> Vec<IoSlice<'_>> {
            self.0.iter().map(|c| IoSlice::new(c)).collect()
        }
    }
    wait(|d| r.write(&f, 0, Arc::new(Pieces(pieces.clone())), d)).unwrap();
    let want = pieces.concat();
    let mut back = vec![0u8; want.len()];
    f.read_exact_at(&mut back, 0).unwrap();
    assert_eq!(back, want);
    std::fs::remove_file(p).unwrap();
}

#[test]
fn a_read_past_the_end_is_an_unexpected_eof() {
    let (p, f) = temp_file("eof", 8192);
    let r = ring();
    let (_, res) = wait(|d| r.read(&f, 4096, vec![0u8; 8192], move |b, res| d((b, res))));
    assert_eq!(res.unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
    std::fs::remove_file(p).unwrap();
}

#[test]
fn errors_come_back_with_their_errno() {
    let (p, _) = temp_file("ro", 8192);
    let ro = Arc::new(File::open(&p).unwrap());
    let r = ring();
    let err = wait(|d| r.write(&ro, 0, Arc::new(vec![1u8; 512]), d)).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EBADF));
    std::fs::remove_file(p).unwrap();
}

#[test]
fn many_threads_share_one_ring() {
    let (p, f) = temp_file("mt", 4 << 20);
    let r = ring();
    std::thread::scope(|s| {
        for t in 0..8u64 {
            let (r, f) = (&r, &f);
            s.spawn(move || {
                for i in 0..200u64 {
                    let off = (t * 200 + i) * 2048;
                    let data = vec![(off / 2048 % 256) as u8; 2048];
                    wait(|d| r.write(f, off, Arc::new(data), d)).unwrap();
                }
            });
        }
    });
    assert_eq!(r.in_flight(), 0);
    for n in 0..1600u64 {
        let mut b = vec![0u8; 2048];
        f.read_exact_at(&mut b, n * 2048).unwrap();
        assert!(b.iter().all(|&x| x == (n % 256) as u8), "block {n}");
    }
    std::fs::remove_file(p).unwrap();
}

/// A read from an empty pipe stands for a hung device: the ring is dropped
/// while it waits, and the read still completes, into memory that was kept,
/// when data arrives.
#[test]
fn a_request_outlives_the_ring_that_started_it() {
    let p = std::env::temp_dir().join(format!("hm-uring-fifo-{}", std::process::id()));
    let _ = std::fs::remove_file(&p);
    nix_mkfifo(&p);
    let pipe = Arc::new(std::fs::OpenOptions::new().read(true).write(true).open(&p).unwrap());
    let r = ring();
    let (tx, rx) = mpsc::channel();
    r.read(&pipe, 0, vec![0u8; 5], move |b, res| tx.send((b, res)).unwrap());
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(r.in_flight(), 1);
    assert!(rx.try_recv().is_err(), "the pipe is empty: nothing completes");
    drop(r);
    use std::io::Write;
    (&*pipe).write_all(b"hello").unwrap();
    let (b, res) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    res.unwrap();
    assert_eq!(b, b"hello");
    std::fs::remove_file(p).unwrap();
}

#[test]
fn a_panicking_callback_does_not_stop_later_completions() {
    let (p, f) = temp_file("panic", 8192);
    let r = ring();
    r.sync_data(&f, |_| panic!("callback panics on purpose"));
    wait(|d| r.write(&f, 0, Arc::new(vec![9u8; 512]), d)).unwrap();
    std::fs::remove_file(p).unwrap();
}

fn nix_mkfifo(p: &std::path::Path) {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid, NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

#[test]
fn plugged_requests_complete_once_the_plug_drops() {
    let (p, f) = temp_file("plug", 1 << 20);
    let r = ring();
    let (tx, rx) = mpsc::channel();
    {
        let _plug = r.plug();
        for i in 0..4u64 {
            let tx = tx.clone();
            r.write(&f, i * 4096, Arc::new(vec![i as u8 + 1; 4096]), move |res| tx.send(res).unwrap());
        }
    }
    for _ in 0..4 {
        rx.recv_timeout(Duration::from_secs(10)).unwrap().unwrap();
    }
    // Another ring on the same thread is not held back by this one's plug.
    let other = ring();
    let _plug = r.plug();
    wait(|d| other.write(&f, 0, Arc::new(vec![7u8; 512]), d)).unwrap();
    std::fs::remove_file(p).unwrap();
}
