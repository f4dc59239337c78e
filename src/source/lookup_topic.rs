//! The topics of the table sources (by default `cx.customers`), read whole
//! by every instance, as Kafka Streams
//! reads a GlobalKTable: from the beginning at every start and to its end
//! before any event is processed, so that a lookup join never misses a
//! row that was already on the topic; then looked at again about once a
//! second ([`POLL_EVERY`]).
//!
//! Between two looks its partitions are paused, so that the consumer does
//! not keep fetching from a topic that rarely changes (brokers that answer
//! an empty fetch at once, as noida-db does, would keep a core busy).
//! Its positions are not committed through the consumer group: the topic is
//! compacted, and reading it again is how the table is rebuilt.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use rdkafka::config::FromClientConfigAndContext;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use super::Batcher;
use crate::admin::partition_counts;
use crate::brokers::ReadToEndContext;
use crate::config::Config;

/// How long reading to the end may go without a record.
const STALL: Duration = Duration::from_secs(30);

/// How often the lookup topics are looked at for new records.
pub const POLL_EVERY: Duration = Duration::from_secs(1);

/// How long a look lasts at least: long enough for a fetch to come back.
const LOOK_FOR: Duration = Duration::from_millis(150);

/// Most records taken from the lookup topics per call.
const MAX_RECORDS: usize = 10_000;

/// A consumer of every partition of the lookup topics, following them.
pub struct LookupConsumer {
    consumer: BaseConsumer<ReadToEndContext>,
    /// Paused until this instant, or looking since it.
    state: Look,
}

/// Whether the consumer is between looks or looking.
#[derive(Debug, Clone, Copy)]
enum Look {
    PausedUntil(Instant),
    LookingSince(Instant),
}

impl LookupConsumer {
    /// Reads every partition of `topics` from the beginning to its end into
    /// `batcher`, then returns a consumer that follows the topics from
    /// there. The reading consumer reports the end of each partition; the
    /// following one does not (brokers that answer at once when there is
    /// nothing new would make it report the end again and again).
    pub async fn read_to_end(
        config: &Config,
        topics: &[String],
        batcher: &mut Batcher,
    ) -> Result<Self, KafkaError> {
        let counts = partition_counts(config, topics).await?;
        if let Some(topic) = topics.iter().find(|t| !counts.contains_key(*t)) {
            tracing::error!(
                topic,
                "table source topic missing: create it (cxpulse create-topics does)"
            );
            return Err(KafkaError::MetadataFetch(
                RDKafkaErrorCode::UnknownTopicOrPartition,
            ));
        }
        let partitions: BTreeMap<String, i32> =
            topics.iter().map(|t| (t.clone(), counts[t])).collect();
        let total: usize = partitions.values().map(|&n| n as usize).sum();
        let mut next: BTreeMap<(String, i32), i64> = BTreeMap::new();
        // One reader per topic: the end-of-partition event names no topic.
        for (topic, &count) in &partitions {
            let reader: StreamConsumer<ReadToEndContext> = client(config, true)?;
            let one = BTreeMap::from([(topic.clone(), count)]);
            reader.assign(&from(&one, &next)?)?;
            let mut ended = BTreeSet::new();
            while (ended.len() as i32) < count {
                match tokio::time::timeout(STALL, reader.recv()).await {
                    Ok(Ok(message)) => {
                        next.insert((topic.clone(), message.partition()), message.offset() + 1);
                        batcher.push(&message);
                    }
                    Ok(Err(KafkaError::PartitionEOF(p))) => {
                        ended.insert(p);
                    }
                    Ok(Err(e)) => return Err(e),
                    Err(_) => {
                        tracing::error!(
                            topic,
                            "nothing read for {} s before the end of the topic",
                            STALL.as_secs()
                        );
                        return Err(KafkaError::MessageConsumption(
                            RDKafkaErrorCode::OperationTimedOut,
                        ));
                    }
                }
            }
        }
        let follower: BaseConsumer<ReadToEndContext> = client(config, false)?;
        let assignment = from(&partitions, &next)?;
        if total > 0 {
            follower.assign(&assignment)?;
            follower.pause(&assignment)?;
        }
        Ok(Self {
            consumer: follower,
            state: Look::PausedUntil(Instant::now() + POLL_EVERY),
        })
    }

    /// Takes what has arrived into `batcher`, without waiting; resumes the
    /// partitions when a look is due and pauses them once a look finds
    /// nothing more. Returns how many records it took.
    pub fn take(&mut self, batcher: &mut Batcher, now: Instant) -> Result<usize, KafkaError> {
        let assignment = self.consumer.assignment()?;
        match self.state {
            Look::PausedUntil(at) if now >= at => {
                self.consumer.resume(&assignment)?;
                self.state = Look::LookingSince(now);
                Ok(0)
            }
            Look::PausedUntil(_) => Ok(0),
            Look::LookingSince(since) => {
                let mut taken = 0;
                while taken < MAX_RECORDS {
                    match self.consumer.poll(Duration::ZERO) {
                        Some(Ok(message)) => {
                            batcher.push(&message);
                            taken += 1;
                        }
                        Some(Err(e)) => return Err(e),
                        None => break,
                    }
                }
                if taken == 0 && now.duration_since(since) >= LOOK_FOR {
                    self.consumer.pause(&assignment)?;
                    self.state = Look::PausedUntil(now + POLL_EVERY);
                }
                Ok(taken)
            }
        }
    }
}

/// A consumer outside the group (it never commits), read_committed.
fn client<C: FromClientConfigAndContext<ReadToEndContext>>(
    config: &Config,
    eof: bool,
) -> Result<C, KafkaError> {
    let mut client = config.client_config();
    client
        .set("group.id", format!("{}-lookups", config.kafka.group_id))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", eof.to_string())
        .set("isolation.level", "read_committed");
    client.create_with_context(ReadToEndContext)
}

/// Every partition of `partitions`' topics, at `next` where given, else at
/// the beginning.
fn from(
    partitions: &BTreeMap<String, i32>,
    next: &BTreeMap<(String, i32), i64>,
) -> Result<TopicPartitionList, KafkaError> {
    let mut all = TopicPartitionList::new();
    for (topic, &count) in partitions {
        for p in 0..count {
            let offset = next
                .get(&(topic.clone(), p))
                .map_or(Offset::Beginning, |&o| Offset::Offset(o));
            all.add_partition_offset(topic, p, offset)?;
        }
    }
    Ok(all)
}
