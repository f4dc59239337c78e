//! What the engine writes to the changelog at each commit: the state
//! changes of the epoch, or, for a checkpoint, all live state.

use std::sync::PoisonError;

use super::{Engine, EngineError};
use crate::job::windowed::StateChanges;
use crate::sink::OutRecord;
use crate::state::codec;
use crate::state::key::{SESSION_KEY_VERSION, StateKey, key_text, session_key};
use crate::state::writer::ChangelogWriter;
use crate::window::panes::PaneChange;
use crate::window::sessions::SessionChange;
use datafusion::common::ScalarValue;

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
        let mut records = std::mem::take(&mut self.pending_state);
        let live = self.jobs.iter_mut().map(|r| &mut r.job);
        let backfilling = self
            .backfills
            .iter_mut()
            .flat_map(|b| b.jobs.iter_mut())
            .map(|r| &mut r.job);
        let stopped = self.stopped.iter_mut().map(|s| &mut s.job);
        for job in live.chain(backfilling).chain(stopped) {
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
            records.extend(job_records(
                &mut self.changelog,
                &name,
                &fingerprint,
                &schema,
                changes,
            )?);
            if let Some(closed) = windowed.closed_through() {
                let key = StateKey::Closed {
                    job: name,
                    fingerprint,
                };
                records.extend(self.changelog.put_int(key, "closed_through", closed));
            }
        }
        records.extend(self.backfill_records());
        records.extend(self.stopped_records());
        for ((kind, partition), t) in self.event_time.partition_times() {
            let key = StateKey::Watermark {
                source: kind.name().to_owned(),
                partition,
            };
            records.extend(self.changelog.put_int(key, "max_event_time", t));
        }
        for (kind, watermark) in self.event_time.source_watermarks() {
            let key = StateKey::SourceWatermark {
                source: kind.name().to_owned(),
            };
            records.extend(self.changelog.put_int(key, "watermark", watermark));
        }
        for (source, table) in self.lookups.all_kept() {
            let mut table = table.lock().unwrap_or_else(PoisonError::into_inner);
            let changed = table.drain_changes();
            let keys = match scope {
                Scope::Changes => changed.into_iter().collect(),
                Scope::Everything => table.keys(),
            };
            for key in keys {
                let events = table.events_of(&key);
                let text = key_text(&key);
                let long_key = (text != key).then_some(key.as_str());
                let state = StateKey::Kept {
                    source: source.name().to_owned(),
                    key: text.clone(),
                };
                match events {
                    Some(events) => {
                        let value = codec::kept_events(&events?, long_key)?;
                        records.extend(self.changelog.put(state, &value));
                    }
                    None => records.extend(self.changelog.delete(&state)),
                }
            }
        }
        for ((topic, partition), &next) in &self.lookup_positions {
            let key = StateKey::LookupPosition {
                topic: topic.clone(),
                partition: *partition,
            };
            records.extend(self.changelog.put_int(key, "next_offset", next));
        }
        Ok(records)
    }

    /// Queues tombstones for every record of job `name` stored under
    /// `fingerprint` (a job removed, or restarted by a changed query).
    pub(super) fn forget_job_state(&mut self, name: &str, fingerprint: &str) {
        let records = self
            .changelog
            .delete_where(|key| key.job() == Some((name, fingerprint)));
        self.pending_state.extend(records);
    }
}

/// Records for one job's state changes.
fn job_records(
    changelog: &mut ChangelogWriter,
    job: &str,
    fingerprint: &str,
    schema: &arrow::datatypes::SchemaRef,
    changes: StateChanges,
) -> Result<Vec<OutRecord>, EngineError> {
    let mut records = Vec::new();
    match changes {
        StateChanges::Panes(changes) => {
            for change in changes {
                let (pane, seq, batch) = match change {
                    PaneChange::Put { pane, batch } => (pane, batch.seq, Some(batch.batch)),
                    PaneChange::Delete { pane, seq } => (pane, seq, None),
                };
                let (pane_start, (kind, partition)) = pane;
                let key = StateKey::Pane {
                    job: job.to_owned(),
                    fingerprint: fingerprint.to_owned(),
                    source: kind.name().to_owned(),
                    partition,
                    pane_start,
                    seq,
                };
                records.extend(match batch {
                    Some(batch) => changelog.put(key, &codec::pane(&batch)?),
                    None => changelog.delete(&key),
                });
            }
        }
        StateChanges::Sessions(changes) => {
            let header = |key: &ScalarValue, start| StateKey::Session {
                version: SESSION_KEY_VERSION,
                job: job.to_owned(),
                fingerprint: fingerprint.to_owned(),
                key: session_key(key),
                start,
            };
            let part = |key: &ScalarValue, start, seq| StateKey::SessionPart {
                version: SESSION_KEY_VERSION,
                job: job.to_owned(),
                fingerprint: fingerprint.to_owned(),
                key: session_key(key),
                start,
                seq,
            };
            for change in changes {
                match change {
                    SessionChange::Header { key, start, end } => {
                        let value = codec::session(&key, start, end, schema, &[])?;
                        records.extend(changelog.put(header(&key, start), &value));
                    }
                    SessionChange::Part { key, start, batch } => {
                        let value = codec::session(
                            &key,
                            start,
                            start,
                            schema,
                            std::slice::from_ref(&batch.batch),
                        )?;
                        records.extend(changelog.put(part(&key, start, batch.seq), &value));
                    }
                    SessionChange::DropPart { key, start, seq } => {
                        records.extend(changelog.delete(&part(&key, start, seq)));
                    }
                    SessionChange::Delete { key, start, seqs } => {
                        records.extend(changelog.delete(&header(&key, start)));
                        for seq in seqs {
                            records.extend(changelog.delete(&part(&key, start, seq)));
                        }
                    }
                }
            }
        }
    }
    Ok(records)
}
