//! Putting the changelog back into the jobs, the watermarks and the kept
//! tables (by default the complaint tables): each key's final value, as
//! it is read ([`crate::state::reader::replay`]), so that a restore holds
//! the restored state and not the changelog besides.
//!
//! State of a job that no longer exists, or whose query changed since (a
//! different fingerprint), is not restored: it is deleted from the
//! changelog in the first epoch, and a log line says so.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::PoisonError;

use arrow::array::RecordBatch;
use arrow::compute::concat_batches;

use super::event_time::EventTime;
use crate::config::TopicsConfig;
use crate::job::{Job, WindowedJob};
use crate::lookup::Lookups;
use crate::schema::Source;
use crate::sink::OutRecord;
use crate::state::codec;
use crate::state::key::{SESSION_KEY_VERSION, StateKey, key_text, session_key};
use crate::state::reader::{Final, ReadError, RestoredValue};
use crate::state::value;
use crate::state::writer::ChangelogWriter;
use crate::window::panes::StateBatch;

/// What a restore leaves for the engine to do.
#[derive(Debug, Default)]
pub(super) struct Restore {
    /// Tombstones for state nobody restores (removed or changed jobs).
    pub stale: Vec<OutRecord>,
    /// Next offset per table-source (topic, partition) dead-lettered
    /// before the restart.
    pub lookup_positions: BTreeMap<(String, i32), i64>,
    /// Where each job's backfill stood, by job name.
    pub backfills: BTreeMap<String, BackfillState>,
}

/// A job's backfill as the changelog holds it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct BackfillState {
    /// Next offset to read per source partition, while it runs.
    pub offsets: BTreeMap<(Source, i32), i64>,
    /// Largest event time read per source partition, while it runs.
    pub event_times: BTreeMap<(Source, i32), i64>,
    /// When it caught up (ms since the epoch): the job runs live.
    pub done: Option<i64>,
}

impl BackfillState {
    /// Whether a backfill was running when the state was saved.
    pub fn running(&self) -> bool {
        self.done.is_none() && !self.offsets.is_empty()
    }
}

/// Puts the changelog's changes back, one at a time as they are read:
/// state into the jobs, watermarks into event time, kept tables into the
/// lookups; every live key is registered with the changelog writer.
pub(super) struct Restorer {
    /// The jobs whose state is put back.
    pub jobs: Vec<Job>,
    /// The watermarks.
    pub event_time: EventTime,
    /// The writer, which learns every live key.
    pub changelog: ChangelogWriter,
    lookups: Lookups,
    topics: TopicsConfig,
    outcome: Restore,
    /// Live keys nobody restores (removed or changed jobs).
    stale: Vec<StateKey>,
    /// Jobs whose query changed, logged once each.
    changed: BTreeSet<(String, String)>,
    /// Jobs whose saved resume position was dropped, logged once each.
    resume_dropped: BTreeSet<String>,
}

impl Restorer {
    /// A restorer into `jobs`, `event_time` and `lookups`.
    pub(super) fn new(
        jobs: Vec<Job>,
        event_time: EventTime,
        lookups: Lookups,
        changelog: ChangelogWriter,
        topics: TopicsConfig,
    ) -> Self {
        Self {
            jobs,
            event_time,
            changelog,
            lookups,
            topics,
            outcome: Restore::default(),
            stale: Vec::new(),
            changed: BTreeSet::new(),
            resume_dropped: BTreeSet::new(),
        }
    }

    /// Puts back one key's final value read back.
    pub(super) fn apply(&mut self, (key, value): Final) -> Result<(), ReadError> {
        self.changelog
            .restored(key.clone(), value.value.len(), value.parts);
        if !self.put(&key, &value)? {
            self.stale.push(key);
        }
        Ok(())
    }

    /// Ends the restore: what it leaves for the engine, the stale keys
    /// tombstoned.
    pub(super) fn finish(mut self) -> (Vec<Job>, EventTime, ChangelogWriter, Restore) {
        for job in &mut self.jobs {
            if let Some(windowed) = job.windowed_mut() {
                windowed.finish_restore();
            }
        }
        for key in std::mem::take(&mut self.stale) {
            self.outcome.stale.extend(self.changelog.delete(&key));
        }
        (self.jobs, self.event_time, self.changelog, self.outcome)
    }

    /// Logs once per job that had a saved place to resume from (it was
    /// stopped after a panic, or backfilling) if its query changed since:
    /// the new query starts where the group is, and nothing reads the
    /// records in between for it.
    fn warn_resume_dropped(&mut self, key: &StateKey) {
        let Some((name, fingerprint)) = key.job() else {
            return;
        };
        let renamed = self
            .jobs
            .iter()
            .any(|j| j.name == name && j.fingerprint != fingerprint);
        if renamed && self.resume_dropped.insert(name.to_owned()) {
            tracing::warn!(
                job = name,
                stored = fingerprint,
                "the job was stopped or backfilling when cxpulse last ran, and its query changed since: the new query starts live, and the records it had not read yet are not read for it (run `cxpulse backfill` to rebuild it)"
            );
        }
    }

    /// Puts one value back; `false` if nothing restores it, or if it is
    /// restored but kept under another key from now on (the key is then
    /// deleted).
    fn put(&mut self, key: &StateKey, restored: &RestoredValue) -> Result<bool, ReadError> {
        Ok(match key {
            StateKey::Pane { .. }
            | StateKey::Session { .. }
            | StateKey::SessionPart { .. }
            | StateKey::Closed { .. } => match job_of(&mut self.jobs, key, &mut self.changed) {
                Some(windowed) => restore_job_state(windowed, key, restored)?,
                None => false,
            },
            StateKey::BackfillOffset {
                source, partition, ..
            }
            | StateKey::BackfillEventTime {
                source, partition, ..
            } => match (Source::named(source), current_job(&self.jobs, key)) {
                (Some(kind), Some(job)) => {
                    let state = self.outcome.backfills.entry(job).or_default();
                    if matches!(key, StateKey::BackfillOffset { .. }) {
                        let next = read_int(restored, "next_offset")?;
                        state.offsets.insert((kind, *partition), next);
                    } else {
                        let t = read_int(restored, "max_event_time")?;
                        state.event_times.insert((kind, *partition), t);
                    }
                    true
                }
                _ => {
                    self.warn_resume_dropped(key);
                    false
                }
            },
            StateKey::BackfillDone { .. } => match current_job(&self.jobs, key) {
                Some(job) => {
                    let at = read_int(restored, "finished_at")?;
                    self.outcome.backfills.entry(job).or_default().done = Some(at);
                    true
                }
                None => false,
            },
            StateKey::Watermark { source, partition } => match Source::named(source) {
                Some(kind) => {
                    let t = read_int(restored, "max_event_time")?;
                    self.event_time.restore_partition(kind, *partition, t);
                    true
                }
                None => false,
            },
            StateKey::SourceWatermark { source } => match Source::named(source) {
                Some(kind) => {
                    self.event_time
                        .restore_source(kind, read_int(restored, "watermark")?);
                    true
                }
                None => false,
            },
            StateKey::Kept { source, key } => {
                match Source::named(source).and_then(|s| self.lookups.kept(s)) {
                    Some(table) => {
                        let events = frame(restored, 0)?;
                        let long_key = codec::kept_long_key(&restored.value)
                            .map_err(|reason| corrupt(restored, reason))?;
                        let mut table = table.lock().unwrap_or_else(PoisonError::into_inner);
                        let full = long_key.as_deref().unwrap_or(key);
                        table
                            .restore(full, &events)
                            .map_err(|e| corrupt(restored, e.to_string()))?;
                        // An earlier version wrote a long key whole: the
                        // key is written again as written now, and this
                        // record goes.
                        let current = long_key.is_some() || key_text(key) == *key;
                        if !current {
                            table.rewrite(key);
                        }
                        current
                    }
                    None => false,
                }
            }
            StateKey::LookupPosition { topic, partition } => {
                match self.topics.source_of(topic).filter(|s| !s.is_stream()) {
                    Some(_) => {
                        let next = read_int(restored, "next_offset")?;
                        self.outcome
                            .lookup_positions
                            .insert((topic.clone(), *partition), next);
                        true
                    }
                    None => false,
                }
            }
            StateKey::Checkpoint { .. } => true,
        })
    }
}

/// The windowed job `key` belongs to, if it exists with the same
/// fingerprint; logs once per job whose query changed.
fn job_of<'a>(
    jobs: &'a mut [Job],
    key: &StateKey,
    changed: &mut BTreeSet<(String, String)>,
) -> Option<&'a mut WindowedJob> {
    let (name, fingerprint) = key.job()?;
    let job = jobs.iter_mut().find(|j| j.name == name)?;
    if job.fingerprint != fingerprint {
        if changed.insert((name.to_owned(), fingerprint.to_owned())) {
            tracing::warn!(
                job = name,
                stored = fingerprint,
                current = %job.fingerprint,
                "the job's query changed since its state was saved: it starts with empty state, and the old state is removed"
            );
        }
        return None;
    }
    job.windowed_mut()
}

/// The name of the job `key` belongs to, if it exists with the same
/// fingerprint.
fn current_job(jobs: &[Job], key: &StateKey) -> Option<String> {
    let (name, fingerprint) = key.job()?;
    jobs.iter()
        .any(|j| j.name == name && j.fingerprint == fingerprint)
        .then(|| name.to_owned())
}

/// Restores one record of a windowed job; `false` if it does not fit the
/// job (a pane record for a SESSION job cannot have this fingerprint).
fn restore_job_state(
    windowed: &mut WindowedJob,
    key: &StateKey,
    restored: &RestoredValue,
) -> Result<bool, ReadError> {
    match key {
        StateKey::Closed { .. } => {
            windowed.restore_closed_through(read_int(restored, "closed_through")?);
            Ok(true)
        }
        StateKey::Pane {
            source,
            partition,
            pane_start,
            seq,
            ..
        } => {
            let Some(kind) = Source::named(source) else {
                return Ok(false);
            };
            let batch = frame(restored, 0)?;
            if batch.schema() != windowed.state_schema() {
                return Err(corrupt(
                    restored,
                    "its rows do not have the job's state schema".into(),
                ));
            }
            windowed
                .restore_pane(
                    (*pane_start, (kind, *partition)),
                    StateBatch { seq: *seq, batch },
                )
                .map(|()| true)
                .map_err(|e| corrupt(restored, e.to_string()))
        }
        StateKey::Session {
            key: stored,
            version,
            ..
        } => {
            let session = codec::decode_session(&restored.value, &windowed.state_schema())
                .map_err(|reason| corrupt(restored, reason))?;
            let current = written_now(*version, stored, &session.key);
            let (key, start) = (session.key.clone(), session.start);
            windowed
                .restore_session(session.key, session.start, session.end, session.batches)
                .map_err(|e| corrupt(restored, e.to_string()))?;
            if !current {
                windowed.rewrite_session(key, start);
            }
            Ok(current)
        }
        StateKey::SessionPart {
            seq,
            key: stored,
            version,
            ..
        } => {
            let part = codec::decode_session(&restored.value, &windowed.state_schema())
                .map_err(|reason| corrupt(restored, reason))?;
            let batch = concat_batches(&windowed.state_schema(), &part.batches)
                .map_err(|e| corrupt(restored, e.to_string()))?;
            let current = written_now(*version, stored, &part.key);
            let (key, start) = (part.key.clone(), part.start);
            windowed
                .restore_session_part(part.key, part.start, StateBatch { seq: *seq, batch })
                .map_err(|e| corrupt(restored, e.to_string()))?;
            if !current {
                windowed.rewrite_session(key, start);
            }
            Ok(current)
        }
        _ => Ok(false),
    }
}

/// Whether a session record's key is written as this release writes it.
/// One written by an earlier release (DataFusion's debug text of the key,
/// or a long key whole) is restored, deleted, and its session written
/// again under the current key at the next commit.
fn written_now(version: u32, stored: &str, key: &datafusion::common::ScalarValue) -> bool {
    version == SESSION_KEY_VERSION && stored == session_key(key)
}

/// Frame `index` of a value, as one batch.
fn frame(restored: &RestoredValue, index: usize) -> Result<RecordBatch, ReadError> {
    let frames = value::decode(&restored.value).map_err(|r| corrupt(restored, r))?;
    let (schema, batches) = frames
        .into_iter()
        .nth(index)
        .ok_or_else(|| corrupt(restored, format!("no frame {index}")))?;
    concat_batches(&schema, &batches).map_err(|e| corrupt(restored, e.to_string()))
}

fn read_int(restored: &RestoredValue, name: &str) -> Result<i64, ReadError> {
    value::read_int(&restored.value, name).map_err(|r| corrupt(restored, r))
}

fn corrupt(restored: &RestoredValue, reason: String) -> ReadError {
    ReadError::Corrupt {
        location: restored.location.clone(),
        reason,
    }
}
