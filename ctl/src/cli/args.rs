//! The command line, hand-parsed: a dozen commands with at most two options
//! do not need a parser crate.

use super::help;
use crate::proto::{Command, ResyncAction, VerifyAction};
use std::time::Duration;

#[derive(Debug, PartialEq)]
pub struct Invocation {
    pub json: bool,
    pub action: Action,
}

#[derive(Debug, PartialEq)]
pub enum Action {
    Help(Option<String>),
    Version,
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
}

/// A usage error, with the hint to print under it.
#[derive(Debug, PartialEq)]
pub struct Usage(pub String);

pub fn parse(args: &[String]) -> Result<Invocation, Usage> {
    let mut opts = Opts::default();
    let mut words: Vec<&str> = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--json" => opts.json = true,
            "-h" | "--help" => opts.help = true,
            "-V" | "--version" => opts.version = true,
            "--interval" | "--count" | "--repair-from" => {
                let value = it.next().ok_or_else(|| usage(None, format!("{a} needs a value")))?;
                opts.set(a, value)?;
            }
            s if ["--interval=", "--count=", "--repair-from="].iter().any(|p| s.starts_with(p)) => {
                let (k, v) = s.split_once('=').unwrap_or((s, ""));
                opts.set(k, v)?;
            }
            s if s.starts_with('-') && !s[1..].starts_with(|c: char| c.is_ascii_digit()) && s.len() > 1 => {
                return Err(usage(words.first().copied(), format!("unknown option {s}")))
            }
            s => words.push(s),
        }
    }
    let action = opts.action(&words)?;
    let watching = matches!(action, Action::Watch { .. });
    if !watching && (opts.interval.is_some() || opts.count.is_some()) {
        return Err(usage(words.first().copied(), "--interval and --count only apply to watch".into()));
    }
    let starting = matches!(action, Action::Send { cmd: Command::Verify(VerifyAction::Start { .. }), .. });
    if !starting && opts.repair_from.is_some() {
        return Err(usage(
            words.first().copied(),
            "--repair-from only applies to verify VOLUME start".into(),
        ));
    }
    Ok(Invocation { json: opts.json, action })
}

#[derive(Default)]
struct Opts {
    json: bool,
    help: bool,
    version: bool,
    interval: Option<Duration>,
    count: Option<u64>,
    repair_from: Option<usize>,
}

impl Opts {
    fn set(&mut self, key: &str, value: &str) -> Result<(), Usage> {
        match key {
            "--interval" => {
                let secs: f64 = value.parse().unwrap_or(f64::NAN);
                if !(0.05..=86_400.0).contains(&secs) {
                    let msg = format!("--interval takes seconds between 0.05 and 86400, not {value:?}");
                    return Err(usage(Some("watch"), msg));
                }
                self.interval = Some(Duration::from_secs_f64(secs));
            }
            "--count" => match value.parse::<u64>() {
                Ok(n) if n > 0 => self.count = Some(n),
                _ => {
                    return Err(usage(
                        Some("watch"),
                        format!("--count takes a positive number, not {value:?}"),
                    ))
                }
            },
            _ => self.repair_from = Some(leg_number("verify", value)?),
        }
        Ok(())
    }

    fn action(&self, words: &[&str]) -> Result<Action, Usage> {
        if self.help {
            return Ok(Action::Help(words.first().map(|w| w.to_string())));
        }
        if self.version {
            return Ok(Action::Version);
        }
        let Some((&cmd, rest)) = words.split_first() else { return Ok(Action::Help(None)) };
        match (cmd, rest) {
            ("help", []) => Ok(Action::Help(None)),
            ("help", [topic]) => Ok(Action::Help(Some(topic.to_string()))),
            ("list", []) => Ok(Action::List),
            ("metrics", []) => Ok(Action::Metrics(None)),
            ("metrics", [v]) => Ok(Action::Metrics(Some(v.to_string()))),
            ("status", [v]) => Ok(send(v, Command::Status)),
            ("events", [v]) => Ok(send(v, Command::Events)),
            ("fail", [v, leg]) => Ok(send(v, Command::Fail(leg_number(cmd, leg)?))),
            ("restore", [v, leg]) => Ok(send(v, Command::Restore(leg_number(cmd, leg)?))),
            ("replace", [v, leg]) => Ok(send(v, Command::Replace(leg_number(cmd, leg)?))),
            ("split", [v, leg]) => Ok(send(v, Command::Split(leg_number(cmd, leg)?))),
            ("resync", [v, "pause"]) => Ok(send(v, Command::Resync(ResyncAction::Pause))),
            ("resync", [v, "resume"]) => Ok(send(v, Command::Resync(ResyncAction::Resume))),
            ("resync", [v, "rate", mib]) => Ok(send(v, Command::Resync(ResyncAction::Rate(mib_s(mib)?)))),
            ("verify", [v, "start"]) => {
                Ok(send(v, Command::Verify(VerifyAction::Start { repair_from: self.repair_from })))
            }
            ("verify", [v, "status"]) => Ok(send(v, Command::Verify(VerifyAction::Status))),
            ("verify", [v, "cancel"]) => Ok(send(v, Command::Verify(VerifyAction::Cancel))),
            ("watch", [v]) => Ok(Action::Watch {
                volume: v.to_string(),
                interval: self.interval.unwrap_or(Duration::from_secs(2)),
                count: self.count,
            }),
            (c, _) if help::topic(c).is_some() => Err(usage(Some(c), format!("wrong arguments for {c}"))),
            (c, _) => Err(usage(None, format!("unknown command {c:?}"))),
        }
    }
}

fn send(volume: &str, cmd: Command) -> Action {
    Action::Send { volume: volume.to_string(), cmd }
}

fn leg_number(cmd: &str, s: &str) -> Result<usize, Usage> {
    s.parse().map_err(|_| usage(Some(cmd), format!("LEG must be a leg index (0, 1, ...), not {s:?}")))
}

fn mib_s(s: &str) -> Result<u64, Usage> {
    s.parse().map_err(|_| {
        usage(Some("resync"), format!("MIB_S must be a whole number of MiB/s (0: unlimited), not {s:?}"))
    })
}

fn usage(cmd: Option<&str>, msg: String) -> Usage {
    Usage(format!("{msg}\n{}", help::usage_hint(cmd)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Invocation, Usage> {
        parse(&s.split_whitespace().map(String::from).collect::<Vec<_>>())
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
        let e = p("fail db0 one").unwrap_err();
        assert!(
            e.0.contains("LEG must be a leg index") && e.0.contains("hamirrorctl fail VOLUME LEG"),
            "{}",
            e.0
        );
        assert!(p("restore db0").is_err());
    }

    #[test]
    fn resync_takes_pause_resume_or_a_rate() {
        assert_eq!(p("resync v rate 40").unwrap().action, send("v", Command::Resync(ResyncAction::Rate(40))));
        assert_eq!(p("resync v pause").unwrap().action, send("v", Command::Resync(ResyncAction::Pause)));
        assert!(p("resync v rate fast").is_err());
        assert!(p("resync v stop").is_err());
    }

    #[test]
    fn verify_start_may_name_a_repair_source() {
        let start = |repair_from| send("v", Command::Verify(VerifyAction::Start { repair_from }));
        assert_eq!(p("verify v start").unwrap().action, start(None));
        assert_eq!(p("verify v start --repair-from 1").unwrap().action, start(Some(1)));
        assert_eq!(p("verify v start --repair-from=0").unwrap().action, start(Some(0)));
        assert_eq!(p("verify v cancel").unwrap().action, send("v", Command::Verify(VerifyAction::Cancel)));
        assert!(p("verify v status --repair-from 1").is_err());
        assert!(p("verify v start --repair-from x").is_err());
    }

    #[test]
    fn watch_options_take_both_spellings_and_only_apply_to_watch() {
        let w = p("watch v --interval 0.5 --count=3").unwrap();
        assert_eq!(
            w.action,
            Action::Watch { volume: "v".into(), interval: Duration::from_millis(500), count: Some(3) }
        );
        assert!(p("watch v --interval 0").is_err());
        assert!(p("watch v --count").is_err());
        assert!(p("status v --count 2").is_err());
    }

    #[test]
    fn help_is_reachable_every_way() {
        assert_eq!(p("").unwrap().action, Action::Help(None));
        assert_eq!(p("--help").unwrap().action, Action::Help(None));
        assert_eq!(p("status --help").unwrap().action, Action::Help(Some("status".into())));
        assert_eq!(p("help watch").unwrap().action, Action::Help(Some("watch".into())));
    }

    #[test]
    fn unknown_commands_and_options_are_usage_errors() {
        assert!(p("frobnicate v").unwrap_err().0.contains("unknown command"));
        assert!(p("status v --force").unwrap_err().0.contains("unknown option --force"));
    }
}
