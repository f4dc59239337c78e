//! Assembles consumed Kafka messages into a micro-batch: decoded Arrow
//! batches per source and partition, table changes, dead letters
//! and the offsets to commit once the batch's outputs are delivered.

use std::collections::{BTreeMap, BTreeSet};

use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use rdkafka::message::{Headers, Message};

use super::Admission;
use crate::config::TopicsConfig;
use crate::decode::{BatchBuilder, RejectKind, Rejection, parse_record};
use crate::lookup::{Lookups, RowChange, owned_cells};
use crate::schema::{Source, Sources};
use crate::sink::DeadLetter;

/// A consumed record as it arrived, kept until its micro-batch is done so
/// that a job can still send it to the dead-letter topic.
#[derive(Debug, Clone)]
pub struct RawRecord {
    /// Source offset.
    pub offset: i64,
    /// Original key.
    pub key: Option<Vec<u8>>,
    /// Original value.
    pub payload: Option<Vec<u8>>,
    /// Original headers.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The record's size (key, value and headers) when it was larger than
    /// `engine.max_record_bytes`: then only a prefix of it was copied, and
    /// it is never decoded.
    pub oversized: Option<usize>,
}

/// A change to a table source with the record it came from (for its dead
/// letter, should the table refuse it).
#[derive(Debug, Clone)]
pub struct TableChange {
    /// The table source.
    pub source: Source,
    /// The change.
    pub change: RowChange,
    /// The topic and partition it was read from.
    pub at: (String, i32),
    /// The record.
    pub raw: RawRecord,
}

/// Applies `changes` to the table sources of `lookups`, in order; returns
/// the dead letters of those refused (`table_full`).
pub fn apply_table_changes(lookups: &Lookups, changes: Vec<TableChange>) -> Vec<DeadLetter> {
    let mut refused = Vec::new();
    for TableChange {
        source,
        change,
        at,
        raw,
    } in changes
    {
        if let Some(reason) = lookups.apply(source, change) {
            refused.push(raw.into_dead_letter(
                &at.0,
                at.1,
                Rejection::new(RejectKind::TableFull, reason),
                None,
            ));
        }
    }
    if !refused.is_empty() {
        tracing::error!(
            refused = refused.len(),
            "table source full: rows of new keys go to the dead-letter topic (table_full); raise engine.table_memory_limit"
        );
    }
    refused
}

/// The most of an oversized record's key that is copied.
const OVERSIZED_KEY_BYTES: usize = 1_024;

impl RawRecord {
    /// Copies `message`; one larger than `max_bytes` is copied only in part
    /// (for its dead letter), never whole.
    fn of<M: Message>(message: &M, max_bytes: usize) -> Self {
        let header_bytes: usize = message.headers().map_or(0, |h| {
            h.iter()
                .map(|x| x.key.len() + x.value.map_or(0, <[u8]>::len))
                .sum()
        });
        let size = message.key().map_or(0, <[u8]>::len)
            + message.payload().map_or(0, <[u8]>::len)
            + header_bytes;
        let oversized = (size > max_bytes).then_some(size);
        let cut = |bytes: &[u8], most: usize| bytes[..bytes.len().min(most)].to_vec();
        let (key_most, payload_most, keep_headers) = match oversized {
            None => (usize::MAX, usize::MAX, true),
            Some(_) => (
                OVERSIZED_KEY_BYTES,
                max_bytes / 2,
                header_bytes <= max_bytes / 4,
            ),
        };
        let headers = match message.headers() {
            Some(h) if keep_headers => h
                .iter()
                .map(|header| {
                    (
                        header.key.to_owned(),
                        header.value.unwrap_or_default().to_vec(),
                    )
                })
                .collect(),
            _ => Vec::new(),
        };
        Self {
            offset: message.offset(),
            key: message.key().map(|k| cut(k, key_most)),
            payload: message.payload().map(|p| cut(p, payload_most)),
            headers,
            oversized,
        }
    }

    /// This record as a dead letter from `topic`/`partition`.
    pub fn into_dead_letter(
        self,
        topic: &str,
        partition: i32,
        rejection: Rejection,
        job: Option<String>,
    ) -> DeadLetter {
        DeadLetter {
            topic: topic.to_owned(),
            partition,
            offset: self.offset,
            key: self.key,
            payload: self.payload,
            headers: self.headers,
            rejection,
            job,
            original_bytes: self.oversized,
            window: None,
        }
    }
}

/// A consumed record of a source, copied out of the consumer, ready to be
/// decoded anywhere.
#[derive(Debug, Clone)]
pub struct Consumed {
    /// The source whose topic it came from.
    pub source: Source,
    /// Kafka partition.
    pub partition: i32,
    /// The record.
    pub raw: RawRecord,
}

impl Consumed {
    /// Copies `message` (only in part when it is over `max_bytes`); `None`
    /// (with a warning) for a topic that is not a source's.
    pub fn of<M: Message>(
        message: &M,
        topics: &TopicsConfig,
        sources: Sources,
        max_bytes: usize,
    ) -> Option<Self> {
        let Some(source) = topics.source_of(sources, message.topic()) else {
            tracing::warn!(
                topic = message.topic(),
                "message from a topic that is not a source, skipped"
            );
            return None;
        };
        Some(Self {
            source,
            partition: message.partition(),
            raw: RawRecord::of(message, max_bytes),
        })
    }

    /// The record's size as consumed (key, value and headers).
    pub fn bytes(&self) -> usize {
        let raw = &self.raw;
        raw.oversized.unwrap_or_else(|| {
            raw.key.as_ref().map_or(0, Vec::len)
                + raw.payload.as_ref().map_or(0, Vec::len)
                + raw
                    .headers
                    .iter()
                    .map(|(k, v)| k.len() + v.len())
                    .sum::<usize>()
        })
    }
}

/// One partition's valid events of one source.
#[derive(Debug, Clone)]
pub struct SourceBatch {
    /// Source topic.
    pub topic: String,
    /// Kafka partition.
    pub partition: i32,
    /// The decoded events.
    pub rows: RecordBatch,
    /// The original records, one per row.
    pub raw: Vec<RawRecord>,
}

/// Everything one micro-batch carries to the jobs and the sink.
#[derive(Debug, Default)]
pub struct MicroBatch {
    /// Valid events per source, one batch per partition.
    pub events: BTreeMap<Source, Vec<SourceBatch>>,
    /// Changes to table sources, in topic order.
    pub table_changes: Vec<TableChange>,
    /// Rejected records.
    pub dead_letters: Vec<DeadLetter>,
    /// Records read, per topic.
    pub consumed: BTreeMap<String, u64>,
    /// Next offset to consume, per event (topic, partition): what the
    /// epoch's transaction commits.
    pub next_offsets: BTreeMap<(String, i32), i64>,
    /// Next offset to read, per (topic, partition) of the table sources
    /// (read whole by every instance, not through the group).
    pub lookup_offsets: BTreeMap<(String, i32), i64>,
}

impl MicroBatch {
    /// Adds the records of `other`, decoded from other partitions in
    /// parallel; each source's batches stay in partition order.
    pub fn absorb(&mut self, other: MicroBatch) {
        for (source, batches) in other.events {
            let mine = self.events.entry(source).or_default();
            mine.extend(batches);
            mine.sort_by_key(|b| b.partition);
        }
        self.table_changes.extend(other.table_changes);
        self.dead_letters.extend(other.dead_letters);
        for (topic, n) in other.consumed {
            *self.consumed.entry(topic).or_default() += n;
        }
        self.next_offsets.extend(other.next_offsets);
        self.lookup_offsets.extend(other.lookup_offsets);
    }

    /// Takes out the events, dead letters and offsets of `partitions`
    /// (topic, partition), one micro-batch per partition found; the
    /// records-read counts stay (they were read).
    pub fn split_off(
        &mut self,
        partitions: &BTreeSet<(String, i32)>,
    ) -> BTreeMap<(String, i32), MicroBatch> {
        let mut parts: BTreeMap<(String, i32), MicroBatch> = BTreeMap::new();
        let held =
            |topic: &str, partition: i32| partitions.contains(&(topic.to_owned(), partition));
        for (source, batches) in &mut self.events {
            let (out, keep): (Vec<_>, Vec<_>) = std::mem::take(batches)
                .into_iter()
                .partition(|b| held(&b.topic, b.partition));
            *batches = keep;
            for b in out {
                let at = (b.topic.clone(), b.partition);
                parts
                    .entry(at)
                    .or_default()
                    .events
                    .entry(*source)
                    .or_default()
                    .push(b);
            }
        }
        self.events.retain(|_, batches| !batches.is_empty());
        let (out, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.dead_letters)
            .into_iter()
            .partition(|d| held(&d.topic, d.partition));
        self.dead_letters = keep;
        for d in out {
            let at = (d.topic.clone(), d.partition);
            parts.entry(at).or_default().dead_letters.push(d);
        }
        self.next_offsets.retain(|at, next| {
            let out = partitions.contains(at);
            if out {
                let part = parts.entry(at.clone()).or_default();
                part.next_offsets.insert(at.clone(), *next);
            }
            !out
        });
        parts
    }
}

/// Collects messages until the engine closes the micro-batch.
pub struct Batcher {
    topics: TopicsConfig,
    sources: Sources,
    admission: Admission,
    builders: BTreeMap<(Source, i32), (BatchBuilder, Vec<RawRecord>)>,
    batch: MicroBatch,
    /// Records read per source, and the next offset per (source,
    /// partition), kept by source so no topic name is copied per record.
    consumed: BTreeMap<Source, u64>,
    next_offsets: BTreeMap<(Source, i32), i64>,
    records: usize,
}

impl Batcher {
    /// An empty batcher for the configured topics of `sources`, making the
    /// `admission` checks.
    pub fn new(topics: TopicsConfig, sources: Sources, admission: Admission) -> Self {
        Self {
            topics,
            sources,
            admission,
            builders: BTreeMap::new(),
            batch: MicroBatch::default(),
            consumed: BTreeMap::new(),
            next_offsets: BTreeMap::new(),
            records: 0,
        }
    }

    /// Records pushed since the last [`take`](Self::take).
    pub fn len(&self) -> usize {
        self.records
    }

    /// Whether no record was pushed since the last [`take`](Self::take).
    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    /// Decodes one message into the current micro-batch.
    pub fn push<M: Message>(&mut self, message: &M) {
        if let Some(consumed) = Consumed::of(
            message,
            &self.topics,
            self.sources,
            self.admission.max_record_bytes(),
        ) {
            self.add(consumed);
        }
    }

    /// Decodes one record already copied out of the consumer.
    pub fn add(&mut self, consumed: Consumed) {
        let Consumed {
            source: kind,
            partition,
            raw,
        } = consumed;
        self.records += 1;
        *self.consumed.entry(kind).or_default() += 1;
        self.next_offsets.insert((kind, partition), raw.offset + 1);

        let rejection = if let Some(size) = raw.oversized {
            Rejection::new(
                RejectKind::TooLarge,
                format!(
                    "the record is {size} bytes (key, value and headers), over \
                     engine.max_record_bytes ({} bytes); it was not decoded",
                    self.admission.max_record_bytes()
                ),
            )
        } else if !kind.is_stream() {
            match contained(|| row_change(kind, raw.key.as_deref(), raw.payload.as_deref())) {
                Ok(change) => {
                    let at = (self.topics.source_topic(kind).to_owned(), partition);
                    return self.batch.table_changes.push(TableChange {
                        source: kind,
                        change,
                        at,
                        raw,
                    });
                }
                Err(rejection) => rejection,
            }
        } else {
            let parsed = match raw.payload.as_deref() {
                None => Err(Rejection::new(
                    RejectKind::InvalidJson,
                    "the message has no value",
                )),
                Some(bytes) => contained(|| parse_record(kind, bytes)).and_then(|cells| {
                    let now = chrono::Utc::now().timestamp_millis();
                    self.admission.check_time(kind, &cells, now).map(|()| cells)
                }),
            };
            match parsed {
                Ok(cells) => {
                    let (builder, raws) = self
                        .builders
                        .entry((kind, partition))
                        .or_insert_with(|| (BatchBuilder::new(kind), Vec::new()));
                    builder.append(&cells);
                    return raws.push(raw);
                }
                Err(rejection) => rejection,
            }
        };
        self.batch.dead_letters.push(raw.into_dead_letter(
            self.topics.source_topic(kind),
            partition,
            rejection,
            None,
        ));
    }

    /// Closes the micro-batch and starts a new one.
    pub fn take(&mut self) -> Result<MicroBatch, ArrowError> {
        let mut batch = std::mem::take(&mut self.batch);
        for (source, n) in std::mem::take(&mut self.consumed) {
            batch
                .consumed
                .insert(self.topics.source_topic(source).to_owned(), n);
        }
        for ((source, partition), next) in std::mem::take(&mut self.next_offsets) {
            let at = (self.topics.source_topic(source).to_owned(), partition);
            if source.is_stream() {
                batch.next_offsets.insert(at, next);
            } else {
                batch.lookup_offsets.insert(at, next);
            }
        }
        for ((kind, partition), (builder, raw)) in &mut self.builders {
            if !builder.is_empty() {
                batch.events.entry(*kind).or_default().push(SourceBatch {
                    topic: self.topics.source_topic(*kind).to_owned(),
                    partition: *partition,
                    rows: builder.finish()?,
                    raw: std::mem::take(raw),
                });
            }
        }
        self.records = 0;
        Ok(batch)
    }
}

/// Runs `decode`, turning a panic (a bug in cxpulse, or in a library it
/// calls, on some input) into the record's rejection: the record becomes a
/// dead letter and the decoding thread goes on.
fn contained<T>(decode: impl FnOnce() -> Result<T, Rejection>) -> Result<T, Rejection> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(decode)).unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".to_owned());
        tracing::error!(panic = %what, "decoding a record panicked; the record is a dead letter (decode_error)");
        Err(Rejection::new(
            RejectKind::DecodeError,
            format!("decoding the record failed inside cxpulse (a bug; please report it): {}", crate::decode::quote(&what)),
        ))
    })
}

/// A table source's message: an upsert, or a delete for a null value.
fn row_change(
    source: Source,
    key: Option<&[u8]>,
    payload: Option<&[u8]>,
) -> Result<RowChange, Rejection> {
    let is_tombstone =
        payload.is_none_or(|p| p.trim_ascii().is_empty() || p.trim_ascii() == b"null");
    if is_tombstone {
        return match key.map(std::str::from_utf8) {
            Some(Ok(id)) if !id.is_empty() => Ok(RowChange::Delete(id.to_owned())),
            _ => Err(Rejection::new(
                RejectKind::MissingKey,
                format!(
                    "a null value deletes a row of {}, but the message has no UTF-8 key naming its {}",
                    source.name(),
                    source.time_or_key()
                ),
            )),
        };
    }
    let cells = parse_record(source, payload.unwrap_or_default())?;
    Ok(RowChange::Upsert(owned_cells(cells)))
}

#[cfg(test)]
mod tests {
    use rdkafka::Timestamp;
    use rdkafka::message::OwnedMessage;

    use super::*;
    use crate::config::Config;
    use crate::decode::Cell;

    fn message(
        topic: &str,
        partition: i32,
        offset: i64,
        key: Option<&str>,
        payload: Option<&str>,
    ) -> OwnedMessage {
        OwnedMessage::new(
            payload.map(|p| p.as_bytes().to_vec()),
            key.map(|k| k.as_bytes().to_vec()),
            topic.to_owned(),
            Timestamp::NotAvailable,
            partition,
            offset,
            None,
        )
    }

    /// A valid transaction of the default sources.
    const GOOD_TRANSACTION: &str =
        r#"{"event_id":"e","customer_id":"c","ts":1,"amount":3,"category":"x"}"#;

    /// A batcher for the default configuration's sources.
    fn default_batcher() -> Batcher {
        let config = Config::embedded_default();
        Batcher::new(
            config.topics.clone(),
            config.declared,
            Admission::new(&config),
        )
    }

    #[test]
    fn split_off_takes_a_partitions_events_dead_letters_and_offset() {
        let mut batcher = default_batcher();
        let good = GOOD_TRANSACTION;
        batcher.push(&message("cx.transactions", 0, 10, None, Some(good)));
        batcher.push(&message("cx.transactions", 1, 4, None, Some(good)));
        batcher.push(&message("cx.transactions", 1, 5, None, Some("{oops")));
        batcher.push(&message("cx.transactions", 1, 6, None, Some(good)));
        let mut batch = batcher.take().expect("batch");
        let one = ("cx.transactions".to_owned(), 1);
        let mut parts = batch.split_off(&BTreeSet::from([one.clone()]));

        let transactions = crate::config::default_source("transactions");
        let left: Vec<(i32, usize)> = batch.events[&transactions]
            .iter()
            .map(|b| (b.partition, b.rows.num_rows()))
            .collect();
        assert_eq!(left, vec![(0, 1)]);
        assert!(batch.dead_letters.is_empty());
        assert_eq!(
            batch.next_offsets.keys().collect::<Vec<_>>(),
            vec![&("cx.transactions".to_owned(), 0)]
        );
        assert_eq!(batch.consumed["cx.transactions"], 4, "read counts stay");

        assert_eq!(parts.len(), 1);
        let held = parts.remove(&one).expect("partition 1");
        let offsets: Vec<i64> = held.events[&transactions]
            .iter()
            .flat_map(|b| b.raw.iter().map(|r| r.offset))
            .collect();
        assert_eq!(offsets, vec![4, 6]);
        assert_eq!(
            held.dead_letters
                .iter()
                .map(|d| d.offset)
                .collect::<Vec<_>>(),
            vec![5]
        );
        assert_eq!(held.next_offsets, BTreeMap::from([(one, 7)]));
        assert!(held.consumed.is_empty());
    }

    #[test]
    fn splits_by_source_and_partition_and_tracks_offsets() {
        let mut batcher = default_batcher();
        let good = GOOD_TRANSACTION;
        batcher.push(&message("cx.transactions", 0, 10, None, Some(good)));
        batcher.push(&message("cx.transactions", 1, 4, None, Some(good)));
        batcher.push(&message("cx.transactions", 0, 11, None, Some("{oops")));
        batcher.push(&message(
            "cx.customers",
            0,
            7,
            Some("c9"),
            Some(r#"{"customer_id":"c9","gender":"f"}"#),
        ));
        batcher.push(&message("cx.customers", 0, 8, Some("c9"), None));
        batcher.push(&message("cx.customers", 0, 9, None, Some("null")));
        assert_eq!(batcher.len(), 6);

        let batch = batcher.take().expect("batch");
        assert!(batcher.is_empty());
        let rows: Vec<(i32, usize, i64)> = batch.events
            [&crate::config::default_source("transactions")]
            .iter()
            .map(|b| (b.partition, b.rows.num_rows(), b.raw[0].offset))
            .collect();
        assert_eq!(rows, vec![(0, 1, 10), (1, 1, 4)]);
        assert_eq!(batch.consumed["cx.transactions"], 3);
        assert_eq!(batch.consumed["cx.customers"], 3);
        assert_eq!(batch.next_offsets[&("cx.transactions".to_owned(), 0)], 12);
        assert_eq!(batch.next_offsets[&("cx.transactions".to_owned(), 1)], 5);
        assert_eq!(batch.lookup_offsets[&("cx.customers".to_owned(), 0)], 10);
        assert!(
            !batch
                .next_offsets
                .contains_key(&("cx.customers".to_owned(), 0))
        );
        assert!(
            matches!(&batch.table_changes[0].change, RowChange::Upsert(cells) if cells[0] == Cell::Str("c9".into()))
        );
        assert_eq!(
            (
                &batch.table_changes[1].source,
                &batch.table_changes[1].change
            ),
            (
                &crate::config::default_source("customers"),
                &RowChange::Delete("c9".to_owned())
            )
        );
        let reasons: Vec<(i64, RejectKind)> = batch
            .dead_letters
            .iter()
            .map(|d| (d.offset, d.rejection.kind))
            .collect();
        assert_eq!(
            reasons,
            vec![(11, RejectKind::InvalidJson), (9, RejectKind::MissingKey)]
        );
    }
}
