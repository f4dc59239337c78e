//! Kafka output: one idempotent producer for job rows and dead letters.
//!
//! [`Sink::send_all`] publishes a micro-batch's records and returns only once
//! Kafka acknowledged every one of them; failed records are retried with
//! backoff, counted, logged, and reported as an error if they still fail.

mod deadletter;
mod encode;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;

pub use deadletter::{DeadLetter, headers as deadletter_headers};
pub use encode::{RowEncoder, format_timestamp_millis};

use crate::config::Config;
use crate::metrics::Metrics;

/// One record to publish.
#[derive(Debug, Clone, PartialEq)]
pub struct OutRecord {
    /// Destination topic.
    pub topic: String,
    /// Kafka key (`None`: no key).
    pub key: Option<Vec<u8>>,
    /// Message value.
    pub payload: Option<Vec<u8>>,
    /// Message headers.
    pub headers: Vec<(String, Vec<u8>)>,
}

/// Records that could not be delivered after every retry.
#[derive(Debug, thiserror::Error)]
#[error("{count} record(s) to topic {topic} were not delivered after {attempts} attempts: {cause}")]
pub struct SinkError {
    /// Undelivered records.
    pub count: usize,
    /// Topic of the first undelivered record.
    pub topic: String,
    /// Attempts made.
    pub attempts: u32,
    /// The last error.
    pub cause: KafkaError,
}

/// The engine's producer.
pub struct Sink {
    producer: FutureProducer,
    retries: u32,
    queue_timeout: Duration,
    metrics: Arc<Metrics>,
}

impl Sink {
    /// Creates the idempotent producer.
    pub fn new(config: &Config, metrics: Arc<Metrics>) -> Result<Sink, KafkaError> {
        let mut client = config.client_config();
        client
            .set("enable.idempotence", "true")
            .set("compression.type", "lz4")
            .set("linger.ms", "5")
            .set(
                "message.timeout.ms",
                config.kafka.message_timeout_ms.to_string(),
            );
        Ok(Sink {
            producer: client.create()?,
            retries: u32::try_from(config.kafka.produce_retries).unwrap_or(0),
            queue_timeout: Duration::from_millis(
                u64::try_from(config.kafka.message_timeout_ms).unwrap_or(30_000),
            ),
            metrics,
        })
    }

    /// Publishes every record and waits for Kafka's acknowledgement of each.
    pub async fn send_all(&self, records: Vec<OutRecord>) -> Result<(), SinkError> {
        let mut pending = records;
        let mut attempt = 1;
        loop {
            let results = join_all(pending.iter().map(|r| self.send_one(r))).await;
            let failed: Vec<(OutRecord, KafkaError)> = pending
                .into_iter()
                .zip(results)
                .filter_map(|(record, result)| result.err().map(|e| (record, e)))
                .collect();
            let Some((first, cause)) = failed.first() else {
                return Ok(());
            };
            let mut per_topic: BTreeMap<&str, u64> = BTreeMap::new();
            for (record, _) in &failed {
                *per_topic.entry(record.topic.as_str()).or_default() += 1;
            }
            for (topic, n) in per_topic {
                self.metrics
                    .produce_errors
                    .with_label_values(&[topic])
                    .inc_by(n);
            }
            if attempt > self.retries {
                tracing::error!(failed = failed.len(), topic = %first.topic, attempts = attempt, error = %cause, "outputs not delivered");
                return Err(SinkError {
                    count: failed.len(),
                    topic: first.topic.clone(),
                    attempts: attempt,
                    cause: cause.clone(),
                });
            }
            tracing::warn!(failed = failed.len(), topic = %first.topic, attempt, error = %cause, "produce failed, retrying");
            tokio::time::sleep(Duration::from_millis(200 << attempt.min(6))).await;
            attempt += 1;
            pending = failed.into_iter().map(|(record, _)| record).collect();
        }
    }

    async fn send_one(&self, record: &OutRecord) -> Result<(), KafkaError> {
        let mut headers = OwnedHeaders::new_with_capacity(record.headers.len());
        for (name, value) in &record.headers {
            headers = headers.insert(Header {
                key: name,
                value: Some(value),
            });
        }
        let mut out = FutureRecord::<[u8], [u8]>::to(&record.topic).headers(headers);
        if let Some(key) = &record.key {
            out = out.key(key);
        }
        if let Some(payload) = &record.payload {
            out = out.payload(payload);
        }
        self.producer
            .send(out, Timeout::After(self.queue_timeout))
            .await
            .map(|_| ())
            .map_err(|(e, _)| e)
    }

    /// Waits up to `timeout` for queued records to be delivered.
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.producer.flush(Timeout::After(timeout))
    }
}
