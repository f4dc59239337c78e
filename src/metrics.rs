//! Prometheus metrics: every name in one place, one registry per engine.
//!
//! Metrics are updated once per micro-batch, never per event, and carry only
//! bounded labels (topic, partition, job, reason).

use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::decode::RejectKind;

/// Records read from Kafka, by topic.
pub const RECORDS_CONSUMED: &str = "cxpulse_records_consumed_total";
/// Invalid or late records sent to the dead-letter topic, by topic and reason.
pub const RECORDS_INVALID: &str = "cxpulse_records_invalid_total";
/// Rows published by jobs, by job.
pub const OUTPUT_RECORDS: &str = "cxpulse_output_records_total";
/// Produce attempts that failed, by topic.
pub const PRODUCE_ERRORS: &str = "cxpulse_produce_errors_total";
/// Micro-batches a job failed to execute, by job.
pub const JOB_ERRORS: &str = "cxpulse_job_errors_total";
/// Records behind the end of each partition, by topic and partition.
pub const CONSUMER_LAG: &str = "cxpulse_consumer_lag_records";
/// Wall time to process one micro-batch (decode, jobs, produce, acknowledge).
pub const BATCH_DURATION: &str = "cxpulse_batch_duration_seconds";
/// Jobs currently loaded.
pub const JOBS_LOADED: &str = "cxpulse_jobs_loaded";
/// Partitions currently assigned to this process.
pub const ASSIGNED_PARTITIONS: &str = "cxpulse_assigned_partitions";
/// Constant 1, labelled with the version.
pub const BUILD_INFO: &str = "cxpulse_build_info";
/// Event-time watermark of each source, in seconds since the epoch.
pub const WATERMARK: &str = "cxpulse_watermark_seconds";
/// How far each source's watermark is behind wall-clock time, in seconds.
pub const WATERMARK_DELAY: &str = "cxpulse_watermark_delay_seconds";
/// Events late for every window of a job (sent to the dead-letter topic), by source and job.
pub const LATE_RECORDS: &str = "cxpulse_late_records_total";
/// Windows (or sessions) closed with data, by job.
pub const WINDOWS_FIRED: &str = "cxpulse_windows_fired_total";
/// Wall time a job spends on a micro-batch (`batch`) or on closing windows
/// and early results (`fire`), by job and phase.
pub const JOB_DURATION: &str = "cxpulse_job_duration_seconds";
/// Memory held by a windowed job's state (partial aggregates), by job.
pub const WINDOW_STATE_BYTES: &str = "cxpulse_window_state_bytes";
/// How far a windowed job's closed windows trail its watermark (minus
/// lateness), in seconds: 0 once every due window has fired.
pub const WINDOW_CLOSE_LAG: &str = "cxpulse_window_close_lag_seconds";
/// `@gauge` updates not exported because the job reached its series limit, by job.
pub const GAUGE_SERIES_DROPPED: &str = "cxpulse_exported_updates_dropped_total";
/// Query files in the queries directory that do not plan (after a reload).
pub const QUERY_FILES_INVALID: &str = "cxpulse_query_files_invalid";
/// Epoch transactions, by outcome (`committed`, `aborted`).
pub const TRANSACTIONS: &str = "cxpulse_transactions_total";
/// Wall time to commit an epoch: changelog records, offsets, commit.
pub const COMMIT_DURATION: &str = "cxpulse_commit_duration_seconds";
/// Records written to the state changelog (tombstones included).
pub const CHANGELOG_RECORDS: &str = "cxpulse_changelog_records_total";
/// Bytes written to the state changelog (keys and values).
pub const CHANGELOG_BYTES: &str = "cxpulse_changelog_bytes_total";
/// Checkpoints written: all live state again, where the next restore starts.
pub const CHECKPOINTS: &str = "cxpulse_changelog_checkpoints_total";
/// State restores from the changelog, by reason (`start`, `recovery`).
pub const RESTORES: &str = "cxpulse_restores_total";
/// 1 while state is being restored from the changelog.
pub const RESTORE_IN_PROGRESS: &str = "cxpulse_restore_in_progress";
/// Changelog records read by the last restore.
pub const RESTORE_RECORDS: &str = "cxpulse_restore_records";
/// Changelog bytes read by the last restore.
pub const RESTORE_BYTES: &str = "cxpulse_restore_bytes";
/// Wall time of the last restore (changelog and lookup tables).
pub const RESTORE_DURATION: &str = "cxpulse_restore_duration_seconds";
/// Memory held by all window state and by the tables kept from streams:
/// what `engine.state_memory_limit` bounds.
pub const STATE_MEMORY: &str = "cxpulse_state_memory_bytes";
/// `engine.state_memory_limit`.
pub const STATE_MEMORY_LIMIT: &str = "cxpulse_state_memory_limit_bytes";
/// 1 while consumption is paused because window state reached its limit,
/// labelled with the job holding the most.
pub const CONSUMPTION_PAUSED: &str = "cxpulse_consumption_paused";
/// Records a job's backfill has read from its sources' history, by job.
pub const BACKFILL_RECORDS: &str = "cxpulse_backfill_records_total";
/// Records a running backfill has left to read before the job goes live,
/// by job (the series goes when it does).
pub const BACKFILL_LAG: &str = "cxpulse_backfill_lag_records";
/// Backfills running.
pub const BACKFILLS_RUNNING: &str = "cxpulse_backfills_running";
/// How often a TUMBLE or HOP job's windows close (the window size, or the
/// HOP slide), by job: with [`LAST_OUTPUT`], what "silent for N windows"
/// means per job.
pub const WINDOW_SLIDE: &str = "cxpulse_window_slide_seconds";
/// When a job last had rows committed (or, before its first, when it
/// started), seconds since the epoch, by job.
pub const LAST_OUTPUT: &str = "cxpulse_last_output_timestamp_seconds";

/// 1 while a job is stopped because it panicked (its state is kept), by job.
pub const JOBS_STOPPED: &str = "cxpulse_job_stopped";
/// Memory held by each table source and each table kept from a stream, by
/// table.
pub const TABLE_MEMORY: &str = "cxpulse_table_memory_bytes";
/// `engine.table_memory_limit`.
pub const TABLE_MEMORY_LIMIT: &str = "cxpulse_table_memory_limit_bytes";
/// Failed reads of the table sources' topics (by default `cx.customers`).
pub const TABLE_READ_ERRORS: &str = "cxpulse_table_read_errors_total";
/// Seconds since the table sources' topics were last read without error.
pub const TABLE_READ_AGE: &str = "cxpulse_table_read_age_seconds";

/// Every metric the engine exports, by name (the README's metrics table
/// lists each; `tests/readme.rs` checks both ways).
pub const ALL: &[&str] = &[
    RECORDS_CONSUMED,
    RECORDS_INVALID,
    OUTPUT_RECORDS,
    PRODUCE_ERRORS,
    JOB_ERRORS,
    CONSUMER_LAG,
    BATCH_DURATION,
    JOBS_LOADED,
    ASSIGNED_PARTITIONS,
    BUILD_INFO,
    WATERMARK,
    WATERMARK_DELAY,
    LATE_RECORDS,
    WINDOWS_FIRED,
    JOB_DURATION,
    WINDOW_STATE_BYTES,
    WINDOW_CLOSE_LAG,
    GAUGE_SERIES_DROPPED,
    QUERY_FILES_INVALID,
    TRANSACTIONS,
    COMMIT_DURATION,
    CHANGELOG_RECORDS,
    CHANGELOG_BYTES,
    CHECKPOINTS,
    RESTORES,
    RESTORE_IN_PROGRESS,
    RESTORE_RECORDS,
    RESTORE_BYTES,
    RESTORE_DURATION,
    STATE_MEMORY,
    STATE_MEMORY_LIMIT,
    CONSUMPTION_PAUSED,
    BACKFILL_RECORDS,
    BACKFILL_LAG,
    BACKFILLS_RUNNING,
    WINDOW_SLIDE,
    LAST_OUTPUT,
    JOBS_STOPPED,
    TABLE_MEMORY,
    TABLE_MEMORY_LIMIT,
    TABLE_READ_ERRORS,
    TABLE_READ_AGE,
];

/// The engine's metrics and the registry that exposes them.
pub struct Metrics {
    registry: Registry,
    /// See [`RECORDS_CONSUMED`].
    pub records_consumed: IntCounterVec,
    /// See [`RECORDS_INVALID`].
    pub records_invalid: IntCounterVec,
    /// See [`OUTPUT_RECORDS`].
    pub output_records: IntCounterVec,
    /// See [`PRODUCE_ERRORS`].
    pub produce_errors: IntCounterVec,
    /// See [`JOB_ERRORS`].
    pub job_errors: IntCounterVec,
    /// See [`CONSUMER_LAG`].
    pub consumer_lag: IntGaugeVec,
    /// See [`BATCH_DURATION`].
    pub batch_duration: Histogram,
    /// See [`JOBS_LOADED`].
    pub jobs_loaded: IntGauge,
    /// See [`ASSIGNED_PARTITIONS`].
    pub assigned_partitions: IntGauge,
    /// See [`WATERMARK`].
    pub watermark: GaugeVec,
    /// See [`WATERMARK_DELAY`].
    pub watermark_delay: GaugeVec,
    /// See [`LATE_RECORDS`].
    pub late_records: IntCounterVec,
    /// See [`WINDOWS_FIRED`].
    pub windows_fired: IntCounterVec,
    /// See [`JOB_DURATION`].
    pub job_duration: HistogramVec,
    /// See [`WINDOW_STATE_BYTES`].
    pub window_state_bytes: IntGaugeVec,
    /// See [`WINDOW_CLOSE_LAG`].
    pub window_close_lag: GaugeVec,
    /// See [`QUERY_FILES_INVALID`].
    pub query_files_invalid: IntGauge,
    /// See [`GAUGE_SERIES_DROPPED`].
    pub gauge_series_dropped: IntCounterVec,
    /// See [`TRANSACTIONS`].
    pub transactions: IntCounterVec,
    /// See [`COMMIT_DURATION`].
    pub commit_duration: Histogram,
    /// See [`CHANGELOG_RECORDS`].
    pub changelog_records: IntCounter,
    /// See [`CHANGELOG_BYTES`].
    pub changelog_bytes: IntCounter,
    /// See [`CHECKPOINTS`].
    pub checkpoints: IntCounter,
    /// See [`RESTORES`].
    pub restores: IntCounterVec,
    /// See [`RESTORE_IN_PROGRESS`].
    pub restore_in_progress: IntGauge,
    /// See [`RESTORE_RECORDS`].
    pub restore_records: IntGauge,
    /// See [`RESTORE_BYTES`].
    pub restore_bytes: IntGauge,
    /// See [`RESTORE_DURATION`].
    pub restore_duration: Gauge,
    /// See [`STATE_MEMORY`].
    pub state_memory: IntGauge,
    /// See [`STATE_MEMORY_LIMIT`].
    pub state_memory_limit: IntGauge,
    /// See [`CONSUMPTION_PAUSED`].
    pub consumption_paused: IntGaugeVec,
    /// See [`BACKFILL_RECORDS`].
    pub backfill_records: IntCounterVec,
    /// See [`BACKFILL_LAG`].
    pub backfill_lag: IntGaugeVec,
    /// See [`BACKFILLS_RUNNING`].
    pub backfills_running: IntGauge,
    /// See [`WINDOW_SLIDE`].
    pub window_slide: GaugeVec,
    /// See [`LAST_OUTPUT`].
    pub last_output: GaugeVec,
    /// See [`JOBS_STOPPED`].
    pub jobs_stopped: IntGaugeVec,
    /// See [`TABLE_MEMORY`].
    pub table_memory: IntGaugeVec,
    /// See [`TABLE_MEMORY_LIMIT`].
    pub table_memory_limit: IntGauge,
    /// See [`TABLE_READ_ERRORS`].
    pub table_read_errors: IntCounter,
    /// See [`TABLE_READ_AGE`].
    pub table_read_age: Gauge,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let counter =
            |name: &str, help: &str, labels: &[&str]| -> Result<IntCounterVec, prometheus::Error> {
                let c = IntCounterVec::new(Opts::new(name, help), labels)?;
                registry.register(Box::new(c.clone()))?;
                Ok(c)
            };
        let gauge = |name: &str, help: &str| -> Result<IntGauge, prometheus::Error> {
            let g = IntGauge::new(name, help)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let plain_counter = |name: &str, help: &str| -> Result<IntCounter, prometheus::Error> {
            let c = IntCounter::new(name, help)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let metrics = Self {
            records_consumed: counter(RECORDS_CONSUMED, "Records read from Kafka.", &["topic"])?,
            records_invalid: counter(
                RECORDS_INVALID,
                "Invalid or late records sent to the dead-letter topic.",
                &["topic", "reason"],
            )?,
            output_records: counter(OUTPUT_RECORDS, "Rows published by jobs.", &["job"])?,
            produce_errors: counter(PRODUCE_ERRORS, "Produce attempts that failed.", &["topic"])?,
            job_errors: counter(
                JOB_ERRORS,
                "Micro-batches a job failed to execute.",
                &["job"],
            )?,
            consumer_lag: {
                let g = IntGaugeVec::new(
                    Opts::new(
                        CONSUMER_LAG,
                        "Records between the consumer position and the end of the partition.",
                    ),
                    &["topic", "partition"],
                )?;
                registry.register(Box::new(g.clone()))?;
                g
            },
            batch_duration: {
                let h = Histogram::with_opts(
                    HistogramOpts::new(BATCH_DURATION, "Wall time to process one micro-batch.")
                        .buckets(vec![
                            0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                        ]),
                )?;
                registry.register(Box::new(h.clone()))?;
                h
            },
            jobs_loaded: gauge(JOBS_LOADED, "Jobs currently loaded.")?,
            assigned_partitions: gauge(
                ASSIGNED_PARTITIONS,
                "Partitions currently assigned to this process.",
            )?,
            watermark: {
                let g = GaugeVec::new(
                    Opts::new(WATERMARK, "Event-time watermark, seconds since the epoch."),
                    &["source"],
                )?;
                registry.register(Box::new(g.clone()))?;
                g
            },
            watermark_delay: {
                let g = GaugeVec::new(
                    Opts::new(
                        WATERMARK_DELAY,
                        "Seconds between wall-clock time and the watermark.",
                    ),
                    &["source"],
                )?;
                registry.register(Box::new(g.clone()))?;
                g
            },
            late_records: counter(
                LATE_RECORDS,
                "Events late for every window of a job, sent to the dead-letter topic.",
                &["source", "job"],
            )?,
            windows_fired: counter(WINDOWS_FIRED, "Windows closed with data.", &["job"])?,
            window_state_bytes: {
                let g = IntGaugeVec::new(
                    Opts::new(WINDOW_STATE_BYTES, "Memory held by a windowed job's state."),
                    &["job"],
                )?;
                registry.register(Box::new(g.clone()))?;
                g
            },
            job_duration: {
                let h = HistogramVec::new(
                    HistogramOpts::new(
                        JOB_DURATION,
                        "Wall time a job spends on a micro-batch or on firing, by phase.",
                    )
                    .buckets(vec![
                        0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    ]),
                    &["job", "phase"],
                )?;
                registry.register(Box::new(h.clone()))?;
                h
            },
            window_close_lag: {
                let g = GaugeVec::new(
                    Opts::new(
                        WINDOW_CLOSE_LAG,
                        "How far a windowed job's closed windows trail its watermark, in seconds.",
                    ),
                    &["job"],
                )?;
                registry.register(Box::new(g.clone()))?;
                g
            },
            query_files_invalid: gauge(
                QUERY_FILES_INVALID,
                "Query files that do not plan; the jobs they would replace keep running.",
            )?,
            gauge_series_dropped: counter(
                GAUGE_SERIES_DROPPED,
                "@gauge updates not exported because the job reached its series limit.",
                &["job"],
            )?,
            transactions: counter(
                TRANSACTIONS,
                "Epoch transactions, by outcome.",
                &["outcome"],
            )?,
            commit_duration: {
                let h = Histogram::with_opts(
                    HistogramOpts::new(
                        COMMIT_DURATION,
                        "Wall time to commit an epoch: changelog, offsets, commit.",
                    )
                    .buckets(vec![
                        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                    ]),
                )?;
                registry.register(Box::new(h.clone()))?;
                h
            },
            changelog_records: plain_counter(
                CHANGELOG_RECORDS,
                "Records written to the state changelog, tombstones included.",
            )?,
            changelog_bytes: plain_counter(
                CHANGELOG_BYTES,
                "Bytes written to the state changelog, keys and values.",
            )?,
            checkpoints: plain_counter(
                CHECKPOINTS,
                "Checkpoints written: all live state again, where the next restore starts.",
            )?,
            restores: counter(
                RESTORES,
                "State restores from the changelog, by reason.",
                &["reason"],
            )?,
            restore_in_progress: gauge(
                RESTORE_IN_PROGRESS,
                "1 while state is being restored from the changelog.",
            )?,
            restore_records: gauge(
                RESTORE_RECORDS,
                "Changelog records read by the last restore.",
            )?,
            restore_bytes: gauge(RESTORE_BYTES, "Changelog bytes read by the last restore.")?,
            restore_duration: {
                let g = Gauge::new(
                    RESTORE_DURATION,
                    "Wall time of the last restore, changelog and lookup tables.",
                )?;
                registry.register(Box::new(g.clone()))?;
                g
            },
            state_memory: gauge(
                STATE_MEMORY,
                "Memory held by all window state and the tables kept from streams.",
            )?,
            state_memory_limit: gauge(STATE_MEMORY_LIMIT, "engine.state_memory_limit.")?,
            consumption_paused: {
                let g = IntGaugeVec::new(
                    Opts::new(
                        CONSUMPTION_PAUSED,
                        "1 while consumption is paused because window state reached its limit, \
                         labelled with the job holding the most.",
                    ),
                    &["job"],
                )?;
                registry.register(Box::new(g.clone()))?;
                g
            },
            backfill_records: counter(
                BACKFILL_RECORDS,
                "Records a job's backfill has read from its sources' history.",
                &["job"],
            )?,
            backfill_lag: {
                let g = IntGaugeVec::new(
                    Opts::new(
                        BACKFILL_LAG,
                        "Records a running backfill has left to read before the job goes live.",
                    ),
                    &["job"],
                )?;
                registry.register(Box::new(g.clone()))?;
                g
            },
            backfills_running: gauge(BACKFILLS_RUNNING, "Backfills running.")?,
            window_slide: {
                let g = GaugeVec::new(
                    Opts::new(
                        WINDOW_SLIDE,
                        "How often a TUMBLE or HOP job's windows close, in seconds.",
                    ),
                    &["job"],
                )?;
                registry.register(Box::new(g.clone()))?;
                g
            },
            last_output: {
                let g = GaugeVec::new(
                    Opts::new(
                        LAST_OUTPUT,
                        "When a job last had rows committed (before its first, when it started), seconds since the epoch.",
                    ),
                    &["job"],
                )?;
                registry.register(Box::new(g.clone()))?;
                g
            },
            jobs_stopped: {
                let g = IntGaugeVec::new(
                    Opts::new(
                        JOBS_STOPPED,
                        "1 while a job is stopped because it panicked; its state is kept.",
                    ),
                    &["job"],
                )?;
                registry.register(Box::new(g.clone()))?;
                g
            },
            table_memory: {
                let g = IntGaugeVec::new(
                    Opts::new(
                        TABLE_MEMORY,
                        "Memory held by a table source or a table kept from a stream.",
                    ),
                    &["table"],
                )?;
                registry.register(Box::new(g.clone()))?;
                g
            },
            table_memory_limit: gauge(TABLE_MEMORY_LIMIT, "engine.table_memory_limit.")?,
            table_read_errors: plain_counter(
                TABLE_READ_ERRORS,
                "Failed reads of the table sources' topics.",
            )?,
            table_read_age: {
                let g = Gauge::new(
                    TABLE_READ_AGE,
                    "Seconds since the table sources' topics were last read without error.",
                )?;
                registry.register(Box::new(g.clone()))?;
                g
            },
            registry,
        };
        for outcome in ["committed", "aborted"] {
            metrics.transactions.with_label_values(&[outcome]);
        }
        for reason in ["start", "recovery"] {
            metrics.restores.with_label_values(&[reason]);
        }
        let build_info = IntGaugeVec::new(
            Opts::new(BUILD_INFO, "Constant 1, labelled with the cxpulse version."),
            &["version"],
        )?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        metrics.registry.register(Box::new(build_info))?;
        Ok(metrics)
    }

    /// Starts the per-topic series at zero so dashboards see them before the first record.
    pub fn init_topic(&self, topic: &str) {
        self.records_consumed.with_label_values(&[topic]);
        for kind in RejectKind::ALL {
            self.records_invalid
                .with_label_values(&[topic, kind.as_str()]);
        }
    }

    /// Registers a job's own collector (its `@gauge` families).
    pub fn register(
        &self,
        collector: Box<dyn prometheus::core::Collector>,
    ) -> Result<(), prometheus::Error> {
        self.registry.register(collector)
    }

    /// Removes a collector registered with [`Self::register`].
    pub fn unregister(&self, collector: Box<dyn prometheus::core::Collector>) {
        if let Err(e) = self.registry.unregister(collector) {
            tracing::debug!(error = %e, "unregistering a collector");
        }
    }

    /// Every metric family, as `/metrics` shows them (the demo's live view
    /// reads them in process).
    pub fn gather(&self) -> Vec<prometheus::proto::MetricFamily> {
        self.registry.gather()
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut buffer = Vec::new();
        // Encoding into a Vec cannot fail for well-formed families.
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buffer) {
            tracing::error!(error = %e, "metrics encoding failed");
        }
        String::from_utf8(buffer).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_help_type_and_values() {
        let m = Metrics::new().expect("metrics");
        m.init_topic("cx.feedback");
        m.records_consumed
            .with_label_values(&["cx.feedback"])
            .inc_by(3);
        m.batch_duration.observe(0.02);
        let text = m.encode();
        assert!(text.contains("# TYPE cxpulse_records_consumed_total counter"));
        assert!(text.contains("cxpulse_records_consumed_total{topic=\"cx.feedback\"} 3"));
        assert!(text.contains(
            "cxpulse_records_invalid_total{reason=\"wrong_type\",topic=\"cx.feedback\"} 0"
        ));
        assert!(text.contains("cxpulse_batch_duration_seconds_count 1"));
        assert!(text.contains(&format!(
            "cxpulse_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        )));
    }

    #[test]
    fn every_metric_registered_is_listed() {
        let m = Metrics::new().expect("metrics");
        for family in m.gather() {
            assert!(
                ALL.contains(&family.name()),
                "{} is not in ALL",
                family.name()
            );
        }
    }
}
