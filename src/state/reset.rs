//! `cxpulse reset`: forgetting one job's window state, or repairing event
//! time.
//!
//! * `cxpulse reset JOB`: every live changelog record of the job (any query
//!   version) gets a tombstone. The next start finds no state for the job
//!   and starts it empty, from the group's committed offsets: events
//!   already consumed are not read again.
//! * `cxpulse reset --event-time [--source S]`: the watermarks of every
//!   source (or of `S`), and how far the windows of the jobs reading them
//!   have closed, get tombstones. This repairs event time that a far-future
//!   event moved before `max_future_ms` existed (or with the check off):
//!   the next start computes the watermarks again from the events it reads,
//!   and the jobs accept events for windows that had closed too early.
//!
//! Tombstones are written in one transaction under a `transactional.id`
//! of the reset's own (`<group>-reset-<unix ms>`), after fencing every
//! owner recorded in the changelog: an engine that still runs stops
//! instead of writing the state back.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

use super::key::StateKey;
use super::reader::{self, ReadError};
use crate::config::Config;

/// How long to wait for the broker's answers.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Why a reset did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ResetError {
    /// The job has no state in the changelog.
    #[error("no state stored for job {job} in {topic}; jobs with state: {others}")]
    NoState {
        /// The job asked for.
        job: String,
        /// The changelog topic.
        topic: String,
        /// The jobs that have state, comma-separated, or `none`.
        others: String,
    },
    /// A Kafka call failed.
    #[error("{context}: {source}")]
    Kafka {
        /// What was being done.
        context: &'static str,
        /// The client error.
        source: KafkaError,
    },
    /// The changelog could not be read.
    #[error(transparent)]
    Read(#[from] ReadError),
}

/// What a reset removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResetReport {
    /// The changelog topic.
    pub topic: String,
    /// State entries (panes, sessions, closing marks) removed.
    pub entries: usize,
    /// Tombstones written (one per stored part).
    pub tombstones: usize,
}

/// Writes a tombstone for every live changelog record of `job`.
pub async fn reset_job(config: &Config, job: &str) -> Result<ResetReport, ResetError> {
    let (topic, partitions) = changelog(config, job).await?;
    let live = live_keys(config, &topic, partitions, |key| key.job().is_some()).await?;
    let mut by_job: BTreeMap<String, Vec<(StateKey, u32)>> = BTreeMap::new();
    for (key, part) in live {
        if let Some((name, _)) = key.job() {
            by_job.entry(name.to_owned()).or_default().push((key, part));
        }
    }
    let Some(doomed) = by_job.remove(job) else {
        let others: Vec<&str> = by_job.keys().map(String::as_str).collect();
        return Err(ResetError::NoState {
            job: job.to_owned(),
            topic,
            others: if others.is_empty() {
                "none".to_owned()
            } else {
                others.join(", ")
            },
        });
    };
    tombstone(config, topic, partitions, doomed).await
}

/// Writes a tombstone for the watermarks of `source` (every source when
/// `None`) and for the closed-through marks of the jobs reading it, and of
/// their backfills' event times; `jobs` names the jobs reading each source.
pub async fn reset_event_time(
    config: &Config,
    source: Option<&str>,
    readers: &BTreeMap<String, BTreeSet<String>>,
) -> Result<ResetReport, ResetError> {
    let (topic, partitions) = changelog(config, "event time").await?;
    let only = source.map(str::to_owned);
    let wanted_source = move |name: &str| only.as_deref().is_none_or(|s| s == name);
    let affected: BTreeSet<String> = readers
        .iter()
        .filter(|(_, sources)| sources.iter().any(|s| wanted_source(s)))
        .map(|(job, _)| job.clone())
        .collect();
    let live = live_keys(config, &topic, partitions, move |key| match key {
        StateKey::Watermark { source, .. }
        | StateKey::SourceWatermark { source, .. }
        | StateKey::BackfillEventTime { source, .. } => wanted_source(source),
        StateKey::Closed { job, .. } => affected.contains(job),
        _ => false,
    })
    .await?;
    tombstone(config, topic, partitions, live.into_iter().collect()).await
}

/// The changelog topic and its partition count; `NoState` for `what` when
/// it does not exist.
async fn changelog(config: &Config, what: &str) -> Result<(String, i32), ResetError> {
    let topic = config.changelog_topic();
    let partitions = crate::admin::partition_counts(config, std::slice::from_ref(&topic))
        .await
        .map_err(kafka("fetching the cluster metadata"))?
        .get(&topic)
        .copied();
    match partitions {
        Some(partitions) => Ok((topic, partitions)),
        None => Err(ResetError::NoState {
            job: what.to_owned(),
            topic,
            others: "none (the changelog topic does not exist)".to_owned(),
        }),
    }
}

fn kafka(context: &'static str) -> impl FnOnce(KafkaError) -> ResetError {
    move |source| ResetError::Kafka { context, source }
}

/// The live record keys `wanted` picks, once every owner recorded in the
/// changelog is fenced.
async fn live_keys(
    config: &Config,
    topic: &str,
    partitions: i32,
    wanted: impl Fn(&StateKey) -> bool + Send + 'static,
) -> Result<BTreeSet<(StateKey, u32)>, ResetError> {
    let is_owner = |key: &StateKey| matches!(key, StateKey::Member { .. });
    let (owners, live): (BTreeSet<_>, BTreeSet<_>) =
        read_live_keys(config, topic, partitions, move |key| {
            is_owner(key) || wanted(key)
        })
        .await?
        .into_iter()
        .partition(|(key, _)| is_owner(key));
    let ids: BTreeSet<String> = owners
        .into_iter()
        .filter_map(|(owner, _)| match owner {
            StateKey::Member {
                transactional_id, ..
            } => Some(transactional_id),
            _ => None,
        })
        .collect();
    crate::sink::transaction::fence_all(&config.client_config(), ids.into_iter().collect())
        .await
        .map_err(kafka("fencing the engine"))?;
    Ok(live)
}

/// The live record keys `wanted` picks.
async fn read_live_keys(
    config: &Config,
    topic: &str,
    partitions: i32,
    wanted: impl Fn(&StateKey) -> bool + Send + 'static,
) -> Result<BTreeSet<(StateKey, u32)>, ResetError> {
    let client = config.client_config();
    let group = config.kafka.group_id.clone();
    let read_topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        let all: Vec<i32> = (0..partitions).collect();
        reader::live_keys(&client, &group, &read_topic, &all, wanted).map_err(ResetError::from)
    })
    .await
    .map_err(|_| kafka("reading the changelog")(KafkaError::Canceled))?
}

/// A `transactional.id` no other reset or engine uses: one whose
/// transaction was aborted never writes again (see `engine::members`).
fn reset_transactional_id(config: &Config) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!("{}-reset-{}", config.kafka.group_id, now.as_millis())
}

/// Writes a tombstone for each of `doomed`, in one transaction.
async fn tombstone(
    config: &Config,
    topic: String,
    partitions: i32,
    doomed: Vec<(StateKey, u32)>,
) -> Result<ResetReport, ResetError> {
    let entries = doomed
        .iter()
        .map(|(key, _)| key)
        .collect::<BTreeSet<_>>()
        .len();
    let producer: FutureProducer = config
        .client_config()
        .set("transactional.id", reset_transactional_id(config))
        .create()
        .map_err(kafka("creating the producer"))?;
    let tombstones: Vec<(Vec<u8>, i32)> = doomed
        .iter()
        .map(|(key, part)| (key.encode(*part), key.partition(partitions)))
        .collect();
    let txn_producer = producer.clone();
    tokio::task::spawn_blocking(move || {
        txn_producer.init_transactions(TIMEOUT)?;
        txn_producer.begin_transaction()
    })
    .await
    .map_err(|_| kafka("starting the transaction")(KafkaError::Canceled))?
    .map_err(kafka("starting the transaction"))?;
    let sends = tombstones.iter().map(|(key, partition)| {
        let record = FutureRecord::<Vec<u8>, Vec<u8>>::to(&topic)
            .key(key)
            .partition(*partition);
        producer.send(record, TIMEOUT)
    });
    for sent in futures::future::join_all(sends).await {
        sent.map_err(|(e, _)| kafka("writing tombstones")(e))?;
    }
    tokio::task::spawn_blocking(move || producer.commit_transaction(TIMEOUT))
        .await
        .map_err(|_| kafka("committing the tombstones")(KafkaError::Canceled))?
        .map_err(kafka("committing the tombstones"))?;
    Ok(ResetReport {
        topic,
        entries,
        tombstones: doomed.len(),
    })
}
