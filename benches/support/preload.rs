//! Writing generated customer events to their source topics.

use std::time::Duration;

use cxpulse::config::TopicsConfig;
use cxpulse::tools::generate::Generated;
use rdkafka::producer::{FutureProducer, FutureRecord};

/// Sends `records` to their sources' topics, keyed by customer, and waits
/// until Kafka has acknowledged every one.
pub async fn send_generated(kafka: &FutureProducer, topics: &TopicsConfig, records: &[Generated]) {
    let acks = records.iter().map(|r| {
        kafka.send(
            FutureRecord::to(topics.source_topic(r.kind))
                .key(&r.key)
                .payload(&r.value),
            Duration::from_secs(120),
        )
    });
    for ack in futures::future::join_all(acks).await {
        ack.map_err(|(e, _)| e).expect("acknowledged");
    }
}
