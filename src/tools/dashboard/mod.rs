//! The demo's live view of a running engine, read from its metrics once a
//! second: what comes in, what is rejected, how far event time has got, and
//! the latest customer metrics the bundled jobs export as `@gauge`s.
//!
//! [`Snapshot`] is what one reading holds; [`terminal`] draws it full-screen
//! (ratatui) and [`plain`] prints it as lines when stdout is not a terminal.

pub mod plain;
pub mod terminal;

use std::collections::BTreeMap;
use std::time::Duration;

use prometheus::proto::{Metric, MetricFamily, MetricType};

use crate::config::TopicsConfig;
use crate::metrics::{OUTPUT_RECORDS, RECORDS_CONSUMED, RECORDS_INVALID, WATERMARK};
use crate::schema::{Source, Sources};

/// The gauges the view shows, exported by the bundled jobs.
const NPS: &str = "cxpulse_satisfaction_hourly_nps";
const CSAT: &str = "cxpulse_satisfaction_hourly_csat";
const REVENUE: &str = "cxpulse_need_by_category_revenue";
const SEGMENT_CUSTOMERS: &str = "cxpulse_loyalty_summary_customers";

/// One source's line: records read, rejected and late, and its watermark.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SourceLine {
    /// Records read so far.
    pub consumed: f64,
    /// Records rejected as invalid (sent to the dead-letter topic).
    pub invalid: f64,
    /// Records too late for every window of a job (dead-letter topic too).
    pub late: f64,
    /// Watermark, seconds since the epoch; `None` before the first event.
    pub watermark: Option<f64>,
}

/// The engine's metrics at one instant, as the view needs them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// Per event source (`transactions`, `feedback`, `complaints`).
    pub sources: BTreeMap<&'static str, SourceLine>,
    /// Rows published per job.
    pub job_rows: BTreeMap<String, f64>,
    /// Latest hourly NPS and CSAT per (channel, topic).
    pub satisfaction: BTreeMap<(String, String), (Option<f64>, Option<f64>)>,
    /// Latest hourly revenue per category.
    pub revenue: BTreeMap<String, f64>,
    /// Customers per RFM segment, latest day.
    pub segments: BTreeMap<String, f64>,
}

impl Snapshot {
    /// Reads `families` (from [`crate::metrics::Metrics::gather`]); the
    /// topics of `sources` are named by `topics`.
    pub fn read(families: &[MetricFamily], topics: &TopicsConfig, sources: Sources) -> Self {
        let mut snapshot = Snapshot::default();
        let source_of = |metric: &Metric| {
            let topic = label(metric, "topic")?;
            topics
                .source_of(sources, topic)
                .filter(|k| k.is_stream())
                .map(Source::name)
        };
        for family in families {
            for metric in family.get_metric() {
                let value = value(family, metric);
                match family.name() {
                    RECORDS_CONSUMED => {
                        if let Some(source) = source_of(metric) {
                            snapshot.sources.entry(source).or_default().consumed += value;
                        }
                    }
                    RECORDS_INVALID => {
                        if let Some(source) = source_of(metric) {
                            let line = snapshot.sources.entry(source).or_default();
                            match label(metric, "reason") {
                                Some("late") => line.late += value,
                                Some("job_error") => {}
                                _ => line.invalid += value,
                            }
                        }
                    }
                    WATERMARK => {
                        let kind = label(metric, "source").and_then(|name| sources.named(name));
                        if let Some(kind) = kind.filter(|k| k.is_stream()) {
                            snapshot.sources.entry(kind.name()).or_default().watermark =
                                Some(value);
                        }
                    }
                    OUTPUT_RECORDS => {
                        if let Some(job) = label(metric, "job") {
                            snapshot.job_rows.insert(job.to_owned(), value);
                        }
                    }
                    name @ (NPS | CSAT) => {
                        if let (Some(channel), Some(topic)) =
                            (label(metric, "channel"), label(metric, "topic"))
                        {
                            let entry = snapshot
                                .satisfaction
                                .entry((channel.to_owned(), topic.to_owned()))
                                .or_default();
                            let known = value.is_finite().then_some(value);
                            if name == NPS {
                                entry.0 = known;
                            } else {
                                entry.1 = known;
                            }
                        }
                    }
                    REVENUE => {
                        if let Some(category) = label(metric, "category") {
                            snapshot.revenue.insert(category.to_owned(), value);
                        }
                    }
                    SEGMENT_CUSTOMERS => {
                        if let Some(segment) = label(metric, "segment") {
                            snapshot.segments.insert(segment.to_owned(), value);
                        }
                    }
                    _ => {}
                }
            }
        }
        snapshot
    }

    /// Records read per second per source, between `earlier` and this
    /// snapshot taken `elapsed` later.
    pub fn rates(&self, earlier: &Snapshot, elapsed: Duration) -> BTreeMap<&'static str, f64> {
        let seconds = elapsed.as_secs_f64().max(1e-3);
        self.sources
            .iter()
            .map(|(source, line)| {
                let before = earlier.sources.get(source).map_or(0.0, |l| l.consumed);
                (*source, (line.consumed - before).max(0.0) / seconds)
            })
            .collect()
    }

    /// Categories by revenue, highest first, at most `n`.
    pub fn top_categories(&self, n: usize) -> Vec<(&str, f64)> {
        let mut all: Vec<(&str, f64)> =
            self.revenue.iter().map(|(c, r)| (c.as_str(), *r)).collect();
        all.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(b.0)));
        all.truncate(n);
        all
    }

    /// The slowest source watermark, formatted as a UTC date and time.
    pub fn event_time(&self) -> Option<String> {
        let slowest = self
            .sources
            .values()
            .filter_map(|l| l.watermark)
            .min_by(f64::total_cmp)?;
        let at = chrono::DateTime::from_timestamp_millis((slowest * 1000.0) as i64)?;
        Some(at.format("%Y-%m-%d %H:%M").to_string())
    }
}

fn label<'a>(metric: &'a Metric, name: &str) -> Option<&'a str> {
    metric
        .get_label()
        .iter()
        .find(|l| l.name() == name)
        .map(|l| l.value())
}

fn value(family: &MetricFamily, metric: &Metric) -> f64 {
    match family.get_field_type() {
        MetricType::COUNTER => metric.get_counter().get_value(),
        MetricType::GAUGE => metric.get_gauge().get_value(),
        _ => f64::NAN,
    }
}

#[cfg(test)]
mod tests;
