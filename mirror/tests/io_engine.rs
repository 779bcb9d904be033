//! `io_engine` where the kernel gives no io_uring, as inside a container whose
//! seccomp profile forbids it (Docker's default does) or with
//! `kernel.io_uring_disabled` set: `io_uring` is refused at open with a
//! message saying what to do and nothing written; `auto` falls back to leg
//! threads, says so in the status, and serves I/O.
//!
//! The tests make `io_uring_setup` fail with `EPERM` the way such a profile
//! does: a seccomp filter on one thread of this process, inherited only by the
//! threads that thread starts (the volume's own), so other tests keep their
//! io_uring.

mod common;
use common::*;
use mirror::config::IoEngine;
use mirror::{OpenError, Volume, VolumeConfig};

/// Installs, on the calling thread only, a seccomp filter under which
/// `io_uring_setup` fails with `EPERM` and every other system call runs.
fn forbid_io_uring_on_this_thread() {
    const fn stmt(code: u32, k: u32) -> libc::sock_filter {
        libc::sock_filter { code: code as u16, jt: 0, jf: 0, k }
    }
    const fn jeq(k: u32, jt: u8, jf: u8) -> libc::sock_filter {
        libc::sock_filter { code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16, jt, jf, k }
    }
    let nr = std::mem::offset_of!(libc::seccomp_data, nr) as u32;
    let mut filter = [
        stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, nr),
        jeq(libc::SYS_io_uring_setup as u32, 0, 1),
        stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ERRNO | libc::EPERM as u32),
        stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW),
    ];
    let prog = libc::sock_fprog { len: filter.len() as u16, filter: filter.as_mut_ptr() };
    // SAFETY: PR_SET_NO_NEW_PRIVS takes plain integers and touches only this
    // thread's credentials.
    let r = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    assert_eq!(r, 0, "PR_SET_NO_NEW_PRIVS: {}", std::io::Error::last_os_error());
    // SAFETY: `prog` points at `filter`, both alive for the call; the kernel
    // copies the program. Without SECCOMP_FILTER_FLAG_TSYNC it binds this
    // thread (and threads it starts later) only.
    let r = unsafe { libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &prog as *const _, 0, 0) };
    assert_eq!(
        r,
        0,
        "PR_SET_SECCOMP (the kernel needs CONFIG_SECCOMP_FILTER): {}",
        std::io::Error::last_os_error()
    );
}

/// Runs `f` on a thread of its own with io_uring forbidden.
fn without_io_uring<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            forbid_io_uring_on_this_thread();
            f()
        })
        .join()
        .unwrap()
    })
}

fn direct_config(d: &Dir, engine: IoEngine) -> VolumeConfig {
    let mut cfg = config(d, 2, MIB);
    cfg.direct_io = true;
    cfg.io_engine = engine;
    cfg
}

#[test]
fn the_filter_really_takes_io_uring_away() {
    // Guards the two tests below from passing on a thread that still has
    // io_uring: the ring is refused here, and given on a thread without the filter.
    let e = without_io_uring(|| {
        uring::Ring::new("hm-test-ring", 8).err().expect("the filter must forbid io_uring")
    });
    assert_eq!(e.raw_os_error(), Some(libc::EPERM), "{e}");
    assert!(uring::Ring::new("hm-test-ring", 8).is_ok(), "this test needs a kernel that gives io_uring");
}

#[test]
fn io_engine_io_uring_is_refused_with_what_to_do_and_nothing_written() {
    let d = Dir::new("uring-refused");
    let cfg = direct_config(&d, IoEngine::IoUring);
    let legs_before: Vec<_> = cfg.legs.iter().map(|l| std::fs::read(&l.path).unwrap()).collect();
    let e = without_io_uring(|| {
        Volume::open(cfg.clone(), Events::default().sink()).err().expect("open must be refused")
    });
    assert!(matches!(e, OpenError::IoUring { .. }), "{e}");
    let text = e.to_string();
    for hint in ["io_engine=io_uring", "kernel.io_uring_disabled", "seccomp", "io_engine=auto or threads"] {
        assert!(text.contains(hint), "the message must mention {hint:?}: {text}");
    }
    let legs_after: Vec<_> = cfg.legs.iter().map(|l| std::fs::read(&l.path).unwrap()).collect();
    assert!(legs_after == legs_before, "a refused open changed a leg");
    for m in &cfg.metadata {
        assert!(!exists(m), "a refused open created the metadata file {}", m.display());
    }
}

#[test]
fn io_engine_auto_falls_back_to_threads_and_serves_io() {
    let d = Dir::new("uring-auto");
    let cfg = direct_config(&d, IoEngine::Auto);
    let (status, data) = without_io_uring(|| {
        let (v, _, _) = open(&cfg);
        let status = v.status();
        let data = pattern(256 * 1024, 7);
        write(&v, 64 * 1024, &data).unwrap();
        flush(&v).unwrap();
        let back = read(&v, 64 * 1024, data.len()).unwrap();
        assert!(back == data, "read back differs from what was written");
        v.shutdown();
        (status, data)
    });
    assert_eq!(status.io_engine, IoEngine::Threads, "the status must say the legs run on threads");
    for leg in 0..2 {
        assert!(leg_bytes(&cfg, leg)[64 * 1024..][..data.len()] == data[..], "leg {leg} lacks the write");
    }
}

#[test]
fn io_engine_auto_takes_io_uring_where_the_kernel_gives_it() {
    // The counterpart of the fallback: without the filter, `auto` with
    // O_DIRECT legs does use the ring, so the fallback above is a real change.
    let d = Dir::new("uring-given");
    let (v, _, _) = open(&direct_config(&d, IoEngine::Auto));
    assert_eq!(v.status().io_engine, IoEngine::IoUring);
    v.shutdown();
}
