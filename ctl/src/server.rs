//! The control socket of one volume: an accept thread and one thread per
//! client, each with read and write deadlines, so that a client that hangs or
//! vanishes holds nothing but its own thread.

use crate::auth;
use crate::dispatch::Target;
use crate::proto::{self, ErrorCode, Line, ProtoError, Response, MAX_REQUEST_BYTES};
use crate::rundir;
use mirror::Volume;
use nix::errno::Errno;
use nix::sys::socket::{send, shutdown, MsgFlags, Shutdown};
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// How a control socket is set up.
#[derive(Clone, Debug)]
pub struct Options {
    /// Where the socket goes (default: [`rundir::dir`]).
    pub dir: PathBuf,
    /// A client that sends nothing for this long is disconnected.
    pub idle_timeout: Duration,
    /// A client that does not read its response for this long is disconnected.
    pub write_timeout: Duration,
    /// Clients served at once; more get a `busy` response.
    pub max_clients: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            dir: rundir::dir(),
            idle_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(5),
            max_clients: 32,
        }
    }
}

/// A served control socket. Dropping it (or [`stop`](Self::stop)) closes and
/// removes the socket and waits for the client threads.
pub struct ControlServer {
    shared: Arc<Shared>,
    listener: Arc<UnixListener>,
    accept: Option<JoinHandle<()>>,
    path: PathBuf,
    /// (device, inode) of the socket we bound: never remove a successor's.
    bound: (u64, u64),
    _lock: File,
}

struct Shared {
    target: Target,
    opts: Options,
    server_uid: u32,
    stop: AtomicBool,
    next_id: AtomicU64,
    clients: Mutex<HashMap<u64, Client>>,
}

struct Client {
    stream: UnixStream,
    thread: Option<JoinHandle<()>>,
}

/// Serves `volume` on `<run dir>/<name>.sock` (see [`rundir::dir`]).
pub fn serve(name: &str, volume: Volume) -> io::Result<ControlServer> {
    serve_with(name, volume, Options::default())
}

pub fn serve_with(name: &str, volume: Volume, opts: Options) -> io::Result<ControlServer> {
    rundir::ensure(&opts.dir)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot create {}: {e}", opts.dir.display())))?;
    let path = rundir::socket_path(&opts.dir, name).map_err(io::Error::other)?;
    let lock = take_lock(&opts.dir, name)?;
    clear_stale_socket(&path, name)?;
    let listener = UnixListener::bind(&path)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot bind {}: {e}", path.display())))?;
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600))?;
    let meta = fs::symlink_metadata(&path)?;
    let shared = Arc::new(Shared {
        target: Target::new(name, volume),
        opts,
        server_uid: nix::unistd::geteuid().as_raw(),
        stop: AtomicBool::new(false),
        next_id: AtomicU64::new(0),
        clients: Mutex::new(HashMap::new()),
    });
    let listener = Arc::new(listener);
    let accept = {
        let (shared, listener) = (shared.clone(), listener.clone());
        thread::Builder::new().name(format!("ctl-{name}")).spawn(move || accept_loop(&shared, &listener))?
    };
    Ok(ControlServer {
        shared,
        listener,
        accept: Some(accept),
        path,
        bound: (meta.dev(), meta.ino()),
        _lock: lock,
    })
}

impl ControlServer {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops accepting, disconnects every client, waits for their threads
    /// and removes the socket. Idempotent.
    pub fn stop(&mut self) {
        let Some(accept) = self.accept.take() else { return };
        self.shared.stop.store(true, Ordering::SeqCst);
        let _ = shutdown(self.listener.as_raw_fd(), Shutdown::Both);
        let _ = accept.join();
        let clients: Vec<Client> = self.shared.clients().drain().map(|(_, c)| c).collect();
        for mut c in clients {
            let _ = c.stream.shutdown(std::net::Shutdown::Both);
            if let Some(t) = c.thread.take() {
                let _ = t.join();
            }
        }
        if let Ok(meta) = fs::symlink_metadata(&self.path) {
            if (meta.dev(), meta.ino()) == self.bound {
                let _ = fs::remove_file(&self.path);
            }
        }
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Makes this process the only server of `name`; the lock lasts as long as
/// the returned file is open. The file holds the server's pid.
fn take_lock(dir: &Path, name: &str) -> io::Result<File> {
    let path = rundir::lock_path(dir, name);
    let mut file =
        OpenOptions::new().read(true).write(true).create(true).truncate(false).mode(0o600).open(&path)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            let pid = pid.trim();
            let by = if pid.is_empty() { String::new() } else { format!(" (pid {pid})") };
            return Err(already_served(name, &by));
        }
        Err(fs::TryLockError::Error(e)) => return Err(e),
    }
    file.set_len(0)?;
    file.write_all(format!("{}\n", std::process::id()).as_bytes())?;
    Ok(file)
}

fn already_served(name: &str, by: &str) -> io::Error {
    io::Error::new(
        ErrorKind::AddrInUse,
        format!("volume {name} is already served by another process{by}; stop that one first, or give this volume another name"),
    )
}

/// Removes a socket file left by a server that is gone; refuses to touch a
/// live socket or anything that is not a socket.
fn clear_stale_socket(path: &Path, name: &str) -> io::Result<()> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            ErrorKind::AlreadyExists,
            format!("{} exists and is not a socket; move it away", path.display()),
        ));
    }
    if UnixStream::connect(path).is_ok() {
        return Err(already_served(name, ""));
    }
    match fs::remove_file(path) {
        Err(e) if e.kind() != ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn accept_loop(shared: &Arc<Shared>, listener: &UnixListener) {
    loop {
        let accepted = listener.accept();
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        match accepted {
            Ok((stream, _)) => admit(shared, stream),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                // EMFILE and the like: back off rather than spin.
                log::warn!("control socket of {}: accept failed: {e}", shared.target_name());
                thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// Gives a new connection its own thread, or a `busy` response if there are
/// too many already.
fn admit(shared: &Arc<Shared>, stream: UnixStream) {
    let mut clients = shared.clients();
    if clients.len() >= shared.opts.max_clients {
        drop(clients);
        let _ = stream.set_write_timeout(Some(Duration::from_millis(100)));
        let msg = format!("too many control clients at once ({}); try again", shared.opts.max_clients);
        let _ = reply(&stream, &Response::err(ErrorCode::Busy, msg));
        return;
    }
    let Ok(peer) = stream.try_clone() else { return };
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let worker = shared.clone();
    let spawned = thread::Builder::new().name("ctl-client".into()).spawn(move || {
        let _slot = Slot { shared: &worker, id };
        serve_client(&worker, &peer);
    });
    if let Ok(t) = spawned {
        clients.insert(id, Client { stream, thread: Some(t) });
    }
}

fn serve_client(shared: &Shared, stream: &UnixStream) {
    let timeouts = stream
        .set_read_timeout(Some(shared.opts.idle_timeout))
        .and_then(|_| stream.set_write_timeout(Some(shared.opts.write_timeout)));
    if timeouts.is_err() {
        return;
    }
    let allowed = auth::peer_uid(stream)
        .map_err(|_| auth::DENIED)
        .and_then(|uid| auth::authorize(uid, shared.server_uid));
    if let Err(msg) = allowed {
        let _ = reply(stream, &Response::err(ErrorCode::PermissionDenied, msg));
        return;
    }
    let mut reader = BufReader::new(stream);
    while !shared.stop.load(Ordering::SeqCst) {
        let response = match proto::read_line(&mut reader, MAX_REQUEST_BYTES) {
            Ok(Line::Data(line)) if line.trim_ascii().is_empty() => continue,
            Ok(Line::Data(line)) => handle(shared, &line),
            Ok(Line::TooLarge) => {
                // The rest of the line cannot be told from the next request.
                let _ = reply(stream, &ProtoError::TooLarge.into());
                return;
            }
            Ok(Line::Eof) | Err(_) => return,
        };
        if reply(stream, &response).is_err() {
            return;
        }
    }
}

/// Answers one request; a panic below becomes an error response rather
/// than a silent disconnect (and never reaches tcmu-runner).
fn handle(shared: &Shared, line: &[u8]) -> Response {
    catch_unwind(AssertUnwindSafe(|| shared.target.handle(line))).unwrap_or_else(|_| {
        let msg = "the volume failed while handling this request (a bug); see tcmu-runner's log";
        Response::err(ErrorCode::Internal, msg)
    })
}

/// Writes a response with `MSG_NOSIGNAL`: a client that went away must
/// cost an `EPIPE`, not a `SIGPIPE` that kills tcmu-runner and every LUN in it.
fn reply(stream: &UnixStream, response: &Response) -> io::Result<()> {
    let line = response.to_line();
    let mut rest = line.as_bytes();
    while !rest.is_empty() {
        match send(stream.as_raw_fd(), rest, MsgFlags::MSG_NOSIGNAL) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => rest = &rest[n..],
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// A client's place in [`Shared::clients`], given back however its thread ends.
struct Slot<'a> {
    shared: &'a Shared,
    id: u64,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.shared.clients().remove(&self.id);
    }
}

impl Shared {
    fn clients(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Client>> {
        self.clients.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn target_name(&self) -> &str {
        self.target.name()
    }
}
