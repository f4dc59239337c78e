//! What a changelog record means: its key ([`StateKey`]) and its value,
//! typed ([`StateValue`]), with the one encoding of each kind. The engine
//! hands [`StateRecord`]s (and keys to delete) to the writer and gets them
//! back decoded when it restores; it never reads or builds value bytes.

use arrow::array::RecordBatch;
use arrow::compute::concat_batches;
use arrow::datatypes::SchemaRef;
use datafusion::common::ScalarValue;

use super::codec::{self, SessionValue};
pub use super::error::FormatError;
use super::key::{SESSION_KEY_VERSION, StateKey, session_key};
use super::value;
use crate::schema::Source;
use crate::window::panes::PaneChange;
use crate::window::sessions::SessionChange;
use crate::window::store::StateChanges;

/// The value of a state record, by the kind of its key.
#[derive(Debug, Clone, PartialEq)]
pub enum StateValue {
    /// A pane's state rows (one batch of a pane).
    Rows(RecordBatch),
    /// A session's key and bounds with its state rows (none for a header,
    /// one batch for a part, all of them for a session an earlier release
    /// wrote whole), in `schema`.
    Session {
        /// Key, bounds and rows.
        session: SessionValue,
        /// The rows' schema (the job's state schema).
        schema: SchemaRef,
    },
    /// An integer: a closing mark, a watermark, a position, a time.
    Int(i64),
    /// One key's events of a kept table, and the whole key where the record
    /// key holds only its prefix and hash.
    Kept {
        /// The events.
        events: RecordBatch,
        /// The whole key, when the record key is shortened.
        long_key: Option<String>,
    },
}

/// One state record: what it stores and its value.
#[derive(Debug, Clone, PartialEq)]
pub struct StateRecord {
    /// What the record stores.
    pub key: StateKey,
    /// Its value.
    pub value: StateValue,
}

/// A change to the changelog: a record written, or a key deleted.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Write this record.
    Put(StateRecord),
    /// Delete every part of this key.
    Delete(StateKey),
}

impl StateRecord {
    /// A record holding one integer.
    pub fn int(key: StateKey, value: i64) -> Self {
        Self {
            key,
            value: StateValue::Int(value),
        }
    }

    /// The value's bytes.
    pub fn encode(&self) -> Result<Vec<u8>, FormatError> {
        Ok(match &self.value {
            StateValue::Rows(batch) => codec::pane(batch)?,
            StateValue::Session { session, schema } => codec::session(
                &session.key,
                session.start,
                session.end,
                schema,
                &session.batches,
            )?,
            StateValue::Int(v) => value::int(int_column(&self.key), *v)?,
            StateValue::Kept { events, long_key } => {
                codec::kept_events(events, long_key.as_deref())?
            }
        })
    }

    /// Reads the value of `key` back from its bytes.
    pub fn decode(key: StateKey, bytes: &[u8]) -> Result<Self, FormatError> {
        let value = match &key {
            StateKey::Pane { .. } => StateValue::Rows(frame(bytes, 0)?),
            StateKey::Session { .. } | StateKey::SessionPart { .. } => {
                let (session, schema) = codec::read_session(bytes)?;
                StateValue::Session { session, schema }
            }
            StateKey::Kept { .. } | StateKey::KeptCopy { .. } => StateValue::Kept {
                events: frame(bytes, 0)?,
                long_key: codec::kept_long_key(bytes)?,
            },
            StateKey::Checkpoint { .. } => return Err(FormatError::NoValue("checkpoint")),
            other => StateValue::Int(value::read_int(bytes, int_column(other))?),
        };
        Ok(Self { key, value })
    }
}

/// The name of the integer a key's value holds (as earlier releases wrote
/// it: the name is part of the value).
fn int_column(key: &StateKey) -> &'static str {
    match key {
        StateKey::Closed { .. } => "closed_through",
        StateKey::BackfillOffset { .. } | StateKey::LookupPosition { .. } => "next_offset",
        StateKey::BackfillEventTime { .. } | StateKey::Watermark { .. } => "max_event_time",
        StateKey::BackfillDone { .. } => "finished_at",
        StateKey::SourceWatermark { .. } => "watermark",
        StateKey::Checkpoint { .. } => "written_at",
        StateKey::Member { .. } => "generation",
        StateKey::ShuffleMark { .. } => "mark",
        StateKey::Pane { .. }
        | StateKey::Session { .. }
        | StateKey::SessionPart { .. }
        | StateKey::Kept { .. }
        | StateKey::KeptCopy { .. } => "value",
    }
}

/// Frame `index` of a value, as one batch.
fn frame(bytes: &[u8], index: usize) -> Result<RecordBatch, FormatError> {
    let frames = value::decode(bytes)?;
    let (schema, batches) = frames
        .into_iter()
        .nth(index)
        .ok_or(FormatError::MissingFrame(index))?;
    Ok(concat_batches(&schema, &batches)?)
}

/// Where a job's reader stands (a running backfill, or a job stopped after
/// a panic), as integer records (key and value): the next offset and the
/// largest event time of each (source, partition) it reads, under the job
/// `job` with `fingerprint`.
pub fn resume_positions(
    job: &str,
    fingerprint: &str,
    offsets: impl IntoIterator<Item = ((Source, i32), i64)>,
    event_times: impl IntoIterator<Item = ((Source, i32), i64)>,
) -> Vec<(StateKey, i64)> {
    let offsets = offsets.into_iter().map(|((source, partition), next)| {
        let key = StateKey::BackfillOffset {
            job: job.to_owned(),
            fingerprint: fingerprint.to_owned(),
            source: source.name().to_owned(),
            partition,
        };
        (key, next)
    });
    let times = event_times.into_iter().map(|((source, partition), t)| {
        let key = StateKey::BackfillEventTime {
            job: job.to_owned(),
            fingerprint: fingerprint.to_owned(),
            source: source.name().to_owned(),
            partition,
        };
        (key, t)
    });
    offsets.chain(times).collect()
}

/// The changes to the changelog that a windowed job's state `changes`
/// make: the job is `job` under `fingerprint`, its state rows in `schema`.
pub fn job_changes(
    job: &str,
    fingerprint: &str,
    schema: &SchemaRef,
    changes: StateChanges,
) -> Vec<Change> {
    match changes {
        StateChanges::Panes(changes) => changes
            .into_iter()
            .map(|change| {
                let (pane, seq, batch) = match change {
                    PaneChange::Put { pane, batch } => (pane, batch.seq, Some(batch.batch)),
                    PaneChange::Delete { pane, seq } => (pane, seq, None),
                };
                let (pane_start, (source, partition)) = pane;
                let key = StateKey::Pane {
                    job: job.to_owned(),
                    fingerprint: fingerprint.to_owned(),
                    source: source.name().to_owned(),
                    partition,
                    pane_start,
                    seq,
                };
                match batch {
                    Some(batch) => Change::Put(StateRecord {
                        key,
                        value: StateValue::Rows(batch),
                    }),
                    None => Change::Delete(key),
                }
            })
            .collect(),
        StateChanges::Sessions(changes) => {
            let header = |key: &ScalarValue, start, partition| StateKey::Session {
                version: SESSION_KEY_VERSION,
                job: job.to_owned(),
                fingerprint: fingerprint.to_owned(),
                key: session_key(key),
                start,
                partition,
            };
            let part = |key: &ScalarValue, start, seq, partition| StateKey::SessionPart {
                version: SESSION_KEY_VERSION,
                job: job.to_owned(),
                fingerprint: fingerprint.to_owned(),
                key: session_key(key),
                start,
                seq,
                partition,
            };
            let session = |key: ScalarValue, start, end, batches| StateValue::Session {
                session: SessionValue {
                    key,
                    start,
                    end,
                    batches,
                },
                schema: schema.clone(),
            };
            let mut out = Vec::new();
            for (home, change) in changes {
                match change {
                    SessionChange::Header { key, start, end } => {
                        out.push(Change::Put(StateRecord {
                            key: header(&key, start, home),
                            value: session(key, start, end, Vec::new()),
                        }))
                    }
                    SessionChange::Part { key, start, batch } => {
                        out.push(Change::Put(StateRecord {
                            key: part(&key, start, batch.seq, home),
                            value: session(key, start, start, vec![batch.batch]),
                        }))
                    }
                    SessionChange::DropPart { key, start, seq } => {
                        out.push(Change::Delete(part(&key, start, seq, home)));
                    }
                    SessionChange::Delete { key, start, seqs } => {
                        out.push(Change::Delete(header(&key, start, home)));
                        out.extend(
                            seqs.into_iter()
                                .map(|seq| Change::Delete(part(&key, start, seq, home))),
                        );
                    }
                }
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn rows() -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, true),
            Field::new("n", DataType::Int64, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec!["c1", "c2"])),
                Arc::new(Int64Array::from(vec![3, 4])),
            ],
        )
        .expect("batch")
    }

    #[test]
    fn every_kind_of_value_reads_back_as_written() {
        let job = || ("j".to_owned(), "f".to_owned());
        let records = [
            StateRecord {
                key: StateKey::Pane {
                    job: job().0,
                    fingerprint: job().1,
                    source: "transactions".into(),
                    partition: 2,
                    pane_start: 60_000,
                    seq: 7,
                },
                value: StateValue::Rows(rows()),
            },
            StateRecord {
                key: StateKey::SessionPart {
                    version: SESSION_KEY_VERSION,
                    job: job().0,
                    fingerprint: job().1,
                    key: "c1".into(),
                    start: 5,
                    seq: 1,
                    partition: None,
                },
                value: StateValue::Session {
                    session: SessionValue {
                        key: ScalarValue::Utf8(Some("c1".into())),
                        start: 5,
                        end: 5,
                        batches: vec![rows()],
                    },
                    schema: rows().schema(),
                },
            },
            StateRecord::int(
                StateKey::Watermark {
                    source: "feedback".into(),
                    partition: 0,
                },
                -12,
            ),
            StateRecord {
                key: StateKey::Kept {
                    source: "complaints".into(),
                    key: "c9".into(),
                    partition: None,
                },
                value: StateValue::Kept {
                    events: rows(),
                    long_key: Some("c9 and then some".into()),
                },
            },
        ];
        for record in records {
            let bytes = record.encode().expect("encode");
            let back = StateRecord::decode(record.key.clone(), &bytes).expect("decode");
            assert_eq!(back, record);
        }
    }

    #[test]
    fn an_integer_is_read_under_its_keys_name_and_a_pane_is_not_an_integer() {
        let closed = StateKey::Closed {
            job: "j".into(),
            fingerprint: "f".into(),
            partition: Some(1),
        };
        let bytes = value::int("closed_through", 42).expect("int");
        assert_eq!(
            StateRecord::decode(closed.clone(), &bytes)
                .expect("decode")
                .value,
            StateValue::Int(42)
        );
        let pane = codec::pane(&rows()).expect("pane");
        assert!(StateRecord::decode(closed, &pane).is_err());
    }
}
