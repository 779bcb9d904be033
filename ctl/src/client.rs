//! The client end of a control socket, with errors that say what to do.

use crate::proto::{self, Command, ErrorCode, Line, Response, MAX_RESPONSE_BYTES};
use crate::rundir;
use serde::de::DeserializeOwned;
use std::io::{self, BufReader, ErrorKind, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a request may take: a `fail` flushes every leg, which a hung leg
/// can hold for the volume's I/O timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

const NOT_RUNNING_HINT: &str = "Is tcmu-runner running and the LUN created?";

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{0}")]
    BadName(String),
    #[error("volume {name} is not served here: no control socket {path}. {NOT_RUNNING_HINT}", path = .path.display())]
    NotServed { name: String, path: PathBuf },
    #[error("volume {name} is not running: nothing listens on {path}. {NOT_RUNNING_HINT}", path = .path.display())]
    Stale { name: String, path: PathBuf },
    #[error("permission denied on {path}: hamirrorctl must run as root (try sudo hamirrorctl ...)", path = .path.display())]
    PermissionDenied { path: PathBuf },
    #[error("volume {name} did not answer within {secs} s; it may be waiting on a hung leg: check tcmu-runner's log, then retry")]
    Timeout { name: String, secs: u64 },
    #[error("lost the connection to volume {name}: {source}. Is tcmu-runner still running?")]
    Io {
        name: String,
        #[source]
        source: io::Error,
    },
    #[error(
        "volume {name} sent an answer hamirrorctl cannot read ({detail}); use the hamirrorctl of the installed release"
    )]
    Protocol { name: String, detail: String },
    /// The volume answered with an error.
    #[error("{message}")]
    Refused { code: ErrorCode, message: String },
}

impl ClientError {
    /// `hamirrorctl`'s exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            ClientError::BadName(_) => 2,
            ClientError::NotServed { .. }
            | ClientError::Stale { .. }
            | ClientError::Timeout { .. }
            | ClientError::Io { .. } => 3,
            ClientError::PermissionDenied { .. } => 4,
            ClientError::Refused { code: ErrorCode::PermissionDenied, .. } => 4,
            ClientError::Refused { .. } | ClientError::Protocol { .. } => 1,
        }
    }
}

/// Connects, sends `cmd` and decodes the answer as `T`. A server that is
/// busy (too many clients) refused before reading anything, so this retries
/// it a few times, backing off.
pub fn request<T: DeserializeOwned>(
    dir: &Path,
    name: &str,
    cmd: &Command,
    timeout: Duration,
) -> Result<T, ClientError> {
    let mut backoff = Duration::from_millis(50);
    loop {
        match Client::connect(dir, name, timeout).and_then(|mut c| c.get(cmd)) {
            Err(ClientError::Refused { code: ErrorCode::Busy, .. }) if backoff < Duration::from_secs(2) => {
                std::thread::sleep(backoff);
                backoff *= 2;
            }
            other => return other,
        }
    }
}

/// A connection to one volume's control socket.
pub struct Client {
    name: String,
    timeout: Duration,
    stream: UnixStream,
    reader: BufReader<UnixStream>,
}

impl Client {
    pub fn connect(dir: &Path, name: &str, timeout: Duration) -> Result<Client, ClientError> {
        let path = rundir::socket_path(dir, name).map_err(ClientError::BadName)?;
        let stream = UnixStream::connect(&path).map_err(|e| connect_error(name, &path, e))?;
        let io_err = |source| ClientError::Io { name: name.to_string(), source };
        stream.set_read_timeout(Some(timeout)).map_err(io_err)?;
        stream.set_write_timeout(Some(timeout)).map_err(io_err)?;
        let reader = BufReader::new(stream.try_clone().map_err(io_err)?);
        Ok(Client { name: name.to_string(), timeout, stream, reader })
    }

    /// Sends `cmd` and returns the response's data.
    pub fn call(&mut self, cmd: &Command) -> Result<serde_json::Value, ClientError> {
        let mut line = serde_json::to_string(&cmd.request()).map_err(|e| self.protocol(e))?;
        line.push('\n');
        // A server that refuses the connection (permission, busy) answers
        // and closes without reading: its answer still waits to be read.
        let sent = self.stream.write_all(line.as_bytes());
        if sent.as_ref().is_err_and(|e| matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)) {
            return Err(self.io(sent.unwrap_err()));
        }
        let response = match proto::read_line(&mut self.reader, MAX_RESPONSE_BYTES) {
            Ok(Line::Data(d)) => serde_json::from_slice::<Response>(&d).map_err(|e| self.protocol(e))?,
            Ok(Line::TooLarge) => return Err(self.protocol("response too large")),
            Ok(Line::Eof) => {
                let e = sent
                    .err()
                    .unwrap_or_else(|| io::Error::new(ErrorKind::UnexpectedEof, "closed without an answer"));
                return Err(self.io(e));
            }
            Err(e) => return Err(self.io(sent.err().unwrap_or(e))),
        };
        if response.ok {
            return Ok(response.data.unwrap_or(serde_json::Value::Null));
        }
        Err(ClientError::Refused {
            code: response.code.unwrap_or(ErrorCode::Other),
            message: response.error.unwrap_or_else(|| "the volume refused the request".into()),
        })
    }

    /// Sends `cmd` and decodes the response's data as `T`.
    pub fn get<T: DeserializeOwned>(&mut self, cmd: &Command) -> Result<T, ClientError> {
        let data = self.call(cmd)?;
        serde_json::from_value(data).map_err(|e| self.protocol(e))
    }

    fn io(&self, e: io::Error) -> ClientError {
        match e.kind() {
            ErrorKind::WouldBlock | ErrorKind::TimedOut => {
                ClientError::Timeout { name: self.name.clone(), secs: self.timeout.as_secs() }
            }
            _ => ClientError::Io { name: self.name.clone(), source: e },
        }
    }

    fn protocol(&self, e: impl ToString) -> ClientError {
        ClientError::Protocol { name: self.name.clone(), detail: e.to_string() }
    }
}

fn connect_error(name: &str, path: &Path, e: io::Error) -> ClientError {
    let (name, path) = (name.to_string(), path.to_path_buf());
    match e.kind() {
        ErrorKind::NotFound => ClientError::NotServed { name, path },
        ErrorKind::ConnectionRefused => ClientError::Stale { name, path },
        ErrorKind::PermissionDenied => ClientError::PermissionDenied { path },
        _ => ClientError::Io { name, source: e },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_socket_says_to_check_tcmu_runner_and_exits_3() {
        let dir = Path::new("/nonexistent/hamirror-test");
        let e = Client::connect(dir, "vol", DEFAULT_TIMEOUT).err().unwrap();
        assert!(e.to_string().contains("Is tcmu-runner running and the LUN created?"), "{e}");
        assert_eq!(e.exit_code(), 3);
    }

    #[test]
    fn exit_codes_tell_refusal_from_permission() {
        let refused = |code| ClientError::Refused { code, message: String::new() }.exit_code();
        assert_eq!(refused(ErrorCode::Refused), 1);
        assert_eq!(refused(ErrorCode::Unsupported), 1);
        assert_eq!(refused(ErrorCode::PermissionDenied), 4);
        assert_eq!(ClientError::PermissionDenied { path: "/x".into() }.exit_code(), 4);
        assert_eq!(ClientError::BadName(String::new()).exit_code(), 2);
    }
}
