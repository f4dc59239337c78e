//! Reading the changelog back, from the latest checkpoint to the end.
//!
//! The consumer group's committed offsets on the changelog topic say where
//! the latest checkpoint starts in each partition (the beginning when there
//! is none). Records are read `read_committed`, so aborted epochs are never
//! seen. A restore reads them twice ([`replay`]): first the keys alone, to
//! find the record that holds each key's final value (a key whose last
//! record is a tombstone has none), then the values, handing over only
//! those final ones, each as soon as its last part is read. So a restore
//! holds the state it restores and one value more, never the values that
//! later records replace or remove (`tests/memory.rs` measures it).
//! Reading stops once every partition has reached its end.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use super::error::FormatError;
use super::key::StateKey;
use super::value;
use crate::brokers::ReadToEndContext;

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

/// A key's final value, read back.
pub type Final = (StateKey, RestoredValue);

/// How much a replay read, and where it ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Replayed {
    /// Records read.
    pub records: u64,
    /// Bytes read (keys and values).
    pub bytes: u64,
    /// The offset each partition was read to by the pass that found the
    /// final values (the last stable offset then).
    pub ends: BTreeMap<i32, i64>,
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

/// Reads `partitions` of `topic` from the checkpoint offsets
/// committed by `group` to the end, twice: the keys, then each key's final
/// value, handed to `apply` as soon as it is whole. Blocking: run it off
/// the async runtime.
pub fn replay(
    client: &ClientConfig,
    group: &str,
    topic: &str,
    partitions: &[i32],
    mut apply: impl FnMut(Final) -> Result<(), ReadError>,
) -> Result<Replayed, ReadError> {
    let mut finals = HashMap::new();
    // Where the keys were read to: what the replay stands for (the values
    // pass reads no further than what the keys pass found final).
    let ends = scan(
        client,
        group,
        topic,
        Start::Checkpoint(partitions),
        |key, payload, location| {
            let (state, part) = decode_key(key, &location)?;
            if part == 0 {
                match payload {
                    Some(_) => finals.insert(state, (location.partition, location.offset)),
                    None => finals.remove(&state),
                };
            }
            Ok(())
        },
    )?;
    let mut assembly = Assembly::new(finals);
    scan(
        client,
        group,
        topic,
        Start::Checkpoint(partitions),
        |key, payload, location| match assembly.add(key, payload, location)? {
            Some(value) => apply(value),
            None => Ok(()),
        },
    )?;
    assembly.read.ends = ends;
    if let Some(location) = assembly.unfinished() {
        return Err(ReadError::Corrupt {
            location: location.clone(),
            reason: "a value whose last parts are missing".to_owned(),
        });
    }
    Ok(assembly.read)
}

/// The live record keys (state key and part) whose state `wanted` picks,
/// from the checkpoint offsets committed by `group` to the end; values are
/// not decoded, so a corrupt value does not stop it. Blocking.
pub fn live_keys(
    client: &ClientConfig,
    group: &str,
    topic: &str,
    partitions: &[i32],
    wanted: impl Fn(&StateKey) -> bool,
) -> Result<BTreeSet<(StateKey, u32)>, ReadError> {
    let mut live = BTreeSet::new();
    scan(
        client,
        group,
        topic,
        Start::Checkpoint(partitions),
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

/// How many committed records were written to `topic` since `ends`, the
/// offsets a [`replay`] read each partition to. Blocking.
pub fn committed_since(
    client: &ClientConfig,
    group: &str,
    topic: &str,
    ends: &BTreeMap<i32, i64>,
) -> Result<u64, ReadError> {
    let mut records = 0;
    scan(client, group, topic, Start::At(ends), |_, _, _| {
        records += 1;
        Ok(())
    })?;
    Ok(records)
}

/// Where a scan starts reading.
enum Start<'a> {
    /// At the checkpoint offsets committed by the group, in these
    /// partitions (at the beginning where there is none).
    Checkpoint(&'a [i32]),
    /// At these offsets, by partition.
    At(&'a BTreeMap<i32, i64>),
}

/// Hands every record from `start` to the end to `each`; returns the
/// offset each partition was read to.
fn scan(
    client: &ClientConfig,
    group: &str,
    topic: &str,
    start: Start<'_>,
    mut each: impl FnMut(Option<&[u8]>, Option<&[u8]>, Location) -> Result<(), ReadError>,
) -> Result<BTreeMap<i32, i64>, ReadError> {
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
    let offsets: Vec<(i32, Offset)> = match start {
        Start::Checkpoint(partitions) => {
            let mut wanted = TopicPartitionList::new();
            for &p in partitions {
                wanted.add_partition(topic, p);
            }
            let committed = consumer
                .committed_offsets(wanted, Duration::from_secs(30))
                .map_err(kafka("fetching the checkpoint offsets"))?;
            committed
                .elements()
                .iter()
                .map(|e| match e.offset() {
                    Offset::Offset(o) => (e.partition(), Offset::Offset(o)),
                    _ => (e.partition(), Offset::Beginning),
                })
                .collect()
        }
        Start::At(ends) => ends.iter().map(|(&p, &o)| (p, Offset::Offset(o))).collect(),
    };
    let mut assigned = TopicPartitionList::new();
    for &(partition, offset) in &offsets {
        assigned
            .add_partition_offset(topic, partition, offset)
            .map_err(kafka("setting start offsets"))?;
    }
    consumer
        .assign(&assigned)
        .map_err(kafka("assigning the changelog"))?;

    let mut records = 0u64;
    let mut ended: BTreeMap<i32, bool> = offsets.iter().map(|&(p, _)| (p, false)).collect();
    let mut last_progress = Instant::now();
    let mut last_log = Instant::now();
    while ended.values().any(|e| !e) {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                last_progress = Instant::now();
                let location = Location {
                    topic: topic.to_owned(),
                    partition: message.partition(),
                    offset: message.offset(),
                };
                if let Some(e) = ended.get_mut(&message.partition()) {
                    *e = false;
                }
                records += 1;
                each(message.key(), message.payload(), location)?;
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                last_progress = Instant::now();
                if let Some(e) = ended.get_mut(&p) {
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
    let position = consumer
        .position()
        .map_err(kafka("reading where the changelog ended"))?;
    // A partition nothing was read from ended where it started.
    let started = |partition| match offsets.iter().find(|(p, _)| *p == partition) {
        Some((_, Offset::Offset(o))) => *o,
        _ => 0,
    };
    Ok(position
        .elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(o) => (e.partition(), o),
            _ => (e.partition(), started(e.partition())),
        })
        .collect())
}

/// The state key and part of a record key.
fn decode_key(key: Option<&[u8]>, location: &Location) -> Result<(StateKey, u32), ReadError> {
    let key = key.ok_or_else(|| ReadError::Corrupt {
        location: location.clone(),
        reason: "a record without a key".to_owned(),
    })?;
    StateKey::decode(key).map_err(|reason| ReadError::Corrupt {
        location: location.clone(),
        reason: reason.to_string(),
    })
}

/// Puts the final values back together from their parts, record by
/// record, and passes over the others.
#[derive(Debug, Default)]
pub(crate) struct Assembly {
    /// Where each key's final value starts: the (partition, offset) of its
    /// first part.
    finals: HashMap<StateKey, (i32, i64)>,
    /// The parts read so far of final values whose last part is still to
    /// come.
    partial: HashMap<StateKey, Partial>,
    read: Replayed,
}

/// A value being put together: its part count and the parts read.
#[derive(Debug)]
struct Partial {
    count: u32,
    parts: Vec<Vec<u8>>,
    location: Location,
}

impl Assembly {
    /// An assembly of the values that start where `finals` says.
    pub(crate) fn new(finals: HashMap<StateKey, (i32, i64)>) -> Self {
        Self {
            finals,
            ..Self::default()
        }
    }

    /// Takes one record; returns the final value it completes, if any. A
    /// value's parts are written one after the other in one transaction:
    /// part 0 says how many there are. Tombstones, and values that later
    /// records replace, are passed over.
    pub(crate) fn add(
        &mut self,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
        location: Location,
    ) -> Result<Option<Final>, ReadError> {
        self.read.records += 1;
        self.read.bytes += (key.map_or(0, <[u8]>::len) + payload.map_or(0, <[u8]>::len)) as u64;
        let Some(payload) = payload else {
            return Ok(None);
        };
        let (state, part) = decode_key(key, &location)?;
        let corrupt = |reason: FormatError| ReadError::Corrupt {
            location: location.clone(),
            reason: reason.to_string(),
        };
        if part == 0 {
            if self.finals.get(&state) != Some(&(location.partition, location.offset)) {
                return Ok(None);
            }
            let count = value::part_count(payload).map_err(corrupt)?;
            if count == 1 {
                let value = value::join(&[payload]).map_err(corrupt)?;
                return Ok(Some((
                    state,
                    RestoredValue {
                        value,
                        parts: 1,
                        location,
                    },
                )));
            }
            self.partial.insert(
                state,
                Partial {
                    count,
                    parts: vec![payload.to_vec()],
                    location,
                },
            );
            return Ok(None);
        }
        let Some(partial) = self.partial.get_mut(&state) else {
            // A part of a value that a later record replaces.
            return Ok(None);
        };
        if part as usize != partial.parts.len() || part >= partial.count {
            return Err(corrupt(FormatError::PartOutOfOrder {
                part,
                count: partial.count,
                after: partial.parts.len(),
            }));
        }
        partial.parts.push(payload.to_vec());
        if partial.parts.len() < partial.count as usize {
            return Ok(None);
        }
        let Some(whole) = self.partial.remove(&state) else {
            return Ok(None);
        };
        let parts: Vec<&[u8]> = whole.parts.iter().map(Vec::as_slice).collect();
        let value = value::join(&parts).map_err(|reason| ReadError::Corrupt {
            location: whole.location.clone(),
            reason: reason.to_string(),
        })?;
        Ok(Some((
            state,
            RestoredValue {
                value,
                parts: whole.count,
                location: whole.location,
            },
        )))
    }

    /// The values started and not finished: a changelog cut short.
    pub(crate) fn unfinished(&self) -> Option<&Location> {
        self.partial.values().next().map(|p| &p.location)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::OutRecord;
    use crate::state::writer::ChangelogWriter;

    fn at(offset: i64) -> Location {
        Location {
            topic: "g-changelog".into(),
            partition: 0,
            offset,
        }
    }

    /// The final values `records` replay to, as the two passes of
    /// [`replay`] find them.
    fn replayed(records: &[OutRecord]) -> Vec<(StateKey, Vec<u8>)> {
        let mut finals = HashMap::new();
        for (offset, r) in records.iter().enumerate() {
            let (state, part) = decode_key(r.key.as_deref(), &at(offset as i64)).expect("a key");
            if part == 0 {
                match r.payload {
                    Some(_) => finals.insert(state, (0, offset as i64)),
                    None => finals.remove(&state),
                };
            }
        }
        let mut assembly = Assembly::new(finals);
        records
            .iter()
            .enumerate()
            .filter_map(|(offset, r)| {
                assembly
                    .add(r.key.as_deref(), r.payload.as_deref(), at(offset as i64))
                    .expect("valid")
            })
            .map(|(key, value)| (key, value.value))
            .collect()
    }

    #[test]
    fn a_replay_hands_over_each_final_value_whole_and_nothing_else() {
        let mut writer = ChangelogWriter::new("g-changelog", 1);
        let kept = |key: &str| StateKey::Kept {
            source: "complaints".into(),
            key: key.into(),
            partition: None,
        };
        let large_value: Vec<u8> = (0..(3 * crate::state::writer::MAX_RECORD_BYTES / 2))
            .map(|i| (i % 251) as u8)
            .collect();
        let mut records = writer.put_bytes(kept("big"), &large_value);
        records.extend(writer.put_bytes(kept("small"), b"one"));
        records.extend(writer.put_bytes(kept("small"), b"two"));
        records.extend(writer.put_bytes(kept("gone"), b"x"));
        records.extend(writer.delete(&kept("gone")));
        records.extend(writer.put_bytes(kept("large"), &large_value));
        // The big value shrinks to one part: its second part's tombstone
        // changes nothing.
        records.extend(writer.put_bytes(kept("big"), b"small now"));
        assert_eq!(
            replayed(&records),
            [
                (kept("small"), b"two".to_vec()),
                (kept("large"), large_value),
                (kept("big"), b"small now".to_vec()),
            ]
        );
    }

    #[test]
    fn a_checkpoint_replays_as_the_live_state() {
        let mut writer = ChangelogWriter::new("g-changelog", 2);
        let key = StateKey::Kept {
            source: "complaints".into(),
            key: "k".into(),
            partition: None,
        };
        let mut records = writer.put_bytes(key.clone(), b"old");
        records.extend(writer.begin_checkpoint());
        records.extend(writer.put_bytes(key.clone(), b"new"));
        let finals = replayed(&records);
        assert_eq!(finals.last(), Some(&(key, b"new".to_vec())));
        assert_eq!(
            finals
                .iter()
                .filter(|(k, _)| matches!(k, StateKey::Checkpoint { .. }))
                .count(),
            2,
            "a marker per partition"
        );
    }

    #[test]
    fn corrupt_records_name_where_they_are() {
        let key = |part: u32| {
            StateKey::Kept {
                source: "complaints".into(),
                key: "k".into(),
                partition: None,
            }
            .encode(part)
        };
        let state = StateKey::Kept {
            source: "complaints".into(),
            key: "k".into(),
            partition: None,
        };
        let mut assembly = Assembly::new(HashMap::from([(state, (0, 42))]));
        let err = assembly
            .add(Some(b"not json"), Some(b"v"), at(41))
            .expect_err("bad key");
        assert!(
            err.to_string()
                .starts_with("corrupt changelog record at topic g-changelog partition 0 offset 41: unreadable changelog key"),
            "{err}"
        );
        let err = assembly
            .add(Some(&key(0)), Some(b"no magic"), at(42))
            .expect_err("bad value");
        assert_eq!(
            err.to_string(),
            "corrupt changelog record at topic g-changelog partition 0 offset 42: not a cxpulse state value (bad magic)"
        );
        // A final value whose second part is missing.
        let parts = value::split(&[1; 100], 20);
        assert!(
            assembly
                .add(Some(&key(0)), Some(&parts[0]), at(42))
                .expect("ok")
                .is_none()
        );
        let err = assembly
            .add(Some(&key(2)), Some(&parts[2]), at(43))
            .expect_err("a part missing");
        assert!(err.to_string().contains("part 2 of a value of"), "{err}");
    }
}
