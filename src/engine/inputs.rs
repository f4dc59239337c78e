//! The engine's inputs: the consumer of the event partitions this
//! instance owns, the reader that follows the table sources, the watch on
//! the broker connections, and how far each has been processed.
//!
//! Following the table sources (by default `cx.customers`) is said, not
//! hidden, when it keeps failing ([`super::tables::TableReads`]): after
//! [`super::tables::STALE_AFTER`] of failures the engine is not ready
//! (`/readyz` says why), and every failure is counted.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{Consumer, ConsumerGroupMetadata};
use rdkafka::error::KafkaError;
use rdkafka::message::BorrowedMessage;
use rdkafka::{Offset, TopicPartitionList};

use super::tables::TableReads;
use crate::brokers::BrokerWatch;
use crate::cluster::Cluster;
use crate::drop_aside::DropAside;
use crate::health::Health;
use crate::metrics::Metrics;
use crate::source::{self, Batcher, LookupConsumer, SourceConsumer};

/// A topic and partition.
pub(super) type TopicPartition = (String, i32);

/// A record read from a repartition topic, copied out of librdkafka.
#[derive(Debug)]
pub(super) struct ShuffledMessage {
    /// Its topic.
    pub topic: String,
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// Its key.
    pub key: Option<Vec<u8>>,
    /// Its value.
    pub payload: Option<Vec<u8>>,
}

/// The consumers, the broker watch and the positions processed.
pub(super) struct Inputs {
    consumer: DropAside<SourceConsumer>,
    /// The consumer of the repartition partitions this instance owns.
    shuffled: DropAside<SourceConsumer>,
    lookup: DropAside<LookupConsumer>,
    /// Says when every broker connection was lost, or the instance fenced.
    watch: BrokerWatch,
    /// Whether reading the table sources keeps failing.
    table_reads: TableReads,
    /// Readiness, for the table sources' reads.
    health: Arc<Health>,
    /// Next offset per event (topic, partition) the live jobs have
    /// processed: where backfills hand over.
    live_positions: BTreeMap<TopicPartition, i64>,
    /// Next offset of each table-source partition applied so far.
    lookup_positions: BTreeMap<TopicPartition, i64>,
}

impl Inputs {
    /// Inputs reading from `consumer` and `lookup`, the table sources
    /// applied up to `lookup_positions`.
    pub(super) fn new(
        consumer: SourceConsumer,
        shuffled: SourceConsumer,
        lookup: LookupConsumer,
        watch: BrokerWatch,
        health: Arc<Health>,
        lookup_positions: BTreeMap<TopicPartition, i64>,
    ) -> Self {
        Self {
            consumer: DropAside::new(consumer),
            shuffled: DropAside::new(shuffled),
            lookup: DropAside::new(lookup),
            watch,
            table_reads: TableReads::default(),
            health,
            live_positions: BTreeMap::new(),
            lookup_positions,
        }
    }

    /// The next record of the event topics, or a consumer error.
    pub(super) fn recv(
        &self,
    ) -> impl Future<Output = Result<BorrowedMessage<'_>, KafkaError>> + '_ {
        self.consumer.recv()
    }

    /// The next record of the repartition topics (pending while none is
    /// assigned).
    pub(super) async fn next_shuffled(&self) -> Result<ShuffledMessage, KafkaError> {
        use rdkafka::Message;
        let message = self.shuffled.recv().await?;
        Ok(ShuffledMessage {
            topic: message.topic().to_owned(),
            partition: message.partition(),
            offset: message.offset(),
            key: message.key().map(<[u8]>::to_vec),
            payload: message.payload().map(<[u8]>::to_vec),
        })
    }

    /// Assigns the partitions of `partitions` (repartition topics and their
    /// partition counts) that this instance owns and does not read yet.
    pub(super) fn assign_shuffled(
        &self,
        cluster: Cluster,
        partitions: &BTreeMap<String, i32>,
    ) -> Result<(), KafkaError> {
        let assigned: BTreeSet<TopicPartition> = self
            .shuffled
            .assignment()?
            .elements()
            .iter()
            .map(|e| (e.topic().to_owned(), e.partition()))
            .collect();
        let new = source::assign_owned(&self.shuffled, cluster, partitions, &assigned)?;
        if !new.is_empty() {
            tracing::info!(new = ?new, "reading the repartition partitions this instance owns");
        }
        Ok(())
    }

    /// The error that fenced this instance, if another one took over.
    pub(super) fn fenced(&self) -> Option<KafkaError> {
        self.watch.fenced()
    }

    /// Whether every broker connection was lost.
    pub(super) fn lost(&self) -> bool {
        self.watch.lost()
    }

    /// The event partitions assigned to this instance.
    pub(super) fn assigned(&self) -> Result<BTreeSet<TopicPartition>, KafkaError> {
        Ok(self
            .consumer
            .assignment()?
            .elements()
            .iter()
            .map(|e| (e.topic().to_owned(), e.partition()))
            .collect())
    }

    /// Assigns the partitions of `partitions` (event topics and their
    /// partition counts) this instance owns and does not read yet: at start,
    /// and when a topic appears or grows. Readiness waits for the first.
    pub(super) fn assign_owned(
        &self,
        cluster: Cluster,
        partitions: &BTreeMap<String, i32>,
        metrics: &Metrics,
    ) -> Result<(), KafkaError> {
        let assigned = self.assigned()?;
        let new = source::assign_owned(&self.consumer, cluster, partitions, &assigned)?;
        if !new.is_empty() {
            let total = assigned.len() + new.len();
            tracing::info!(
                instance = cluster.index(),
                of = cluster.instances(),
                partitions = total,
                new = ?new,
                "reading the event partitions this instance owns"
            );
            metrics.assigned_partitions.set(total as i64);
            self.health.set_partitions_assigned(true);
        }
        Ok(())
    }

    /// Partitions with records not yet handed to the engine.
    pub(super) fn behind(&self) -> Vec<TopicPartition> {
        self.consumer.context().backlog.behind()
    }

    /// Pauses `pause` and resumes `resume` (a failure is logged: the next
    /// look tries again).
    pub(super) fn pause_and_resume(&self, pause: &[TopicPartition], resume: &[TopicPartition]) {
        let list = |parts: &[TopicPartition]| {
            let mut tpl = TopicPartitionList::new();
            for (topic, p) in parts {
                let _ = tpl.add_partition_offset(topic, *p, Offset::Invalid);
            }
            tpl
        };
        if !resume.is_empty()
            && let Err(e) = self.consumer.resume(&list(resume))
        {
            tracing::warn!(error = %e, "cannot resume consumption");
        }
        if !pause.is_empty() {
            tracing::debug!(
                partitions = pause.len(),
                "pausing partitions ahead of the watermark"
            );
            if let Err(e) = self.consumer.pause(&list(pause)) {
                tracing::warn!(error = %e, "cannot pause consumption");
            }
        }
    }

    /// The consumer group's metadata, for the transaction's offsets.
    pub(super) fn group_metadata(&self) -> Option<ConsumerGroupMetadata> {
        self.consumer.group_metadata()
    }

    /// A micro-batch was processed up to `next_offsets` (event topics) and
    /// `lookup_offsets` (table sources).
    pub(super) fn processed(
        &mut self,
        next_offsets: &BTreeMap<TopicPartition, i64>,
        lookup_offsets: BTreeMap<TopicPartition, i64>,
    ) {
        for (at, &next) in next_offsets {
            let live = self.live_positions.entry(at.clone()).or_insert(next);
            *live = (*live).max(next);
        }
        self.lookup_positions.extend(lookup_offsets);
    }

    /// Next offset per event partition the live jobs have processed.
    pub(super) fn live_positions(&self) -> &BTreeMap<TopicPartition, i64> {
        &self.live_positions
    }

    /// Next offset per table-source partition applied.
    pub(super) fn lookup_positions(&self) -> &BTreeMap<TopicPartition, i64> {
        &self.lookup_positions
    }

    /// Takes what arrived on the table sources' topics into `batcher` and
    /// returns how many records it took: none when reading failed (that is
    /// logged, counted, and said on `/readyz` once it has failed for long).
    pub(super) fn read_tables(&mut self, batcher: &mut Batcher, metrics: &Metrics) -> usize {
        let now = Instant::now();
        let read = match self.lookup.take(batcher, now) {
            Ok(n) => {
                if self.table_reads.succeeded(now) {
                    tracing::info!("the table sources are read again");
                    self.health.set_tables_failing(None);
                }
                n
            }
            Err(e) => {
                metrics.table_read_errors.inc();
                tracing::warn!(error = %e, "reading the table sources failed");
                if let Some(failing) = self.table_reads.failed(now) {
                    let why = format!(
                        "reading the table sources has failed for {} s ({e}); lookups miss their new rows",
                        failing.as_secs()
                    );
                    tracing::error!(error = %e, "{why}");
                    self.health.set_tables_failing(Some(why));
                }
                0
            }
        };
        if let Some(age) = self.table_reads.age(now) {
            metrics.table_read_age.set(age.as_secs_f64());
        }
        read
    }

    /// Stops reading the event and repartition partitions (at the end of
    /// a drain).
    pub(super) fn unassign(&self) {
        for consumer in [&self.consumer, &self.shuffled] {
            if let Err(e) = consumer.unassign() {
                tracing::debug!(error = %e, "cannot unassign the partitions read");
            }
        }
    }

    /// Closes both consumers, waiting at most `timeout` for each.
    pub(super) fn close_within(self, timeout: Duration) {
        self.consumer.drop_within(timeout);
        self.shuffled.drop_within(timeout);
        self.lookup.drop_within(timeout);
    }
}
