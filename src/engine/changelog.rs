//! What the engine writes to the changelog at each commit: the state
//! changes of the epoch, or, for a checkpoint, all live state.

use std::sync::PoisonError;

use super::{Engine, EngineError};
use crate::lookup::kept::KeptTable;
use crate::sink::OutRecord;
use crate::state::key::{StateKey, key_text};
use crate::state::record::{StateRecord, StateValue, job_changes};
use crate::state::writer::ChangelogWriter;

/// Whether to write what changed in the epoch, or everything that lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Scope {
    /// The epoch's changes.
    Changes,
    /// All live state: a checkpoint.
    Everything,
}

impl Engine {
    /// Changelog records for `scope`, plus those queued since the last
    /// commit (tombstones of removed jobs).
    pub(super) fn state_records(&mut self, scope: Scope) -> Result<Vec<OutRecord>, EngineError> {
        let mut records = self.epoch.take_deferred_state();
        if scope == Scope::Everything {
            // A restore reads from the last checkpoint: it must name the
            // owner, or the next start would not know whom to fence.
            let (id, instances) = (&self.transactional_id, self.config.cluster().instances());
            let key = |partition| StateKey::Member {
                transactional_id: id.clone(),
                instances,
                partition,
            };
            records.extend(
                self.changelog
                    .put_int_in_owned(key, self.config.cluster.generation),
            );
        }
        // What stage 2 of each shuffled job has read of the marks.
        let marks: std::collections::BTreeMap<String, _> = self
            .jobs
            .live()
            .iter()
            .filter_map(|r| Some((r.job.name.clone(), r.shuffle.as_ref()?.marks.all())))
            .collect();
        let backfilling = self.backfills.iter_mut().map(|b| &mut b.job_mut().job);
        for job in self.jobs.jobs_mut().chain(backfilling) {
            let (name, fingerprint) = (job.name.clone(), job.fingerprint.clone());
            let Some(windowed) = job.windowed_mut() else {
                continue;
            };
            let changes = windowed.drain_changes();
            let changes = match scope {
                Scope::Changes => changes,
                Scope::Everything => windowed.contents(),
            };
            let schema = windowed.state_schema();
            for change in job_changes(&name, &fingerprint, &schema, changes) {
                records.extend(self.changelog.apply(change)?);
            }
            if let Some(read) = marks.get(&name) {
                for (partition, source, source_partition, mark, idle) in read.clone() {
                    let key = StateKey::ShuffleMark {
                        job: name.clone(),
                        fingerprint: fingerprint.clone(),
                        partition,
                        source,
                        source_partition,
                    };
                    records.extend(
                        self.changelog
                            .put_int(key, crate::shuffle::mark_as_int(mark, idle)),
                    );
                }
            }
            for (source, copy) in windowed.kept_copies().clone() {
                let kept = |key: String, home: Option<i32>| StateKey::KeptCopy {
                    job: name.clone(),
                    fingerprint: fingerprint.clone(),
                    partition: home.unwrap_or_default(),
                    source: source.name().to_owned(),
                    key,
                };
                let mut copy = copy.lock().unwrap_or_else(PoisonError::into_inner);
                records.extend(kept_records(&mut self.changelog, &mut copy, scope, kept)?);
            }
            if let Some(closed) = windowed.closed_through() {
                let key = |partition| StateKey::Closed {
                    job: name.clone(),
                    fingerprint: fingerprint.clone(),
                    partition: Some(partition),
                };
                records.extend(self.changelog.put_int_in_owned(key, closed));
            }
        }
        records.extend(self.backfill_records());
        records.extend(self.stopped_records());
        for ((kind, partition), t) in self.event_time.partition_times() {
            let key = StateKey::Watermark {
                source: kind.name().to_owned(),
                partition,
            };
            records.extend(self.changelog.put_int(key, t));
        }
        for (kind, watermark) in self.event_time.source_watermarks() {
            let key = |partition| StateKey::SourceWatermark {
                source: kind.name().to_owned(),
                partition: Some(partition),
            };
            records.extend(self.changelog.put_int_in_owned(key, watermark));
        }
        // Each key of a kept table is kept in the changelog partition of
        // its events' source partition.
        for (source, table) in self.lookups.all_kept() {
            let kept = |key: String, home: Option<i32>| StateKey::Kept {
                source: source.name().to_owned(),
                key,
                partition: home,
            };
            let mut table = table.lock().unwrap_or_else(PoisonError::into_inner);
            records.extend(kept_records(&mut self.changelog, &mut table, scope, kept)?);
        }
        // The table sources' dead letters are instance 0's to send.
        let cluster = self.config.cluster();
        let home = (!cluster.is_single()).then_some(0);
        let positions = match cluster.index() {
            0 => self.inputs.lookup_positions().iter(),
            _ => Default::default(),
        };
        for ((topic, partition), &next) in positions {
            let key = StateKey::LookupPosition {
                topic: topic.clone(),
                partition: *partition,
                home,
            };
            records.extend(self.changelog.put_int(key, next));
        }
        Ok(records)
    }

    /// Queues tombstones for every record of job `name` stored under
    /// `fingerprint` (a job removed, or restarted by a changed query).
    pub(super) fn forget_job_state(&mut self, name: &str, fingerprint: &str) {
        let records = self
            .changelog
            .delete_where(|key| key.job() == Some((name, fingerprint)));
        self.epoch.defer_state(records);
    }
}

/// The records of a kept table's keys (`key` makes a key's state key
/// from its text and home): those changed, or all for a checkpoint; a
/// forgotten key's is a tombstone.
fn kept_records(
    changelog: &mut ChangelogWriter,
    table: &mut KeptTable,
    scope: Scope,
    key: impl Fn(String, Option<i32>) -> StateKey,
) -> Result<Vec<OutRecord>, EngineError> {
    let changed = table.drain_changes();
    let keys = match scope {
        Scope::Changes => changed,
        Scope::Everything => table.keys(),
    };
    let mut records = Vec::new();
    for (full, home) in keys {
        let text = key_text(&full);
        let long_key = (text != full).then(|| full.clone());
        let state = key(text, home);
        match table.events_of(&full) {
            Some(events) => records.extend(changelog.put(StateRecord {
                key: state,
                value: StateValue::Kept {
                    events: events?,
                    long_key,
                },
            })?),
            None => records.extend(changelog.delete(&state)),
        }
    }
    Ok(records)
}
