//! `hamirrorctl --help` and `hamirrorctl COMMAND --help`.

pub struct Topic {
    pub name: &'static str,
    pub usage: &'static str,
    pub summary: &'static str,
    pub details: &'static str,
}

pub const TOPICS: &[Topic] = &[
    Topic {
        name: "list",
        usage: "list",
        summary: "Volumes served on this machine, one line each",
        details: "\
Lists every control socket in the run directory with the volume's health
(healthy, resyncing, degraded or unreachable), legs in sync, dirty regions and
resync progress. A volume whose process is gone shows as unreachable.
Exits 0 when the directory could be read, even if some volume is unreachable.",
    },
    Topic {
        name: "status",
        usage: "status VOLUME",
        summary: "Legs, counters, dirty regions, resync progress, metadata copies",
        details: "\
For each leg: index, state (in_sync, rebuilding, faulted with its reason, or
offline), reads, writes, bytes, read and write errors, timeouts, I/Os in
flight, average latency and path. Then the regions marked in the write-intent
bitmap, the resync in progress (done/total, rate, ETA, progress bar), the resync
limit and pause setting, the last verify, and the health of every metadata copy.",
    },
    Topic {
        name: "events",
        usage: "events VOLUME",
        summary: "Recent state changes with their reasons, oldest first",
        details: "\
The volume's most recent events (up to 256), with UTC timestamps: leg state
changes and why, resyncs started, finished or failed, read errors repaired from
another leg, metadata copies lost or repaired, a last leg that is slow.",
    },
    Topic {
        name: "fail",
        usage: "fail VOLUME LEG",
        summary: "Take a leg out of service for maintenance",
        details: "\
The leg goes offline: it keeps its data as of now and is no longer read or
written; writes from then on are tracked in the bitmap. Refused for the last
in-sync leg. Bring it back with `restore` (copies only what changed) or, if its
disk was swapped meanwhile, with `replace`.",
    },
    Topic {
        name: "restore",
        usage: "restore VOLUME LEG",
        summary: "Bring a faulted or offline leg back (copies only what it missed)",
        details: "\
The leg is rebuilt from the in-sync legs, copying only the regions marked in the
bitmap, and serves reads again once in sync. Also clears a leg that was left out
for flapping. Follow the progress with `status` or `watch`.",
    },
    Topic {
        name: "replace",
        usage: "replace VOLUME LEG",
        summary: "Rebuild a leg completely after its disk was replaced",
        details: "\
For a disk replaced in place (same path, new device): the leg must be faulted or
offline (`fail` it first), then it is copied completely from the in-sync legs.",
    },
    Topic {
        name: "split",
        usage: "split VOLUME LEG",
        summary: "Detach an in-sync leg as a point-in-time copy",
        details: "\
The leg goes offline holding a consistent copy of the volume as of now, which
can be exported or backed up on its own. Refused for the last in-sync leg. To
mirror it again, use `replace` (a full copy: the split copy may have changed).",
    },
    Topic {
        name: "resync",
        usage: "resync VOLUME pause|resume|rate MIB_S",
        summary: "Pause or resume resynchronisation, or cap its rate",
        details: "\
pause         stop copying (host I/O goes on; the leg stays rebuilding)
resume        carry on where it stopped
rate MIB_S    cap the resync at MIB_S MiB/s, 0 for unlimited
Settings last until the volume is closed; make them permanent in its config
(resync_max_mib_s).",
    },
    Topic {
        name: "verify",
        usage: "verify VOLUME start [--repair-from LEG] | status | cancel",
        summary: "Compare the in-sync legs region by region (scrub)",
        details: "\
start                     compare every region of the in-sync legs, in the
                          background, at the resync rate; mismatches are
                          reported, not repaired
start --repair-from LEG   the same, and overwrite mismatched regions on the
                          other legs with LEG's data (choose the leg you trust)
status                    progress, mismatched regions and their offsets
cancel                    stop the verify in progress
Needs two legs in sync. A finished verify is also logged as an event.",
    },
    Topic {
        name: "watch",
        usage: "watch VOLUME [--interval S] [--count N]",
        summary: "Live status, refreshed until Ctrl-C",
        details: "\
Clears the screen and shows `status` every S seconds (default 2, fractions
allowed) until Ctrl-C, or N times with --count. With --json, prints one status
document per line instead, without clearing the screen.",
    },
    Topic {
        name: "metrics",
        usage: "metrics [VOLUME]",
        summary: "Prometheus text exposition of every counter and gauge",
        details: "\
Prints the Prometheus text format (HELP and TYPE lines included) for VOLUME, or
for every volume in the run directory, e.g. for node_exporter's textfile
collector. Families: hamirror_volume_up, hamirror_volume_size_bytes,
hamirror_leg_{reads,writes,read_bytes,write_bytes,read_errors,write_errors,
timeouts}_total, hamirror_leg_inflight, hamirror_leg_avg_latency_seconds,
hamirror_leg_state{state=...} (1 for the current state, 0 for the others),
hamirror_dirty_regions, hamirror_dirty_bytes, hamirror_resync_active,
hamirror_resync_paused, hamirror_resync_done_bytes, hamirror_resync_total_bytes,
hamirror_resync_rate_bytes_per_second, hamirror_resync_limit_bytes_per_second,
hamirror_resync_copied_bytes_total, hamirror_verify_{running,done_bytes,
total_bytes,mismatched_regions,repaired_regions}, hamirror_leg_info{path=...},
hamirror_metadata_copy_live.
Always text: --json does not apply.",
    },
    Topic {
        name: "help",
        usage: "help [COMMAND]",
        summary: "This text, or a command's details",
        details: "Same as hamirrorctl --help, or hamirrorctl COMMAND --help.",
    },
];

const FOOTER: &str = "\
Options:
  --json          machine-readable output: one JSON document (watch: one per line)
  -h, --help      help for the tool, or for COMMAND
  -V, --version   versions of hamirrorctl and of its protocol

VOLUME is a volume's name: its control socket is /run/hamirror/VOLUME.sock
($HAMIRROR_RUN_DIR overrides the directory). LEG is a leg's index, as `status`
shows it. hamirrorctl must run as root.

Exit status:
  0  done
  1  the volume refused the request (the message says what to do)
  2  usage error
  3  cannot reach the volume: is tcmu-runner running and the LUN created?
  4  permission denied: run as root";

pub fn topic(name: &str) -> Option<&'static Topic> {
    TOPICS.iter().find(|t| t.name == name)
}

pub fn overview() -> String {
    let mut s = String::from(
        "hamirrorctl: administer hamirror mirrored LUNs through their control sockets\n\n\
         Usage: hamirrorctl [--json] COMMAND [ARGS...]\n       hamirrorctl COMMAND --help\n\nCommands:\n",
    );
    for t in TOPICS {
        match t.usage.len() {
            0..=40 => s += &format!("  {:<40} {}\n", t.usage, t.summary),
            _ => s += &format!("  {}\n  {:<40} {}\n", t.usage, "", t.summary),
        }
    }
    s + "\n" + FOOTER + "\n"
}

pub fn command(t: &Topic) -> String {
    format!("Usage: hamirrorctl [--json] {}\n\n{}.\n\n{}\n", t.usage, t.summary, t.details)
}

/// One line pointing at the full help for `cmd`.
pub fn usage_hint(cmd: Option<&str>) -> String {
    match cmd.and_then(topic) {
        Some(t) => format!("usage: hamirrorctl {} (see hamirrorctl {} --help)", t.usage, t.name),
        None => "see hamirrorctl --help".to_string(),
    }
}
