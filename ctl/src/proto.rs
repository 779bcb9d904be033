//! The control protocol: one JSON object per line, each way, over a Unix
//! stream socket. A client may send several requests on one connection; each
//! gets exactly one response line, in order.
//!
//! ```text
//! -> {"version":1,"cmd":"fail","leg":1}
//! <- {"version":1,"ok":true,"data":{...}}
//! <- {"version":1,"ok":false,"code":"refused","error":"leg 1 is the last in-sync leg; ..."}
//! ```
//!
//! | `cmd`              | arguments                                   | `data` on success       |
//! |--------------------|---------------------------------------------|-------------------------|
//! | `status`           |                                             | [`StatusView`]          |
//! | `events`           |                                             | `[`[`EventView`]`]`     |
//! | `fail`             | `leg`                                       | [`LegChange`]           |
//! | `restore`          | `leg`                                       | [`LegChange`]           |
//! | `replace`          | `leg` (`rebuild` is accepted as an alias)   | [`LegChange`]           |
//! | `split`            | `leg`                                       | [`LegChange`]           |
//! | `resync`           | `action`: `pause`, `resume`, `rate` + `rate_mib_s` | [`ResyncChange`] |
//! | `verify`           | `action`: `start` (+ `repair_from`), `cancel` | [`VerifyChange`]      |
//! | `verify`           | `action`: `status`                          | [`VerifyView`]          |
//!
//! An error response carries `code`: `bad_request` (nothing was done: fix the
//! request), `permission_denied` (the peer is not root), `refused` (the volume
//! cannot do it in its current state; `error` says what to do), `busy` (too
//! many clients; retry), `internal` (a bug; see the log). A request that is
//! too long, not JSON, of another version, of an unknown command or with
//! fields its command does not take gets `bad_request` and changes nothing.
//!
//! [`StatusView`]: crate::view::StatusView
//! [`EventView`]: crate::view::EventView
//! [`LegChange`]: crate::view::LegChange
//! [`ResyncChange`]: crate::view::ResyncChange
//! [`VerifyChange`]: crate::view::VerifyChange
//! [`VerifyView`]: crate::view::VerifyView

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::io::{self, BufRead};

/// The protocol version this build speaks.
pub const VERSION: u32 = 1;
/// Longest request line accepted, newline included.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// Longest response line a client accepts.
pub const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

/// A request as it travels: flat, every argument optional.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    pub version: u32,
    pub cmd: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leg: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_mib_s: Option<u64>,
    /// `verify start`: repair mismatched regions from this leg.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repair_from: Option<usize>,
}

/// What a request asks for, once checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Status,
    Events,
    /// Take a leg out of service.
    Fail(usize),
    /// Bring a faulted or offline leg back (difference resync).
    Restore(usize),
    /// Rebuild a leg completely (its disk was replaced in place).
    Replace(usize),
    /// Detach an in-sync leg as a point-in-time copy.
    Split(usize),
    Resync(ResyncAction),
    Verify(VerifyAction),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResyncAction {
    Pause,
    Resume,
    /// Ceiling in MiB/s; 0 is unlimited.
    Rate(u64),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VerifyAction {
    /// Compare the in-sync legs; with a leg, repair mismatches from it.
    Start {
        repair_from: Option<usize>,
    },
    Status,
    Cancel,
}

/// Why a response is an error; decides `hamirrorctl`'s exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request itself is wrong (syntax, version, command, arguments).
    BadRequest,
    /// The peer is not root.
    PermissionDenied,
    /// The volume refused the operation in its current state.
    Refused,
    /// This engine version cannot do it.
    Unsupported,
    /// Too many clients at once; try again.
    Busy,
    /// The server failed while handling the request (a bug).
    Internal,
    /// A code from a newer server.
    #[serde(other)]
    Other,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub version: u32,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<ErrorCode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

/// A request the server cannot act on. Each message says how to fix it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtoError {
    #[error("request longer than {MAX_REQUEST_BYTES} bytes; send one JSON object per line")]
    TooLarge,
    #[error("request is not valid JSON ({0}); send one JSON object per line")]
    Malformed(String),
    #[error("request is not a JSON object; send {{\"version\":{VERSION},\"cmd\":...}}")]
    NotAnObject,
    #[error("request has no \"version\"; send {{\"version\":{VERSION},\"cmd\":...}}")]
    NoVersion,
    #[error("protocol version {0} is not supported; this volume speaks version {VERSION}: use the hamirrorctl of the installed release")]
    Version(String),
    #[error("invalid request: {0}")]
    Shape(String),
    #[error("unknown command {0:?}; known commands: {COMMANDS}")]
    UnknownCommand(String),
    #[error("{cmd} needs \"{field}\"")]
    Missing { cmd: &'static str, field: &'static str },
    #[error("{cmd} takes no \"{field}\"; remove it")]
    Unexpected { cmd: &'static str, field: &'static str },
    #[error("{cmd} action {action:?} is unknown; use one of: {expected}")]
    Action { cmd: &'static str, action: String, expected: &'static str },
}

const COMMANDS: &str = "status, events, fail, restore, replace, split, resync, verify";

impl Request {
    fn new(cmd: &str) -> Request {
        Request { version: VERSION, cmd: cmd.to_string(), ..Request::default() }
    }

    /// Parses one request line (without its newline).
    pub fn parse(line: &[u8]) -> Result<Request, ProtoError> {
        if line.len() >= MAX_REQUEST_BYTES {
            return Err(ProtoError::TooLarge);
        }
        let value: Value = serde_json::from_slice(line).map_err(|e| ProtoError::Malformed(e.to_string()))?;
        let obj = value.as_object().ok_or(ProtoError::NotAnObject)?;
        match obj.get("version") {
            None => return Err(ProtoError::NoVersion),
            Some(v) if v.as_u64() != Some(u64::from(VERSION)) => {
                return Err(ProtoError::Version(v.to_string()))
            }
            Some(_) => {}
        }
        serde_json::from_value(value).map_err(|e| ProtoError::Shape(e.to_string()))
    }

    /// Checks the arguments against the command.
    pub fn command(&self) -> Result<Command, ProtoError> {
        let cmd = self.cmd.as_str();
        match cmd {
            "status" => self.only("status", &[]).map(|_| Command::Status),
            "events" => self.only("events", &[]).map(|_| Command::Events),
            "fail" => self.leg_arg("fail").map(Command::Fail),
            "restore" => self.leg_arg("restore").map(Command::Restore),
            "replace" | "rebuild" => self.leg_arg("replace").map(Command::Replace),
            "split" => self.leg_arg("split").map(Command::Split),
            "resync" => self.resync_action().map(Command::Resync),
            "verify" => self.verify_action().map(Command::Verify),
            other => Err(ProtoError::UnknownCommand(other.to_string())),
        }
    }

    /// Refuses the arguments `cmd` does not take (any not in `allowed`).
    fn only(&self, cmd: &'static str, allowed: &[&str]) -> Result<(), ProtoError> {
        let given = [
            ("leg", self.leg.is_some()),
            ("action", self.action.is_some()),
            ("rate_mib_s", self.rate_mib_s.is_some()),
            ("repair_from", self.repair_from.is_some()),
        ];
        match given.iter().find(|(field, present)| *present && !allowed.contains(field)) {
            Some((field, _)) => Err(ProtoError::Unexpected { cmd, field }),
            None => Ok(()),
        }
    }

    fn leg_arg(&self, cmd: &'static str) -> Result<usize, ProtoError> {
        self.only(cmd, &["leg"])?;
        self.leg.ok_or(ProtoError::Missing { cmd, field: "leg" })
    }

    fn action(&self, cmd: &'static str) -> Result<&str, ProtoError> {
        self.action.as_deref().ok_or(ProtoError::Missing { cmd, field: "action" })
    }

    fn resync_action(&self) -> Result<ResyncAction, ProtoError> {
        let cmd = "resync";
        let action = self.action(cmd)?;
        self.only(cmd, if action == "rate" { &["action", "rate_mib_s"] } else { &["action"] })?;
        match action {
            "pause" => Ok(ResyncAction::Pause),
            "resume" => Ok(ResyncAction::Resume),
            "rate" => self
                .rate_mib_s
                .map(ResyncAction::Rate)
                .ok_or(ProtoError::Missing { cmd, field: "rate_mib_s" }),
            other => Err(ProtoError::Action { cmd, action: other.into(), expected: "pause, resume, rate" }),
        }
    }

    fn verify_action(&self) -> Result<VerifyAction, ProtoError> {
        let cmd = "verify";
        let action = self.action(cmd)?;
        self.only(cmd, if action == "start" { &["action", "repair_from"] } else { &["action"] })?;
        match action {
            "start" => Ok(VerifyAction::Start { repair_from: self.repair_from }),
            "status" => Ok(VerifyAction::Status),
            "cancel" => Ok(VerifyAction::Cancel),
            other => Err(ProtoError::Action { cmd, action: other.into(), expected: "start, status, cancel" }),
        }
    }
}

impl Command {
    /// The request that carries this command.
    pub fn request(&self) -> Request {
        let with_leg = |cmd: &str, leg: usize| Request { leg: Some(leg), ..Request::new(cmd) };
        let with_action =
            |cmd: &str, action: &str| Request { action: Some(action.into()), ..Request::new(cmd) };
        match *self {
            Command::Status => Request::new("status"),
            Command::Events => Request::new("events"),
            Command::Fail(leg) => with_leg("fail", leg),
            Command::Restore(leg) => with_leg("restore", leg),
            Command::Replace(leg) => with_leg("replace", leg),
            Command::Split(leg) => with_leg("split", leg),
            Command::Resync(ResyncAction::Pause) => with_action("resync", "pause"),
            Command::Resync(ResyncAction::Resume) => with_action("resync", "resume"),
            Command::Resync(ResyncAction::Rate(mib)) => {
                Request { rate_mib_s: Some(mib), ..with_action("resync", "rate") }
            }
            Command::Verify(VerifyAction::Start { repair_from }) => {
                Request { repair_from, ..with_action("verify", "start") }
            }
            Command::Verify(VerifyAction::Status) => with_action("verify", "status"),
            Command::Verify(VerifyAction::Cancel) => with_action("verify", "cancel"),
        }
    }
}

impl Response {
    pub fn ok(data: Value) -> Response {
        Response { version: VERSION, ok: true, code: None, error: None, data: Some(data) }
    }

    pub fn err(code: ErrorCode, message: impl Into<String>) -> Response {
        Response { version: VERSION, ok: false, code: Some(code), error: Some(message.into()), data: None }
    }

    /// The response as one line, newline included.
    pub fn to_line(&self) -> String {
        let mut s = serde_json::to_string(self).expect("a response always serializes");
        s.push('\n');
        s
    }
}

impl From<ProtoError> for Response {
    fn from(e: ProtoError) -> Response {
        Response::err(ErrorCode::BadRequest, e.to_string())
    }
}

/// One line read by [`read_line`].
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// A line without its newline (the last one may lack the newline).
    Data(Vec<u8>),
    /// `max` bytes went by without a newline; the rest was not read.
    TooLarge,
    Eof,
}

/// Reads one line of at most `max` bytes, newline included, never buffering
/// more than that however much the peer sends.
pub fn read_line<R: BufRead>(r: &mut R, max: usize) -> io::Result<Line> {
    let mut line = Vec::new();
    loop {
        let chunk = match r.fill_buf() {
            Ok(c) => c,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if chunk.is_empty() {
            return Ok(if line.is_empty() { Line::Eof } else { Line::Data(line) });
        }
        let (take, done) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (chunk.len(), false),
        };
        if line.len() + take > max {
            return Ok(Line::TooLarge);
        }
        line.extend_from_slice(&chunk[..take]);
        r.consume(take);
        if done {
            line.pop();
            return Ok(Line::Data(line));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Command, ProtoError> {
        Request::parse(s.as_bytes())?.command()
    }

    #[test]
    fn every_command_round_trips_through_its_request() {
        let all = [
            Command::Status,
            Command::Events,
            Command::Fail(1),
            Command::Restore(0),
            Command::Replace(2),
            Command::Split(1),
            Command::Resync(ResyncAction::Pause),
            Command::Resync(ResyncAction::Resume),
            Command::Resync(ResyncAction::Rate(40)),
            Command::Verify(VerifyAction::Start { repair_from: None }),
            Command::Verify(VerifyAction::Start { repair_from: Some(0) }),
            Command::Verify(VerifyAction::Status),
            Command::Verify(VerifyAction::Cancel),
        ];
        for c in all {
            let line = serde_json::to_string(&c.request()).unwrap();
            assert_eq!(parse(&line).unwrap(), c, "{line}");
        }
    }

    #[test]
    fn request_wire_form_is_flat_and_versioned() {
        let line = serde_json::to_string(&Command::Resync(ResyncAction::Rate(5)).request()).unwrap();
        assert_eq!(line, r#"{"version":1,"cmd":"resync","action":"rate","rate_mib_s":5}"#);
    }

    #[test]
    fn malformed_json_is_refused_with_advice() {
        let e = parse("{\"version\":1,").unwrap_err();
        assert!(matches!(e, ProtoError::Malformed(_)));
        assert!(e.to_string().contains("one JSON object per line"));
    }

    #[test]
    fn other_versions_are_refused_before_anything_else() {
        assert_eq!(parse(r#"{"version":2,"cmd":"bogus"}"#), Err(ProtoError::Version("2".into())));
        assert_eq!(parse(r#"{"version":"1","cmd":"status"}"#), Err(ProtoError::Version("\"1\"".into())));
        assert_eq!(parse(r#"{"cmd":"status"}"#), Err(ProtoError::NoVersion));
        assert_eq!(parse("[1]"), Err(ProtoError::NotAnObject));
    }

    #[test]
    fn unknown_commands_and_fields_are_refused() {
        assert_eq!(
            parse(r#"{"version":1,"cmd":"format"}"#),
            Err(ProtoError::UnknownCommand("format".into()))
        );
        assert!(matches!(parse(r#"{"version":1,"cmd":"status","x":1}"#), Err(ProtoError::Shape(_))));
        assert_eq!(
            parse(r#"{"version":1,"cmd":"status","leg":1}"#),
            Err(ProtoError::Unexpected { cmd: "status", field: "leg" })
        );
        assert_eq!(
            parse(r#"{"version":1,"cmd":"fail"}"#),
            Err(ProtoError::Missing { cmd: "fail", field: "leg" })
        );
    }

    #[test]
    fn resync_actions_take_exactly_their_arguments() {
        assert_eq!(
            parse(r#"{"version":1,"cmd":"resync","action":"rate"}"#),
            Err(ProtoError::Missing { cmd: "resync", field: "rate_mib_s" })
        );
        assert_eq!(
            parse(r#"{"version":1,"cmd":"resync","action":"pause","rate_mib_s":3}"#),
            Err(ProtoError::Unexpected { cmd: "resync", field: "rate_mib_s" })
        );
        assert!(matches!(
            parse(r#"{"version":1,"cmd":"resync","action":"stop"}"#),
            Err(ProtoError::Action { .. })
        ));
        assert!(matches!(parse(r#"{"version":1,"cmd":"fail","leg":-1}"#), Err(ProtoError::Shape(_))));
        assert_eq!(
            parse(r#"{"version":1,"cmd":"verify","action":"status","repair_from":0}"#),
            Err(ProtoError::Unexpected { cmd: "verify", field: "repair_from" })
        );
    }

    #[test]
    fn read_line_stops_at_the_limit_without_buffering_the_rest() {
        let mut r = io::BufReader::with_capacity(8, &b"abc\ndefghijklmnop\nq"[..]);
        assert_eq!(read_line(&mut r, 10).unwrap(), Line::Data(b"abc".to_vec()));
        assert_eq!(read_line(&mut r, 10).unwrap(), Line::TooLarge);
        let mut r = io::BufReader::new(&b"tail"[..]);
        assert_eq!(read_line(&mut r, 10).unwrap(), Line::Data(b"tail".to_vec()));
        assert_eq!(read_line(&mut r, 10).unwrap(), Line::Eof);
    }

    #[test]
    fn error_responses_carry_a_code_and_no_data() {
        let line = Response::from(ProtoError::NoVersion).to_line();
        let back: Response = serde_json::from_str(&line).unwrap();
        assert_eq!(back.code, Some(ErrorCode::BadRequest));
        assert!(!back.ok && back.data.is_none());
        assert!(line.ends_with('\n'));
        let newer: Response =
            serde_json::from_str(r#"{"version":1,"ok":false,"code":"new_kind","error":"x"}"#).unwrap();
        assert_eq!(newer.code, Some(ErrorCode::Other));
    }
}
