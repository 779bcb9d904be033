//! Prometheus text exposition (format 0.0.4) of every counter and gauge.

use crate::view::{LegView, StatusView};
use std::fmt::Write;

/// One volume as scraped: its status, or `None` if it could not be reached.
pub struct Scrape {
    pub volume: String,
    pub status: Option<StatusView>,
}

const LEG_STATES: [&str; 4] = ["in_sync", "rebuilding", "faulted", "offline"];

type LegValue = fn(&LegView) -> f64;
type VolumeValue = fn(&StatusView) -> f64;

const LEG_COUNTERS: &[(&str, &str, LegValue)] = &[
    ("hamirror_leg_reads_total", "Reads completed by the leg.", |l| l.reads as f64),
    ("hamirror_leg_writes_total", "Writes completed by the leg.", |l| l.writes as f64),
    ("hamirror_leg_read_bytes_total", "Bytes read from the leg.", |l| l.read_bytes as f64),
    ("hamirror_leg_write_bytes_total", "Bytes written to the leg.", |l| l.write_bytes as f64),
    ("hamirror_leg_read_errors_total", "Reads the leg failed.", |l| l.read_errors as f64),
    ("hamirror_leg_write_errors_total", "Writes the leg failed.", |l| l.write_errors as f64),
    ("hamirror_leg_timeouts_total", "I/Os the leg did not finish within the deadline.", |l| {
        l.timeouts as f64
    }),
];

const LEG_GAUGES: &[(&str, &str, LegValue)] = &[
    ("hamirror_leg_inflight", "I/Os outstanding on the leg.", |l| l.inflight as f64),
    ("hamirror_leg_avg_latency_seconds", "Average I/O latency of the leg since open.", |l| {
        l.avg_latency_us as f64 / 1e6
    }),
];

const VOLUME_GAUGES: &[(&str, &str, VolumeValue)] = &[
    ("hamirror_volume_size_bytes", "Size of the volume.", |s| s.size as f64),
    ("hamirror_dirty_regions", "Regions set in the write-intent bitmap.", |s| s.dirty_regions as f64),
    ("hamirror_dirty_bytes", "Bytes covered by the dirty regions.", |s| {
        s.dirty_regions.saturating_mul(s.region_size).min(s.size) as f64
    }),
    ("hamirror_active_extents", "Bitmap extents written since their bits were last cleared.", |s| {
        s.activity.active_extents as f64
    }),
    ("hamirror_active_extents_limit", "The most extents that may be active (0: no limit).", |s| {
        s.activity.limit_extents as f64
    }),
    ("hamirror_crash_copy_bytes", "Bytes a crash now would leave to copy.", |s| {
        s.activity.crash_copy_bytes as f64
    }),
    ("hamirror_resync_active", "1 while a resync or crash recovery runs.", |s| flag(s.resync.is_some())),
    ("hamirror_resync_paused", "1 if resync is paused by the administrator.", |s| {
        flag(s.resync_control.paused)
    }),
    ("hamirror_resync_done_bytes", "Bytes copied by the current resync.", |s| {
        s.resync.as_ref().map_or(0.0, |r| r.done_bytes as f64)
    }),
    ("hamirror_resync_total_bytes", "Bytes the current resync has to copy.", |s| {
        s.resync.as_ref().map_or(0.0, |r| r.total_bytes as f64)
    }),
    ("hamirror_resync_rate_bytes_per_second", "Average rate of the current resync.", |s| {
        s.resync.as_ref().map_or(0.0, |r| r.rate_bytes_s as f64)
    }),
    ("hamirror_resync_limit_bytes_per_second", "Resync ceiling; 0 is unlimited.", |s| {
        (s.resync_control.max_mib_s as f64) * 1024.0 * 1024.0
    }),
    ("hamirror_verify_running", "1 while a verify (scrub) runs.", |s| flag(s.verify.running)),
    ("hamirror_verify_done_bytes", "Bytes compared by the current or last verify.", |s| {
        s.verify.done_bytes as f64
    }),
    ("hamirror_verify_total_bytes", "Bytes the current or last verify has to compare.", |s| {
        s.verify.total_bytes as f64
    }),
    (
        "hamirror_verify_mismatched_regions",
        "Regions the current or last verify found different between legs.",
        |s| s.verify.mismatched_regions as f64,
    ),
    ("hamirror_verify_repaired_regions", "Mismatched regions the current or last verify repaired.", |s| {
        s.verify.repaired_regions as f64
    }),
];

const VOLUME_COUNTERS: &[(&str, &str, VolumeValue)] = &[
    ("hamirror_resync_copied_bytes_total", "Bytes copied by resyncs since the volume was opened.", |s| {
        s.resync_bytes_total as f64
    }),
    ("hamirror_extent_evictions_total", "Idle extents cleared early to make room for a new one.", |s| {
        s.activity.evictions as f64
    }),
    ("hamirror_extent_waits_total", "Writes that waited because every active extent was busy.", |s| {
        s.activity.waits as f64
    }),
];

pub fn render(scrapes: &[Scrape]) -> String {
    let mut out = String::new();
    family(&mut out, "hamirror_volume_up", "gauge", "1 if the volume's control socket answered.");
    for s in scrapes {
        sample(&mut out, "hamirror_volume_up", &[("volume", &s.volume)], flag(s.status.is_some()));
    }
    let up: Vec<&StatusView> = scrapes.iter().filter_map(|s| s.status.as_ref()).collect();
    let volume_families =
        VOLUME_GAUGES.iter().map(|f| ("gauge", f)).chain(VOLUME_COUNTERS.iter().map(|f| ("counter", f)));
    for (kind, (name, help, value)) in volume_families {
        family(&mut out, name, kind, help);
        for s in &up {
            sample(&mut out, name, &[("volume", &s.name)], value(s));
        }
    }
    leg_families(&mut out, &up);
    family(&mut out, "hamirror_metadata_copy_live", "gauge", "1 if the metadata copy is being written.");
    for s in &up {
        for (i, m) in s.metadata.iter().enumerate() {
            let copy = i.to_string();
            let labels = [("volume", s.name.as_str()), ("copy", &copy), ("path", &m.path)];
            sample(&mut out, "hamirror_metadata_copy_live", &labels, flag(m.live));
        }
    }
    out
}

fn leg_families(out: &mut String, up: &[&StatusView]) {
    let each_leg = |out: &mut String, name: &str, value: LegValue| {
        for s in up {
            for l in &s.legs {
                sample(out, name, &[("volume", &s.name), ("leg", &l.index.to_string())], value(l));
            }
        }
    };
    for (name, help, value) in LEG_COUNTERS {
        family(out, name, "counter", help);
        each_leg(out, name, *value);
    }
    for (name, help, value) in LEG_GAUGES {
        family(out, name, "gauge", help);
        each_leg(out, name, *value);
    }
    family(out, "hamirror_leg_state", "gauge", "1 for the leg's current state, 0 for the others.");
    for s in up {
        for l in &s.legs {
            let leg = l.index.to_string();
            for state in LEG_STATES {
                let labels = [("volume", s.name.as_str()), ("leg", &leg), ("state", state)];
                sample(out, "hamirror_leg_state", &labels, flag(l.state == state));
            }
        }
    }
    family(out, "hamirror_leg_info", "gauge", "Always 1; labels give the leg's path.");
    for s in up {
        for l in &s.legs {
            let labels = [("volume", s.name.as_str()), ("leg", &l.index.to_string()), ("path", &l.path)];
            sample(out, "hamirror_leg_info", &labels, 1.0);
        }
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: f64) {
    let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
    let _ = writeln!(out, "{name}{{{}}} {value}", labels.join(","));
}

fn flag(b: bool) -> f64 {
    if b {
        1.0
    } else {
        0.0
    }
}

/// Label values escape backslash, double quote and newline.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn an_unreachable_volume_is_reported_down_and_nothing_else() {
        let text = render(&[Scrape { volume: "gone".into(), status: None }]);
        assert!(
            text.contains("# TYPE hamirror_volume_up gauge\nhamirror_volume_up{volume=\"gone\"} 0\n"),
            "{text}"
        );
        assert!(!text.contains("hamirror_leg_reads_total{"));
    }

    #[test]
    fn values_print_as_integers_when_whole() {
        let mut s = String::new();
        sample(&mut s, "m", &[("v", "x")], 3.0);
        sample(&mut s, "m", &[("v", "x")], 0.000125);
        assert_eq!(s, "m{v=\"x\"} 3\nm{v=\"x\"} 0.000125\n");
    }
}
