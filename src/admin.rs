//! Topic administration: creating the topics the engine writes to.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

use crate::config::Config;
use crate::job::Job;

/// A topic to create if missing.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicSpec {
    /// Topic name.
    pub name: String,
    /// Partitions (`-1`: the broker's default).
    pub partitions: i32,
    /// Topic configs, e.g. `("retention.ms", "-1")`.
    pub configs: Vec<(String, String)>,
}

impl TopicSpec {
    /// A topic with `partitions` partitions and no special config.
    pub fn new(name: impl Into<String>, partitions: i32) -> Self {
        Self {
            name: name.into(),
            partitions,
            configs: Vec::new(),
        }
    }

    /// Adds a topic config.
    pub fn with_config(mut self, key: &str, value: &str) -> Self {
        self.configs.push((key.to_owned(), value.to_owned()));
        self
    }
}

/// The topics the engine writes to: the dead-letter topic and every job's
/// output topic, with the broker's default partitions.
pub fn sink_topics(config: &Config, jobs: &[Job]) -> Vec<TopicSpec> {
    std::iter::once(TopicSpec::new(&config.topics.deadletter, -1))
        .chain(jobs.iter().map(|j| TopicSpec::new(&j.output_topic, -1)))
        .collect()
}

/// The source topics, `partitions` each; `customers` compacted.
pub fn source_topics(config: &Config, partitions: i32) -> Vec<TopicSpec> {
    let t = &config.topics;
    vec![
        TopicSpec::new(&t.transactions, partitions),
        TopicSpec::new(&t.feedback, partitions),
        TopicSpec::new(&t.complaints, partitions),
        TopicSpec::new(&t.customers, partitions).with_config("cleanup.policy", "compact"),
    ]
}

/// Creates the source topics (see [`source_topics`]), the dead-letter topic
/// and the output topic of each of `jobs`, where missing. Returns every
/// topic name it ensured.
pub async fn create_engine_topics(
    config: &Config,
    jobs: &[Job],
    partitions: i32,
) -> Result<Vec<String>, KafkaError> {
    let mut specs = source_topics(config, partitions);
    specs.extend(sink_topics(config, jobs));
    ensure_topics(config, &specs).await?;
    Ok(specs.into_iter().map(|s| s.name).collect())
}

/// Creates every topic of `specs` that does not exist yet.
pub async fn ensure_topics(config: &Config, specs: &[TopicSpec]) -> Result<(), KafkaError> {
    let admin: AdminClient<DefaultClientContext> = config.client_config().create()?;
    let topics: Vec<NewTopic<'_>> = specs
        .iter()
        .map(|spec| {
            let mut topic = NewTopic::new(&spec.name, spec.partitions, TopicReplication::Fixed(-1));
            for (k, v) in &spec.configs {
                topic = topic.set(k, v);
            }
            topic
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for result in admin.create_topics(&topics, &options).await? {
        match result {
            Ok(name) => tracing::info!(topic = %name, "topic created"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => {
                return Err(KafkaError::AdminOp(code)).inspect_err(|_| {
                    tracing::error!(topic = %name, error = %code, "cannot create topic");
                });
            }
        }
    }
    Ok(())
}
