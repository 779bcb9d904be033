//! `hamirrorctl`: parses the command line, talks to the volumes, prints.

mod args;
mod docs;
mod metrics;
mod render;
mod units;

pub use args::{command, parse, Action, Cli, Invocation};
pub use render::ListEntry;

use crate::client::{self, ClientError, DEFAULT_TIMEOUT};
use crate::proto::Command;
use crate::proto::VerifyAction;
use crate::rundir;
use crate::view::{EventView, LegChange, ResyncChange, StatusView, VerifyChange, VerifyView};
use metrics::Scrape;
use std::ffi::OsString;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long `list` and `metrics` wait for each volume.
const SCAN_TIMEOUT: Duration = Duration::from_secs(5);

pub const EXIT_OK: u8 = 0;
pub const EXIT_REFUSED: u8 = 1;
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_UNREACHABLE: u8 = 3;
pub const EXIT_PERMISSION: u8 = 4;

#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("permission denied reading {dir}: hamirrorctl must run as root (try sudo hamirrorctl ...)")]
    RunDirDenied { dir: String },
    #[error("cannot read {dir}: {source}")]
    RunDir { dir: String, source: io::Error },
    #[error("cannot write the output: {0}")]
    Output(#[from] io::Error),
    #[error("cannot write the man pages and completions under {dir}: {source}")]
    Docs { dir: PathBuf, source: io::Error },
}

impl CliError {
    fn exit_code(&self) -> u8 {
        match self {
            CliError::Client(e) => e.exit_code(),
            CliError::RunDirDenied { .. } => EXIT_PERMISSION,
            CliError::RunDir { .. } => EXIT_UNREACHABLE,
            CliError::Output(_) | CliError::Docs { .. } => EXIT_REFUSED,
        }
    }
}

/// Runs `hamirrorctl` with `args` (without the program name); returns the exit code.
pub fn run<I, T>(args: I) -> u8
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let inv = match parse(args) {
        Ok(inv) => inv,
        // Also --help and --version, which exit 0.
        Err(e) => {
            let _ = e.print();
            return u8::try_from(e.exit_code()).unwrap_or(EXIT_USAGE);
        }
    };
    let stdout = io::stdout();
    let mut out = stdout.lock();
    match execute(inv, &mut out) {
        Ok(()) => EXIT_OK,
        Err(CliError::Output(e)) if e.kind() == io::ErrorKind::BrokenPipe => EXIT_OK,
        Err(e) => {
            let _ = out.flush();
            eprintln!("hamirrorctl: {e}");
            e.exit_code()
        }
    }
}

fn execute(inv: Invocation, out: &mut dyn Write) -> Result<(), CliError> {
    let dir = rundir::dir();
    match inv.action {
        Action::Help => Ok(write!(out, "{}", command().render_help())?),
        Action::List => list(&dir, inv.json, out),
        Action::Send { volume, cmd } => send(&dir, &volume, &cmd, inv.json, out),
        Action::Watch { volume, interval, count } => watch(&dir, &volume, interval, count, inv.json, out),
        Action::Metrics(volume) => metrics(&dir, volume.as_deref(), out),
        Action::GenerateDocs(dir) => docs::generate(&dir).map_err(|source| CliError::Docs { dir, source }),
    }
}

fn status(dir: &Path, volume: &str, timeout: Duration) -> Result<StatusView, ClientError> {
    client::request(dir, volume, &Command::Status, timeout)
}

fn send(dir: &Path, volume: &str, cmd: &Command, json: bool, out: &mut dyn Write) -> Result<(), CliError> {
    let data: serde_json::Value = client::request(dir, volume, cmd, DEFAULT_TIMEOUT)?;
    if json {
        return print_json(&data, out);
    }
    let decode =
        |e: serde_json::Error| ClientError::Protocol { name: volume.to_string(), detail: e.to_string() };
    let text = match cmd {
        Command::Status => render::status(&serde_json::from_value::<StatusView>(data).map_err(decode)?),
        Command::Events => render::events(&serde_json::from_value::<Vec<EventView>>(data).map_err(decode)?),
        Command::Resync(_) => serde_json::from_value::<ResyncChange>(data).map_err(decode)?.message + "\n",
        Command::Fail(_) | Command::Restore(_) | Command::Replace(_) | Command::Split(_) => {
            serde_json::from_value::<LegChange>(data).map_err(decode)?.message + "\n"
        }
        Command::Verify(VerifyAction::Status) => {
            render::verify(&serde_json::from_value::<VerifyView>(data).map_err(decode)?)
        }
        Command::Verify(_) => serde_json::from_value::<VerifyChange>(data).map_err(decode)?.message + "\n",
    };
    Ok(out.write_all(text.as_bytes())?)
}

fn print_json<T: serde::Serialize>(data: &T, out: &mut dyn Write) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(data).map_err(io::Error::from)?;
    Ok(writeln!(out, "{text}")?)
}

fn volumes(dir: &Path) -> Result<Vec<String>, CliError> {
    rundir::volumes(dir).map_err(|source| {
        let dir = dir.display().to_string();
        match source.kind() {
            io::ErrorKind::PermissionDenied => CliError::RunDirDenied { dir },
            _ => CliError::RunDir { dir, source },
        }
    })
}

fn list(dir: &Path, json: bool, out: &mut dyn Write) -> Result<(), CliError> {
    let mut entries = Vec::new();
    for volume in volumes(dir)? {
        entries.push(list_entry(dir, volume)?);
    }
    if json {
        return print_json(&entries, out);
    }
    if entries.is_empty() {
        let dir = dir.display();
        writeln!(
            out,
            "No volume is served here ({dir} has no control socket). Is tcmu-runner running and the LUN created?"
        )?;
        return Ok(());
    }
    Ok(out.write_all(render::list(&entries).as_bytes())?)
}

fn list_entry(dir: &Path, volume: String) -> Result<ListEntry, CliError> {
    let socket = rundir::socket_path(dir, &volume).map(|p| p.display().to_string()).unwrap_or_default();
    match status(dir, &volume, SCAN_TIMEOUT) {
        Ok(s) => Ok(ListEntry {
            volume,
            socket,
            reachable: true,
            health: s.health().as_str().to_string(),
            legs: s.legs.len(),
            legs_in_sync: s.legs_in_sync(),
            dirty_regions: s.dirty_regions,
            resync: s.resync,
            error: None,
        }),
        Err(e) if e.exit_code() == EXIT_PERMISSION => Err(e.into()),
        Err(e) => Ok(ListEntry {
            volume,
            socket,
            reachable: false,
            health: "unreachable".into(),
            legs: 0,
            legs_in_sync: 0,
            dirty_regions: 0,
            resync: None,
            error: Some(e.to_string()),
        }),
    }
}

fn watch(
    dir: &Path,
    volume: &str,
    interval: Duration,
    count: Option<u64>,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let mut shown = 0u64;
    loop {
        let s = status(dir, volume, DEFAULT_TIMEOUT)?;
        if json {
            writeln!(out, "{}", serde_json::to_string(&s).map_err(io::Error::from)?)?;
        } else {
            let now = units::utc(unix_ms());
            let every = interval.as_secs_f64();
            write!(out, "\x1b[H\x1b[2J{now}  every {every} s, Ctrl-C to stop\n\n{}", render::status(&s))?;
        }
        out.flush()?;
        shown += 1;
        if count.is_some_and(|n| shown >= n) {
            return Ok(());
        }
        std::thread::sleep(interval);
    }
}

fn unix_ms() -> u64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    now.map_or(0, |d| d.as_millis() as u64)
}

fn metrics(dir: &Path, volume: Option<&str>, out: &mut dyn Write) -> Result<(), CliError> {
    let scrapes = match volume {
        Some(v) => vec![Scrape { volume: v.to_string(), status: Some(status(dir, v, DEFAULT_TIMEOUT)?) }],
        None => {
            let mut all = Vec::new();
            for v in volumes(dir)? {
                let status = match status(dir, &v, SCAN_TIMEOUT) {
                    Ok(s) => Some(s),
                    Err(e) if e.exit_code() == EXIT_PERMISSION => return Err(e.into()),
                    Err(_) => None,
                };
                all.push(Scrape { volume: v, status });
            }
            all
        }
    };
    Ok(out.write_all(metrics::render(&scrapes).as_bytes())?)
}
