//! Topic administration: creating the topics the engine writes to, and
//! reading how many partitions topics have.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

use crate::config::Config;
use crate::job::Job;
use crate::sink::TopicLimit;

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

/// The state changelog topic: compacted, with `partitions` partitions (as
/// many as the widest source topic, so state can follow its partition).
pub fn changelog_topic(config: &Config, partitions: i32) -> TopicSpec {
    TopicSpec::new(config.changelog_topic(), partitions.max(1))
        .with_config("cleanup.policy", "compact")
}

/// The partition count of each of `topics` that exists. Asks for the
/// metadata of every topic: asking for one by name may create it on
/// brokers that create topics on first use.
pub async fn partition_counts(
    config: &Config,
    topics: &[String],
) -> Result<BTreeMap<String, i32>, KafkaError> {
    let admin: AdminClient<DefaultClientContext> = config.client_config().create()?;
    let topics = topics.to_vec();
    let fetched = tokio::task::spawn_blocking(move || {
        let metadata = admin
            .inner()
            .fetch_metadata(None, Duration::from_secs(10))?;
        Ok(metadata
            .topics()
            .iter()
            .filter(|t| {
                t.error().is_none()
                    && !t.partitions().is_empty()
                    && topics.iter().any(|n| n == t.name())
            })
            .map(|t| (t.name().to_owned(), t.partitions().len() as i32))
            .collect())
    })
    .await;
    fetched.unwrap_or(Err(KafkaError::Canceled))
}

/// Creates the changelog topic if missing and returns its partition count.
pub async fn ensure_changelog(config: &Config) -> Result<i32, KafkaError> {
    let topic = config.changelog_topic();
    if let Some(&n) = partition_counts(config, std::slice::from_ref(&topic))
        .await?
        .get(&topic)
    {
        return Ok(n);
    }
    let streams = config.topics.of(config.declared.streams());
    let widest = partition_counts(config, &streams)
        .await?
        .into_values()
        .max()
        .unwrap_or(1);
    ensure_topics(config, &[changelog_topic(config, widest)]).await?;
    Ok(partition_counts(config, std::slice::from_ref(&topic))
        .await?
        .get(&topic)
        .copied()
        .unwrap_or(widest))
}

/// The topics of the declared sources, `partitions` each; tables'
/// compacted.
pub fn source_topics(config: &Config, partitions: i32) -> Vec<TopicSpec> {
    config
        .declared
        .all()
        .map(|source| {
            let topic = TopicSpec::new(config.topics.source_topic(source), partitions);
            match source.is_stream() {
                true => topic,
                false => topic.with_config("cleanup.policy", "compact"),
            }
        })
        .collect()
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
    specs.push(changelog_topic(config, partitions));
    ensure_topics(config, &specs).await?;
    Ok(specs.into_iter().map(|s| s.name).collect())
}

/// The limits of each of `topics` that the cluster describes; a topic it
/// cannot describe (or a broker without DescribeConfigs) is left out, and
/// its writers assume [`TopicLimit::default`].
pub async fn topic_limits(
    config: &Config,
    topics: &[String],
) -> Result<BTreeMap<String, TopicLimit>, KafkaError> {
    let admin: AdminClient<DefaultClientContext> = config.client_config().create()?;
    let specifiers: Vec<ResourceSpecifier<'_>> = topics
        .iter()
        .map(|t| ResourceSpecifier::Topic(t.as_str()))
        .collect();
    let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(10)));
    let described = match admin.describe_configs(&specifiers, &options).await {
        Ok(described) => described,
        Err(e) => {
            tracing::warn!(error = %e, "cannot describe the output topics; assuming Kafka's default max.message.bytes");
            return Ok(BTreeMap::new());
        }
    };
    let mut limits = BTreeMap::new();
    for (topic, result) in topics.iter().zip(described) {
        let Ok(resource) = result else { continue };
        let mut limit = TopicLimit::default();
        if let Some(bytes) = resource
            .get("max.message.bytes")
            .and_then(|e| e.value.as_deref())
            .and_then(|v| v.parse::<usize>().ok())
        {
            limit.max_message_bytes = bytes;
        }
        limit.compacted = resource
            .get("cleanup.policy")
            .and_then(|e| e.value.as_deref())
            .is_some_and(|v| v.split(',').any(|p| p.trim() == "compact"));
        limits.insert(topic.clone(), limit);
    }
    Ok(limits)
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
