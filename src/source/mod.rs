//! Kafka input: one consumer group over the four source topics.
//!
//! The consumer's context reports partition assignment to readiness and
//! turns librdkafka statistics into the consumer-lag metric.

mod batcher;

use std::sync::Arc;

use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::statistics::Statistics;

pub use batcher::{Batcher, MicroBatch, RawRecord, SourceBatch};

use crate::config::Config;
use crate::http::Health;
use crate::metrics::Metrics;
use crate::schema::SourceKind;

/// The engine's consumer.
pub type SourceConsumer = StreamConsumer<SourceContext>;

/// Callbacks from librdkafka: rebalances and statistics.
pub struct SourceContext {
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    source_topics: Vec<String>,
}

impl ClientContext for SourceContext {
    fn stats(&self, statistics: Statistics) {
        for topic in &self.source_topics {
            let Some(stats) = statistics.topics.get(topic) else {
                continue;
            };
            for (partition, p) in &stats.partitions {
                if *partition >= 0 && p.consumer_lag >= 0 {
                    self.metrics
                        .consumer_lag
                        .with_label_values(&[topic.as_str(), &partition.to_string()])
                        .set(p.consumer_lag);
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
        self.metrics.consumer_lag.reset();
        self.metrics.assigned_partitions.set(assigned as i64);
        self.health.set_partitions_assigned(assigned > 0);
    }
}

/// Creates the consumer and subscribes it to every source topic.
pub fn subscribe(
    config: &Config,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
) -> Result<SourceConsumer, KafkaError> {
    let source_topics: Vec<String> = SourceKind::ALL
        .iter()
        .map(|k| config.topics.source_topic(*k).to_owned())
        .collect();
    let mut client = ClientConfig::new();
    client
        .set("group.id", &config.kafka.group_id)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("statistics.interval.ms", "1000");
    for (k, v) in config.client_properties() {
        client.set(k, v);
    }
    let consumer: SourceConsumer = client.create_with_context(SourceContext {
        health,
        metrics,
        source_topics: source_topics.clone(),
    })?;
    let names: Vec<&str> = source_topics.iter().map(String::as_str).collect();
    consumer.subscribe(&names)?;
    Ok(consumer)
}
