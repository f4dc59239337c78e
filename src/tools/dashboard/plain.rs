//! The live view as plain text, for when stdout is not a terminal: one
//! status line per refresh, and a full summary on request (every few
//! seconds and at the end of a demo).

use std::fmt::Write;
use std::time::Duration;

use super::Snapshot;

/// One line: event time, and per source the rate, invalid and late counts.
pub fn status_line(
    now: &Snapshot,
    earlier: &Snapshot,
    elapsed: Duration,
    uptime: Duration,
) -> String {
    let rates = now.rates(earlier, elapsed);
    let mut line = format!(
        "[{:>4}s] event time {}",
        uptime.as_secs(),
        now.event_time().unwrap_or_else(|| "-".to_owned())
    );
    for (source, l) in &now.sources {
        let _ = write!(
            line,
            " | {source} {:.0}/s ({} read, {} invalid, {} late)",
            rates.get(source).copied().unwrap_or_default(),
            l.consumed,
            l.invalid,
            l.late
        );
    }
    line
}

/// Several lines: rows published per job, the latest NPS and CSAT per
/// channel and topic, the top categories by revenue and the RFM segments.
pub fn summary(now: &Snapshot) -> String {
    let mut out = String::from("rows published per job:\n");
    for (job, rows) in &now.job_rows {
        let _ = writeln!(out, "  {job:<26} {rows:>8}");
    }
    if !now.satisfaction.is_empty() {
        out.push_str("satisfaction, latest hour (NPS, CSAT) by channel and topic:\n");
        for ((channel, topic), (nps, csat)) in &now.satisfaction {
            let _ = writeln!(
                out,
                "  {channel:<6} {topic:<9} NPS {:>6}  CSAT {:>5}",
                number(*nps, 1),
                number(*csat, 2)
            );
        }
    }
    let top = now.top_categories(5);
    if !top.is_empty() {
        out.push_str("top categories by revenue, latest hour:\n");
        for (category, revenue) in top {
            let _ = writeln!(out, "  {category:<12} {revenue:>10.2}");
        }
    }
    if !now.segments.is_empty() {
        out.push_str("RFM segments, customers (latest day):\n");
        for (segment, customers) in &now.segments {
            let _ = writeln!(out, "  {segment:<19} {customers:>7}");
        }
    }
    out
}

/// `value` with `decimals` decimals, or `-` when unknown.
pub fn number(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{v:.decimals$}"))
}
