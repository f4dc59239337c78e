//! Jobs stopped because they panicked.
//!
//! A panic in a job (a bug in cxpulse or in a library it calls, on some
//! input) must not take the engine down, nor come back after every restart
//! on the same data. So the engine aborts the open epoch and starts again
//! from the changelog without the job: the other jobs replay the epoch and
//! go on. The stopped job keeps its state, as of the last commit, in memory
//! and in the changelog, with where it stopped (the committed offset of
//! each of its source partitions, as a backfill position). A later start of
//! the same job (same query, in a process where it has not panicked: after
//! an upgrade, say) resumes it from there: it reads what it missed, as a
//! backfill does, then goes live; nothing is lost. A job that reads a kept
//! table resumes live instead (the table holds today's events, not those
//! it missed), and says so. A changed query file replaces it like any job.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Offset, TopicPartitionList};

use super::Engine;
use super::event_time::EventTime;
use super::job_set::StoppedJob;
use super::jobs::JobPanic;
use super::restore::BackfillState;
use crate::admin::partition_counts;
use crate::brokers::ReadToEndContext;
use crate::config::Config;
use crate::decode::{RejectKind, Rejection};
use crate::job::Job;
use crate::metrics::Metrics;
use crate::sink::{JobFailure, OutRecord};
use crate::state::key::StateKey;
use crate::state::record::resume_positions;

/// How long reading the committed offsets may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The jobs of `jobs` stopped: where each resumes is its running backfill's
/// position (taken out of `backfills`), else the group's committed offsets
/// of its sources with their largest event times.
pub(super) async fn stop(
    config: &Config,
    jobs: Vec<Job>,
    backfills: &mut BTreeMap<String, BackfillState>,
    event_time: &EventTime,
    metrics: &Metrics,
) -> Result<Vec<StoppedJob>, KafkaError> {
    let mut stopped = Vec::with_capacity(jobs.len());
    for job in jobs {
        let resume = match backfills.remove(&job.name) {
            Some(state) if state.running() => state,
            // Its kept table holds today's events, not those it missed: it
            // resumes live, as a backfill of it is refused.
            _ if job.kept_table_read().is_some() => BackfillState::default(),
            _ => {
                let offsets = committed(config, &job).await?;
                let times = event_time.partition_times();
                let event_times = offsets
                    .keys()
                    .filter_map(|at| times.get(at).map(|t| (*at, *t)))
                    .collect();
                BackfillState {
                    offsets,
                    event_times,
                    done: None,
                    done_in: Default::default(),
                }
            }
        };
        metrics
            .jobs_stopped
            .with_label_values(&[job.name.as_str()])
            .set(1);
        match job.kept_table_read() {
            Some(kept) => {
                tracing::warn!(job = %job.name, kept_table = kept, "job stopped after a panic: it does not run in this process; its state is kept. It reads a kept table, so when it resumes it resumes live: the records of the time it is stopped are not read for it")
            }
            None => {
                tracing::warn!(job = %job.name, "job stopped after a panic: it does not run in this process; its state is kept")
            }
        }
        let path = config.engine.queries_dir.join(format!("{}.sql", job.name));
        stopped.push(StoppedJob { job, path, resume });
    }
    Ok(stopped)
}

/// The group's committed offset of every partition of `job`'s sources (0
/// where none is committed yet: the backfill reader starts at the oldest
/// record).
async fn committed(
    config: &Config,
    job: &Job,
) -> Result<BTreeMap<(crate::schema::Source, i32), i64>, KafkaError> {
    let sources = job.sources();
    let topics = config.topics.of(sources.iter().copied());
    let counts = partition_counts(config, &topics).await?;
    let mut wanted = TopicPartitionList::new();
    for (topic, count) in &counts {
        for p in 0..*count {
            wanted.add_partition(topic, p);
        }
    }
    let mut client = config.client_config();
    client
        .set("group.id", &config.kafka.group_id)
        .set("enable.auto.commit", "false");
    let found = tokio::task::spawn_blocking(move || {
        let reader: BaseConsumer<ReadToEndContext> =
            client.create_with_context(ReadToEndContext)?;
        reader.committed_offsets(wanted, REQUEST_TIMEOUT)
    })
    .await
    .map_err(|_| KafkaError::Canceled)??;
    Ok(found
        .elements()
        .iter()
        .filter_map(|e| {
            let source = config.topics.source_of(config.declared, e.topic())?;
            let next = match e.offset() {
                Offset::Offset(o) => o,
                _ => 0,
            };
            Some(((source, e.partition()), next))
        })
        .collect())
}

/// The dead letter saying that a job panicked and was stopped.
pub(super) fn dead_letter(panic: &JobPanic, stopped: &[StoppedJob]) -> JobFailure {
    let output_topic = stopped
        .iter()
        .find(|s| s.job.name == panic.job)
        .map(|s| s.job.output_topic.clone())
        .unwrap_or_default();
    JobFailure {
        job: panic.job.clone(),
        output_topic,
        rejection: Rejection::new(
            RejectKind::JobError,
            format!(
                "{panic}; the job is stopped and its state kept: it resumes where it stopped \
                 when a cxpulse without the bug starts it, or when its query file changes"
            ),
        ),
        window: None,
        key: None,
        payload: None,
    }
}

impl Engine {
    /// Changelog records of the stopped jobs: where each resumes (as a
    /// backfill position), and no "backfill done" marker.
    pub(super) fn stopped_records(&mut self) -> Vec<OutRecord> {
        let mut records = Vec::new();
        for stopped in self.jobs.stopped() {
            let (job, fingerprint) = (&stopped.job.name, &stopped.job.fingerprint);
            records.extend(self.changelog.delete_where(|key| {
                matches!(key, StateKey::BackfillDone { job: j, fingerprint: f, .. } if j == job && f == fingerprint)
            }));
            let positions = resume_positions(
                job,
                fingerprint,
                stopped.resume.offsets.iter().map(|(&at, &next)| (at, next)),
                stopped.resume.event_times.iter().map(|(&at, &t)| (at, t)),
            );
            for (key, value) in positions {
                records.extend(self.changelog.put_int(key, value));
            }
        }
        records
    }

    /// Takes the stopped job read from `path`, if any.
    pub(super) fn take_stopped(&mut self, path: &std::path::Path) -> Option<StoppedJob> {
        let stopped = self.jobs.take_stopped(path)?;
        let _ = self
            .metrics
            .jobs_stopped
            .remove_label_values(&[stopped.job.name.as_str()]);
        Some(stopped)
    }
}
