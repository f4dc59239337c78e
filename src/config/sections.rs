//! The configuration's sections as typed values, and its problems.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;

use super::sources;
use crate::schema::{Source, Sources};

/// The embedded default configuration; it lists every key.
pub const DEFAULT_TOML: &str = include_str!("../../config/default.toml");

/// The whole engine configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Kafka connection and client settings.
    pub kafka: KafkaConfig,
    /// Topic names.
    pub topics: TopicsConfig,
    /// Engine behaviour: queries, state, time, batching.
    pub engine: EngineConfig,
    /// The HTTP endpoint.
    pub http: HttpConfig,
    /// Logging.
    pub log: LogConfig,
    /// Scale-out: how many instances share the partitions, and which one
    /// this is.
    pub cluster: ClusterConfig,
    /// `[[sources]]`: the declared sources as written (merged by name;
    /// see [`sources`]).
    pub sources: Vec<sources::SourceEntry>,
    /// The enabled `[[sources]]` entries as the engine sees them (built at
    /// load).
    #[serde(skip)]
    pub declared: Sources,
}

/// `[kafka]`: connection and client settings.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Comma-separated bootstrap servers.
    pub brokers: String,
    /// Consumer group id.
    pub group_id: String,
    /// librdkafka `message.timeout.ms` of the producer.
    pub message_timeout_ms: i64,
    /// librdkafka properties passed through as is.
    pub properties: BTreeMap<String, String>,
}

impl std::fmt::Debug for KafkaConfig {
    /// Shows the properties that may hold a secret (passwords, keys,
    /// tokens, JAAS settings) as `<redacted>`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secret = |name: &str| {
            ["password", "secret", "key", "token", "jaas", "credential"]
                .iter()
                .any(|word| name.to_ascii_lowercase().contains(word))
        };
        let properties: BTreeMap<&str, &str> = self
            .properties
            .iter()
            .map(|(k, v)| {
                let shown = if secret(k) { "<redacted>" } else { v.as_str() };
                (k.as_str(), shown)
            })
            .collect();
        f.debug_struct("KafkaConfig")
            .field("brokers", &self.brokers)
            .field("group_id", &self.group_id)
            .field("message_timeout_ms", &self.message_timeout_ms)
            .field("properties", &properties)
            .finish()
    }
}

/// `[cluster]`: the instances sharing the partitions (see
/// [`crate::cluster`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// How many instances share the partitions (N).
    pub instances: i64,
    /// This instance's index in `0..N`; -1: the trailing number of the
    /// host name, else 0.
    pub index: i64,
    /// Which deployment of the instances this one belongs to (the chart
    /// sets the Helm release revision): an instance that finds its
    /// partitions owned by instances of another count and a higher
    /// generation stops.
    pub generation: i64,
}

/// `[topics]`: topic names.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicsConfig {
    /// Transactions topic.
    pub transactions: String,
    /// Feedback topic.
    pub feedback: String,
    /// Complaints topic.
    pub complaints: String,
    /// Customer profiles topic (compacted).
    pub customers: String,
    /// Dead-letter topic for invalid and late records.
    pub deadletter: String,
    /// State changelog topic (`""`: `<group_id>-changelog`).
    pub changelog: String,
    /// Prefix of default output topics (`prefix + job name`).
    pub output_prefix: String,
    /// The topic of every enabled `[[sources]]` entry, by source name
    /// (filled from the entries at load).
    #[serde(skip)]
    pub declared: BTreeMap<String, String>,
}

impl TopicsConfig {
    /// The topic a source is read from: `topics.<name>` for the four CX
    /// sources (equal to their entry's `topic` once loaded), else its
    /// entry's `topic`.
    pub fn source_topic(&self, source: Source) -> &str {
        match source.name() {
            "transactions" => &self.transactions,
            "feedback" => &self.feedback,
            "complaints" => &self.complaints,
            "customers" => &self.customers,
            name => self.declared.get(name).map_or("", String::as_str),
        }
    }

    /// The source of `sources` read from `topic`, if any.
    pub fn source_of(&self, sources: Sources, topic: &str) -> Option<Source> {
        sources.all().find(|s| self.source_topic(*s) == topic)
    }

    /// The topics of `sources`.
    pub fn of(&self, sources: impl Iterator<Item = Source>) -> Vec<String> {
        sources.map(|s| self.source_topic(s).to_owned()).collect()
    }

    /// The `topics.<name>` key of one of the default sources (kept so that
    /// `CXPULSE__TOPICS__TRANSACTIONS` and the like go on working); other
    /// sources name their topic in their `[[sources]]` entry only.
    pub(super) fn source_topic_mut(&mut self, source: &str) -> Option<&mut String> {
        match source {
            "transactions" => Some(&mut self.transactions),
            "feedback" => Some(&mut self.feedback),
            "complaints" => Some(&mut self.complaints),
            "customers" => Some(&mut self.customers),
            _ => None,
        }
    }
}

/// `[engine]`: queries, state, event time and batching.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineConfig {
    /// Directory of `*.sql` query files.
    pub queries_dir: PathBuf,
    /// Directory of the shared views; empty: `views/` in `queries_dir`.
    pub views_dir: PathBuf,
    /// Watermark lag behind the maximum event time, in milliseconds.
    pub max_out_of_orderness_ms: i64,
    /// Silence after which a partition no longer holds the watermark back, in milliseconds.
    pub idle_timeout_ms: i64,
    /// How far ahead of the wall clock an event time may be, in
    /// milliseconds; later events are dead letters (`future`). 0: no check.
    pub max_future_ms: i64,
    /// Largest record (key, value and headers) decoded: bytes, or a size
    /// with a unit; larger ones are dead letters (`too_large`).
    pub max_record_bytes: String,
    /// Length of an epoch (one Kafka transaction), in milliseconds.
    pub commit_interval_ms: i64,
    /// Most memory window state and kept tables may hold: bytes, or a
    /// size with a unit.
    pub state_memory_limit: String,
    /// Most memory the table sources may hold: bytes, or a size with a unit.
    pub table_memory_limit: String,
    /// Most memory DataFusion may use for one job's plans at a time.
    pub job_memory_limit: String,
    /// Maximum records per micro-batch.
    pub batch_max_rows: i64,
    /// Maximum bytes of records per micro-batch: bytes, or a size with a unit.
    pub batch_max_bytes: String,
    /// Most records one backfill micro-batch reads: how long a live record
    /// may wait behind a backfill.
    pub backfill_batch_rows: i64,
    /// Maximum time from a micro-batch's first record to its processing, in milliseconds.
    pub batch_linger_ms: i64,
    /// Time allowed for draining at shutdown, in milliseconds.
    pub shutdown_drain_ms: i64,
    /// How often `queries_dir` is compared with the running jobs, in
    /// milliseconds; 0 reloads only on SIGHUP.
    pub reload_interval_ms: i64,
    /// Most `@gauge` series one job may export.
    pub gauge_series_limit: i64,
}

/// `[http]`: the metrics and probe endpoint.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Listen address, `host:port` (port 0 picks a free port).
    pub listen: String,
    /// Bearer token of the admin endpoints; empty: they are off.
    pub admin_token: String,
}

impl fmt::Debug for HttpConfig {
    /// The token is never printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpConfig")
            .field("listen", &self.listen)
            .field(
                "admin_token",
                &if self.admin_token.is_empty() {
                    "(none)"
                } else {
                    "(set)"
                },
            )
            .finish()
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `[log]`: logging.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// Output format.
    pub format: LogFormat,
}

/// One configuration problem: the key, where its value came from, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// Dotted key path, e.g. `engine.batch_max_rows`.
    pub key: String,
    /// Where the value came from: `file:line`, an env var, or the default.
    pub origin: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: `{}`: {}", self.origin, self.key, self.message)
    }
}

/// Every problem found while loading a configuration.
#[derive(Debug, Clone, thiserror::Error)]
#[error("invalid configuration:\n{}", .0.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
pub struct ConfigError(pub Vec<ConfigProblem>);
