//! The customers topic, read whole by every instance, as Kafka Streams
//! reads a GlobalKTable: from the beginning at every start and to its end
//! before any event is processed, so that a lookup join never misses a
//! profile that was already on the topic; then followed like any source.
//!
//! Its positions are not committed through the consumer group: the topic is
//! compacted, and reading it again is how the table is rebuilt.

use std::collections::BTreeSet;
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::BorrowedMessage;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use super::{Batcher, ReadToEndContext};
use crate::admin::partition_counts;
use crate::config::Config;

/// How long reading to the end may go without a record.
const STALL: Duration = Duration::from_secs(30);

/// A consumer of every partition of one lookup topic.
pub struct LookupConsumer {
    consumer: StreamConsumer<ReadToEndContext>,
    topic: String,
    partitions: i32,
}

impl LookupConsumer {
    /// Assigns every partition of `topic`, from the beginning.
    pub async fn open(config: &Config, topic: &str) -> Result<Self, KafkaError> {
        let mut client = config.client_config();
        client
            .set("group.id", format!("{}-lookups", config.kafka.group_id))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .set("isolation.level", "read_committed");
        let consumer: StreamConsumer<ReadToEndContext> =
            client.create_with_context(ReadToEndContext)?;
        let partitions = match partition_counts(config, &[topic.to_owned()])
            .await?
            .get(topic)
        {
            Some(&n) => n,
            None => {
                tracing::error!(
                    topic,
                    "lookup topic missing: create it (cxpulse create-topics does)"
                );
                return Err(KafkaError::MetadataFetch(
                    RDKafkaErrorCode::UnknownTopicOrPartition,
                ));
            }
        };
        let mut all = TopicPartitionList::new();
        for p in 0..partitions {
            all.add_partition_offset(topic, p, Offset::Beginning)?;
        }
        consumer.assign(&all)?;
        Ok(Self {
            consumer,
            topic: topic.to_owned(),
            partitions,
        })
    }

    /// Reads until every partition has reached its end, into `batcher`.
    pub async fn read_to_end(&self, batcher: &mut Batcher) -> Result<(), KafkaError> {
        let mut ended = BTreeSet::new();
        while (ended.len() as i32) < self.partitions {
            match tokio::time::timeout(STALL, self.consumer.recv()).await {
                Ok(Ok(message)) => batcher.push(&message),
                Ok(Err(KafkaError::PartitionEOF(p))) => {
                    ended.insert(p);
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => {
                    tracing::error!(topic = %self.topic, "nothing read for {} s before the end of the topic", STALL.as_secs());
                    return Err(KafkaError::MessageConsumption(
                        RDKafkaErrorCode::OperationTimedOut,
                    ));
                }
            }
        }
        Ok(())
    }

    /// The next record (ends of partitions are skipped).
    pub async fn recv(&self) -> Result<BorrowedMessage<'_>, KafkaError> {
        loop {
            match self.consumer.recv().await {
                Err(KafkaError::PartitionEOF(_)) => continue,
                other => return other,
            }
        }
    }
}
