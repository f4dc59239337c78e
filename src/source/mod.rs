//! Kafka input: the consumer of the event partitions this instance owns,
//! and the lookup table topic read whole by every instance
//! ([`lookup_topic`]).
//!
//! The event consumer is assigned the partitions it owns
//! ([`crate::cluster`]) with `assign()`: no group rebalance ever moves
//! them, so a restarted instance reads its partitions again at once, and a
//! dead one holds nobody else up. It reads `read_committed` from the
//! offsets committed under `kafka.group_id` (by each epoch's transaction).
//! Its context turns librdkafka statistics into the consumer-lag metric and
//! reports errors to the [`BrokerWatch`](crate::brokers::BrokerWatch).

mod admission;
mod backlog;
mod batcher;
mod decode_stage;
pub mod lookup_topic;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::statistics::Statistics;
use rdkafka::{Offset, TopicPartitionList};

pub use admission::Admission;
pub use backlog::Backlog;
pub use batcher::{
    Batcher, Consumed, MicroBatch, RawRecord, SourceBatch, TableChange, apply_table_changes,
};
pub use decode_stage::DecodeStage;
pub use lookup_topic::LookupConsumer;

use crate::brokers::BrokerWatch;
use crate::cluster::Cluster;
use crate::config::Config;
use crate::metrics::Metrics;

/// The engine's consumer.
pub type SourceConsumer = StreamConsumer<SourceContext>;

/// The topics whose backlog a consumer reports as `cxpulse_consumer_lag`.
#[derive(Debug, Clone)]
pub enum Reported {
    /// The event topics.
    Topics(Vec<String>),
    /// The repartition topics (stage 2 of a shuffle).
    Repartition,
}

impl Reported {
    fn reports(&self, topic: &str) -> bool {
        match self {
            Reported::Topics(topics) => topics.iter().any(|t| t == topic),
            Reported::Repartition => topic.ends_with(crate::shuffle::TOPIC_SUFFIX),
        }
    }
}

/// Callbacks from librdkafka: statistics and errors.
pub struct SourceContext {
    metrics: Arc<Metrics>,
    reported: Reported,
    watch: BrokerWatch,
    /// Records left to read per assigned partition.
    pub backlog: Backlog,
}

impl ClientContext for SourceContext {
    fn error(&self, error: KafkaError, reason: &str) {
        self.watch.on_error(&error, reason);
    }

    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        crate::brokers::log(level, facility, message);
    }

    fn stats(&self, statistics: Statistics) {
        for (topic, stats) in &statistics.topics {
            if !self.reported.reports(topic) {
                continue;
            }
            for (partition, p) in &stats.partitions {
                // librdkafka's own consumer_lag counts from the consumer's
                // commits, and offsets are committed by the producer's
                // transactions: the backlog counts from the position. Only
                // assigned ("desired") partitions count; -1 is internal.
                if *partition < 0 || !p.desired {
                    continue;
                }
                if let Some(left) = self.backlog.update(topic, *partition, p) {
                    self.metrics
                        .consumer_lag
                        .with_label_values(&[topic.as_str(), &partition.to_string()])
                        .set(left);
                }
            }
        }
    }
}

impl ConsumerContext for SourceContext {}

/// Creates a consumer of the event topics or of the repartition topics
/// (`reported`); [`assign_owned`] gives it its partitions. Offsets are
/// never committed by the consumer itself: they go into each epoch's
/// transaction, under `kafka.group_id`.
pub fn consumer(
    config: &Config,
    reported: Reported,
    metrics: Arc<Metrics>,
    watch: BrokerWatch,
) -> Result<SourceConsumer, KafkaError> {
    // The user's properties first: those exactly-once depends on are the
    // engine's (the configuration refuses them in `kafka.properties`).
    let mut client = config.client_config();
    client
        .set("group.id", &config.kafka.group_id)
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed");
    for (key, value) in [
        ("auto.offset.reset", "earliest"),
        ("statistics.interval.ms", "1000"),
    ] {
        if client.get(key).is_none() {
            client.set(key, value);
        }
    }
    client.create_with_context(SourceContext {
        metrics,
        reported,
        watch,
        backlog: Backlog::default(),
    })
}

/// Adds to `consumer`'s assignment the partitions of `partitions` (topic
/// and partition count) that `cluster` owns and `assigned` does not hold
/// yet, each from its committed offset (else the earliest); returns them.
pub fn assign_owned(
    consumer: &SourceConsumer,
    cluster: Cluster,
    partitions: &BTreeMap<String, i32>,
    assigned: &BTreeSet<(String, i32)>,
) -> Result<Vec<(String, i32)>, KafkaError> {
    let new: Vec<(String, i32)> = partitions
        .iter()
        .flat_map(|(topic, &count)| cluster.owned(count).into_iter().map(|p| (topic.clone(), p)))
        .filter(|tp| !assigned.contains(tp))
        .collect();
    if new.is_empty() {
        return Ok(new);
    }
    let mut list = TopicPartitionList::new();
    for (topic, p) in &new {
        list.add_partition_offset(topic, *p, Offset::Stored)?;
    }
    consumer.incremental_assign(&list)?;
    Ok(new)
}
