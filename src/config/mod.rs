//! Configuration: typed sections, layered as embedded default → file → env.
//!
//! [`Config::load`] merges `config/default.toml` (embedded), an optional file
//! and `CXPULSE__SECTION__KEY` environment variables, then reports every
//! problem at once, each naming the key and where its value came from.

mod declare;
mod layers;
mod sections;
pub mod sources;
mod validate;

pub use declare::DeclareError;
pub use layers::env_var_name;
pub use sections::{
    ClusterConfig, Config, ConfigError, ConfigProblem, DEFAULT_TOML, EngineConfig, HttpConfig,
    KafkaConfig, LogConfig, LogFormat, TopicsConfig,
};
pub use validate::topic_name_problem;

use std::collections::BTreeMap;

use std::path::{Path, PathBuf};

use crate::cluster::Cluster;
use crate::schema::Sources;

/// The host name: `$HOSTNAME`, else `/etc/hostname`.
fn host_name() -> Option<String> {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
}

/// The sources of the embedded default configuration alone (the four CX
/// sources), for tools and tests that read no configuration.
pub fn default_sources() -> Sources {
    static DEFAULT: std::sync::OnceLock<Sources> = std::sync::OnceLock::new();
    *DEFAULT.get_or_init(|| {
        use figment::providers::{Format, Toml};
        let entries: Vec<sources::SourceEntry> = figment::Figment::from(Toml::string(DEFAULT_TOML))
            .extract_inner("sources")
            .unwrap_or_else(|e| panic!("config/default.toml [[sources]]: {e}"));
        declare::declare(&entries)
            .unwrap_or_else(|e| panic!("config/default.toml [[sources]]: {e}"))
    })
}

/// The embedded default's source `name` (for tests).
#[cfg(test)]
pub(crate) fn default_source(name: &str) -> crate::schema::Source {
    default_sources()
        .named(name)
        .unwrap_or_else(|| panic!("source {name} is not declared"))
}

impl Config {
    /// Builds [`Self::declared`] again from the `[[sources]]` entries, after
    /// a program changed them (loading builds it once).
    pub fn declare_sources(&mut self) -> Result<(), DeclareError> {
        self.index_source_topics();
        self.declared = declare::declare(&self.sources)?;
        Ok(())
    }

    /// Loads the embedded default, then `file` (if any), then `CXPULSE__*` env vars.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let layered = layers::Layered::new(file)?;
        let (mut config, mut problems) = layered.extract()?;
        problems.extend(config.reconcile_source_topics(&layered));
        config.index_source_topics();
        problems.extend(validate::validate(&config, &layered));
        if problems.is_empty() {
            match declare::declare(&config.sources) {
                Ok(declared) => config.declared = declared,
                Err(e) => problems.push(layered.problem("sources", e.to_string())),
            }
        }
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
        config.declared = default_sources();
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

    /// What this instance's `transactional.id`s start with:
    /// `<group>-<index>-of-<instances>`. Each start of the instance adds
    /// its incarnation, a number one higher than the last one recorded in
    /// the changelog, and fences the earlier ones (see `engine::members`).
    pub fn transactional_id_prefix(&self) -> String {
        let cluster = self.cluster();
        format!(
            "{}-{}-of-{}",
            self.kafka.group_id,
            cluster.index(),
            cluster.instances()
        )
    }

    /// This instance's place in the cluster: `cluster.instances`, and
    /// `cluster.index` or the host name's trailing number (validated at
    /// load).
    pub fn cluster(&self) -> Cluster {
        let (instances, index) = self.cluster_numbers();
        Cluster::new(
            i32::try_from(instances).unwrap_or(1).max(1),
            i32::try_from(index).unwrap_or(0),
        )
    }

    /// `cluster.instances` and the index as configured or taken from the
    /// host name (one instance is index 0 whatever its host name), unchecked.
    pub(super) fn cluster_numbers(&self) -> (i64, i64) {
        let index = match self.cluster.index {
            -1 if self.cluster.instances == 1 => 0,
            -1 => host_name()
                .as_deref()
                .and_then(crate::cluster::index_in_host_name)
                .unwrap_or(0),
            index => index,
        };
        (self.cluster.instances, index)
    }

    /// The directory of the shared views: `engine.views_dir`, or `views/`
    /// in the queries directory.
    pub fn views_dir(&self) -> PathBuf {
        if self.engine.views_dir.as_os_str().is_empty() {
            self.engine.queries_dir.join("views")
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
