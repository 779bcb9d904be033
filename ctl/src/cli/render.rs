//! Human-readable output.

use super::units::{bar, bytes, duration, percent, rate, utc};
use crate::view::{ActivityView, ByteRange, EventView, LegView, ResyncView, StatusView, VerifyView};
use serde::Serialize;

const BAR_WIDTH: usize = 30;

/// One line of `hamirrorctl list`.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct ListEntry {
    pub volume: String,
    pub socket: String,
    pub reachable: bool,
    /// `healthy`, `resyncing`, `degraded` or `unreachable`.
    pub health: String,
    pub legs: usize,
    pub legs_in_sync: usize,
    pub dirty_regions: u64,
    pub resync: Option<ResyncView>,
    /// Why the volume could not be reached.
    pub error: Option<String>,
}

pub fn status(s: &StatusView) -> String {
    let mut out = format!(
        "Volume {}: {}\n  size {}, block size {} B, region {}, generation {}, leg I/O {}\n\n",
        s.name,
        s.health().as_str(),
        bytes(s.size),
        s.block_size,
        bytes(s.region_size),
        s.generation,
        s.io_engine
    );
    out += &legs(&s.legs);
    let dirty = s.dirty_regions.saturating_mul(s.region_size).min(s.size);
    out += &format!(
        "\nDirty regions: {} ({} marked in the write-intent bitmap)\n",
        s.dirty_regions,
        bytes(dirty)
    );
    out += &activity(&s.activity);
    out += &resync(s);
    out += &verify(&s.verify);
    let live = s.metadata.iter().filter(|m| m.live).count();
    out += &format!("Metadata copies: {live} of {} live\n", s.metadata.len());
    for m in &s.metadata {
        match (&m.live, &m.error) {
            (true, _) => out += &format!("  live  {}\n", m.path),
            (false, e) => {
                let why = e.as_deref().unwrap_or("unreadable");
                out += &format!("  LOST  {}: {why}; the others carry on, replace this copy\n", m.path)
            }
        }
    }
    out
}

fn legs(legs: &[LegView]) -> String {
    let headers = [
        "LEG", "STATE", "READS", "WRITES", "READ", "WRITTEN", "RD ERR", "WR ERR", "TIMEOUTS", "INFLIGHT",
        "AVG LAT", "PATH",
    ];
    let rows: Vec<Vec<String>> = legs
        .iter()
        .map(|l| {
            vec![
                l.index.to_string(),
                l.state.clone(),
                l.reads.to_string(),
                l.writes.to_string(),
                bytes(l.read_bytes),
                bytes(l.write_bytes),
                l.read_errors.to_string(),
                l.write_errors.to_string(),
                l.timeouts.to_string(),
                l.inflight.to_string(),
                latency(l.avg_latency_us),
                l.path.clone(),
            ]
        })
        .collect();
    let mut out = String::new();
    for (line, leg) in table(&headers, &rows).lines().zip(std::iter::once(None).chain(legs.iter().map(Some)))
    {
        out += line;
        out.push('\n');
        if let Some(reason) = leg.and_then(|l| l.reason.as_ref()) {
            out += &format!("     reason: {reason}\n");
        }
    }
    out
}

fn latency(us: u64) -> String {
    if us >= 10_000 {
        format!("{:.1} ms", us as f64 / 1000.0)
    } else {
        format!("{us} us")
    }
}

fn resync(s: &StatusView) -> String {
    let c = &s.resync_control;
    let limit = match c.max_mib_s {
        0 => "unlimited".to_string(),
        n => format!("{n} MiB/s"),
    };
    let paused = if c.paused { ", paused" } else { "" };
    let copied = bytes(s.resync_bytes_total);
    let Some(r) = &s.resync else {
        return format!("Resync: none ({copied} copied since open; limit {limit}{paused})\n");
    };
    let eta = match (r.paused, r.eta_s) {
        (true, _) => "paused".to_string(),
        (false, Some(e)) => format!("ETA {}", duration(e)),
        (false, None) => "ETA unknown".to_string(),
    };
    format!(
        "Resync: leg {}, {}\n  {} {:5.1}%  {} / {}  at {}  {eta}\n  limit {limit}{paused}; {copied} copied since open\n{}",
        r.leg,
        r.kind.replace('_', " "),
        bar(r.done_bytes, r.total_bytes, BAR_WIDTH),
        percent(r.done_bytes, r.total_bytes),
        bytes(r.done_bytes),
        bytes(r.total_bytes),
        rate(r.rate_bytes_s),
        unreadable(&r.unreadable),
    )
}

/// The activity log: how many extents are active, of how many, and what a
/// crash now would leave to copy.
fn activity(a: &ActivityView) -> String {
    let limit = match a.limit_extents {
        0 => "no limit".to_string(),
        n => format!("limit {n} ({})", bytes(n.saturating_mul(a.extent_bytes))),
    };
    format!(
        "Activity log: {} extents of {} active, {limit}; a crash now copies {}; {} evictions, {} waits\n",
        a.active_extents,
        bytes(a.extent_bytes),
        bytes(a.crash_copy_bytes),
        a.evictions,
        a.waits
    )
}

/// The ranges no leg can read, if any: the leg stays rebuilding for them.
fn unreadable(ranges: &[ByteRange]) -> String {
    if ranges.is_empty() {
        return String::new();
    }
    let total: u64 = ranges.iter().map(|r| r.len).sum();
    let shown: Vec<String> = ranges.iter().take(4).map(|r| format!("{} (+{})", r.offset, r.len)).collect();
    let more = if ranges.len() > shown.len() { ", ..." } else { "" };
    format!(
        "  UNREADABLE on the last in-sync leg: {} at bytes {}{more}; retried until they read \
         (a host write there rewrites them)\n",
        bytes(total),
        shown.join(", ")
    )
}

pub fn verify(v: &VerifyView) -> String {
    let shown: Vec<String> = v.mismatched_offsets.iter().take(8).map(u64::to_string).collect();
    let more = if v.mismatched_regions > shown.len() as u64 { ", ..." } else { "" };
    let at = if shown.is_empty() { String::new() } else { format!(" (at bytes {}{more})", shown.join(", ")) };
    let n = v.mismatched_regions;
    if v.running {
        let state = if v.cancelled { "cancelling" } else { "running" };
        let repair = v.repair_from.map_or(String::new(), |l| format!(", repairing from leg {l}"));
        return format!(
            "Verify: {state}{repair}\n  {} {:5.1}%  {} / {}; {n} mismatched regions so far{at}\n",
            bar(v.done_bytes, v.total_bytes, BAR_WIDTH),
            percent(v.done_bytes, v.total_bytes),
            bytes(v.done_bytes),
            bytes(v.total_bytes),
        );
    }
    if v.total_bytes == 0 {
        return "Verify: none since the volume was opened\n".to_string();
    }
    let how = match v.cancelled {
        true => format!("cancelled after {} of {}", bytes(v.done_bytes), bytes(v.total_bytes)),
        false => format!("finished, {} compared", bytes(v.done_bytes)),
    };
    let result = match (n, v.repair_from) {
        (0, _) => "no mismatch between the in-sync legs".to_string(),
        (_, Some(leg)) => format!("{n} mismatched regions{at}, {} repaired from leg {leg}", v.repaired_regions),
        (_, None) => format!(
            "{n} mismatched regions{at}, not repaired: run verify start --repair-from LEG with the leg you trust"
        ),
    };
    format!("Verify: {how}: {result}\n")
}

pub fn list(entries: &[ListEntry]) -> String {
    let headers = ["VOLUME", "HEALTH", "IN SYNC", "DIRTY", "RESYNC"];
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            let resync = match (&e.resync, &e.error) {
                (_, Some(err)) => err.clone(),
                (Some(r), None) => {
                    format!(
                        "leg {} {:.1}% ({})",
                        r.leg,
                        percent(r.done_bytes, r.total_bytes),
                        r.kind.replace('_', " ")
                    )
                }
                (None, None) => "-".into(),
            };
            let in_sync = if e.reachable { format!("{}/{}", e.legs_in_sync, e.legs) } else { "-".into() };
            let dirty = if e.reachable { e.dirty_regions.to_string() } else { "-".into() };
            vec![e.volume.clone(), e.health.clone(), in_sync, dirty, resync]
        })
        .collect();
    table(&headers, &rows)
}

pub fn events(events: &[EventView]) -> String {
    events.iter().map(|e| format!("{}  {}\n", utc(e.unix_ms), e.message)).collect()
}

/// Columns padded to their widest cell; text left-aligned, numbers right-aligned,
/// the last column unpadded.
fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let numeric = |col: usize| {
        !rows.is_empty() && rows.iter().all(|r| r[col].starts_with(|c: char| c.is_ascii_digit()))
    };
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s += cell;
            } else if numeric(i) && i > 0 {
                s += &format!("{cell:>w$}  ", w = widths[i]);
            } else {
                s += &format!("{cell:<w$}  ", w = widths[i]);
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(headers.to_vec());
    for row in rows {
        out += &line(row.iter().map(String::as_str).collect());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_numbers_right_and_text_left() {
        let t = table(
            &["NAME", "N", "PATH"],
            &[vec!["a".into(), "5".into(), "/x".into()], vec!["bbb".into(), "10".into(), "/y".into()]],
        );
        assert_eq!(t, "NAME   N  PATH\na      5  /x\nbbb   10  /y\n");
    }

    #[test]
    fn unreadable_ranges_are_shown_loudly_and_only_when_there_are_some() {
        assert_eq!(unreadable(&[]), "");
        let r = |offset, len| ByteRange { offset, len };
        let text = unreadable(&[r(1048576, 65536), r(4194304, 65536)]);
        assert!(text.starts_with("  UNREADABLE on the last in-sync leg: 128.0 KiB at bytes 1048576 (+65536), 4194304 (+65536);"), "{text}");
        let many: Vec<ByteRange> = (0..6).map(|i| r(i * 65536, 512)).collect();
        assert!(unreadable(&many).contains("(+512), ...;"));
    }

    #[test]
    fn latency_switches_to_milliseconds_when_large() {
        assert_eq!(latency(250), "250 us");
        assert_eq!(latency(12_500), "12.5 ms");
    }
}
