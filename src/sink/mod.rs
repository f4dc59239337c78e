//! Kafka output: one transactional producer for job rows, dead letters and
//! changelog records.
//!
//! Everything the engine produces goes into the open transaction (see
//! [`transaction`]); [`Sink::send_all`] returns once Kafka has acknowledged
//! every record of a call, or reports the failure: a record that cannot be
//! delivered fails the whole epoch, which is aborted and replayed from the
//! last committed one.

mod deadletter;
mod encode;
pub mod transaction;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer, PurgeConfig};
use rdkafka::util::Timeout;

pub use deadletter::{DeadLetter, headers as deadletter_headers};
pub use encode::{RowEncoder, format_timestamp_millis};

use crate::brokers::{BrokerWatch, ProducerWatch};
use crate::config::Config;
use crate::metrics::Metrics;

/// One record to publish.
#[derive(Debug, Clone, PartialEq)]
pub struct OutRecord {
    /// Destination topic.
    pub topic: String,
    /// Destination partition (`None`: chosen from the key by the producer).
    pub partition: Option<i32>,
    /// Kafka key (`None`: no key).
    pub key: Option<Vec<u8>>,
    /// Message value.
    pub payload: Option<Vec<u8>>,
    /// Message headers.
    pub headers: Vec<(String, Vec<u8>)>,
}

/// Records that Kafka did not acknowledge.
#[derive(Debug, thiserror::Error)]
#[error("{count} record(s) to topic {topic} were not delivered: {cause}")]
pub struct SinkError {
    /// Undelivered records.
    pub count: usize,
    /// Topic of the first undelivered record.
    pub topic: String,
    /// The error of the first undelivered record.
    pub cause: KafkaError,
}

/// The engine's transactional producer.
pub struct Sink {
    producer: FutureProducer<ProducerWatch>,
    queue_timeout: Duration,
    metrics: Arc<Metrics>,
    watch: BrokerWatch,
}

impl Sink {
    /// Creates the transactional producer with `transactional_id` (it is
    /// not registered with the broker until [`Sink::init`]).
    pub fn new(
        config: &Config,
        transactional_id: &str,
        metrics: Arc<Metrics>,
        watch: BrokerWatch,
    ) -> Result<Sink, KafkaError> {
        let mut client = config.client_config();
        client
            .set("transactional.id", transactional_id)
            .set("compression.type", "lz4")
            .set("linger.ms", "5")
            .set(
                "message.timeout.ms",
                config.kafka.message_timeout_ms.to_string(),
            )
            .set(
                "transaction.timeout.ms",
                transaction_timeout_ms(config).to_string(),
            );
        Ok(Sink {
            producer: client.create_with_context(ProducerWatch(watch.clone()))?,
            watch,
            queue_timeout: Duration::from_millis(
                u64::try_from(config.kafka.message_timeout_ms).unwrap_or(30_000),
            ),
            metrics,
        })
    }

    /// Publishes every record and waits for Kafka's acknowledgement of
    /// each; returns where each one landed, as (partition, offset). Stops
    /// waiting as soon as the producer is fenced or every broker is lost;
    /// sends nothing once they are.
    pub async fn send_all(&self, records: Vec<OutRecord>) -> Result<Vec<(i32, i64)>, SinkError> {
        let failed = |cause| SinkError {
            count: records.len(),
            topic: records.first().map(|r| r.topic.clone()).unwrap_or_default(),
            cause,
        };
        if self.watch.lost() {
            return Err(failed(brokers_lost()));
        }
        let results = tokio::select! {
            results = join_all(records.iter().map(|r| self.send_one(r))) => results,
            cause = self.watch.until_fenced() => return Err(failed(cause)),
            () = self.watch.until_lost() => {
                self.discard_queued();
                return Err(failed(brokers_lost()));
            }
        };
        let mut failed: BTreeMap<&str, u64> = BTreeMap::new();
        let mut first_failure = None;
        let mut positions = Vec::with_capacity(records.len());
        for (record, result) in records.iter().zip(results) {
            match result {
                Ok(position) => positions.push(position),
                Err(e) => {
                    *failed.entry(record.topic.as_str()).or_default() += 1;
                    first_failure.get_or_insert((record.topic.clone(), e));
                }
            }
        }
        for (topic, n) in &failed {
            self.metrics
                .produce_errors
                .with_label_values(&[topic])
                .inc_by(*n);
        }
        match first_failure {
            None => Ok(positions),
            Some((topic, cause)) => Err(SinkError {
                count: failed.values().sum::<u64>() as usize,
                topic,
                cause,
            }),
        }
    }

    async fn send_one(&self, record: &OutRecord) -> Result<(i32, i64), KafkaError> {
        let mut headers = OwnedHeaders::new_with_capacity(record.headers.len());
        for (name, value) in &record.headers {
            headers = headers.insert(Header {
                key: name,
                value: Some(value),
            });
        }
        let mut out = FutureRecord::<[u8], [u8]>::to(&record.topic).headers(headers);
        if let Some(partition) = record.partition {
            out = out.partition(partition);
        }
        if let Some(key) = &record.key {
            out = out.key(key);
        }
        if let Some(payload) = &record.payload {
            out = out.payload(payload);
        }
        self.producer
            .send(out, Timeout::After(self.queue_timeout))
            .await
            .map(|delivery| (delivery.partition, delivery.offset))
            .map_err(|(e, _)| e)
    }

    /// Drops every record the producer has not delivered, failing the open
    /// transaction, so that nothing of it reaches the broker later. Once
    /// every broker was lost, the epoch is lost anyway; and noida-db, once
    /// restarted, never ends a transaction that was open across its
    /// restart if records were added to it afterwards, which hides every
    /// later commit from read_committed readers.
    fn discard_queued(&self) {
        self.producer
            .purge(PurgeConfig::default().queue().inflight());
    }
}

impl Drop for Sink {
    /// Discards what the producer still holds (a transactional call still
    /// running keeps the producer alive until it returns).
    fn drop(&mut self) {
        self.discard_queued();
    }
}

/// The error of a send or call given up because every broker was lost.
fn brokers_lost() -> KafkaError {
    KafkaError::Global(rdkafka::types::RDKafkaErrorCode::AllBrokersDown)
}

/// The broker aborts a transaction open longer than this: well above the
/// commit interval, so only a stalled engine hits it, and within the 15
/// minutes Kafka brokers allow by default (`max.transaction.timeout.ms`).
fn transaction_timeout_ms(config: &Config) -> i64 {
    (config.engine.commit_interval_ms * 2 + 30_000).clamp(60_000, 900_000)
}
