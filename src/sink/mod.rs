//! Kafka output: one transactional producer for job rows, dead letters and
//! changelog records.
//!
//! Everything the engine produces goes into the open transaction (see
//! [`transaction`]). [`Sink::enqueue`] hands records to the producer and
//! returns at once; their acknowledgements are awaited together, by
//! [`Sink::delivered`], before the epoch commits.
//!
//! A record its topic cannot take (larger than the topic's
//! `max.message.bytes`, or without a key for a compacted topic) is never
//! sent: [`Sink::enqueue`] hands it back, refused, and the engine makes it a
//! dead letter. A broker that refuses a record anyway fails the whole
//! transaction (a Kafka rule): the epoch is aborted and replayed, and the
//! error says what the topic took, so the next attempt refuses that record
//! up front ([`Learned`]). Only broker and transaction errors restore and
//! retry; no single record can stall the engine.

mod deadletter;
mod encode;
mod limits;
pub mod transaction;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer, PurgeConfig};
use rdkafka::types::RDKafkaErrorCode;

pub use deadletter::{DeadLetter, JobFailure, headers as deadletter_headers, record_bytes};
pub use encode::{RowEncoder, format_timestamp_millis};
pub use limits::{Learned, Limits, TopicLimit};

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
    /// The job whose result row this is (`None` for dead letters and
    /// state).
    pub job: Option<Arc<str>>,
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
    /// What the broker's refusal of single records taught about their
    /// topics, for the next attempt.
    pub learned: Learned,
}

/// A record the sink would not send, and why: its topic cannot take it.
#[derive(Debug)]
pub struct Refused {
    /// The record.
    pub record: OutRecord,
    /// Why, for the dead letter.
    pub reason: String,
}

/// How long [`Sink::enqueue`] waits before it offers a record again to a
/// producer whose queue is full.
const QUEUE_FULL_WAIT: Duration = Duration::from_millis(2);

/// Records handed to the producer whose acknowledgements have not been
/// awaited yet: an epoch's outputs, awaited before it commits.
#[derive(Default)]
pub struct InFlight {
    /// Topics of the records, each once.
    topics: Vec<String>,
    /// Each record's topic (an index into `topics`) and acknowledgement.
    deliveries: Vec<(usize, DeliveryFuture)>,
    /// Their bytes (key, value and headers).
    bytes: usize,
}

impl std::fmt::Debug for InFlight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InFlight")
            .field("topics", &self.topics)
            .field("records", &self.deliveries.len())
            .field("bytes", &self.bytes)
            .finish()
    }
}

impl InFlight {
    /// Records sent.
    pub fn records(&self) -> usize {
        self.deliveries.len()
    }

    /// Their bytes (key, value and headers).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    fn push(&mut self, topic: &str, bytes: usize, delivery: DeliveryFuture) {
        self.bytes += bytes;
        let index = match self.topics.iter().rposition(|t| t == topic) {
            Some(i) => i,
            None => {
                self.topics.push(topic.to_owned());
                self.topics.len() - 1
            }
        };
        self.deliveries.push((index, delivery));
    }
}

/// The engine's transactional producer.
pub struct Sink {
    producer: FutureProducer<ProducerWatch>,
    queue_timeout: Duration,
    metrics: Arc<Metrics>,
    watch: BrokerWatch,
    limits: Limits,
}

impl Sink {
    /// Creates the transactional producer with `transactional_id` (it is
    /// not registered with the broker until [`Sink::init`]), for topics
    /// with `limits`.
    pub fn new(
        config: &Config,
        transactional_id: &str,
        limits: Limits,
        metrics: Arc<Metrics>,
        watch: BrokerWatch,
    ) -> Result<Sink, KafkaError> {
        let (message_max, batch_size) = limits.producer_sizes();
        let mut client = config.client_config();
        client
            .set("transactional.id", transactional_id)
            .set("compression.type", "lz4")
            .set("linger.ms", "5")
            .set("message.max.bytes", message_max.to_string())
            .set("batch.size", batch_size.to_string())
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
            limits,
        })
    }

    /// The limits of the topics written.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Adds the limits of topics written from now on.
    pub fn learn_limits(&mut self, topics: BTreeMap<String, TopicLimit>) {
        self.limits.extend(topics);
    }

    /// Publishes every record and waits for Kafka's acknowledgement of
    /// each; returns where each one landed, as (partition, offset). Stops
    /// waiting as soon as the producer is fenced or every broker is lost;
    /// sends nothing once they are. A record its topic cannot take fails
    /// the call.
    pub async fn send_all(&self, records: Vec<OutRecord>) -> Result<Vec<(i32, i64)>, SinkError> {
        let mut in_flight = InFlight::default();
        if let Some(refused) = self
            .enqueue(records, &mut in_flight)
            .await?
            .into_iter()
            .next()
        {
            return Err(SinkError {
                count: 1,
                topic: refused.record.topic,
                cause: KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge),
                learned: Learned::default(),
            });
        }
        self.delivered(in_flight).await
    }

    /// Hands every record to the producer without waiting for Kafka's
    /// acknowledgements, which join `in_flight` (see [`Sink::delivered`]).
    /// Waits only while the producer's queue is full (backpressure), up to
    /// `kafka.message_timeout_ms`. Returns the records not sent because
    /// their topic cannot take them (too large, or keyless on a compacted
    /// topic), whether the limits or the producer said so; they are not
    /// part of the transaction.
    pub async fn enqueue(
        &self,
        records: Vec<OutRecord>,
        in_flight: &mut InFlight,
    ) -> Result<Vec<Refused>, SinkError> {
        if self.watch.lost() {
            return Err(SinkError {
                count: records.len(),
                topic: records.first().map(|r| r.topic.clone()).unwrap_or_default(),
                cause: brokers_lost(),
                learned: Learned::default(),
            });
        }
        let mut refused = Vec::new();
        for record in records {
            let bytes = record_bytes(&record);
            if let Some(reason) = self
                .limits
                .refusal(&record.topic, bytes, record.key.is_some())
            {
                self.metrics
                    .produce_errors
                    .with_label_values(&[record.topic.as_str()])
                    .inc();
                refused.push(Refused { record, reason });
                continue;
            }
            let failed = |cause| SinkError {
                count: 1,
                topic: record.topic.clone(),
                cause,
                learned: Learned::default(),
            };
            let deadline = tokio::time::Instant::now() + self.queue_timeout;
            let mut out = future_record(&record);
            let sent = loop {
                match self.producer.send_result(out) {
                    Ok(delivery) => break Ok(delivery),
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                        if tokio::time::Instant::now() < deadline =>
                    {
                        out = back;
                        tokio::select! {
                            cause = self.watch.until_fenced() => return Err(failed(cause)),
                            () = self.watch.until_lost() => {
                                self.discard_queued();
                                return Err(failed(brokers_lost()));
                            }
                            () = tokio::time::sleep(QUEUE_FULL_WAIT) => {}
                        }
                    }
                    Err((cause, _)) => break Err(cause),
                }
            };
            match sent {
                Ok(delivery) => in_flight.push(&record.topic, bytes, delivery),
                // The producer's own check, before anything is sent: the
                // transaction goes on without the record.
                Err(cause) if refused_alone(&cause) => {
                    self.metrics
                        .produce_errors
                        .with_label_values(&[record.topic.as_str()])
                        .inc();
                    let reason = format!("the producer refused the record: {cause}");
                    refused.push(Refused { record, reason });
                }
                Err(cause) => {
                    self.metrics
                        .produce_errors
                        .with_label_values(&[record.topic.as_str()])
                        .inc();
                    return Err(failed(cause));
                }
            }
        }
        Ok(refused)
    }

    /// Waits for Kafka's acknowledgement of every record of `in_flight`;
    /// returns where each one landed, as (partition, offset), in the order
    /// they were enqueued. Stops waiting as soon as the producer is fenced
    /// or every broker is lost.
    pub async fn delivered(&self, in_flight: InFlight) -> Result<Vec<(i32, i64)>, SinkError> {
        let InFlight {
            topics, deliveries, ..
        } = in_flight;
        let count = deliveries.len();
        let first_topic = deliveries
            .first()
            .map(|(t, _)| topics[*t].clone())
            .unwrap_or_default();
        let everything = |cause| SinkError {
            count,
            topic: first_topic.clone(),
            cause,
            learned: Learned::default(),
        };
        let awaited = async {
            let mut results = Vec::with_capacity(deliveries.len());
            for (topic, delivery) in deliveries {
                let result = match delivery.await {
                    Ok(Ok(delivery)) => Ok((delivery.partition, delivery.offset)),
                    Ok(Err((e, message))) => {
                        let bytes = message.key().map_or(0, <[u8]>::len)
                            + message.payload().map_or(0, <[u8]>::len);
                        Err((e, bytes, message.key().is_none()))
                    }
                    Err(_) => Err((KafkaError::Canceled, 0, false)),
                };
                results.push((topic, result));
            }
            results
        };
        let results = tokio::select! {
            results = awaited => results,
            cause = self.watch.until_fenced() => return Err(everything(cause)),
            () = self.watch.until_lost() => {
                self.discard_queued();
                return Err(everything(brokers_lost()));
            }
        };
        let mut failed: BTreeMap<usize, u64> = BTreeMap::new();
        let mut first_failure = None;
        let mut learned = Learned::default();
        let mut positions = Vec::with_capacity(results.len());
        for (topic, result) in results {
            match result {
                Ok(position) => positions.push(position),
                Err((e, bytes, keyless)) => {
                    *failed.entry(topic).or_default() += 1;
                    match e.rdkafka_error_code() {
                        Some(RDKafkaErrorCode::MessageSizeTooLarge) => {
                            let at = learned
                                .too_large
                                .entry(topics[topic].clone())
                                .or_insert(bytes);
                            *at = (*at).min(bytes);
                        }
                        Some(RDKafkaErrorCode::InvalidRecord) if keyless => {
                            learned.needs_key.push(topics[topic].clone());
                        }
                        _ => {}
                    }
                    first_failure.get_or_insert((topics[topic].clone(), e));
                }
            }
        }
        for (topic, n) in &failed {
            self.metrics
                .produce_errors
                .with_label_values(&[topics[*topic].as_str()])
                .inc_by(*n);
        }
        match first_failure {
            None => Ok(positions),
            Some((topic, cause)) => Err(SinkError {
                count: failed.values().sum::<u64>() as usize,
                topic,
                cause,
                learned,
            }),
        }
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

/// The producer record of `record`.
fn future_record(record: &OutRecord) -> FutureRecord<'_, [u8], [u8]> {
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
    out
}

/// Whether the producer refused a record on its own, before sending it
/// (its size against `message.max.bytes`): the transaction is unharmed.
fn refused_alone(cause: &KafkaError) -> bool {
    matches!(
        cause,
        KafkaError::MessageProduction(
            RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::InvalidMessageSize
                | RDKafkaErrorCode::InvalidArgument
        )
    )
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
