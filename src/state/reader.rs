//! Reading the changelog back, from the latest checkpoint to the end.
//!
//! The consumer group's committed offsets on the changelog topic say where
//! the latest checkpoint starts in each partition (the beginning when there
//! is none). Records are read `read_committed`, so aborted epochs are never
//! seen, and folded into the latest value per key; a tombstone removes its
//! key. Reading stops once every partition has reached its end.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use super::key::StateKey;
use super::value;
use crate::source::ReadToEndContext;

/// How long a read may go without a record or an end of partition.
const STALL: Duration = Duration::from_secs(30);

/// Where a changelog record was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// Changelog topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "topic {} partition {} offset {}",
            self.topic, self.partition, self.offset
        )
    }
}

/// One key's value as read back.
#[derive(Debug, Clone)]
pub struct RestoredValue {
    /// The value, its parts joined.
    pub value: Vec<u8>,
    /// How many parts it was stored in.
    pub parts: u32,
    /// Where its first part was read.
    pub location: Location,
}

/// The live state in the changelog.
#[derive(Debug, Default)]
pub struct Restored {
    /// Latest value per key.
    pub values: BTreeMap<StateKey, RestoredValue>,
    /// Records read.
    pub records: u64,
    /// Bytes read (keys and values).
    pub bytes: u64,
}

/// Why the changelog could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The broker could not be asked or read.
    #[error("reading the changelog: {context}: {source}")]
    Kafka {
        /// What was being done.
        context: &'static str,
        /// The client error.
        source: KafkaError,
    },
    /// A record cxpulse cannot have written.
    #[error("corrupt changelog record at {location}: {reason}")]
    Corrupt {
        /// Where it is.
        location: Location,
        /// What is wrong with it.
        reason: String,
    },
    /// Nothing arrived for too long.
    #[error(
        "reading the changelog {topic} stalled: nothing read for {} s before the end",
        STALL.as_secs()
    )]
    Stalled {
        /// The changelog topic.
        topic: String,
    },
}

/// Reads `topic` (`partitions` partitions) from the checkpoint offsets
/// committed by `group` to the end. Blocking: run it off the async runtime.
pub fn read(
    client: &ClientConfig,
    group: &str,
    topic: &str,
    partitions: i32,
) -> Result<Restored, ReadError> {
    let mut fold = Fold::default();
    scan(
        client,
        group,
        topic,
        partitions,
        |key, payload, location| fold.add(key, payload, location),
    )?;
    fold.finish()
}

/// The live record keys (state key and part) whose state `wanted` picks,
/// from the checkpoint offsets committed by `group` to the end; values are
/// not decoded, so a corrupt value does not stop it. Blocking.
pub fn live_keys(
    client: &ClientConfig,
    group: &str,
    topic: &str,
    partitions: i32,
    wanted: impl Fn(&StateKey) -> bool,
) -> Result<BTreeSet<(StateKey, u32)>, ReadError> {
    let mut live = BTreeSet::new();
    scan(
        client,
        group,
        topic,
        partitions,
        |key, payload, location| {
            let (state, part) = decode_key(key, &location)?;
            if wanted(&state) {
                match payload {
                    Some(_) => live.insert((state, part)),
                    None => live.remove(&(state, part)),
                };
            }
            Ok(())
        },
    )?;
    Ok(live)
}

/// Hands every record from the checkpoint offsets to the end to `each`.
fn scan(
    client: &ClientConfig,
    group: &str,
    topic: &str,
    partitions: i32,
    mut each: impl FnMut(Option<&[u8]>, Option<&[u8]>, Location) -> Result<(), ReadError>,
) -> Result<(), ReadError> {
    let kafka = |context| move |source| ReadError::Kafka { context, source };
    let consumer: BaseConsumer<ReadToEndContext> = client
        .clone()
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "earliest")
        .create_with_context(ReadToEndContext)
        .map_err(kafka("creating the restore consumer"))?;
    let mut wanted = TopicPartitionList::new();
    for p in 0..partitions {
        wanted.add_partition(topic, p);
    }
    let committed = consumer
        .committed_offsets(wanted, Duration::from_secs(30))
        .map_err(kafka("fetching the checkpoint offsets"))?;
    let mut start = TopicPartitionList::new();
    for element in committed.elements() {
        let offset = match element.offset() {
            Offset::Offset(o) => Offset::Offset(o),
            _ => Offset::Beginning,
        };
        start
            .add_partition_offset(topic, element.partition(), offset)
            .map_err(kafka("setting start offsets"))?;
    }
    consumer
        .assign(&start)
        .map_err(kafka("assigning the changelog"))?;

    let mut records = 0u64;
    let mut ended = vec![false; usize::try_from(partitions).unwrap_or(0)];
    let mut last_progress = Instant::now();
    let mut last_log = Instant::now();
    while ended.iter().any(|e| !e) {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                last_progress = Instant::now();
                let location = Location {
                    topic: topic.to_owned(),
                    partition: message.partition(),
                    offset: message.offset(),
                };
                if let Some(e) = usize::try_from(message.partition())
                    .ok()
                    .and_then(|p| ended.get_mut(p))
                {
                    *e = false;
                }
                records += 1;
                each(message.key(), message.payload(), location)?;
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                last_progress = Instant::now();
                if let Some(e) = usize::try_from(p).ok().and_then(|p| ended.get_mut(p)) {
                    *e = true;
                }
            }
            Some(Err(e)) => return Err(kafka("reading records")(e)),
            None if last_progress.elapsed() > STALL => {
                return Err(ReadError::Stalled {
                    topic: topic.to_owned(),
                });
            }
            None => {}
        }
        if last_log.elapsed() > Duration::from_secs(5) {
            tracing::info!(records, "reading the changelog");
            last_log = Instant::now();
        }
    }
    Ok(())
}

/// The state key and part of a record key.
fn decode_key(key: Option<&[u8]>, location: &Location) -> Result<(StateKey, u32), ReadError> {
    let key = key.ok_or_else(|| ReadError::Corrupt {
        location: location.clone(),
        reason: "a record without a key".to_owned(),
    })?;
    StateKey::decode(key).map_err(|reason| ReadError::Corrupt {
        location: location.clone(),
        reason,
    })
}

/// The latest stored part per key, folded record by record.
#[derive(Debug, Default)]
pub(crate) struct Fold {
    parts: BTreeMap<(StateKey, u32), (Vec<u8>, Location)>,
    records: u64,
    bytes: u64,
}

impl Fold {
    /// Applies one record: a value replaces, a tombstone removes.
    pub(crate) fn add(
        &mut self,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
        location: Location,
    ) -> Result<(), ReadError> {
        self.records += 1;
        self.bytes += (key.map_or(0, <[u8]>::len) + payload.map_or(0, <[u8]>::len)) as u64;
        let (state, part) = decode_key(key, &location)?;
        match payload {
            Some(payload) => {
                self.parts
                    .insert((state, part), (payload.to_vec(), location));
            }
            None => {
                self.parts.remove(&(state, part));
            }
        }
        Ok(())
    }

    /// Joins each key's parts into its value.
    pub(crate) fn finish(self) -> Result<Restored, ReadError> {
        let mut restored = Restored {
            records: self.records,
            bytes: self.bytes,
            ..Restored::default()
        };
        let mut by_key: BTreeMap<StateKey, Vec<(u32, Vec<u8>, Location)>> = BTreeMap::new();
        for ((key, part), (payload, location)) in self.parts {
            by_key
                .entry(key)
                .or_default()
                .push((part, payload, location));
        }
        for (key, parts) in by_key {
            let Some((_, first, location)) = parts.first() else {
                continue;
            };
            let corrupt = |reason: String| ReadError::Corrupt {
                location: location.clone(),
                reason,
            };
            let count = value::part_count(first).map_err(corrupt)?;
            // Parts beyond the count are stale (a value that shrank while a
            // tombstone was lost); parts below it must all be there.
            let current: Vec<&[u8]> = parts
                .iter()
                .filter(|(part, _, _)| *part < count)
                .enumerate()
                .map(|(i, (part, payload, _))| (i as u32 == *part).then_some(payload.as_slice()))
                .collect::<Option<_>>()
                .ok_or_else(|| corrupt(format!("a value of {count} parts misses some")))?;
            let joined = value::join(&current).map_err(corrupt)?;
            restored.values.insert(
                key,
                RestoredValue {
                    value: joined,
                    parts: count,
                    location: location.clone(),
                },
            );
        }
        Ok(restored)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::writer::ChangelogWriter;

    fn at(offset: i64) -> Location {
        Location {
            topic: "g-changelog".into(),
            partition: 0,
            offset,
        }
    }

    #[test]
    fn the_fold_keeps_the_latest_value_and_joins_parts() {
        let mut writer = ChangelogWriter::new("g-changelog", 1);
        let big = StateKey::Kept {
            source: "complaints".into(),
            key: "big".into(),
        };
        let small = StateKey::Kept {
            source: "complaints".into(),
            key: "small".into(),
        };
        let large_value: Vec<u8> = (0..(3 * crate::state::writer::MAX_RECORD_BYTES / 2))
            .map(|i| (i % 251) as u8)
            .collect();
        let mut records = writer.put(big.clone(), &large_value);
        records.extend(writer.put(small.clone(), b"one"));
        records.extend(writer.put(small.clone(), b"two"));
        records.extend(writer.put(
            StateKey::Kept {
                source: "complaints".into(),
                key: "gone".into(),
            },
            b"x",
        ));
        records.extend(writer.delete(&StateKey::Kept {
            source: "complaints".into(),
            key: "gone".into(),
        }));
        let mut fold = Fold::default();
        for (offset, r) in records.iter().enumerate() {
            fold.add(r.key.as_deref(), r.payload.as_deref(), at(offset as i64))
                .expect("valid");
        }
        let restored = fold.finish().expect("complete");
        assert_eq!(restored.records, records.len() as u64);
        assert_eq!(
            restored.values.keys().cloned().collect::<Vec<_>>(),
            [big.clone(), small.clone()]
        );
        assert_eq!(restored.values[&big].value, large_value);
        assert_eq!(restored.values[&big].parts, 2);
        assert_eq!(restored.values[&small].value, b"two");
        assert_eq!(restored.values[&small].location.offset, 3);
    }

    #[test]
    fn a_checkpoint_reads_back_as_the_live_state() {
        let mut writer = ChangelogWriter::new("g-changelog", 2);
        let key = StateKey::Kept {
            source: "complaints".into(),
            key: "k".into(),
        };
        let mut records = writer.put(key.clone(), b"old");
        records.extend(writer.begin_checkpoint());
        records.extend(writer.put(key.clone(), b"new"));
        let mut fold = Fold::default();
        for (offset, r) in records.iter().enumerate() {
            fold.add(r.key.as_deref(), r.payload.as_deref(), at(offset as i64))
                .expect("valid");
        }
        let restored = fold.finish().expect("every record reads back");
        assert_eq!(restored.values[&key].value, b"new");
        assert_eq!(
            restored
                .values
                .keys()
                .filter(|k| matches!(k, StateKey::Checkpoint { .. }))
                .count(),
            2,
            "a marker per partition"
        );
    }

    #[test]
    fn corrupt_records_name_where_they_are() {
        let mut fold = Fold::default();
        let err = fold
            .add(Some(b"not json"), Some(b"v"), at(41))
            .expect_err("bad key");
        assert!(
            err.to_string()
                .starts_with("corrupt changelog record at topic g-changelog partition 0 offset 41: unreadable changelog key"),
            "{err}"
        );
        let key = StateKey::Kept {
            source: "complaints".into(),
            key: "k".into(),
        }
        .encode(0);
        fold.add(Some(&key), Some(b"no magic"), at(42))
            .expect("values are checked at the end");
        let err = fold.finish().expect_err("bad value");
        assert_eq!(
            err.to_string(),
            "corrupt changelog record at topic g-changelog partition 0 offset 42: not a cxpulse state value (bad magic)"
        );
        // A value whose second part is missing.
        let mut fold = Fold::default();
        let parts = value::split(&[1; 100], 20);
        fold.add(Some(&key), Some(&parts[0]), at(7)).expect("ok");
        fold.add(
            Some(
                &StateKey::Kept {
                    source: "complaints".into(),
                    key: "k".into(),
                }
                .encode(2),
            ),
            Some(&parts[2]),
            at(8),
        )
        .expect("ok");
        assert!(
            fold.finish()
                .expect_err("incomplete")
                .to_string()
                .contains("misses some")
        );
    }
}
