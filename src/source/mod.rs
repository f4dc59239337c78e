//! Kafka input: the consumer group over the event topics, and the lookup
//! table topic read whole by every instance ([`lookup_topic`]).
//!
//! The group consumer is a static member (`group.instance.id`), so a
//! restarted engine gets its partitions back at once instead of after the
//! dead member's session timeout, and reads `read_committed`. Its context
//! reports partition assignment to readiness, turns librdkafka statistics
//! into the consumer-lag metric, and reports errors to the
//! [`BrokerWatch`](crate::brokers::BrokerWatch).

mod admission;
mod backlog;
mod batcher;
mod decode_stage;
pub mod lookup_topic;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::statistics::Statistics;

pub use admission::Admission;
pub use backlog::Backlog;
pub use batcher::{
    Batcher, Consumed, MicroBatch, RawRecord, SourceBatch, TableChange, apply_table_changes,
};
pub use decode_stage::DecodeStage;
pub use lookup_topic::LookupConsumer;

use crate::brokers::BrokerWatch;
use crate::config::Config;
use crate::health::Health;
use crate::metrics::Metrics;

/// The engine's consumer.
pub type SourceConsumer = StreamConsumer<SourceContext>;

/// Callbacks from librdkafka: rebalances, statistics and errors.
pub struct SourceContext {
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    source_topics: Vec<String>,
    watch: BrokerWatch,
    /// Records left to read per assigned partition.
    pub backlog: Backlog,
    /// Assignment changes so far.
    rebalances: AtomicU64,
}

impl SourceContext {
    /// How many times the assignment has changed: a partition revoked and
    /// assigned again is read again from its committed offset.
    pub fn rebalances(&self) -> u64 {
        self.rebalances.load(Ordering::Relaxed)
    }
}

impl ClientContext for SourceContext {
    fn error(&self, error: KafkaError, reason: &str) {
        self.watch.on_error(&error, reason);
    }

    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        crate::brokers::log(level, facility, message);
    }

    fn stats(&self, statistics: Statistics) {
        for topic in &self.source_topics {
            let Some(stats) = statistics.topics.get(topic) else {
                continue;
            };
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

impl ConsumerContext for SourceContext {
    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let assigned = consumer.assignment().map(|tpl| tpl.count()).unwrap_or(0);
        match rebalance {
            Rebalance::Assign(_) | Rebalance::Revoke(_) => {
                tracing::info!(partitions = assigned, "partition assignment changed");
            }
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance failed"),
        }
        self.rebalances.fetch_add(1, Ordering::Relaxed);
        self.metrics.consumer_lag.reset();
        self.backlog.clear();
        self.metrics.assigned_partitions.set(assigned as i64);
        self.health.set_partitions_assigned(assigned > 0);
    }
}

/// The context of consumers that read to the end of their partitions (the
/// changelog restore, the lookup tables): reaching an end is not an error.
pub struct ReadToEndContext;

impl ClientContext for ReadToEndContext {
    fn error(&self, error: KafkaError, reason: &str) {
        let end = matches!(error, KafkaError::PartitionEOF(_))
            || error.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::PartitionEOF);
        if !end {
            tracing::warn!(error = %error, reason, "Kafka client error");
        }
    }

    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        crate::brokers::log(level, facility, message);
    }
}

impl ConsumerContext for ReadToEndContext {}

/// Creates the group consumer and subscribes it to every event topic.
/// Offsets are never committed by the consumer itself: they go into each
/// epoch's transaction.
pub fn subscribe(
    config: &Config,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    watch: BrokerWatch,
) -> Result<SourceConsumer, KafkaError> {
    let source_topics = config.topics.of(config.declared.streams());
    // The user's properties first: those exactly-once depends on are the
    // engine's (the configuration refuses them in `kafka.properties`).
    let mut client = config.client_config();
    client
        .set("group.id", &config.kafka.group_id)
        .set("group.instance.id", config.instance_id())
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
    let consumer: SourceConsumer = client.create_with_context(SourceContext {
        health,
        metrics,
        source_topics: source_topics.clone(),
        watch,
        backlog: Backlog::default(),
        rebalances: AtomicU64::new(0),
    })?;
    let names: Vec<&str> = source_topics.iter().map(String::as_str).collect();
    consumer.subscribe(&names)?;
    Ok(consumer)
}
