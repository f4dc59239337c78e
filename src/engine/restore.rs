//! Putting the changelog back into the jobs, the watermarks and the kept
//! tables (by default the complaint tables): each key's final value, as
//! it is read ([`crate::state::reader::replay`]), so that a restore holds
//! the restored state and not the changelog besides.
//!
//! State of a job that no longer exists, or whose query changed since (a
//! different fingerprint), is not restored: it is deleted from the
//! changelog in the first epoch, and a log line says so.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, PoisonError};

use arrow::compute::concat_batches;
use datafusion::common::ScalarValue;

use super::event_time::EventTime;
use crate::config::TopicsConfig;
use crate::job::{Job, WindowedJob};
use crate::lookup::Lookups;
use crate::lookup::kept::KeptTable;
use crate::schema::{Source, Sources};
use crate::sink::OutRecord;
use crate::state::codec::SessionValue;
use crate::state::key::{SESSION_KEY_VERSION, StateKey, key_text, session_key};
use crate::state::reader::{Final, ReadError, RestoredValue};
use crate::state::record::{StateRecord, StateValue};
use crate::state::writer::ChangelogWriter;
use crate::window::panes::StateBatch;
use crate::window::store::Restored;

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
    /// The instances that owned this instance's changelog partitions, as
    /// each wrote when it started.
    pub members: Vec<Member>,
    /// The marks stage 2 of each shuffled job had read, by job name:
    /// (source, partition, mark, idle).
    pub shuffle_marks: BTreeMap<String, Vec<crate::shuffle::ReadMark>>,
}

/// An instance that owned a changelog partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Member {
    /// Its `transactional.id`.
    pub transactional_id: String,
    /// How many instances it was one of.
    pub instances: i32,
    /// Its `cluster.generation`.
    pub generation: i64,
    /// Its record's key.
    pub key: StateKey,
}

/// Integer marks restored per changelog partition, or for every partition
/// (records of releases before scale-out).
#[derive(Debug, Default)]
struct Marks {
    everywhere: Option<i64>,
    by_partition: BTreeMap<i32, i64>,
}

impl Marks {
    fn add(&mut self, partition: Option<i32>, value: i64) {
        match partition {
            Some(p) => {
                self.by_partition.insert(p, value);
            }
            None => self.everywhere = Some(value),
        }
    }

    /// The least mark over the `owned` changelog partitions: per-partition
    /// marks replace one for every partition. `None` when an owned
    /// partition has no mark while others do: its owner had none (it had
    /// not seen every partition it read deliver yet), so the marks of the
    /// others say nothing of its partitions.
    fn least_in(&self, owned: &[i32]) -> Option<i64> {
        if self.by_partition.is_empty() {
            return self.everywhere;
        }
        owned
            .iter()
            .map(|p| self.by_partition.get(p).copied())
            .min()
            .flatten()
    }
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
    /// The changelog partitions whose owner had caught up and handed the
    /// job over to the live stream. With several instances, changelog
    /// partition p holds event partition p's state.
    pub done_in: BTreeSet<i32>,
}

impl BackfillState {
    /// Whether a backfill was running when the state was saved, on one
    /// instance at least: after a rescale, the owners of some partitions
    /// may have caught up and others not.
    pub fn running(&self) -> bool {
        !self.offsets.is_empty()
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
    /// How far each job's windows closed, by job name.
    closed: BTreeMap<String, Marks>,
    /// Each source's watermark, as the owners of its partitions had it.
    source_watermarks: BTreeMap<Source, Marks>,
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
            closed: BTreeMap::new(),
            source_watermarks: BTreeMap::new(),
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
            let marks = self.closed.remove(&job.name);
            if let Some(windowed) = job.windowed_mut() {
                match marks {
                    Some(m) if !m.by_partition.is_empty() => {
                        // An owned partition without a record: its owner
                        // never closed a window (it had no watermark yet),
                        // so its state's windows are all still to fire.
                        let closed = self
                            .changelog
                            .owned()
                            .iter()
                            .map(|p| (*p, m.by_partition.get(p).copied()))
                            .collect();
                        windowed.restore_closed_partitions(&closed);
                    }
                    Some(Marks {
                        everywhere: Some(closed),
                        ..
                    }) => windowed.restore_closed_through(closed),
                    _ => {}
                }
                windowed.finish_restore();
            }
        }
        for (source, marks) in std::mem::take(&mut self.source_watermarks) {
            if let Some(watermark) = marks.least_in(self.changelog.owned()) {
                self.event_time.restore_source(source, watermark);
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
            // Written again per partition by the first commit when read
            // in the form of earlier releases (for every partition).
            StateKey::Closed { job, partition, .. } => {
                match job_of(&mut self.jobs, key, &mut self.changed) {
                    Some(_) => {
                        let closed = int(key, restored)?;
                        self.closed
                            .entry(job.clone())
                            .or_default()
                            .add(*partition, closed);
                        partition.is_some()
                    }
                    None => false,
                }
            }
            StateKey::Pane { .. } | StateKey::Session { .. } | StateKey::SessionPart { .. } => {
                match job_of(&mut self.jobs, key, &mut self.changed) {
                    Some(windowed) => {
                        restore_job_state(windowed, key, restored, self.lookups.sources())?
                    }
                    None => false,
                }
            }
            StateKey::BackfillOffset {
                source, partition, ..
            }
            | StateKey::BackfillEventTime {
                source, partition, ..
            } => match (
                self.lookups.sources().named(source),
                current_job(&self.jobs, key),
            ) {
                (Some(kind), Some(job)) => {
                    let state = self.outcome.backfills.entry(job).or_default();
                    if matches!(key, StateKey::BackfillOffset { .. }) {
                        let next = int(key, restored)?;
                        state.offsets.insert((kind, *partition), next);
                    } else {
                        let t = int(key, restored)?;
                        state.event_times.insert((kind, *partition), t);
                    }
                    true
                }
                _ => {
                    self.warn_resume_dropped(key);
                    false
                }
            },
            StateKey::BackfillDone { partition, .. } => match current_job(&self.jobs, key) {
                Some(job) => {
                    let at = int(key, restored)?;
                    let state = self.outcome.backfills.entry(job).or_default();
                    state.done = Some(state.done.map_or(at, |d| d.max(at)));
                    state.done_in.extend(*partition);
                    partition.is_some()
                }
                None => false,
            },
            StateKey::Watermark { source, partition } => match self.lookups.sources().named(source)
            {
                Some(kind) => {
                    let t = int(key, restored)?;
                    self.event_time.restore_partition(kind, *partition, t);
                    true
                }
                None => false,
            },
            StateKey::SourceWatermark { source, partition } => {
                match self.lookups.sources().named(source) {
                    Some(kind) => {
                        let watermark = int(key, restored)?;
                        self.source_watermarks
                            .entry(kind)
                            .or_default()
                            .add(*partition, watermark);
                        partition.is_some()
                    }
                    None => false,
                }
            }
            StateKey::KeptCopy {
                partition,
                source,
                key: kept_key,
                ..
            } => {
                let source = self.lookups.sources().named(source);
                let copy = job_of(&mut self.jobs, key, &mut self.changed)
                    .zip(source)
                    .and_then(|(windowed, source)| windowed.kept_copies().get(&source).cloned());
                match copy {
                    Some(copy) => restore_kept(&copy, key, kept_key, Some(*partition), restored)?,
                    None => false,
                }
            }
            StateKey::Kept {
                source,
                key: kept_key,
                partition,
            } => {
                match self
                    .lookups
                    .sources()
                    .named(source)
                    .and_then(|s| self.lookups.kept(s))
                {
                    Some(table) => restore_kept(table, key, kept_key, *partition, restored)?,
                    None => false,
                }
            }
            StateKey::LookupPosition {
                topic, partition, ..
            } => {
                match self
                    .topics
                    .source_of(self.lookups.sources(), topic)
                    .filter(|s| !s.is_stream())
                {
                    Some(_) => {
                        // The furthest, whichever instance wrote it.
                        let next = int(key, restored)?;
                        let at = (topic.clone(), *partition);
                        let position = self.outcome.lookup_positions.entry(at).or_insert(next);
                        *position = (*position).max(next);
                        true
                    }
                    None => false,
                }
            }
            StateKey::ShuffleMark {
                partition,
                source,
                source_partition,
                ..
            } => match current_job(&self.jobs, key) {
                Some(job) => {
                    let (mark, idle) = crate::shuffle::mark_from_int(int(key, restored)?);
                    self.outcome.shuffle_marks.entry(job).or_default().push((
                        *partition,
                        source.clone(),
                        *source_partition,
                        mark,
                        idle,
                    ));
                    true
                }
                None => false,
            },
            StateKey::Member {
                transactional_id,
                instances,
                ..
            } => {
                self.outcome.members.push(Member {
                    transactional_id: transactional_id.clone(),
                    instances: *instances,
                    generation: int(key, restored)?,
                    key: key.clone(),
                });
                true
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
    sources: Sources,
) -> Result<bool, ReadError> {
    match key {
        StateKey::Pane {
            source,
            partition,
            pane_start,
            seq,
            ..
        } => {
            let Some(kind) = sources.named(source) else {
                return Ok(false);
            };
            let StateValue::Rows(batch) = decoded(key, restored)? else {
                return Err(corrupt(restored, "a pane record without rows".into()));
            };
            if batch.schema() != windowed.state_schema() {
                return Err(corrupt(
                    restored,
                    "its rows do not have the job's state schema".into(),
                ));
            }
            windowed
                .restore(Restored::Pane(
                    (*pane_start, (kind, *partition)),
                    StateBatch { seq: *seq, batch },
                ))
                .map(|()| true)
                .map_err(|e| corrupt(restored, e.to_string()))
        }
        StateKey::Session {
            key: stored,
            version,
            partition: home,
            ..
        } => {
            let session = session_of(windowed, key, restored)?;
            let rewrite = (!written_now(*version, stored, &session.key))
                .then(|| (session.key.clone(), session.start));
            let piece = Restored::Session {
                key: session.key,
                start: session.start,
                end: session.end,
                batches: session.batches,
                home: *home,
            };
            put_session(windowed, piece, rewrite, restored)
        }
        StateKey::SessionPart {
            seq,
            key: stored,
            version,
            partition: home,
            ..
        } => {
            let part = session_of(windowed, key, restored)?;
            let batch = concat_batches(&windowed.state_schema(), &part.batches)
                .map_err(|e| corrupt(restored, e.to_string()))?;
            let rewrite =
                (!written_now(*version, stored, &part.key)).then(|| (part.key.clone(), part.start));
            let piece = Restored::SessionPart {
                key: part.key,
                start: part.start,
                part: StateBatch { seq: *seq, batch },
                home: *home,
            };
            put_session(windowed, piece, rewrite, restored)
        }
        _ => Ok(false),
    }
}

/// Puts a session (or a part of one) back. One whose record was keyed as
/// an earlier release keyed it (`rewrite`: its key and start) is written
/// again under today's key, and `false` says its record goes.
fn put_session(
    windowed: &mut WindowedJob,
    piece: Restored,
    rewrite: Option<(ScalarValue, i64)>,
    restored: &RestoredValue,
) -> Result<bool, ReadError> {
    let current = rewrite.is_none();
    let rewrite = rewrite.map(|(key, start)| Restored::Rewrite { key, start });
    for piece in std::iter::once(piece).chain(rewrite) {
        windowed
            .restore(piece)
            .map_err(|e| corrupt(restored, e.to_string()))?;
    }
    Ok(current)
}

/// Whether a session record's key is written as this release writes it.
/// One written by an earlier release (DataFusion's debug text of the key,
/// or a long key whole) is restored, deleted, and its session written
/// again under the current key at the next commit.
fn written_now(version: u32, stored: &str, key: &ScalarValue) -> bool {
    version == SESSION_KEY_VERSION && stored == session_key(key)
}

/// Puts one key's events read back into a kept table (or a job's copy of
/// one), kept in changelog partition `home`; `false` if an earlier version
/// wrote a long key whole: the key is written again as written now, and
/// this record goes.
fn restore_kept(
    table: &Mutex<KeptTable>,
    key: &StateKey,
    kept_key: &str,
    home: Option<i32>,
    restored: &RestoredValue,
) -> Result<bool, ReadError> {
    let StateValue::Kept { events, long_key } = decoded(key, restored)? else {
        return Err(corrupt(restored, "a kept record without events".into()));
    };
    let mut table = table.lock().unwrap_or_else(PoisonError::into_inner);
    let full = long_key.as_deref().unwrap_or(kept_key);
    table
        .restore(full, &events, home)
        .map_err(|e| corrupt(restored, e.to_string()))?;
    let current = long_key.is_some() || key_text(kept_key) == kept_key;
    if !current {
        table.rewrite(kept_key);
    }
    Ok(current)
}

/// The value of `key`'s record, decoded.
fn decoded(key: &StateKey, restored: &RestoredValue) -> Result<StateValue, ReadError> {
    StateRecord::decode(key.clone(), &restored.value)
        .map(|record| record.value)
        .map_err(|e| corrupt(restored, e.to_string()))
}

/// The integer of `key`'s record.
fn int(key: &StateKey, restored: &RestoredValue) -> Result<i64, ReadError> {
    match decoded(key, restored)? {
        StateValue::Int(v) => Ok(v),
        _ => Err(corrupt(restored, "not an integer value".into())),
    }
}

/// The session of `key`'s record, its rows in the job's state schema.
fn session_of(
    windowed: &WindowedJob,
    key: &StateKey,
    restored: &RestoredValue,
) -> Result<SessionValue, ReadError> {
    match decoded(key, restored)? {
        StateValue::Session { session, schema } if schema == windowed.state_schema() => Ok(session),
        StateValue::Session { .. } => Err(corrupt(
            restored,
            "its rows do not have the job's state schema".into(),
        )),
        _ => Err(corrupt(restored, "not a session value".into())),
    }
}

fn corrupt(restored: &RestoredValue, reason: String) -> ReadError {
    ReadError::Corrupt {
        location: restored.location.clone(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marks(by_partition: &[(i32, i64)]) -> Marks {
        let mut marks = Marks::default();
        for &(p, v) in by_partition {
            marks.add(Some(p), v);
        }
        marks
    }

    #[test]
    fn the_least_mark_is_over_the_owned_partitions_only() {
        let marks = marks(&[(0, 5_000), (2, 7_000), (4, 3_000)]);
        assert_eq!(marks.least_in(&[0, 2]), Some(5_000));
        assert_eq!(marks.least_in(&[2, 4]), Some(3_000));
    }

    #[test]
    fn an_owned_partition_without_a_mark_leaves_none_restored() {
        // Partition 4's owner had no watermark yet: 5 000 from partition 0
        // would judge its older events late.
        let marks = marks(&[(0, 5_000), (2, 7_000)]);
        assert_eq!(marks.least_in(&[0, 2, 4]), None);
    }

    #[test]
    fn a_mark_for_every_partition_serves_every_owner() {
        let mut marks = Marks::default();
        marks.add(None, 9_000);
        assert_eq!(marks.least_in(&[1, 3]), Some(9_000));
        marks.add(Some(1), 4_000);
        assert_eq!(marks.least_in(&[1]), Some(4_000));
    }
}
