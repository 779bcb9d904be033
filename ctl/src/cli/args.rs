//! The command line, declared with clap: `--help`, the man pages and the
//! shell completions all come from these types and their doc comments.
//! Doc comments are verbatim: clap is built without `wrap_help`, so the
//! line breaks written here are the ones an admin reads.

use crate::proto::{Command, ResyncAction, VerifyAction, VERSION};
use crate::rundir;
use clap::builder::TypedValueParser;
use clap::error::ErrorKind;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use std::ffi::{OsStr, OsString};
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

const AFTER_HELP: &str = "\
VOLUME is a volume's name: its control socket is /run/hamirror/VOLUME.sock
($HAMIRROR_RUN_DIR overrides the directory). LEG is a leg's index, as `status`
shows it. hamirrorctl must run as root.

Exit status:
  0  done
  1  the volume refused the request (the message says what to do)
  2  usage error
  3  cannot reach the volume: is tcmu-runner running and the LUN created?
  4  permission denied: run as root";

/// Administer hamirror mirrored LUNs through their control sockets
#[derive(Debug, Parser)]
#[command(name = "hamirrorctl", version = version(), after_help = AFTER_HELP)]
pub struct Cli {
    /// Machine-readable output: one JSON document (watch: one per line)
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Option<Cmd>,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Volumes served on this machine, one line each
    ///
    /// Lists every control socket in the run directory with the volume's health
    /// (healthy, resyncing, degraded or unreachable), legs in sync, dirty regions and
    /// resync progress. A volume whose process is gone shows as unreachable.
    /// Exits 0 when the directory could be read, even if some volume is unreachable.
    #[command(verbatim_doc_comment)]
    List,
    /// Legs, counters, dirty regions, resync progress, metadata copies
    ///
    /// For each leg: index, state (in_sync, rebuilding, faulted with its reason, or
    /// offline), reads, writes, bytes, read and write errors, timeouts, I/Os in
    /// flight, average latency and path. Then the regions marked in the write-intent
    /// bitmap, the resync in progress (done/total, rate, ETA, progress bar), the resync
    /// limit and pause setting, the last verify, and the health of every metadata copy.
    #[command(verbatim_doc_comment)]
    Status(VolumeArg),
    /// Recent state changes with their reasons, oldest first
    ///
    /// The volume's most recent events (up to 256), with UTC timestamps: leg state
    /// changes and why, resyncs started, finished or failed, read errors repaired from
    /// another leg, metadata copies lost or repaired, a last leg that is slow.
    #[command(verbatim_doc_comment)]
    Events(VolumeArg),
    /// Take a leg out of service for maintenance
    ///
    /// The leg goes offline: it keeps its data as of now and is no longer read or
    /// written; writes from then on are tracked in the bitmap. Refused for the last
    /// in-sync leg. Bring it back with `restore` (copies only what changed) or, if its
    /// disk was swapped meanwhile, with `replace`.
    #[command(verbatim_doc_comment)]
    Fail(LegArgs),
    /// Bring a faulted or offline leg back (copies only what it missed)
    ///
    /// The leg is rebuilt from the in-sync legs, copying only the regions marked in the
    /// bitmap, and serves reads again once in sync. Also clears a leg that was left out
    /// for flapping. Follow the progress with `status` or `watch`.
    #[command(verbatim_doc_comment)]
    Restore(LegArgs),
    /// Rebuild a leg completely after its disk was replaced
    ///
    /// For a disk replaced in place (same path, new device): the leg must be faulted or
    /// offline (`fail` it first), then it is copied completely from the in-sync legs.
    #[command(verbatim_doc_comment)]
    Replace(LegArgs),
    /// Detach an in-sync leg as a point-in-time copy
    ///
    /// The leg goes offline holding a consistent copy of the volume as of now, which
    /// can be exported or backed up on its own. Refused for the last in-sync leg. To
    /// mirror it again, use `replace` (a full copy: the split copy may have changed).
    #[command(verbatim_doc_comment)]
    Split(LegArgs),
    /// Pause or resume resynchronisation, or cap its rate
    ///
    /// Settings last until the volume is closed; make them permanent in its config
    /// (resync_max_mib_s).
    #[command(verbatim_doc_comment)]
    Resync(ResyncArgs),
    /// Compare the in-sync legs region by region (scrub)
    ///
    /// Needs two legs in sync. A finished verify is also logged as an event.
    #[command(verbatim_doc_comment)]
    Verify(VerifyArgs),
    /// Live status, refreshed until Ctrl-C
    ///
    /// Clears the screen and shows `status` every S seconds (default 2, fractions
    /// allowed) until Ctrl-C, or N times with --count. With --json, prints one status
    /// document per line instead, without clearing the screen.
    #[command(verbatim_doc_comment)]
    Watch(WatchArgs),
    /// Prometheus text exposition of every counter and gauge
    ///
    /// Prints the Prometheus text format (HELP and TYPE lines included) for VOLUME, or
    /// for every volume in the run directory, e.g. for node_exporter's textfile
    /// collector. Families: hamirror_volume_up, hamirror_volume_size_bytes,
    /// hamirror_leg_{reads,writes,read_bytes,write_bytes,read_errors,write_errors,
    /// timeouts}_total, hamirror_leg_inflight, hamirror_leg_avg_latency_seconds,
    /// hamirror_leg_state{state=...} (1 for the current state, 0 for the others),
    /// hamirror_dirty_regions, hamirror_dirty_bytes, hamirror_active_extents,
    /// hamirror_active_extents_limit, hamirror_crash_copy_bytes,
    /// hamirror_extent_{evictions,waits}_total, hamirror_resync_active,
    /// hamirror_resync_paused, hamirror_resync_done_bytes, hamirror_resync_total_bytes,
    /// hamirror_resync_rate_bytes_per_second, hamirror_resync_limit_bytes_per_second,
    /// hamirror_resync_copied_bytes_total, hamirror_verify_{running,done_bytes,
    /// total_bytes,mismatched_regions,repaired_regions}, hamirror_leg_info{path=...},
    /// hamirror_metadata_copy_live.
    /// Always text: --json does not apply.
    #[command(verbatim_doc_comment)]
    Metrics {
        /// The volume to scrape; every volume in the run directory if left out
        #[arg(value_parser = checked(volume_name))]
        volume: Option<String>,
    },
}

#[derive(Debug, Args)]
pub struct VolumeArg {
    /// The volume's name: its control socket is /run/hamirror/VOLUME.sock
    #[arg(value_parser = checked(volume_name))]
    pub volume: String,
}

#[derive(Debug, Args)]
pub struct LegArgs {
    #[command(flatten)]
    pub volume: VolumeArg,
    /// The leg's index, as `status` shows it
    #[arg(value_parser = checked(leg))]
    pub leg: usize,
}

#[derive(Debug, Args)]
pub struct ResyncArgs {
    #[command(flatten)]
    pub volume: VolumeArg,
    /// What to do with the volume's resync
    #[arg(value_enum)]
    pub action: ResyncWhat,
    /// With `rate`: the cap in MiB/s, 0 for unlimited
    #[arg(value_parser = checked(mib_s), required_if_eq("action", "rate"))]
    pub mib_s: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, ValueEnum)]
pub enum ResyncWhat {
    /// Stop copying (host I/O goes on; the leg stays rebuilding)
    Pause,
    /// Carry on where it stopped
    Resume,
    /// Cap the resync at MIB_S MiB/s, 0 for unlimited
    Rate,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub volume: VolumeArg,
    /// What to do with the volume's verify
    #[arg(value_enum)]
    pub action: VerifyWhat,
    /// With `start`: overwrite mismatched regions on the other legs with LEG's data
    /// (choose the leg you trust)
    #[arg(long, value_name = "LEG", value_parser = checked(leg), verbatim_doc_comment)]
    pub repair_from: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, ValueEnum)]
pub enum VerifyWhat {
    /// Compare every region of the in-sync legs, in the background, at the resync
    /// rate; mismatches are reported, not repaired (unless --repair-from)
    #[value(verbatim_doc_comment)]
    Start,
    /// Progress, mismatched regions and their offsets
    Status,
    /// Stop the verify in progress
    Cancel,
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    #[command(flatten)]
    pub volume: VolumeArg,
    /// Seconds between refreshes, fractions allowed
    #[arg(long, value_name = "S", default_value = "2", value_parser = checked(interval))]
    pub interval: Duration,
    /// Stop after N refreshes
    #[arg(long, value_name = "N", value_parser = checked(count))]
    pub count: Option<u64>,
}

/// What one invocation asks for.
#[derive(Debug, PartialEq)]
pub struct Invocation {
    pub json: bool,
    pub action: Action,
}

#[derive(Debug, PartialEq)]
pub enum Action {
    /// No command: the help.
    Help,
    List,
    /// Send one request to a volume and show the answer.
    Send {
        volume: String,
        cmd: Command,
    },
    Watch {
        volume: String,
        interval: Duration,
        count: Option<u64>,
    },
    Metrics(Option<String>),
    /// Write the man pages and shell completions under this directory.
    GenerateDocs(PathBuf),
}

const GENERATE_DOCS: &str = "generate-docs";

/// The command line as parsed: the documented commands plus the hidden
/// `generate-docs`, which packaging calls. It is added here rather than in
/// `Cmd` so that the man pages and completions, made from [`Cli`], leave it out.
pub fn command() -> clap::Command {
    let out = clap::Arg::new("out")
        .long("out")
        .value_name("DIR")
        .required(true)
        .value_parser(clap::value_parser!(PathBuf))
        .help("Writes DIR/man/*.1 and DIR/completions/{hamirrorctl.bash,_hamirrorctl,hamirrorctl.fish}");
    let docs = clap::Command::new(GENERATE_DOCS).about("Write the man pages and shell completions").arg(out);
    Cli::command().subcommand(docs.hide(true))
}

/// Parses `args` (without the program name). A clap error is also how help
/// and version come back: print it and exit with its code.
pub fn parse<I, T>(args: I) -> Result<Invocation, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let matches = command().try_get_matches_from(
        std::iter::once(OsString::from("hamirrorctl")).chain(args.into_iter().map(Into::into)),
    )?;
    if let Some(docs) = matches.subcommand_matches(GENERATE_DOCS) {
        let out = docs.get_one::<PathBuf>("out").expect("--out is required").clone();
        return Ok(Invocation { json: false, action: Action::GenerateDocs(out) });
    }
    let cli = Cli::from_arg_matches(&matches)?;
    Ok(Invocation { json: cli.json, action: action(cli.command)? })
}

fn action(cmd: Option<Cmd>) -> Result<Action, clap::Error> {
    let send = |v: VolumeArg, cmd| Action::Send { volume: v.volume, cmd };
    Ok(match cmd {
        None => Action::Help,
        Some(Cmd::List) => Action::List,
        Some(Cmd::Status(v)) => send(v, Command::Status),
        Some(Cmd::Events(v)) => send(v, Command::Events),
        Some(Cmd::Fail(a)) => send(a.volume, Command::Fail(a.leg)),
        Some(Cmd::Restore(a)) => send(a.volume, Command::Restore(a.leg)),
        Some(Cmd::Replace(a)) => send(a.volume, Command::Replace(a.leg)),
        Some(Cmd::Split(a)) => send(a.volume, Command::Split(a.leg)),
        Some(Cmd::Resync(a)) => {
            let request = a.request()?;
            send(a.volume, Command::Resync(request))
        }
        Some(Cmd::Verify(a)) => {
            let request = a.request()?;
            send(a.volume, Command::Verify(request))
        }
        Some(Cmd::Watch(a)) => {
            Action::Watch { volume: a.volume.volume, interval: a.interval, count: a.count }
        }
        Some(Cmd::Metrics { volume }) => Action::Metrics(volume),
    })
}

impl ResyncArgs {
    fn request(&self) -> Result<ResyncAction, clap::Error> {
        match (self.action, self.mib_s) {
            (ResyncWhat::Rate, Some(mib_s)) => Ok(ResyncAction::Rate(mib_s)),
            (ResyncWhat::Pause, None) => Ok(ResyncAction::Pause),
            (ResyncWhat::Resume, None) => Ok(ResyncAction::Resume),
            _ => Err(misuse("resync", "MIB_S only applies to resync VOLUME rate")),
        }
    }
}

impl VerifyArgs {
    fn request(&self) -> Result<VerifyAction, clap::Error> {
        match (self.action, self.repair_from) {
            (VerifyWhat::Start, repair_from) => Ok(VerifyAction::Start { repair_from }),
            (VerifyWhat::Status, None) => Ok(VerifyAction::Status),
            (VerifyWhat::Cancel, None) => Ok(VerifyAction::Cancel),
            _ => Err(misuse("verify", "--repair-from only applies to verify VOLUME start")),
        }
    }
}

/// A usage error clap cannot express (an argument that only fits one
/// ACTION), shown with `sub`'s usage like clap's own.
fn misuse(sub: &str, msg: &str) -> clap::Error {
    let mut cmd = command();
    cmd.build();
    cmd.find_subcommand_mut(sub).expect("a documented subcommand").error(ErrorKind::ArgumentConflict, msg)
}

/// A value parser from a check whose message says what is wrong; the error
/// carries the command's usage line, as clap's own usage errors do.
fn checked<T>(check: fn(&str) -> Result<T, String>) -> Checked<T> {
    Checked(check)
}

#[derive(Clone)]
struct Checked<T>(fn(&str) -> Result<T, String>);

impl<T: Clone + Send + Sync + 'static> TypedValueParser for Checked<T> {
    type Value = T;

    fn parse_ref(&self, cmd: &clap::Command, _: Option<&clap::Arg>, value: &OsStr) -> Result<T, clap::Error> {
        (self.0)(&value.to_string_lossy()).map_err(|msg| cmd.clone().error(ErrorKind::ValueValidation, msg))
    }
}

fn version() -> &'static str {
    static V: OnceLock<String> = OnceLock::new();
    V.get_or_init(|| format!("{} (control protocol version {VERSION})", env!("CARGO_PKG_VERSION")))
}

fn volume_name(s: &str) -> Result<String, String> {
    rundir::check_name(s).map(|()| s.to_string())
}

fn leg(s: &str) -> Result<usize, String> {
    s.parse().map_err(|_| format!("LEG must be a leg index (0, 1, ...), not {s:?}"))
}

fn mib_s(s: &str) -> Result<u64, String> {
    s.parse().map_err(|_| format!("MIB_S must be a whole number of MiB/s (0: unlimited), not {s:?}"))
}

fn interval(s: &str) -> Result<Duration, String> {
    match s.parse::<f64>() {
        Ok(secs) if (0.05..=86_400.0).contains(&secs) => Ok(Duration::from_secs_f64(secs)),
        _ => Err(format!("--interval takes seconds between 0.05 and 86400, not {s:?}")),
    }
}

fn count(s: &str) -> Result<u64, String> {
    match s.parse::<u64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("--count takes a positive number, not {s:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Invocation, clap::Error> {
        parse(s.split_whitespace())
    }

    fn send(volume: &str, cmd: Command) -> Action {
        Action::Send { volume: volume.to_string(), cmd }
    }

    #[test]
    fn the_command_line_declaration_is_consistent() {
        command().debug_assert();
    }

    #[test]
    fn json_may_come_before_or_after_the_command() {
        let a = p("--json status db0").unwrap();
        let b = p("status db0 --json").unwrap();
        assert_eq!(a, b);
        assert!(a.json);
        assert_eq!(a.action, send("db0", Command::Status));
    }

    #[test]
    fn leg_commands_need_a_numeric_leg() {
        assert_eq!(p("fail db0 1").unwrap().action, send("db0", Command::Fail(1)));
        let e = p("fail db0 one").unwrap_err().to_string();
        assert!(
            e.contains("LEG must be a leg index (0, 1, ...), not \"one\"")
                && e.contains("Usage: hamirrorctl fail [OPTIONS] <VOLUME> <LEG>"),
            "{e}"
        );
        assert_eq!(p("restore db0").unwrap_err().kind(), ErrorKind::MissingRequiredArgument);
    }

    #[test]
    fn volume_names_that_cannot_name_a_socket_are_usage_errors() {
        let e = p("status ../etc").unwrap_err().to_string();
        assert!(e.contains("volume name \"../etc\" cannot name a control socket"), "{e}");
        assert!(p("metrics .hidden").is_err());
    }

    #[test]
    fn resync_takes_pause_resume_or_a_rate() {
        assert_eq!(p("resync v rate 40").unwrap().action, send("v", Command::Resync(ResyncAction::Rate(40))));
        assert_eq!(p("resync v pause").unwrap().action, send("v", Command::Resync(ResyncAction::Pause)));
        let e = p("resync v rate fast").unwrap_err().to_string();
        assert!(e.contains("MIB_S must be a whole number of MiB/s (0: unlimited), not \"fast\""), "{e}");
        assert!(p("resync v rate").is_err());
        assert!(p("resync v stop").is_err());
        let e = p("resync v pause 40").unwrap_err().to_string();
        assert!(e.contains("MIB_S only applies") && e.contains("Usage: hamirrorctl resync"), "{e}");
    }

    #[test]
    fn volumes_may_be_named_like_an_action() {
        let a = p("resync pause pause").unwrap().action;
        assert_eq!(a, send("pause", Command::Resync(ResyncAction::Pause)));
    }

    #[test]
    fn verify_start_may_name_a_repair_source() {
        let start = |repair_from| send("v", Command::Verify(VerifyAction::Start { repair_from }));
        assert_eq!(p("verify v start").unwrap().action, start(None));
        assert_eq!(p("verify v start --repair-from 1").unwrap().action, start(Some(1)));
        assert_eq!(p("verify v start --repair-from=0").unwrap().action, start(Some(0)));
        assert_eq!(p("verify v cancel").unwrap().action, send("v", Command::Verify(VerifyAction::Cancel)));
        let e = p("verify v status --repair-from 1").unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("--repair-from only applies to verify VOLUME start"), "{e}");
        assert!(p("verify v start --repair-from x").is_err());
    }

    #[test]
    fn watch_options_take_both_spellings_and_only_apply_to_watch() {
        let w = p("watch v --interval 0.5 --count=3").unwrap();
        assert_eq!(
            w.action,
            Action::Watch { volume: "v".into(), interval: Duration::from_millis(500), count: Some(3) }
        );
        let every_2s = Action::Watch { volume: "v".into(), interval: Duration::from_secs(2), count: None };
        assert_eq!(p("watch v").unwrap().action, every_2s);
        let e = p("watch v --interval 0").unwrap_err().to_string();
        assert!(e.contains("--interval takes seconds between 0.05 and 86400, not \"0\""), "{e}");
        assert!(p("watch v --count").is_err());
        assert!(p("watch v --count 0").unwrap_err().to_string().contains("--count takes a positive number"));
        assert!(p("status v --count 2").is_err());
    }

    #[test]
    fn help_is_reachable_every_way() {
        assert_eq!(p("").unwrap().action, Action::Help);
        assert_eq!(p("--help").unwrap_err().kind(), ErrorKind::DisplayHelp);
        assert_eq!(p("status --help").unwrap_err().kind(), ErrorKind::DisplayHelp);
        assert_eq!(p("help watch").unwrap_err().kind(), ErrorKind::DisplayHelp);
        assert_eq!(p("--version").unwrap_err().kind(), ErrorKind::DisplayVersion);
    }

    #[test]
    fn unknown_commands_and_options_are_usage_errors() {
        let e = p("frobnicate v").unwrap_err();
        assert_eq!((e.kind(), e.exit_code()), (ErrorKind::InvalidSubcommand, 2));
        assert_eq!(p("status v --force").unwrap_err().kind(), ErrorKind::UnknownArgument);
    }

    #[test]
    fn generate_docs_is_hidden_and_needs_a_directory() {
        assert_eq!(p("generate-docs --out /tmp/d").unwrap().action, Action::GenerateDocs("/tmp/d".into()));
        assert!(p("generate-docs").is_err());
        assert!(!command().render_long_help().to_string().contains("generate-docs"));
    }
}
