//! The engine's side of the shuffle ([`crate::shuffle`]): a route for each
//! job that shuffles, its repartition topic, the marks written at each
//! commit (stage 1), and the records read back from the repartition
//! partitions this instance owns (stage 2): partial aggregates, marks, and
//! the events of kept tables for the copies of jobs that read them.

use std::collections::BTreeMap;

use super::backfill::Backfill;
use super::event_time::EventTime;
use super::inputs::ShuffledMessage;
use super::jobs::RunningJob;
use super::{Engine, EngineError};
use crate::admin::{TopicSpec, ensure_topics, partition_counts};
use crate::config::Config;
use crate::shuffle::{Route, Shuffled};
use crate::sink::OutRecord;

/// Most repartition records taken in at once, between two looks at the
/// engine's other work.
const MOST_AT_ONCE: usize = 10_000;

/// Gives each of `jobs` that shuffles (and has no route yet) its route
/// through a repartition topic of `partitions` partitions (the changelog's
/// count: partition `r` of the topic keeps its state in changelog partition
/// `r`), with the marks stage 2 had read before a restart (`read`, by job);
/// creates the topics that are missing. Returns the routes' topics.
pub(super) async fn route(
    config: &Config,
    jobs: &mut [RunningJob],
    partitions: i32,
    read: &mut BTreeMap<String, Vec<crate::shuffle::ReadMark>>,
) -> Result<Vec<String>, EngineError> {
    let mut topics = Vec::new();
    for running in jobs.iter_mut() {
        if running.shuffle.is_some() || !running.job.shuffles() {
            continue;
        }
        let topic = crate::shuffle::topic(
            &config.kafka.group_id,
            &running.job.name,
            running.job.version(),
        );
        let Some(windowed) = running.job.windowed_mut() else {
            continue;
        };
        windowed.set_shuffled();
        let whole = windowed.group_key_columns().is_empty();
        let owned = config.cluster().owned(partitions);
        let mut route = Route::new(
            topic.clone(),
            partitions,
            owned,
            windowed.group_key_columns(),
        );
        for (at, source, partition, mark, idle) in
            read.remove(&running.job.name).unwrap_or_default()
        {
            route.marks.set(at, &source, partition, mark, idle);
        }
        tracing::info!(job = %running.job.name, %topic, whole, "the job shuffles its partial aggregates through this topic (whole: every group to one partition, as its rows depend on other groups)");
        running.shuffle = Some(route);
        topics.push(topic);
    }
    let specs: Vec<TopicSpec> = topics
        .iter()
        .map(|t| TopicSpec::new(t.as_str(), partitions))
        .collect();
    if !specs.is_empty() {
        ensure_topics(config, &specs)
            .await
            .map_err(EngineError::kafka("creating the repartition topics"))?;
    }
    Ok(topics)
}

/// Tells every route how many partitions its job's sources have (`counts`,
/// by topic), for the watermark stage 2 computes over all of them.
pub(super) fn count_source_partitions<'a>(
    config: &Config,
    jobs: impl Iterator<Item = &'a mut RunningJob>,
    counts: &BTreeMap<String, i32>,
) {
    for running in jobs {
        let (Some(route), Some(windowed)) = (running.shuffle.as_mut(), running.job.windowed())
        else {
            continue;
        };
        route.sources = windowed
            .info
            .sources
            .iter()
            .filter_map(|s| {
                let count = counts.get(config.topics.source_topic(*s))?;
                Some((s.name().to_owned(), *count))
            })
            .collect();
    }
}

/// `running`'s stage 1 marks that changed since they were last written,
/// from `event_time` (the live one, or its backfill's), if it shuffles.
fn changed_marks(
    running: &mut RunningJob,
    event_time: &EventTime,
    now: tokio::time::Instant,
) -> Result<Vec<OutRecord>, EngineError> {
    let (Some(route), Some(windowed)) = (running.shuffle.as_mut(), running.job.windowed()) else {
        return Ok(Vec::new());
    };
    let marks = windowed
        .info
        .sources
        .iter()
        .flat_map(|&source| {
            event_time
                .marks(source, now)
                .into_iter()
                .map(move |(p, mark, idle)| (source.name().to_owned(), p, mark, idle))
        })
        .collect();
    Ok(route.changed_marks(marks)?)
}

impl Engine {
    /// The repartition topics of the jobs that shuffle, live or
    /// backfilling.
    pub(super) fn repartition_topics(&self) -> Vec<String> {
        self.all_jobs()
            .filter_map(|r| Some(r.shuffle.as_ref()?.topic.clone()))
            .collect()
    }

    /// Reads the repartition partitions this instance owns that it does
    /// not read yet (at start, and when a job that shuffles was added).
    pub(super) async fn follow_repartition_topics(&mut self) -> Result<(), EngineError> {
        let topics = self.repartition_topics();
        if topics.is_empty() {
            return Ok(());
        }
        let counts = partition_counts(&self.config, &topics)
            .await
            .map_err(EngineError::kafka("reading the repartition topics"))?;
        self.inputs
            .assign_shuffled(self.config.cluster(), &counts)
            .map_err(EngineError::kafka("assigning the repartition partitions"))
    }

    /// Stage 1's marks that changed since they were last written: how far
    /// each partition this instance reads has got, for every job that
    /// shuffles (a backfilling job: how far its history has got); written
    /// after the epoch's partial aggregates.
    pub(super) fn shuffle_marks(&mut self) -> Result<Vec<OutRecord>, EngineError> {
        let now = tokio::time::Instant::now();
        let mut records = Vec::new();
        for running in self.jobs.live_for_step().iter_mut() {
            records.extend(changed_marks(running, &self.event_time, now)?);
        }
        for backfill in self.backfills.iter_mut() {
            let (jobs, event_time) = backfill.step_parts();
            for running in jobs.iter_mut() {
                records.extend(changed_marks(running, event_time, now)?);
            }
        }
        Ok(records)
    }

    /// Stage 2: takes in `first` and the repartition records already
    /// waiting after it: partial aggregates into their job's state (the
    /// state of the repartition partition), marks into its watermark. Their
    /// offsets join the open epoch.
    pub(super) async fn take_shuffled(
        &mut self,
        first: Result<ShuffledMessage, rdkafka::error::KafkaError>,
    ) -> Result<(), EngineError> {
        use futures::FutureExt;
        let mut next = Some(first);
        let mut taken = 0;
        while let Some(message) = next.take() {
            match message {
                Ok(message) => self.apply_shuffled(message).await?,
                Err(e) => tracing::warn!(error = %e, "reading a repartition topic failed"),
            }
            taken += 1;
            if taken < MOST_AT_ONCE {
                next = self.inputs.next_shuffled().now_or_never();
            }
        }
        Ok(())
    }

    async fn apply_shuffled(&mut self, message: ShuffledMessage) -> Result<(), EngineError> {
        let at = (message.topic.clone(), message.partition);
        self.epoch
            .advance(BTreeMap::from([(at, message.offset + 1)]));
        let Some(running) = self
            .jobs
            .live_for_step()
            .iter_mut()
            .chain(self.backfills.iter_mut().map(Backfill::job_mut))
            .find(|r| r.shuffle.as_ref().is_some_and(|s| s.topic == message.topic))
        else {
            // A job removed since: its records are passed over.
            return Ok(());
        };
        let shuffled = match Shuffled::decode(message.key.as_deref(), message.payload.as_deref()) {
            Ok(shuffled) => shuffled,
            Err(e) => {
                self.metrics
                    .job_errors
                    .with_label_values(&[running.job.name.as_str()])
                    .inc();
                tracing::error!(
                    error = %e,
                    topic = %message.topic,
                    partition = message.partition,
                    offset = message.offset,
                    "a repartition record cxpulse cannot read is passed over"
                );
                return Ok(());
            }
        };
        match shuffled {
            Shuffled::Mark {
                source,
                partition,
                mark,
                idle,
            } => {
                if let Some(route) = running.shuffle.as_mut() {
                    route
                        .marks
                        .set(message.partition, &source, partition, mark, idle);
                }
            }
            Shuffled::Kept { source, events, .. } => {
                let copy = self
                    .config
                    .declared
                    .named(&source)
                    .zip(running.job.windowed())
                    .and_then(|(source, windowed)| windowed.kept_copies().get(&source).cloned());
                let applied = copy.map(|copy| {
                    copy.lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .apply(&events, Some(message.partition))
                });
                if let Some(Err(e)) = applied {
                    self.metrics
                        .job_errors
                        .with_label_values(&[running.job.name.as_str()])
                        .inc();
                    tracing::error!(error = %e, job = %running.job.name, "kept-table events read back could not be added to the job's copy of the tables");
                }
            }
            Shuffled::Partials { source, rows, .. } => {
                let (Some(source), Some(windowed)) = (
                    self.config.declared.named(&source),
                    running.job.windowed_mut(),
                ) else {
                    return Ok(());
                };
                if let Err(e) = windowed
                    .insert_partials(source, message.partition, rows)
                    .await
                {
                    self.metrics
                        .job_errors
                        .with_label_values(&[running.job.name.as_str()])
                        .inc();
                    tracing::error!(error = %e, job = %running.job.name, "partial aggregates read back could not be added to the job's state");
                }
            }
        }
        Ok(())
    }
}
