//! The shuffle of a windowed job whose groups span partitions (grouped by
//! something else than its sources' `partition_key`): Kafka Streams'
//! repartition topic, carrying Flink's local-global aggregation.
//!
//! Stage 1 runs where the events are read: each micro-batch's partial
//! aggregates (the state rows a pane would hold) are split by group key
//! ([`split`]) and written to the job's repartition topic
//! (`<group>-<job>-<version>-repartition`), partition `r` getting the groups that hash
//! to `r`, inside the epoch's transaction. After each epoch's data, stage 1
//! writes a [`Shuffled::Mark`] per source partition it owns into every
//! repartition partition: how far that partition's event time has got.
//!
//! Stage 2 runs on the owner of each repartition partition: it reads it
//! `read_committed`, adds the partials to the job's panes (state of
//! partition `r`, in changelog partition `r`), and closes windows on the
//! watermark the marks give ([`Marks`]): the least over every partition of
//! the job's sources, as one process reading them all would compute it.

use std::collections::BTreeMap;

use arrow::array::{RecordBatch, UInt32Array};
use arrow::compute::take_record_batch;
use arrow::error::ArrowError;
use datafusion::common::ScalarValue;
use serde::{Deserialize, Serialize};

use crate::schema::KeepSpec;
use crate::sink::OutRecord;
use crate::state::error::FormatError;
use crate::state::key::session_key;
use crate::state::value;

/// How every repartition topic's name ends.
pub const TOPIC_SUFFIX: &str = "-repartition";

/// The repartition topic of job `job` of consumer group `group`, in the
/// `version` of its query file ([`crate::job::Job::version`]): a changed
/// query file writes to a topic of its own, so that an instance still
/// running the earlier version (instances reload files each at their own
/// moment) never reads the new one's partials, nor the new one the old's.
pub fn topic(group: &str, job: &str, version: &str) -> String {
    format!("{group}-{job}-{version}{TOPIC_SUFFIX}")
}

/// One source partition's mark: (source, partition, mark, idle).
pub type PartitionMark = (String, i32, Option<i64>, bool);

/// A mark stage 2 read: (repartition partition, source, partition, mark,
/// idle).
pub type ReadMark = (i32, String, i32, Option<i64>, bool);

/// What a repartition record carries.
#[derive(Debug, Clone, PartialEq)]
pub enum Shuffled {
    /// Partial aggregates of events of one source partition, for the
    /// groups the record's repartition partition owns.
    Partials {
        /// The source (SQL table) name.
        source: String,
        /// The source partition the events came from.
        partition: i32,
        /// State rows, in the job's state schema.
        rows: RecordBatch,
    },
    /// Events of one source partition that its stream's kept tables took
    /// in: stage 2 of a job reading those tables keeps a copy of them, with
    /// every partition's keys, for its windows to fire with.
    Kept {
        /// The stream (SQL table) name.
        source: String,
        /// The source partition the events came from.
        partition: i32,
        /// The events, in the columns the tables are kept from.
        events: RecordBatch,
    },
    /// How far one source partition's event time had got at the end of an
    /// epoch of its owner.
    Mark {
        /// The source (SQL table) name.
        source: String,
        /// The source partition.
        partition: i32,
        /// Its watermark: largest event time minus the source's lag;
        /// `None` until it has delivered.
        mark: Option<i64>,
        /// Whether it has been silent for the idle timeout with nothing
        /// left to read (it then holds nobody back).
        idle: bool,
    },
}

/// A repartition record's key.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Key {
    kind: String,
    source: String,
    partition: i32,
}

/// A mark's value.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct MarkValue {
    mark: Option<i64>,
    idle: bool,
}

/// Why a repartition record cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ShuffleError {
    /// Its key is not one cxpulse writes.
    #[error("not a repartition record key: {0}")]
    Key(String),
    /// Its value does not decode.
    #[error("a repartition record value that does not decode: {0}")]
    Value(#[from] FormatError),
    /// A mark's value is not JSON cxpulse writes.
    #[error("a watermark mark that does not decode: {0}")]
    Mark(String),
}

impl Shuffled {
    /// The record for repartition partition `to` of `topic`.
    pub fn into_record(self, topic: &str, to: i32) -> Result<OutRecord, ArrowError> {
        let (key, payload) = match self {
            Shuffled::Partials {
                source,
                partition,
                rows,
            } => (
                Key {
                    kind: "partials".to_owned(),
                    source,
                    partition,
                },
                value::encode(&[(&rows.schema(), std::slice::from_ref(&rows))])?,
            ),
            Shuffled::Kept {
                source,
                partition,
                events,
            } => (
                Key {
                    kind: "kept".to_owned(),
                    source,
                    partition,
                },
                value::encode(&[(&events.schema(), std::slice::from_ref(&events))])?,
            ),
            Shuffled::Mark {
                source,
                partition,
                mark,
                idle,
            } => (
                Key {
                    kind: "mark".to_owned(),
                    source,
                    partition,
                },
                serde_json::to_vec(&MarkValue { mark, idle }).unwrap_or_default(),
            ),
        };
        Ok(OutRecord {
            topic: topic.to_owned(),
            partition: Some(to),
            key: Some(serde_json::to_vec(&key).unwrap_or_default()),
            payload: Some(payload),
            headers: Vec::new(),
            job: None,
        })
    }

    /// Reads a repartition record back.
    pub fn decode(key: Option<&[u8]>, payload: Option<&[u8]>) -> Result<Shuffled, ShuffleError> {
        let key: Key = serde_json::from_slice(key.unwrap_or_default())
            .map_err(|e| ShuffleError::Key(e.to_string()))?;
        let payload = payload.unwrap_or_default();
        let batch = || -> Result<RecordBatch, ShuffleError> {
            let frames = value::decode(payload)?;
            let (schema, batches) = frames
                .into_iter()
                .next()
                .ok_or(ShuffleError::Value(FormatError::FrameLength))?;
            arrow::compute::concat_batches(&schema, &batches)
                .map_err(|e| ShuffleError::Value(FormatError::Batch(e.to_string())))
        };
        match key.kind.as_str() {
            "partials" => Ok(Shuffled::Partials {
                source: key.source,
                partition: key.partition,
                rows: batch()?,
            }),
            "kept" => Ok(Shuffled::Kept {
                source: key.source,
                partition: key.partition,
                events: batch()?,
            }),
            "mark" => {
                let value: MarkValue = serde_json::from_slice(payload)
                    .map_err(|e| ShuffleError::Mark(e.to_string()))?;
                Ok(Shuffled::Mark {
                    source: key.source,
                    partition: key.partition,
                    mark: value.mark,
                    idle: value.idle,
                })
            }
            other => Err(ShuffleError::Key(format!("unknown kind {other:?}"))),
        }
    }
}

/// Splits state rows by group: the rows whose `key_columns` hash to `r`
/// (of `partitions`) go to repartition partition `r`. The hash is of each
/// value's text, so that it does not depend on the process, the build or
/// the Arrow type's layout.
pub fn split(
    rows: &RecordBatch,
    key_columns: &[usize],
    partitions: i32,
) -> Result<Vec<(i32, RecordBatch)>, ArrowError> {
    let partitions = partitions.max(1);
    let mut by_partition: BTreeMap<i32, Vec<u32>> = BTreeMap::new();
    for row in 0..rows.num_rows() {
        let mut hasher = twox_hash::XxHash64::with_seed(0);
        for &column in key_columns {
            let value = ScalarValue::try_from_array(rows.column(column), row)
                .map_err(|e| ArrowError::ComputeError(e.to_string()))?;
            std::hash::Hasher::write(&mut hasher, session_key(&value).as_bytes());
            std::hash::Hasher::write(&mut hasher, &[0x1f]);
        }
        let hash = std::hash::Hasher::finish(&hasher);
        let to = (hash % partitions as u64) as i32;
        by_partition.entry(to).or_default().push(row as u32);
    }
    by_partition
        .into_iter()
        .map(|(to, indices)| {
            let part = if indices.len() == rows.num_rows() {
                rows.clone()
            } else {
                take_record_batch(rows, &UInt32Array::from(indices))?
            };
            Ok((to, part))
        })
        .collect()
}

/// Most bytes of partial aggregates in one repartition record; a larger
/// part is split in halves (a topic's `max.message.bytes` is 1 MiB by
/// default).
const MAX_RECORD_BYTES: usize = 512 * 1024;

/// `rows` in pieces of at most about [`MAX_RECORD_BYTES`] each, of equal
/// row counts (a slice reports its whole buffers' size, so the pieces are
/// sized from the whole batch's).
fn pieces(rows: RecordBatch) -> Vec<RecordBatch> {
    let (bytes, count) = (rows.get_array_memory_size(), rows.num_rows());
    let pieces = bytes.div_ceil(MAX_RECORD_BYTES).clamp(1, count.max(1));
    if pieces == 1 {
        return vec![rows];
    }
    let per_piece = count.div_ceil(pieces);
    (0..count)
        .step_by(per_piece)
        .map(|start| rows.slice(start, per_piece.min(count - start)))
        .collect()
}

/// A shuffled job's way through its repartition topic.
#[derive(Debug, Clone)]
pub struct Route {
    /// The repartition topic.
    pub topic: String,
    /// Its partition count.
    pub partitions: i32,
    /// The state columns that key a group.
    keys: Vec<usize>,
    /// The one repartition partition every group goes to, when no columns
    /// key them (result rows that depend on other groups): one picked by
    /// the topic's name, so that such jobs spread over the instances.
    whole: Option<i32>,
    /// The watermark of the job's sources over the partitions this
    /// instance reads, before the micro-batch: stage 1 judges lateness by
    /// it.
    pub local: Option<i64>,
    /// The marks stage 2 has read.
    pub marks: Marks,
    /// The job's sources and their partition counts.
    pub sources: Vec<(String, i32)>,
    /// The repartition partitions this instance owns (stage 2).
    owned: Vec<i32>,
    /// The marks last sent, per source partition.
    sent: BTreeMap<(String, i32), (Option<i64>, bool)>,
}

impl Route {
    /// The route through `topic` (`partitions` partitions, of which this
    /// instance owns `owned`) of a job whose groups are keyed by the state
    /// columns `keys` (none: every group goes to one partition).
    pub fn new(topic: String, partitions: i32, owned: Vec<i32>, keys: Vec<usize>) -> Self {
        let whole = keys.is_empty().then(|| {
            let hash = twox_hash::XxHash64::oneshot(0, topic.as_bytes());
            (hash % partitions.max(1) as u64) as i32
        });
        Self {
            topic,
            partitions,
            owned,
            keys,
            whole,
            local: None,
            marks: Marks::default(),
            sources: Vec::new(),
            sent: BTreeMap::new(),
        }
    }

    /// The records of one source partition's partial aggregates: split by
    /// group over the repartition partitions, at most
    /// [`MAX_RECORD_BYTES`] each.
    pub fn partials(
        &self,
        source: &str,
        partition: i32,
        batches: &[RecordBatch],
    ) -> Result<Vec<OutRecord>, ArrowError> {
        let mut records = Vec::new();
        for batch in batches.iter().filter(|b| b.num_rows() > 0) {
            let parts = match self.whole {
                Some(to) => vec![(to, batch.clone())],
                None => split(batch, &self.keys, self.partitions)?,
            };
            for (to, rows) in parts {
                for rows in pieces(rows) {
                    let shuffled = Shuffled::Partials {
                        source: source.to_owned(),
                        partition,
                        rows,
                    };
                    records.push(shuffled.into_record(&self.topic, to)?);
                }
            }
        }
        Ok(records)
    }

    /// The records of one source partition's events that its stream's
    /// kept tables (`spec`) took in, for the copy stage 2 keeps: to the one
    /// partition every group goes to (a job reading kept tables shuffles
    /// whole); an error for a route split by group.
    pub fn kept_events(
        &self,
        source: &str,
        partition: i32,
        events: &RecordBatch,
        spec: &KeepSpec,
    ) -> Result<Vec<OutRecord>, ArrowError> {
        if events.num_rows() == 0 {
            return Ok(Vec::new());
        }
        let schema = events.schema();
        let columns: Vec<usize> = spec
            .columns()
            .filter_map(|name| schema.index_of(name).ok())
            .collect();
        let Some(to) = self.whole else {
            return Err(ArrowError::InvalidArgumentError(format!(
                "kept-table events for {}, whose groups are split: only a job shuffling whole keeps a copy",
                self.topic
            )));
        };
        let events = events.project(&columns)?;
        pieces(events)
            .into_iter()
            .map(|events| {
                let shuffled = Shuffled::Kept {
                    source: source.to_owned(),
                    partition,
                    events,
                };
                shuffled.into_record(&self.topic, to)
            })
            .collect()
    }

    /// The marks among `now` (source, partition, mark, idle: the partitions
    /// this instance reads) that changed since they were last sent, one
    /// record per repartition partition each.
    pub fn changed_marks(&mut self, now: Vec<PartitionMark>) -> Result<Vec<OutRecord>, ArrowError> {
        let mut records = Vec::new();
        for (source, partition, mark, idle) in now {
            let at = (source.clone(), partition);
            if self.sent.get(&at) == Some(&(mark, idle)) {
                continue;
            }
            self.sent.insert(at, (mark, idle));
            for to in 0..self.partitions {
                let shuffled = Shuffled::Mark {
                    source: source.clone(),
                    partition,
                    mark,
                    idle,
                };
                records.push(shuffled.into_record(&self.topic, to)?);
            }
        }
        Ok(records)
    }

    /// The watermark stage 2 closes windows by.
    pub fn watermark(&mut self) -> Option<i64> {
        let sources: Vec<(&str, i32)> =
            self.sources.iter().map(|(s, n)| (s.as_str(), *n)).collect();
        self.marks.watermark(&self.owned, &sources)
    }
}

/// A mark as the changelog keeps it: one integer, the mark times two plus
/// one when idle ([`NO_MARK`] for a partition that has not delivered).
pub fn mark_as_int(mark: Option<i64>, idle: bool) -> i64 {
    mark.unwrap_or(NO_MARK).saturating_mul(2) + i64::from(idle)
}

/// A mark from [`mark_as_int`].
pub fn mark_from_int(value: i64) -> (Option<i64>, bool) {
    let mark = value.div_euclid(2);
    ((mark != NO_MARK).then_some(mark), value.rem_euclid(2) == 1)
}

/// The mark of a partition that has not delivered, as the changelog keeps it.
const NO_MARK: i64 = i64::MIN / 4;

/// The marks of one source's partitions: mark and whether idle.
type SourceMarks = BTreeMap<i32, (Option<i64>, bool)>;

/// The marks stage 2 has read for one job, per repartition partition, and
/// the watermark they give.
#[derive(Debug, Default, Clone)]
pub struct Marks {
    /// By repartition partition, source name and source partition: the
    /// last mark read there and whether idle. A mark read from partition
    /// `r` says how far the partials in `r` go, and nothing of the others.
    read: BTreeMap<i32, BTreeMap<String, SourceMarks>>,
    /// The watermark given so far (it never moves back).
    current: Option<i64>,
}

impl Marks {
    /// Every mark read: (repartition partition, source, partition, mark,
    /// idle).
    pub fn all(&self) -> Vec<ReadMark> {
        self.read
            .iter()
            .flat_map(|(at, sources)| {
                sources.iter().flat_map(move |(source, partitions)| {
                    partitions
                        .iter()
                        .map(move |(p, (mark, idle))| (*at, source.clone(), *p, *mark, *idle))
                })
            })
            .collect()
    }

    /// Records the mark of one source partition read from repartition
    /// partition `at`.
    pub fn set(&mut self, at: i32, source: &str, partition: i32, mark: Option<i64>, idle: bool) {
        let partitions = self
            .read
            .entry(at)
            .or_default()
            .entry(source.to_owned())
            .or_default();
        let slot = partitions.entry(partition).or_insert((None, idle));
        slot.0 = match (slot.0, mark) {
            (Some(old), Some(new)) => Some(old.max(new)),
            (old, new) => old.or(new),
        };
        slot.1 = idle;
    }

    /// The watermark of the job reading `sources` (name and partition
    /// count each) over the repartition partitions `owned`: in each of them,
    /// as one process reading every source partition computes it (per
    /// source the least mark of the partitions that are not idle, the
    /// largest when all are; none while a partition has no mark); the least
    /// over the repartition partitions and the sources. It never moves
    /// back.
    pub fn watermark(&mut self, owned: &[i32], sources: &[(&str, i32)]) -> Option<i64> {
        if let Some(new) = self.least(owned, sources) {
            self.current = Some(self.current.map_or(new, |c| c.max(new)));
        }
        self.current
    }

    /// The least mark over `owned` and `sources`, if every one is known.
    fn least(&self, owned: &[i32], sources: &[(&str, i32)]) -> Option<i64> {
        if owned.is_empty() || sources.is_empty() {
            return None;
        }
        let mut least: Option<i64> = None;
        for at in owned {
            let read = self.read.get(at)?;
            for &(source, count) in sources {
                let partitions = read.get(source)?;
                let mut active = Vec::new();
                let mut all = Vec::new();
                for p in 0..count {
                    let &(mark, idle) = partitions.get(&p)?;
                    all.extend(mark);
                    if !idle {
                        active.push(mark);
                    }
                }
                let source_mark = if active.is_empty() {
                    all.into_iter().max()
                } else if active.iter().any(Option::is_none) {
                    None
                } else {
                    active.into_iter().flatten().min()
                }?;
                least = Some(least.map_or(source_mark, |l| l.min(source_mark)));
            }
        }
        least
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{AsArray, Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Int64Type, Schema};

    use super::*;

    fn rows(categories: &[&str], counts: &[i64]) -> RecordBatch {
        RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("category", DataType::Utf8, false),
                Field::new("count", DataType::Int64, false),
            ])),
            vec![
                Arc::new(StringArray::from(categories.to_vec())),
                Arc::new(Int64Array::from(counts.to_vec())),
            ],
        )
        .expect("batch")
    }

    #[test]
    fn a_group_always_goes_to_the_same_partition_and_no_row_is_lost() {
        let batch = rows(
            &["books", "toys", "books", "food", "toys"],
            &[1, 2, 3, 4, 5],
        );
        let parts = split(&batch, &[0], 4).expect("split");
        let mut seen: BTreeMap<String, Vec<i32>> = BTreeMap::new();
        let mut total = 0;
        for (to, part) in &parts {
            let categories = part.column(0).as_string::<i32>();
            for i in 0..part.num_rows() {
                seen.entry(categories.value(i).to_owned())
                    .or_default()
                    .push(*to);
            }
            total += part
                .column(1)
                .as_primitive::<Int64Type>()
                .values()
                .iter()
                .sum::<i64>();
        }
        assert_eq!(total, 15);
        for (category, partitions) in &seen {
            assert!(
                partitions.windows(2).all(|w| w[0] == w[1]),
                "{category}: {partitions:?}"
            );
        }
        // The same key in another batch, on another call: the same place.
        let again = split(&rows(&["toys"], &[9]), &[0], 4).expect("split");
        assert_eq!(again[0].0, seen["toys"][0]);
        // The hash of the text: "books" is where xxHash64 puts it.
        let mut hasher = twox_hash::XxHash64::with_seed(0);
        std::hash::Hasher::write(&mut hasher, b"books\x1f");
        let expected = (std::hash::Hasher::finish(&hasher) % 4) as i32;
        assert_eq!(seen["books"][0], expected);
    }

    #[test]
    fn groups_whose_rows_depend_on_each_other_all_go_to_the_partition_the_topic_picks() {
        let batch = rows(&["books", "toys", "food"], &[1, 2, 3]);
        let route = Route::new("g-share-repartition".to_owned(), 4, vec![0], Vec::new());
        let records = route
            .partials("transactions", 1, &[batch])
            .expect("partials");
        let hash = twox_hash::XxHash64::oneshot(0, b"g-share-repartition");
        let expected = (hash % 4) as i32;
        assert_eq!(records.len(), 1, "one record, every group");
        assert_eq!(records[0].partition, Some(expected));
        // Keyed by category, the same rows spread as `split` puts them.
        let keyed = Route::new("g-share-repartition".to_owned(), 4, vec![0], vec![0]);
        let spread = keyed
            .partials(
                "transactions",
                1,
                &[rows(&["books", "toys", "food"], &[1, 2, 3])],
            )
            .expect("partials");
        let split_to: Vec<i32> = split(&rows(&["books", "toys", "food"], &[1, 2, 3]), &[0], 4)
            .expect("split")
            .into_iter()
            .map(|(to, _)| to)
            .collect();
        let keyed_to: Vec<Option<i32>> = spread.iter().map(|r| r.partition).collect();
        assert_eq!(keyed_to, split_to.into_iter().map(Some).collect::<Vec<_>>());
    }

    #[test]
    fn records_read_back_as_written() {
        let partials = Shuffled::Partials {
            source: "transactions".into(),
            partition: 3,
            rows: rows(&["books"], &[2]),
        };
        let record = partials
            .clone()
            .into_record("g-j-repartition", 1)
            .expect("record");
        assert_eq!(record.partition, Some(1));
        assert_eq!(
            String::from_utf8_lossy(record.key.as_deref().unwrap_or_default()),
            r#"{"kind":"partials","source":"transactions","partition":3}"#
        );
        let back =
            Shuffled::decode(record.key.as_deref(), record.payload.as_deref()).expect("decode");
        assert_eq!(back, partials);
        let mark = Shuffled::Mark {
            source: "transactions".into(),
            partition: 2,
            mark: Some(1_000),
            idle: false,
        };
        let record = mark
            .clone()
            .into_record("g-j-repartition", 0)
            .expect("record");
        assert_eq!(
            String::from_utf8_lossy(record.payload.as_deref().unwrap_or_default()),
            r#"{"mark":1000,"idle":false}"#
        );
        let back =
            Shuffled::decode(record.key.as_deref(), record.payload.as_deref()).expect("decode");
        assert_eq!(back, mark);
        assert!(Shuffled::decode(Some(b"{}"), None).is_err());
    }

    #[test]
    fn kept_events_go_in_the_kept_columns_where_the_groups_go() {
        let complaints = crate::config::default_source("complaints");
        let spec = complaints.keep().expect("kept tables");
        let mut builder = crate::decode::BatchBuilder::new(complaints);
        for json in [
            r#"{"event_id":"e1","customer_id":"c1","ts":1000,"complaint_id":"k1","status":"opened","category":"billing","channel":"app"}"#,
            r#"{"event_id":"e2","customer_id":"c1","ts":2000,"complaint_id":"k1","status":"resolved"}"#,
        ] {
            builder
                .append(&crate::decode::parse_record(complaints, json.as_bytes()).expect("valid"));
        }
        let events = builder.finish().expect("batch");
        let whole = Route::new("g-j-repartition".into(), 4, vec![0], Vec::new());
        let records = whole
            .kept_events("complaints", 5, &events, spec)
            .expect("records");
        let to = whole.whole;
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].partition, to);
        let Shuffled::Kept {
            source,
            partition,
            events: back,
        } = Shuffled::decode(records[0].key.as_deref(), records[0].payload.as_deref())
            .expect("decode")
        else {
            panic!("not kept events");
        };
        assert_eq!((source.as_str(), partition), ("complaints", 5));
        let names: Vec<String> = back
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        assert_eq!(
            names,
            ["complaint_id", "ts", "status", "category", "severity"],
            "the columns the tables are kept from, not the whole event"
        );
        assert_eq!(back.num_rows(), 2);
        let mut table = crate::lookup::kept::KeptTable::new(spec.clone());
        table.apply(&back, Some(2)).expect("applies");
        let latest = table.latest_snapshot().expect("snapshot");
        assert_eq!(latest.num_rows(), 1, "k1");
        // Split by group: no copy is kept there.
        let split = Route::new("g-j-repartition".into(), 4, vec![0], vec![0]);
        assert!(split.kept_events("complaints", 5, &events, spec).is_err());
    }

    #[test]
    fn a_large_batch_goes_in_pieces_of_equal_rows_and_none_is_lost() {
        let n = 100_000;
        let big = rows(
            &vec!["category-with-a-long-name"; n],
            &(0..n as i64).collect::<Vec<_>>(),
        );
        let bytes = big.get_array_memory_size();
        let parts = pieces(big);
        assert_eq!(
            parts.len(),
            bytes.div_ceil(MAX_RECORD_BYTES),
            "{bytes} bytes"
        );
        assert!(parts.len() > 1);
        let counts: Vec<i64> = parts
            .iter()
            .flat_map(|p| p.column(1).as_primitive::<Int64Type>().values().to_vec())
            .collect();
        assert_eq!(counts, (0..n as i64).collect::<Vec<_>>());
    }

    #[test]
    fn a_mark_is_kept_as_one_integer() {
        for (mark, idle) in [
            (Some(1_767_225_600_000), false),
            (Some(-5), true),
            (None, true),
            (None, false),
        ] {
            assert_eq!(mark_from_int(mark_as_int(mark, idle)), (mark, idle));
        }
        assert_eq!(mark_as_int(Some(10), true), 21);
    }

    #[test]
    fn a_mark_is_sent_when_it_changed_to_every_repartition_partition() {
        let mut route = Route::new("g-j-repartition".into(), 3, vec![0, 1, 2], vec![0]);
        let now = vec![("transactions".to_owned(), 0, Some(5), false)];
        assert_eq!(route.changed_marks(now.clone()).expect("marks").len(), 3);
        assert!(route.changed_marks(now).expect("marks").is_empty());
        let idle = vec![("transactions".to_owned(), 0, Some(5), true)];
        let records = route.changed_marks(idle).expect("marks");
        assert_eq!(
            records.iter().map(|r| r.partition).collect::<Vec<_>>(),
            vec![Some(0), Some(1), Some(2)]
        );
    }

    #[test]
    fn the_watermark_is_the_least_over_every_partition_as_one_reader_sees_it() {
        let mut marks = Marks::default();
        let sources = [("transactions", 3)];
        let owned = [0];
        marks.set(0, "transactions", 0, Some(100), false);
        marks.set(0, "transactions", 1, Some(50), false);
        assert_eq!(
            marks.watermark(&owned, &sources),
            None,
            "partition 2 has no mark yet"
        );
        marks.set(0, "transactions", 2, None, false);
        assert_eq!(
            marks.watermark(&owned, &sources),
            None,
            "partition 2 has not delivered"
        );
        marks.set(0, "transactions", 2, Some(70), false);
        assert_eq!(marks.watermark(&owned, &sources), Some(50));
        // An idle partition holds nobody back.
        marks.set(0, "transactions", 1, Some(50), true);
        assert_eq!(marks.watermark(&owned, &sources), Some(70));
        // All idle: the largest; never backwards.
        marks.set(0, "transactions", 0, Some(100), true);
        marks.set(0, "transactions", 2, Some(70), true);
        assert_eq!(marks.watermark(&owned, &sources), Some(100));
        marks.set(0, "transactions", 0, Some(100), false);
        marks.set(0, "transactions", 2, Some(80), false);
        assert_eq!(marks.watermark(&owned, &sources), Some(100));
        // Two sources: the least of theirs.
        marks.set(0, "feedback", 0, Some(120), false);
        assert_eq!(
            marks.watermark(&owned, &[("transactions", 3), ("feedback", 1)]),
            Some(100)
        );
    }

    #[test]
    fn each_repartition_partition_holds_the_watermark_back_until_its_own_marks_pass() {
        // Partition 1 of the topic has read the marks of both source
        // partitions up to 50 only: its partials beyond may still come.
        let mut marks = Marks::default();
        let sources = [("transactions", 2)];
        for p in 0..2 {
            marks.set(0, "transactions", p, Some(100), false);
            marks.set(1, "transactions", p, Some(50), false);
        }
        assert_eq!(marks.watermark(&[0, 1], &sources), Some(50));
        assert_eq!(
            marks.watermark(&[0, 1, 2], &sources),
            Some(50),
            "never backwards"
        );
        let mut fresh = Marks::default();
        for p in 0..2 {
            fresh.set(0, "transactions", p, Some(100), false);
        }
        assert_eq!(
            fresh.watermark(&[0, 2], &sources),
            None,
            "partition 2 has read no mark"
        );
        assert_eq!(fresh.all().len(), 2);
    }
}
