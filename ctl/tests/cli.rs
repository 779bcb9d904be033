//! `hamirrorctl` end to end: the built binary against a real served volume.

mod common;

use common::{assert_exit, ctl_in, stderr, stdout, temp_dir, wait_for, Fixture, NAME};
use serde_json::Value;
use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::os::unix::process::CommandExt;
use std::process::Command;

fn json(f: &Fixture, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let o = f.ctl(&all);
    assert_exit(&o, 0);
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(&o)))
}

fn keys(v: &Value) -> BTreeSet<&str> {
    v.as_object().expect("an object").keys().map(String::as_str).collect()
}

/// The set of whitespace-separated words in `k`.
fn words(k: &str) -> BTreeSet<&str> {
    k.split_whitespace().collect()
}

#[test]
fn status_shows_legs_counters_dirty_regions_resync_and_metadata() {
    let f = Fixture::new();
    let o = f.ctl(&["status", NAME]);
    assert_exit(&o, 0);
    let out = stdout(&o);
    assert!(
        out.starts_with("Volume vol0: healthy\n  size 4.0 MiB, block size 512 B, region 256.0 KiB"),
        "{out}"
    );
    for needle in ["LEG", "STATE", "READS", "WR ERR", "AVG LAT", "in_sync", "vol0-leg0", "vol0-leg1"] {
        assert!(out.contains(needle), "{needle} missing:\n{out}");
    }
    assert!(out.contains("Dirty regions: 0"), "{out}");
    assert!(
        out.contains("Activity log: 0 extents of ")
            && out.contains("; a crash now copies 0 B; 0 evictions, 0 waits\n"),
        "{out}"
    );
    assert!(out.contains(", leg I/O io_uring\n") || out.contains(", leg I/O threads\n"), "{out}");
    assert!(out.contains("Resync: none (0 B copied since open; limit unlimited)"), "{out}");
    assert!(out.contains("Metadata copies: 1 of 1 live\n  live  "), "{out}");
}

#[test]
fn status_json_has_stable_keys() {
    let f = Fixture::new();
    f.paused_difference_resync(2);
    let v = json(&f, &["status", NAME]);
    let top = "name size block_size region_size generation io_engine legs dirty_regions activity resync \
               resync_bytes_total resync_control verify metadata";
    assert_eq!(keys(&v), words(top));
    assert!(v["io_engine"] == "io_uring" || v["io_engine"] == "threads", "{}", v["io_engine"]);
    let leg = "index path identity state reason inflight reads writes read_bytes write_bytes read_errors \
               write_errors timeouts avg_latency_us";
    assert_eq!(keys(&v["legs"][0]), words(leg));
    assert_eq!(keys(&v["metadata"][0]), words("path live error"));
    assert_eq!(keys(&v["resync_control"]), words("paused max_mib_s"));
    let activity = "active_extents limit_extents extent_bytes crash_copy_bytes evictions waits";
    assert_eq!(keys(&v["activity"]), words(activity));
    let verify = "running done_bytes total_bytes mismatched_regions mismatched_offsets repair_from \
                  repaired_regions cancelled";
    assert_eq!(keys(&v["verify"]), words(verify));
    assert_eq!(
        keys(&v["resync"]),
        words("leg kind done_bytes total_bytes rate_bytes_s eta_s paused unreadable")
    );
    assert_eq!(v["resync"]["unreadable"], serde_json::json!([]));
    assert_eq!(v["resync"]["kind"], "difference");
    assert_eq!(v["resync"]["paused"], true);
    assert_eq!(v["legs"][1]["state"], "rebuilding");
    assert_eq!(v["dirty_regions"], 2);
    assert_exit(&f.ctl(&["resync", NAME, "resume"]), 0);
    assert!(f.volume.wait_resync_idle(std::time::Duration::from_secs(30)));
    assert_eq!(f.leg_bytes(0), f.leg_bytes(1));
}

#[test]
fn fail_then_restore_round_trips_a_leg() {
    let f = Fixture::new();
    let o = f.ctl(&["fail", NAME, "1"]);
    assert_exit(&o, 0);
    assert!(
        stdout(&o).contains("leg 1 is offline") && stdout(&o).contains("hamirrorctl restore vol0 1"),
        "{}",
        stdout(&o)
    );
    assert_eq!(f.leg_state(1), "offline");
    let v = json(&f, &["status", NAME]);
    assert_eq!(v["legs"][1]["state"], "offline");
    let o = f.ctl(&["restore", NAME, "1"]);
    assert_exit(&o, 0);
    assert!(stdout(&o).contains("gets the regions it missed"), "{}", stdout(&o));
    assert!(wait_for(20, || f.leg_state(1) == "in_sync"));
}

#[test]
fn fail_json_reports_the_leg_after_the_change() {
    let f = Fixture::new();
    let v = json(&f, &["fail", NAME, "0"]);
    assert_eq!(keys(&v), words("message leg"));
    assert_eq!(v["leg"]["index"], 0);
    assert_eq!(v["leg"]["state"], "offline");
}

#[test]
fn failing_the_last_in_sync_leg_is_refused_with_exit_1() {
    let f = Fixture::new();
    assert_exit(&f.ctl(&["fail", NAME, "1"]), 0);
    let o = f.ctl(&["fail", NAME, "0"]);
    assert_exit(&o, 1);
    assert!(
        stderr(&o).contains("leg 0 is the last in-sync leg; restore another leg first"),
        "{}",
        stderr(&o)
    );
    assert_eq!(f.leg_state(0), "in_sync");
}

#[test]
fn replace_refuses_an_in_sync_leg_and_says_to_fail_it_first() {
    let f = Fixture::new();
    let o = f.ctl(&["replace", NAME, "1"]);
    assert_exit(&o, 1);
    let err = stderr(&o);
    assert!(err.contains("hamirrorctl fail vol0 1, swap the disk, then hamirrorctl replace vol0 1"), "{err}");
    assert_eq!(f.leg_state(1), "in_sync");
}

#[test]
fn replace_copies_a_swapped_disk_completely() {
    let f = Fixture::new();
    f.write(0, vec![0x11; 64 << 10]);
    assert_exit(&f.ctl(&["fail", NAME, "1"]), 0);
    // The new disk: another device at the same path, blank, nothing in the bitmap.
    let new = f.dir.join("new-disk");
    std::fs::write(&new, vec![0xee; common::SIZE as usize]).unwrap();
    std::fs::rename(&new, f.dir.join("vol0-leg1")).unwrap();
    let o = f.ctl(&["replace", NAME, "1"]);
    assert_exit(&o, 0);
    assert!(stdout(&o).contains("copied completely"), "{}", stdout(&o));
    assert!(wait_for(30, || f.leg_state(1) == "in_sync"));
    let events = stdout(&f.ctl(&["events", NAME]));
    assert!(f.leg_bytes(0) == f.leg_bytes(1), "leg 1 is in sync but differs from leg 0; events:\n{events}");
    assert!(events.contains("Full resync finished"), "{events}");
}

#[test]
fn split_detaches_an_in_sync_leg_once() {
    let f = Fixture::new();
    let o = f.ctl(&["split", NAME, "1"]);
    assert_exit(&o, 0);
    assert!(stdout(&o).contains("point-in-time copy"), "{}", stdout(&o));
    assert_eq!(f.leg_state(1), "offline");
    let o = f.ctl(&["split", NAME, "1"]);
    assert_exit(&o, 1);
    assert!(stderr(&o).contains("only an in-sync leg can be split off"), "{}", stderr(&o));
}

#[test]
fn resync_pause_resume_and_rate_show_in_status() {
    let f = Fixture::new();
    let o = f.ctl(&["resync", NAME, "pause"]);
    assert_exit(&o, 0);
    assert!(stdout(&o).contains("hamirrorctl resync vol0 resume"), "{}", stdout(&o));
    assert_exit(&f.ctl(&["resync", NAME, "rate", "40"]), 0);
    let v = json(&f, &["status", NAME]);
    assert_eq!(v["resync_control"], serde_json::json!({"paused": true, "max_mib_s": 40}));
    assert!(stdout(&f.ctl(&["status", NAME])).contains("limit 40 MiB/s, paused"));
    let v = json(&f, &["resync", NAME, "resume"]);
    assert_eq!(v["resync_control"]["paused"], false);
    assert_exit(&f.ctl(&["resync", NAME, "rate", "0"]), 0);
    assert_eq!(json(&f, &["status", NAME])["resync_control"]["max_mib_s"], 0);
}

#[test]
fn status_shows_the_resync_cap_a_new_configuration_set_until_an_admin_sets_one() {
    let f = Fixture::new();
    let cfg = mirror::VolumeConfig { resync_max_mib_s: 77, ..f.volume.config() };
    assert_eq!(f.volume.retune(&cfg).unwrap(), vec!["resync_max_mib_s"]);
    assert_eq!(json(&f, &["status", NAME])["resync_control"]["max_mib_s"], 77);
    assert_exit(&f.ctl(&["resync", NAME, "rate", "40"]), 0);
    let cfg = mirror::VolumeConfig { resync_max_mib_s: 88, ..f.volume.config() };
    f.volume.retune(&cfg).unwrap();
    assert_eq!(json(&f, &["status", NAME])["resync_control"]["max_mib_s"], 40, "the admin's cap wins");
}

#[test]
fn resync_progress_shows_a_bar_and_eta() {
    let f = Fixture::new();
    f.paused_difference_resync(4);
    let out = stdout(&f.ctl(&["status", NAME]));
    assert!(out.starts_with("Volume vol0: resyncing"), "{out}");
    assert!(
        out.contains(
            "Resync: leg 1, difference\n  [------------------------------]   0.0%  0 B / 1.0 MiB  at 0 B/s  paused"
        ),
        "{out}"
    );
    assert!(out.contains("Dirty regions: 4 (1.0 MiB marked in the write-intent bitmap)"), "{out}");
    let listed = stdout(&f.ctl(&["list"]));
    assert!(listed.contains("resyncing") && listed.contains("leg 1 0.0% (difference)"), "{listed}");
    assert_exit(&f.ctl(&["resync", NAME, "resume"]), 0);
    assert!(f.volume.wait_resync_idle(std::time::Duration::from_secs(30)));
    assert!(stdout(&f.ctl(&["status", NAME])).contains("Resync: none (1.0 MiB copied since open"));
}

fn verify_done(f: &Fixture) -> Value {
    let mut v = Value::Null;
    assert!(wait_for(30, || {
        v = json(f, &["verify", NAME, "status"]);
        v["running"] == false
    }));
    v
}

#[test]
fn verify_of_identical_legs_finds_no_mismatch() {
    let f = Fixture::new();
    assert!(stdout(&f.ctl(&["verify", NAME, "status"])).contains("Verify: none since the volume was opened"));
    let o = f.ctl(&["verify", NAME, "start"]);
    assert_exit(&o, 0);
    assert!(
        stdout(&o).contains("verify started, reporting mismatches without repairing them"),
        "{}",
        stdout(&o)
    );
    let v = verify_done(&f);
    assert_eq!(v["mismatched_regions"], 0);
    assert_eq!(v["done_bytes"], common::SIZE);
    let out = stdout(&f.ctl(&["verify", NAME, "status"]));
    assert_eq!(out, "Verify: finished, 4.0 MiB compared: no mismatch between the in-sync legs\n");
    assert!(stdout(&f.ctl(&["status", NAME])).contains(&out));
    assert!(stdout(&f.ctl(&["events", NAME])).contains("verify finished: 0 mismatched regions"));
}

#[test]
fn verify_reports_bit_rot_then_repairs_it_from_the_chosen_leg() {
    use std::os::unix::fs::FileExt;
    let f = Fixture::new();
    let leg1 = std::fs::OpenOptions::new().write(true).open(f.dir.join("vol0-leg1")).unwrap();
    leg1.write_all_at(&[0xff; 512], 512 << 10).unwrap();
    assert_exit(&f.ctl(&["verify", NAME, "start"]), 0);
    let v = verify_done(&f);
    assert_eq!(v["mismatched_regions"], 1);
    assert_eq!(v["mismatched_offsets"], serde_json::json!([524288]));
    let out = stdout(&f.ctl(&["verify", NAME, "status"]));
    assert!(
        out.contains(
            "1 mismatched regions (at bytes 524288), not repaired: run verify start --repair-from LEG"
        ),
        "{out}"
    );
    let o = f.ctl(&["verify", NAME, "start", "--repair-from", "0"]);
    assert_exit(&o, 0);
    assert!(stdout(&o).contains("repairing mismatches from leg 0"), "{}", stdout(&o));
    let v = verify_done(&f);
    assert_eq!(v["repaired_regions"], 1);
    assert!(stdout(&f.ctl(&["verify", NAME, "status"])).contains("1 repaired from leg 0"));
    assert_eq!(f.leg_bytes(0), f.leg_bytes(1));
    let text = stdout(&f.ctl(&["metrics", NAME]));
    assert!(text.contains("hamirror_verify_repaired_regions{volume=\"vol0\"} 1\n"), "{text}");
}

#[test]
fn verify_refusals_say_what_to_do() {
    let f = Fixture::new();
    let o = f.ctl(&["verify", NAME, "cancel"]);
    assert_exit(&o, 1);
    assert!(stderr(&o).contains("no verify is running"), "{}", stderr(&o));
    assert_exit(&f.ctl(&["verify", NAME, "status", "--repair-from", "0"]), 2);
    assert_exit(&f.ctl(&["fail", NAME, "1"]), 0);
    let o = f.ctl(&["verify", NAME, "start"]);
    assert_exit(&o, 1);
    assert!(
        stderr(&o).contains("fewer than two legs are in sync") && stderr(&o).contains("restore a leg first")
    );
    let o = f.ctl(&["verify", NAME, "start", "--repair-from", "1"]);
    assert_exit(&o, 1);
}

#[test]
fn events_are_timestamped_with_reasons() {
    let f = Fixture::new();
    assert_exit(&f.ctl(&["fail", NAME, "1"]), 0);
    let out = stdout(&f.ctl(&["events", NAME]));
    let line = out.lines().find(|l| l.contains("in_sync -> offline")).unwrap_or_else(|| panic!("{out}"));
    let (stamp, rest) = line.split_once("Z  ").unwrap();
    assert_eq!(stamp.len(), "2024-01-01 00:00:00.000".len(), "{line}");
    assert!(stamp.starts_with("20") && stamp.as_bytes()[10] == b' ', "{line}");
    assert!(rest.starts_with("leg 1 (") && rest.contains("vol0-leg1"), "{line}");
    let v = json(&f, &["events", NAME]);
    let e = v.as_array().unwrap().iter().find(|e| e["event"] == "leg_state_changed").unwrap();
    assert_eq!(keys(e), words("unix_ms event message fields"));
    assert_eq!(e["fields"]["leg"], 1);
}

#[test]
fn watch_refreshes_count_times_clearing_the_screen() {
    let f = Fixture::new();
    let o = f.ctl(&["watch", NAME, "--interval", "0.1", "--count", "3"]);
    assert_exit(&o, 0);
    let out = stdout(&o);
    assert_eq!(out.matches("\x1b[H\x1b[2J").count(), 3, "{out}");
    assert_eq!(out.matches("Volume vol0: healthy").count(), 3);
    let o = f.ctl(&["--json", "watch", NAME, "--interval=0.05", "--count=2"]);
    assert_exit(&o, 0);
    let lines: Vec<Value> = stdout(&o).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[1]["name"], NAME);
}

#[test]
fn metrics_expose_every_family_with_help_and_type() {
    let f = Fixture::new();
    assert_exit(&f.ctl(&["fail", NAME, "1"]), 0);
    let o = f.ctl(&["metrics", NAME]);
    assert_exit(&o, 0);
    let text = stdout(&o);
    let families = [
        ("hamirror_volume_up", "gauge"),
        ("hamirror_leg_reads_total", "counter"),
        ("hamirror_leg_writes_total", "counter"),
        ("hamirror_leg_read_errors_total", "counter"),
        ("hamirror_leg_write_errors_total", "counter"),
        ("hamirror_leg_timeouts_total", "counter"),
        ("hamirror_leg_inflight", "gauge"),
        ("hamirror_leg_avg_latency_seconds", "gauge"),
        ("hamirror_leg_state", "gauge"),
        ("hamirror_dirty_regions", "gauge"),
        ("hamirror_active_extents", "gauge"),
        ("hamirror_active_extents_limit", "gauge"),
        ("hamirror_crash_copy_bytes", "gauge"),
        ("hamirror_extent_evictions_total", "counter"),
        ("hamirror_extent_waits_total", "counter"),
        ("hamirror_resync_done_bytes", "gauge"),
        ("hamirror_resync_total_bytes", "gauge"),
        ("hamirror_resync_rate_bytes_per_second", "gauge"),
        ("hamirror_resync_copied_bytes_total", "counter"),
        ("hamirror_metadata_copy_live", "gauge"),
        ("hamirror_verify_running", "gauge"),
        ("hamirror_verify_mismatched_regions", "gauge"),
    ];
    for (name, kind) in families {
        assert!(text.contains(&format!("# HELP {name} ")), "{name}:\n{text}");
        assert!(text.contains(&format!("# TYPE {name} {kind}\n")), "{name}:\n{text}");
    }
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let name = line.split('{').next().unwrap();
        assert!(text.contains(&format!("# TYPE {name} ")), "sample without TYPE: {line}");
        let value = line.rsplit(' ').next().unwrap();
        assert!(value.parse::<f64>().is_ok(), "bad value in {line}");
    }
    assert!(text.contains("hamirror_volume_up{volume=\"vol0\"} 1\n"));
    assert!(text.contains("hamirror_leg_reads_total{volume=\"vol0\",leg=\"0\"} "));
    assert!(text.contains("hamirror_leg_state{volume=\"vol0\",leg=\"1\",state=\"offline\"} 1\n"));
    assert!(text.contains("hamirror_leg_state{volume=\"vol0\",leg=\"1\",state=\"in_sync\"} 0\n"));
    assert!(text.contains("hamirror_leg_state{volume=\"vol0\",leg=\"0\",state=\"in_sync\"} 1\n"));
    assert!(text.contains("hamirror_metadata_copy_live{volume=\"vol0\",copy=\"0\",path=\""));
}

#[test]
fn metrics_and_list_cover_every_socket_and_mark_stale_ones() {
    let f = Fixture::new();
    drop(UnixListener::bind(f.dir.join("gone.sock")).unwrap());
    let text = stdout(&f.ctl(&["metrics"]));
    assert!(text.contains("hamirror_volume_up{volume=\"vol0\"} 1\n"), "{text}");
    assert!(text.contains("hamirror_volume_up{volume=\"gone\"} 0\n"), "{text}");
    assert!(!text.contains("volume=\"gone\",leg="), "{text}");

    let o = f.ctl(&["list"]);
    assert_exit(&o, 0);
    let out = stdout(&o);
    assert!(out.starts_with("VOLUME  HEALTH"), "{out}");
    let gone = out.lines().find(|l| l.starts_with("gone ")).unwrap_or_else(|| panic!("{out}"));
    assert!(gone.contains("unreachable") && gone.contains("Is tcmu-runner running"), "{gone}");
    let vol = out.lines().find(|l| l.starts_with("vol0 ")).unwrap();
    assert!(vol.contains("healthy") && vol.contains("2/2"), "{vol}");

    let v = json(&f, &["list"]);
    let entries = v.as_array().unwrap();
    assert_eq!(entries.len(), 2);
    let expected = "volume socket reachable health legs legs_in_sync dirty_regions resync error";
    assert_eq!(keys(&entries[1]), words(expected));
    assert_eq!(entries[1]["volume"], "vol0");
    assert_eq!(entries[1]["health"], "healthy");
    assert_eq!(entries[0]["reachable"], false);
}

#[test]
fn list_of_an_empty_run_directory_says_what_to_check() {
    let dir = temp_dir();
    let o = ctl_in(&dir, &["list"]);
    assert_exit(&o, 0);
    assert!(stdout(&o).contains("Is tcmu-runner running and the LUN created?"), "{}", stdout(&o));
    assert_eq!(stdout(&ctl_in(&dir, &["--json", "list"])).trim(), "[]");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_unreachable_volume_exits_3_and_says_what_to_check() {
    let f = Fixture::new();
    for args in
        [&["status", "nosuch"][..], &["fail", "nosuch", "1"], &["metrics", "nosuch"], &["watch", "nosuch"]]
    {
        let o = f.ctl(args);
        assert_exit(&o, 3);
        assert!(stderr(&o).contains("Is tcmu-runner running and the LUN created?"), "{}", stderr(&o));
    }
    drop(UnixListener::bind(f.dir.join("gone.sock")).unwrap());
    let o = f.ctl(&["status", "gone"]);
    assert_exit(&o, 3);
    assert!(stderr(&o).contains("volume gone is not running: nothing listens on"), "{}", stderr(&o));
}

#[test]
fn usage_errors_exit_2_with_the_commands_usage() {
    let f = Fixture::new();
    let cases: [&[&str]; 7] = [
        &["fail", NAME, "one"],
        &["fail", NAME],
        &["frobnicate"],
        &["status"],
        &["resync", NAME, "rate", "fast"],
        &["status", NAME, "--verbose"],
        &["status", "../etc"],
    ];
    for args in cases {
        let o = f.ctl(args);
        assert_exit(&o, 2);
        assert!(stderr(&o).starts_with("error: "), "{}", stderr(&o));
    }
    let o = f.ctl(&["fail", NAME, "one"]);
    let err = stderr(&o);
    assert!(err.starts_with("error: LEG must be a leg index (0, 1, ...), not \"one\"\n"), "{err}");
    assert!(err.contains("Usage: hamirrorctl fail [OPTIONS] <VOLUME> <LEG>"), "{err}");
    let err = stderr(&f.ctl(&["status", "../etc"]));
    assert!(err.contains("volume name \"../etc\" cannot name a control socket"), "{err}");
    assert_eq!(f.leg_state(1), "in_sync");
}

/// The commands an admin can see, from the same declaration that parses them.
fn documented_commands() -> Vec<String> {
    let cmd = hamirror_ctl::cli::command();
    let shown = cmd.get_subcommands().filter(|c| !c.is_hide_set());
    shown.map(|c| c.get_name().to_string()).collect()
}

#[test]
fn help_explains_every_command() {
    let dir = temp_dir();
    let o = ctl_in(&dir, &["--help"]);
    assert_exit(&o, 0);
    let out = stdout(&o);
    let commands = documented_commands();
    assert!(commands.len() >= 11, "{commands:?}");
    for c in &commands {
        assert!(out.contains(&format!("\n  {c} ")), "{c} missing from --help:\n{out}");
        let o = ctl_in(&dir, &[c, "--help"]);
        assert_exit(&o, 0);
        let text = stdout(&o);
        assert!(text.contains(&format!("\nUsage: hamirrorctl {c} ")), "{text}");
        assert!(text.lines().count() > 6, "{c} --help explains too little:\n{text}");
    }
    assert!(!out.contains("generate-docs"), "{out}");
    assert!(out.contains("Exit status:") && out.contains("4  permission denied"));
    assert_eq!(stdout(&ctl_in(&dir, &[])), out, "no arguments prints the help");
    assert!(stdout(&ctl_in(&dir, &["--version"])).contains("control protocol version 1"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn generate_docs_writes_man_pages_and_completions() {
    let dir = temp_dir();
    let o = ctl_in(&dir, &["generate-docs", "--out", dir.join("docs").to_str().unwrap()]);
    assert_exit(&o, 0);
    let read = |path: &str| {
        std::fs::read_to_string(dir.join("docs").join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
    };
    let man = read("man/hamirrorctl.1");
    for c in documented_commands() {
        assert!(man.contains(&format!("hamirrorctl\\-{c}(1)")), "{c} missing from the man page");
        let page = read(&format!("man/hamirrorctl-{c}.1"));
        assert!(page.contains(".SH DESCRIPTION"), "hamirrorctl-{c}.1:\n{page}");
    }
    assert!(man.contains("Exit status:") && !man.contains("generate"), "{man}");
    assert!(read("man/hamirrorctl-verify.1").contains("repair\\-from"));
    for (file, needle) in [
        ("bash", "complete -F _hamirrorctl"),
        ("zsh", "#compdef hamirrorctl"),
        ("fish", "complete -c hamirrorctl"),
    ] {
        let path = if file == "zsh" {
            "completions/_hamirrorctl".to_string()
        } else {
            format!("completions/hamirrorctl.{file}")
        };
        let text = read(&path);
        assert!(text.contains(needle) && text.contains("resync"), "{path}:\n{text}");
        assert!(!text.contains("generate-docs"), "{path} offers the hidden command");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn generate_docs_into_an_unwritable_place_fails_with_a_message() {
    let dir = temp_dir();
    std::fs::write(dir.join("file"), "").unwrap();
    let o = ctl_in(&dir, &["generate-docs", "--out", dir.join("file/docs").to_str().unwrap()]);
    assert_exit(&o, 1);
    assert!(stderr(&o).contains("cannot write the man pages and completions under"), "{}", stderr(&o));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs hamirrorctl as the unprivileged user `nobody` (needs root to set up).
fn ctl_as_nobody(f: &Fixture, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_hamirrorctl"))
        .args(args)
        .env("HAMIRROR_RUN_DIR", &f.dir)
        .uid(65534)
        .gid(65534)
        .output()
        .expect("run hamirrorctl as nobody")
}

#[test]
fn a_non_root_user_is_refused_with_exit_4() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!(
            "SKIPPED: a_non_root_user_is_refused_with_exit_4 needs root to run a client as another user"
        );
        return;
    }
    let f = Fixture::new();
    // As installed: the private directory keeps the socket out of reach.
    let o = ctl_as_nobody(&f, &["fail", NAME, "1"]);
    assert_exit(&o, 4);
    assert!(stderr(&o).contains("hamirrorctl must run as root"), "{}", stderr(&o));
    // With the modes loosened by mistake, the peer check still refuses.
    std::fs::set_permissions(&f.dir, std::fs::Permissions::from_mode(0o711)).unwrap();
    std::fs::set_permissions(f.socket(), std::fs::Permissions::from_mode(0o666)).unwrap();
    let o = ctl_as_nobody(&f, &["fail", NAME, "1"]);
    assert_exit(&o, 4);
    assert!(stderr(&o).contains("permission denied: hamirrorctl must run as root"), "{}", stderr(&o));
    assert_eq!(f.leg_state(1), "in_sync");
}
