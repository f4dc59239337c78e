//! One job's backfill: it reads its sources' history with a reader of its
//! own (assigned partitions, no group membership) from a start time up to
//! where the live consumer has processed, with watermarks of its own, then
//! hands the job over to the live stream.
//!
//! The live position moves while the backfill reads: each partition is read
//! up to the next offset the live jobs have processed (before the first
//! live micro-batch, the group's committed offset, where the live consumer
//! starts). Records read beyond it are held until the live position passes
//! them; a partition with nothing left to read is paused, so the reader
//! does not keep fetching. Once every partition has reached the live
//! position, between two micro-batches, the job joins the live jobs: the
//! records after that position reach it through the live consumer, so none
//! is missed and none is read twice.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tokio::time::Instant;

use super::super::event_time::EventTime;
use super::super::jobs::RunningJob;
use super::super::restore::BackfillState;
use crate::brokers::ReadToEndContext;
use crate::config::{Config, TopicsConfig};
use crate::query::BackfillFrom;
use crate::schema::Source;
use crate::source::{Admission, Batcher, Consumed, MicroBatch};

/// How often a running backfill logs its progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// How long a metadata, offset or watermark request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A `(topic, partition)`.
pub type TopicPartition = (String, i32);

/// One source partition of a backfill.
#[derive(Debug)]
struct Reading {
    source: Source,
    /// Next offset to feed the job.
    next: i64,
    /// Where the live consumer stood when the backfill started: the group's
    /// committed offset, else the partition's first offset.
    floor: i64,
    /// Records read at or past the live position, fed once it passes them.
    held: VecDeque<Consumed>,
    paused: bool,
}

/// Where a backfill's reader starts in each partition, found with Kafka.
pub struct Opened {
    reader: BaseConsumer<ReadToEndContext>,
    partitions: BTreeMap<TopicPartition, Reading>,
}

/// Creates the reader of `sources` and finds, per partition, where to start
/// (`resumed` offsets first, else `from`) and where the live consumer
/// starts. Blocking: Kafka requests.
pub fn open(
    config: &Config,
    sources: &[Source],
    from: Option<BackfillFrom>,
    resumed: &BackfillState,
) -> Result<Opened, KafkaError> {
    // The user's properties, then the engine's, as for the live consumer.
    let mut client = config.client_config();
    client
        .set("enable.partition.eof", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        // The engine's group, only to read its committed offsets: the
        // reader is assigned its partitions and never joins or commits.
        .set("group.id", &config.kafka.group_id)
        .set("enable.auto.commit", "false");
    let reader: BaseConsumer<ReadToEndContext> = client.create_with_context(ReadToEndContext)?;
    // Only the partitions this instance owns: their owners backfill the
    // others.
    let cluster = config.cluster();
    let mut all = TopicPartitionList::new();
    for &source in sources {
        let topic = config.topics.source_topic(source);
        let metadata = reader.fetch_metadata(Some(topic), REQUEST_TIMEOUT)?;
        for t in metadata.topics() {
            for p in t.partitions().iter().filter(|p| cluster.owns(p.id())) {
                all.add_partition(t.name(), p.id());
            }
        }
    }
    let committed = reader.committed_offsets(all.clone(), REQUEST_TIMEOUT)?;
    let start_at = from.and_then(|f| f.start_millis(chrono::Utc::now().timestamp_millis()));
    let by_time = match start_at {
        Some(ms) => {
            let mut times = TopicPartitionList::new();
            for e in all.elements() {
                times.add_partition_offset(e.topic(), e.partition(), Offset::Offset(ms))?;
            }
            Some(reader.offsets_for_times(times, REQUEST_TIMEOUT)?)
        }
        None => None,
    };
    let mut partitions = BTreeMap::new();
    let mut assignment = TopicPartitionList::new();
    for e in all.elements() {
        let (topic, partition) = (e.topic().to_owned(), e.partition());
        let Some(source) = config.topics.source_of(config.declared, &topic) else {
            continue;
        };
        let (low, high) = reader.fetch_watermarks(&topic, partition, REQUEST_TIMEOUT)?;
        let floor = match committed
            .find_partition(&topic, partition)
            .map(|c| c.offset())
        {
            Some(Offset::Offset(n)) => n.max(low),
            _ => low,
        };
        let next = match resumed.offsets.get(&(source, partition)) {
            Some(&n) => n,
            // Its owner had caught up, and the live stream fed the job
            // from there (a rescale gave this instance partitions of
            // both kinds).
            None if resumed.done_in.contains(&partition) => floor,
            None => match by_time
                .as_ref()
                .and_then(|t| t.find_partition(&topic, partition))
                .map(|t| t.offset())
            {
                Some(Offset::Offset(n)) => n,
                // No record at or after the start time.
                Some(_) => high,
                None => low,
            },
        };
        assignment.add_partition_offset(&topic, partition, Offset::Offset(next))?;
        partitions.insert(
            (topic, partition),
            Reading {
                source,
                next,
                floor,
                held: VecDeque::new(),
                paused: false,
            },
        );
    }
    reader.assign(&assignment)?;
    Ok(Opened { reader, partitions })
}

/// A job reading history before it joins the live stream.
pub struct Backfill {
    /// The job, alone (in a `Vec`, as steps take their jobs). A job that
    /// shuffles keeps its route: its history's partials and marks go
    /// through its repartition topic, as its live events' will.
    jobs: Vec<RunningJob>,
    /// Its own watermarks over the history it reads.
    event_time: EventTime,
    reader: BaseConsumer<ReadToEndContext>,
    partitions: BTreeMap<TopicPartition, Reading>,
    topics: TopicsConfig,
    sources: crate::schema::Sources,
    max_record_bytes: usize,
    /// A micro-batch's cap in bytes (`engine.batch_max_bytes`).
    max_batch_bytes: usize,
    batcher: Batcher,
    /// Records fed to the job so far (this run).
    read: u64,
    /// When the backfill started (this run).
    started: std::time::Instant,
    /// When progress is next logged.
    next_log: std::time::Instant,
}

/// How far a backfill has got, for its progress line.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    /// Records fed to the job (this run).
    pub read: u64,
    /// Seconds since it started (this run).
    pub seconds: f64,
}

impl Backfill {
    /// A backfill of `running` from what [`open`] found; `resumed` holds the
    /// event times of a backfill interrupted by a restart.
    pub fn new(
        config: &Config,
        mut running: RunningJob,
        opened: Opened,
        resumed: &BackfillState,
        now: Instant,
    ) -> Self {
        running.stop_early_results();
        let mut event_time = EventTime::unexported(config);
        for (&(source, partition), &t) in &resumed.event_times {
            event_time.restore_partition(source, partition, t);
        }
        let assigned: Vec<TopicPartition> = opened.partitions.keys().cloned().collect();
        event_time.assign(&assigned, now);
        Self {
            jobs: vec![running],
            event_time,
            reader: opened.reader,
            partitions: opened.partitions,
            topics: config.topics.clone(),
            sources: config.declared,
            max_record_bytes: config.max_record_bytes(),
            max_batch_bytes: config.batch_max_bytes(),
            batcher: Batcher::new(
                config.topics.clone(),
                config.declared,
                Admission::new(config),
            ),
            read: 0,
            started: std::time::Instant::now(),
            next_log: std::time::Instant::now() + PROGRESS_EVERY,
        }
    }

    /// The job being backfilled.
    pub fn job(&self) -> &RunningJob {
        &self.jobs[0]
    }

    /// The job being backfilled, to take its state changes.
    pub fn job_mut(&mut self) -> &mut RunningJob {
        &mut self.jobs[0]
    }

    /// The job (alone) and its watermarks, for one step.
    pub fn step_parts(&mut self) -> (&mut Vec<RunningJob>, &mut EventTime) {
        (&mut self.jobs, &mut self.event_time)
    }

    /// Keeps the partitions with history left to read from going idle.
    pub fn keep_active(&mut self, behind: &[TopicPartition], now: Instant) {
        self.event_time.keep_active(behind, now);
    }

    /// The largest event time read per source partition.
    pub fn partition_times(&self) -> BTreeMap<(Source, i32), i64> {
        self.event_time.partition_times()
    }

    /// The job's watermark, for the progress line.
    pub fn watermark(&self) -> Option<i64> {
        self.event_time.of_sources(&self.job().job.sources())
    }

    /// How far it has got.
    pub fn progress(&self) -> Progress {
        Progress {
            read: self.read,
            seconds: self.started.elapsed().as_secs_f64(),
        }
    }

    /// How far it has got, when a progress line is due (every
    /// [`PROGRESS_EVERY`]).
    pub fn progress_due(&mut self) -> Option<Progress> {
        let now = std::time::Instant::now();
        if now < self.next_log {
            return None;
        }
        self.next_log = now + PROGRESS_EVERY;
        Some(self.progress())
    }

    /// The job, to run live.
    pub fn into_job(mut self) -> RunningJob {
        self.jobs.remove(0)
    }

    /// Where the live jobs stand in a partition: `live`'s processed
    /// position, or where the live consumer started.
    fn target(live: &BTreeMap<TopicPartition, i64>, at: &TopicPartition, r: &Reading) -> i64 {
        live.get(at).copied().unwrap_or(r.floor).max(r.floor)
    }

    /// Reads up to `max_rows` records, and about `engine.batch_max_bytes`,
    /// below the live position into a micro-batch (`None` if there were
    /// none).
    pub fn read(
        &mut self,
        live: &BTreeMap<TopicPartition, i64>,
        max_rows: usize,
    ) -> Result<Option<MicroBatch>, KafkaError> {
        let (mut fed, mut bytes) = (0, 0);
        let max_bytes = self.max_batch_bytes;
        for (at, r) in &mut self.partitions {
            let target = Self::target(live, at, r);
            while fed < max_rows
                && bytes < max_bytes
                && let Some(front) = r.held.front()
                && front.raw.offset < target
            {
                r.next = front.raw.offset + 1;
                if let Some(record) = r.held.pop_front() {
                    bytes += record.bytes();
                    self.batcher.add(record);
                }
                fed += 1;
            }
            if r.held.front().is_some_and(|h| h.raw.offset >= target) {
                // Nothing visible below the held record (aborted
                // transactions, control records): the partition is there.
                r.next = r.next.max(target);
            }
            let wanted = r.held.is_empty() && r.next < target;
            if wanted == r.paused {
                let mut one = TopicPartitionList::new();
                one.add_partition(&at.0, at.1);
                if wanted {
                    self.reader.resume(&one)?;
                } else {
                    self.reader.pause(&one)?;
                }
                r.paused = !wanted;
            }
        }
        while fed < max_rows && bytes < max_bytes {
            let message = match self.reader.poll(Duration::ZERO) {
                None => break,
                Some(Ok(message)) => message,
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "backfill reader");
                    break;
                }
            };
            let at = (message.topic().to_owned(), message.partition());
            let (Some(r), Some(consumed)) = (
                self.partitions.get_mut(&at),
                Consumed::of(&message, &self.topics, self.sources, self.max_record_bytes),
            ) else {
                continue;
            };
            let target = Self::target(live, &at, r);
            if consumed.raw.offset < r.next {
                continue;
            }
            if consumed.raw.offset < target {
                r.next = consumed.raw.offset + 1;
                bytes += consumed.bytes();
                self.batcher.add(consumed);
                fed += 1;
            } else {
                // Records come in offset order: nothing visible is left
                // below the live position.
                r.next = r.next.max(target);
                r.held.push_back(consumed);
                if !r.paused {
                    let mut one = TopicPartitionList::new();
                    one.add_partition(&at.0, at.1);
                    self.reader.pause(&one)?;
                    r.paused = true;
                }
            }
        }
        self.read += fed as u64;
        if fed == 0 {
            self.skip_invisible_tails(live)?;
            return Ok(None);
        }
        Ok(Some(self.batcher.take().map_err(|e| {
            tracing::error!(error = %e, "assembling a backfill micro-batch");
            KafkaError::Canceled
        })?))
    }

    /// A partition whose reader has passed the live position without a
    /// record to show for it (commit markers or aborted records at its end)
    /// has nothing left to read below that position.
    fn skip_invisible_tails(
        &mut self,
        live: &BTreeMap<TopicPartition, i64>,
    ) -> Result<(), KafkaError> {
        let position = self.reader.position()?;
        for (at, r) in &mut self.partitions {
            let target = Self::target(live, at, r);
            if r.next >= target || !r.held.is_empty() {
                continue;
            }
            if let Some(Offset::Offset(p)) =
                position.find_partition(&at.0, at.1).map(|e| e.offset())
                && p >= target
            {
                r.next = target;
            }
        }
        Ok(())
    }

    /// The partitions with records left below the live position.
    pub fn behind(&self, live: &BTreeMap<TopicPartition, i64>) -> Vec<TopicPartition> {
        self.partitions
            .iter()
            .filter(|(at, r)| r.next < Self::target(live, at, r))
            .map(|(at, _)| at.clone())
            .collect()
    }

    /// Records left to read before the job can go live.
    pub fn lag(&self, live: &BTreeMap<TopicPartition, i64>) -> i64 {
        self.partitions
            .iter()
            .map(|(at, r)| (Self::target(live, at, r) - r.next).max(0))
            .sum()
    }

    /// Next offset to read per source partition, for the changelog.
    pub fn positions(&self) -> BTreeMap<(Source, i32), i64> {
        self.partitions
            .iter()
            .map(|((_, p), r)| ((r.source, *p), r.next))
            .collect()
    }
}
