//! Configuration: typed sections, layered as embedded default → file → env.
//!
//! [`Config::load`] merges `config/default.toml` (embedded), an optional file
//! and `CXPULSE__SECTION__KEY` environment variables, then reports every
//! problem at once, each naming the key and where its value came from.

mod layers;
pub mod sources;
mod validate;

pub use layers::env_var_name;
pub use validate::topic_name_problem;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::schema::Source;

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
    /// `[[sources]]`: the declared sources (merged by name; see
    /// [`sources`]), fixed for the process by [`crate::schema::declare`].
    pub sources: Vec<sources::SourceEntry>,
}

/// `[kafka]`: connection and client settings.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Comma-separated bootstrap servers.
    pub brokers: String,
    /// Consumer group id.
    pub group_id: String,
    /// This process's identity in the group (`""`: the host name).
    pub instance_id: String,
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
            .field("instance_id", &self.instance_id)
            .field("message_timeout_ms", &self.message_timeout_ms)
            .field("properties", &properties)
            .finish()
    }
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

    /// The source read from `topic`, if any.
    pub fn source_of(&self, topic: &str) -> Option<Source> {
        Source::all().find(|s| self.source_topic(*s) == topic)
    }

    /// The topics of `sources`.
    pub fn of(&self, sources: impl Iterator<Item = Source>) -> Vec<String> {
        sources.map(|s| self.source_topic(s).to_owned()).collect()
    }

    /// The `topics.<name>` key of one of the default sources (kept so that
    /// `CXPULSE__TOPICS__TRANSACTIONS` and the like go on working); other
    /// sources name their topic in their `[[sources]]` entry only.
    fn source_topic_mut(&mut self, source: &str) -> Option<&mut String> {
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

impl Config {
    /// Loads the embedded default, then `file` (if any), then `CXPULSE__*` env vars.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let layered = layers::Layered::new(file)?;
        let (mut config, mut problems) = layered.extract()?;
        problems.extend(config.reconcile_source_topics(&layered));
        config.index_source_topics();
        problems.extend(validate::validate(&config, &layered));
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError(problems))
        }
    }

    /// The embedded default alone, ignoring the environment (for unit tests
    /// that run beside tests setting `CXPULSE__*` variables).
    #[cfg(test)]
    pub(crate) fn embedded_default() -> Config {
        use figment::providers::{Format, Toml};
        let mut config: Config = figment::Figment::from(Toml::string(DEFAULT_TOML))
            .extract()
            .unwrap_or_else(|e| panic!("embedded default config: {e}"));
        config.index_source_topics();
        config
    }

    /// Fills `topics.declared` from the enabled `[[sources]]` entries.
    fn index_source_topics(&mut self) {
        self.topics.declared = self
            .sources
            .iter()
            .filter(|s| s.enabled)
            .map(|s| (s.name.clone(), s.topic.clone()))
            .collect();
    }

    /// A source's topic can be set as `topics.<name>` or as its
    /// `[[sources]]` entry's `topic`: whichever was changed from the default
    /// sets both; both changed to different topics is a problem.
    fn reconcile_source_topics(&mut self, layers: &layers::Layered) -> Vec<ConfigProblem> {
        let mut defaults: TopicsConfig = figment::Figment::from(
            <figment::providers::Toml as figment::providers::Format>::string(DEFAULT_TOML),
        )
        .extract_inner("topics")
        .unwrap_or_else(|e| panic!("config/default.toml [topics]: {e}"));
        let mut problems = Vec::new();
        for entry in &mut self.sources {
            let name = entry.name.clone();
            let (Some(default), Some(topics)) = (
                defaults.source_topic_mut(&name).map(|t| t.clone()),
                self.topics.source_topic_mut(&name),
            ) else {
                continue;
            };
            match (entry.topic == default, *topics == default) {
                (true, false) => entry.topic = topics.clone(),
                (false, true) => *topics = entry.topic.clone(),
                (false, false) if entry.topic != *topics => problems.push(layers.problem(
                    &format!("sources.{name}.topic"),
                    format!(
                        "is {:?} but topics.{name} is {:?}; set one of them",
                        entry.topic, topics
                    ),
                )),
                _ => {}
            }
        }
        problems
    }

    /// This process's identity in the consumer group: `kafka.instance_id`,
    /// else the host name.
    pub fn instance_id(&self) -> String {
        if !self.kafka.instance_id.is_empty() {
            return self.kafka.instance_id.clone();
        }
        std::env::var("HOSTNAME")
            .ok()
            .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "cxpulse".to_owned())
    }

    /// The producer's `transactional.id`: group and instance.
    pub fn transactional_id(&self) -> String {
        format!("{}-{}", self.kafka.group_id, self.instance_id())
    }

    /// The directory of the shared views: `engine.views_dir`, or `views/`
    /// in the queries directory.
    pub fn views_dir(&self) -> PathBuf {
        if self.engine.views_dir.as_os_str().is_empty() {
            crate::query::views::views_dir(&self.engine.queries_dir)
        } else {
            self.engine.views_dir.clone()
        }
    }

    /// The state changelog topic.
    pub fn changelog_topic(&self) -> String {
        if self.topics.changelog.is_empty() {
            format!("{}-changelog", self.kafka.group_id)
        } else {
            self.topics.changelog.clone()
        }
    }

    /// `engine.state_memory_limit` in bytes (validated at load).
    pub fn state_memory_limit_bytes(&self) -> u64 {
        size_bytes(&self.engine.state_memory_limit)
    }

    /// `engine.table_memory_limit` in bytes (validated at load).
    pub fn table_memory_limit_bytes(&self) -> u64 {
        size_bytes(&self.engine.table_memory_limit)
    }

    /// `engine.job_memory_limit` in bytes (validated at load).
    pub fn job_memory_limit(&self) -> usize {
        usize::try_from(size_bytes(&self.engine.job_memory_limit)).unwrap_or(usize::MAX)
    }

    /// `engine.max_record_bytes` in bytes (validated at load).
    pub fn max_record_bytes(&self) -> usize {
        usize::try_from(size_bytes(&self.engine.max_record_bytes)).unwrap_or(usize::MAX)
    }

    /// `engine.batch_max_bytes` in bytes (validated at load).
    pub fn batch_max_bytes(&self) -> usize {
        usize::try_from(size_bytes(&self.engine.batch_max_bytes)).unwrap_or(usize::MAX)
    }

    /// The librdkafka properties common to consumer, producer and admin clients.
    pub fn client_properties(&self) -> BTreeMap<String, String> {
        let mut props = BTreeMap::new();
        props.insert("bootstrap.servers".to_owned(), self.kafka.brokers.clone());
        for (k, v) in &self.kafka.properties {
            props.insert(k.clone(), v.clone());
        }
        props
    }

    /// A librdkafka client configuration holding [`Self::client_properties`].
    pub fn client_config(&self) -> rdkafka::ClientConfig {
        let mut client = rdkafka::ClientConfig::new();
        for (k, v) in self.client_properties() {
            client.set(k, v);
        }
        client
    }
}

/// A size written as bytes or with a unit (`512MiB`); `u64::MAX` when it is
/// not one (validation reports it).
fn size_bytes(text: &str) -> u64 {
    text.parse::<bytesize::ByteSize>()
        .map_or(u64::MAX, |b| b.as_u64())
}

#[cfg(test)]
mod tests;
