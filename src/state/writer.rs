//! Writing the changelog: state puts and deletes become Kafka records.
//!
//! A value larger than a Kafka message is split into parts; when it later
//! shrinks or is deleted, its extra parts are tombstoned. The writer knows
//! every live key and the size of its value, so that it can remove a job's
//! state when the job goes, and tell when a checkpoint is due: once the
//! changelog has grown by more than twice the live state since the last
//! one, all live state is written again and restore starts there, so
//! restore time follows the open state, not the history, even on a broker
//! that does not compact.

use std::collections::HashMap;

use super::key::StateKey;
use super::record::{Change, FormatError, StateRecord, StateValue};
use super::value;
use crate::sink::OutRecord;

/// Most bytes in one changelog record (brokers accept about 1 MB by default).
pub const MAX_RECORD_BYTES: usize = 512 * 1024;

/// A checkpoint is due once this much more than twice the live state was
/// written since the last one.
const CHECKPOINT_SLACK_BYTES: usize = 4 * 1024 * 1024;

/// What the writer knows of one live key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Live {
    bytes: usize,
    parts: u32,
}

/// Turns state changes into changelog records for one engine.
#[derive(Debug)]
pub struct ChangelogWriter {
    topic: String,
    partitions: i32,
    /// The changelog partitions this instance owns and writes to.
    owned: Vec<i32>,
    live: HashMap<StateKey, Live>,
    live_bytes: usize,
    written_since_checkpoint: usize,
    /// The last integer value written per key, to skip unchanged ones.
    ints: HashMap<StateKey, i64>,
    /// Most value bytes per record.
    part_bytes: usize,
}

/// Room kept in a record for its key and framing.
const KEY_ROOM: usize = 16 * 1024;

impl ChangelogWriter {
    /// A writer for `topic`, which has `partitions` partitions.
    pub fn new(topic: impl Into<String>, partitions: i32) -> Self {
        Self {
            topic: topic.into(),
            partitions: partitions.max(1),
            owned: (0..partitions.max(1)).collect(),
            live: HashMap::new(),
            live_bytes: 0,
            written_since_checkpoint: 0,
            ints: HashMap::new(),
            part_bytes: MAX_RECORD_BYTES,
        }
    }

    /// The same writer for a topic whose records take at most `limit`
    /// bytes: values are split into smaller parts if need be.
    pub fn with_record_limit(mut self, limit: usize) -> Self {
        self.part_bytes = MAX_RECORD_BYTES
            .min(limit.saturating_sub(KEY_ROOM))
            .max(1_024);
        self
    }

    /// The changelog partitions this instance owns.
    pub fn owned(&self) -> &[i32] {
        &self.owned
    }

    /// The same writer for instance `cluster`, which owns (restores and
    /// checkpoints) only its changelog partitions.
    pub fn owned_by(mut self, cluster: crate::cluster::Cluster) -> Self {
        self.owned = cluster.owned(self.partitions);
        self
    }

    /// The changelog topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Its number of partitions.
    pub fn partitions(&self) -> i32 {
        self.partitions
    }

    /// Registers a key read back from the changelog, with the size and part
    /// count of its value.
    pub fn restored(&mut self, key: StateKey, bytes: usize, parts: u32) {
        self.forget(&key);
        self.live_bytes += bytes;
        self.live.insert(key, Live { bytes, parts });
    }

    /// Counts what a restore read towards the next checkpoint.
    pub fn restore_read(&mut self, read_bytes: usize) {
        self.written_since_checkpoint = read_bytes.saturating_sub(self.live_bytes);
    }

    /// Records `record`'s value under its key.
    pub fn put(&mut self, record: StateRecord) -> Result<Vec<OutRecord>, FormatError> {
        if let StateValue::Int(v) = record.value {
            return Ok(self.put_int(record.key, v));
        }
        let bytes = record.encode()?;
        Ok(self.put_bytes(record.key, &bytes))
    }

    /// Writes one change: a record put, or a key deleted.
    pub fn apply(&mut self, change: Change) -> Result<Vec<OutRecord>, FormatError> {
        match change {
            Change::Put(record) => self.put(record),
            Change::Delete(key) => Ok(self.delete(&key)),
        }
    }

    /// Records that `key` now holds `value`.
    pub(super) fn put_bytes(&mut self, key: StateKey, value: &[u8]) -> Vec<OutRecord> {
        let parts = value::split(value, self.part_bytes);
        let count = parts.len() as u32;
        let old = self.forget(&key);
        let mut records: Vec<OutRecord> = parts
            .into_iter()
            .enumerate()
            .map(|(i, part)| self.record(&key, i as u32, Some(part)))
            .collect();
        if let Some(old) = old {
            records.extend((count..old.parts).map(|i| self.record(&key, i, None)));
        }
        let bytes = value.len();
        self.written_since_checkpoint += bytes;
        self.live_bytes += bytes;
        self.live.insert(
            key,
            Live {
                bytes,
                parts: count,
            },
        );
        records
    }

    /// Records that `key` holds nothing any more (tombstones for every
    /// part). Deleting a key that was never written writes nothing.
    pub fn delete(&mut self, key: &StateKey) -> Vec<OutRecord> {
        self.ints.remove(key);
        match self.forget(key) {
            Some(old) => (0..old.parts).map(|i| self.record(key, i, None)).collect(),
            None => Vec::new(),
        }
    }

    /// Records an integer value (a watermark, a position), unless it is the
    /// value last written for `key`.
    pub fn put_int(&mut self, key: StateKey, v: i64) -> Vec<OutRecord> {
        if self.ints.get(&key) == Some(&v) {
            return Vec::new();
        }
        match StateRecord::int(key.clone(), v).encode() {
            Ok(bytes) => {
                self.ints.insert(key.clone(), v);
                self.put_bytes(key, &bytes)
            }
            // One Int64 column always encodes; nothing to write otherwise.
            Err(_) => Vec::new(),
        }
    }

    /// Records `v` once in each owned changelog partition, under the key
    /// `key` gives for it: a value of the instance as a whole (how far a
    /// job's windows closed, a source's watermark), so that the owner of
    /// each partition after a rescale finds it there.
    pub fn put_int_in_owned(&mut self, key: impl Fn(i32) -> StateKey, v: i64) -> Vec<OutRecord> {
        let owned = self.owned.clone();
        owned
            .into_iter()
            .flat_map(|partition| self.put_int(key(partition), v))
            .collect()
    }

    /// Deletes every live key that `doomed` selects, e.g. a removed job's.
    pub fn delete_where(&mut self, doomed: impl Fn(&StateKey) -> bool) -> Vec<OutRecord> {
        let keys: Vec<StateKey> = self.live.keys().filter(|k| doomed(k)).cloned().collect();
        keys.iter().flat_map(|k| self.delete(k)).collect()
    }

    /// Whether the changelog has grown enough since the last checkpoint
    /// that all live state should be written again.
    pub fn checkpoint_due(&self) -> bool {
        self.written_since_checkpoint > 2 * self.live_bytes + CHECKPOINT_SLACK_BYTES
    }

    /// Starts a checkpoint: forgets what is live (the checkpoint writes it
    /// all again) and returns a marker record per owned partition; their
    /// offsets are where the next restore starts.
    pub fn begin_checkpoint(&mut self) -> Vec<OutRecord> {
        self.live.clear();
        self.ints.clear();
        self.live_bytes = 0;
        self.written_since_checkpoint = 0;
        let written_at =
            value::int("written_at", chrono::Utc::now().timestamp_millis()).unwrap_or_default();
        self.owned
            .iter()
            .flat_map(|&partition| {
                let key = StateKey::Checkpoint { partition };
                value::split(&written_at, self.part_bytes)
                    .into_iter()
                    .enumerate()
                    .map(move |(i, part)| (key.clone(), i as u32, part))
            })
            .map(|(key, i, part)| self.record(&key, i, Some(part)))
            .collect()
    }

    /// Bytes of live state.
    pub fn live_bytes(&self) -> usize {
        self.live_bytes
    }

    fn forget(&mut self, key: &StateKey) -> Option<Live> {
        let old = self.live.remove(key)?;
        self.live_bytes -= old.bytes;
        Some(old)
    }

    fn record(&self, key: &StateKey, part: u32, payload: Option<Vec<u8>>) -> OutRecord {
        OutRecord {
            topic: self.topic.clone(),
            partition: Some(key.partition(self.partitions)),
            key: Some(key.encode(part)),
            payload,
            headers: Vec::new(),
            job: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complaint(id: &str) -> StateKey {
        StateKey::Kept {
            source: "complaints".into(),
            key: id.into(),
            partition: None,
        }
    }

    #[test]
    fn an_instance_writes_and_checkpoints_only_its_own_partitions() {
        let mut writer = ChangelogWriter::new("c", 4).owned_by(crate::cluster::Cluster::new(2, 1));
        let closed = |partition| StateKey::Closed {
            job: "j".into(),
            fingerprint: "f".into(),
            partition: Some(partition),
        };
        let partitions = |records: &[OutRecord]| -> Vec<Option<i32>> {
            records.iter().map(|r| r.partition).collect()
        };
        let written = writer.put_int_in_owned(closed, 7);
        assert_eq!(partitions(&written), vec![Some(1), Some(3)]);
        assert!(writer.put_int_in_owned(closed, 7).is_empty(), "unchanged");
        assert_eq!(
            partitions(&writer.begin_checkpoint()),
            vec![Some(1), Some(3)]
        );
    }

    /// (part, tombstone?) of each record.
    fn shape(records: &[OutRecord]) -> Vec<(u32, bool)> {
        records
            .iter()
            .map(|r| {
                let (_, part) =
                    StateKey::decode(r.key.as_deref().unwrap_or_default()).expect("key");
                (part, r.payload.is_none())
            })
            .collect()
    }

    #[test]
    fn a_shrinking_value_tombstones_its_extra_parts() {
        let mut writer = ChangelogWriter::new("g-changelog", 3);
        let big = vec![7u8; 2 * MAX_RECORD_BYTES];
        let records = writer.put_bytes(complaint("k"), &big);
        assert_eq!(shape(&records), [(0, false), (1, false), (2, false)]);
        assert!(records.iter().all(|r| r.partition == records[0].partition));
        assert_eq!(writer.live_bytes(), big.len());
        assert_eq!(
            shape(&writer.put_bytes(complaint("k"), b"small")),
            [(0, false), (1, true), (2, true)]
        );
        assert_eq!(writer.live_bytes(), 5);
        assert_eq!(shape(&writer.delete(&complaint("k"))), [(0, true)]);
        assert!(writer.delete(&complaint("k")).is_empty(), "already gone");
        assert_eq!(writer.live_bytes(), 0);
    }

    #[test]
    fn unchanged_integers_are_not_written_again() {
        let mut writer = ChangelogWriter::new("g-changelog", 1);
        let key = StateKey::Watermark {
            source: "transactions".into(),
            partition: 0,
        };
        assert_eq!(writer.put_int(key.clone(), 5).len(), 1);
        assert!(writer.put_int(key.clone(), 5).is_empty());
        assert_eq!(writer.put_int(key.clone(), 6).len(), 1);
    }

    #[test]
    fn a_checkpoint_is_due_when_the_log_outgrows_the_live_state() {
        let mut writer = ChangelogWriter::new("g-changelog", 2);
        let value = vec![1u8; 1024 * 1024];
        // The same key rewritten: 1 MiB live, 1 MiB more written each time.
        for _ in 0..6 {
            writer.put_bytes(complaint("k"), &value);
        }
        assert!(!writer.checkpoint_due(), "6 MiB written, 2 x 1 + 4 allowed");
        writer.put_bytes(complaint("k"), &value);
        assert!(writer.checkpoint_due());
        let markers = writer.begin_checkpoint();
        assert_eq!(
            markers.iter().map(|m| m.partition).collect::<Vec<_>>(),
            [Some(0), Some(1)]
        );
        assert!(!writer.checkpoint_due());
        assert_eq!(writer.live_bytes(), 0, "the checkpoint writes it again");
    }

    #[test]
    fn a_jobs_state_is_deleted_with_it() {
        let mut writer = ChangelogWriter::new("g-changelog", 1);
        let pane = |job: &str, seq| StateKey::Pane {
            job: job.into(),
            fingerprint: "f".into(),
            source: "transactions".into(),
            partition: 0,
            pane_start: 0,
            seq,
        };
        writer.put_bytes(pane("a", 1), b"x");
        writer.put_bytes(pane("a", 2), b"x");
        writer.put_bytes(pane("b", 1), b"x");
        let gone = writer.delete_where(|k| k.job().is_some_and(|(job, _)| job == "a"));
        assert_eq!(gone.len(), 2);
        assert!(gone.iter().all(|r| r.payload.is_none()));
        assert_eq!(writer.live_bytes(), 1);
    }
}
