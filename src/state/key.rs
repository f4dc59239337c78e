//! Changelog record keys: what a record holds and for whom.
//!
//! Keys are JSON objects with their fields in a fixed order, so the same
//! state always has the same key bytes (log compaction keeps the latest
//! value per key), and no field is written with a library's debug text (a
//! session key is written by [`session_key`], whose version the key
//! carries). `cxpulse read` shows them as they are, e.g.
//! `{"kind":"pane","job":"need_by_category","fingerprint":"…","source":"transactions","partition":0,"pane_start":1767225600000,"seq":7,"part":0}`.

use datafusion::common::ScalarValue;
use serde::{Deserialize, Serialize};

use super::error::FormatError;

/// The state a changelog record holds.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum StateKey {
    /// One partial-state batch of a TUMBLE or HOP pane.
    Pane {
        /// Job name.
        job: String,
        /// The job's plan fingerprint.
        fingerprint: String,
        /// Source table the rows came from.
        source: String,
        /// Source partition the rows came from.
        partition: i32,
        /// Pane start (ms).
        pane_start: i64,
        /// The batch's sequence number in the job's pane store.
        seq: u64,
    },
    /// An open session's header: its key and bounds (whole sessions, with
    /// their rows, from releases before session parts).
    Session {
        /// How the session key is written in `key`: absent (1) in records
        /// of earlier releases, which wrote DataFusion's debug text;
        /// [`SESSION_KEY_VERSION`] now ([`session_key`]).
        #[serde(rename = "v", default = "first_version")]
        version: u32,
        /// Job name.
        job: String,
        /// The job's plan fingerprint.
        fingerprint: String,
        /// The session key, as text (the typed key is in the value).
        key: String,
        /// Session start (ms).
        start: i64,
        /// The changelog partition: the key's home, the source partition of
        /// its events (absent in records of releases before scale-out, and
        /// of sessions restored from them: placed by a hash then).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        partition: Option<i32>,
    },
    /// One batch of state rows of an open session (the session's key and
    /// bounds are in its [`StateKey::Session`] record, the typed key in the
    /// value of both).
    SessionPart {
        /// How the session key is written, as for [`StateKey::Session`].
        #[serde(rename = "v", default = "first_version")]
        version: u32,
        /// Job name.
        job: String,
        /// The job's plan fingerprint.
        fingerprint: String,
        /// The session key, as text.
        key: String,
        /// Session start (ms).
        start: i64,
        /// The batch's sequence number in the job's session store.
        seq: u64,
        /// The changelog partition, as for [`StateKey::Session`].
        #[serde(default, skip_serializing_if = "Option::is_none")]
        partition: Option<i32>,
    },
    /// How far a job's windows have closed, for the state of one
    /// changelog partition (absent in records of releases before
    /// scale-out: for all of them).
    Closed {
        /// Job name.
        job: String,
        /// The job's plan fingerprint.
        fingerprint: String,
        /// The changelog partition (and source partitions of that number)
        /// it is about.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        partition: Option<i32>,
    },
    /// Where a running backfill of a job stands in one source partition:
    /// the next offset to read.
    BackfillOffset {
        /// Job name.
        job: String,
        /// The job's plan fingerprint.
        fingerprint: String,
        /// Source table.
        source: String,
        /// Source partition.
        partition: i32,
    },
    /// The largest event time a running backfill has read from one source
    /// partition (its own watermarks, apart from the live ones).
    BackfillEventTime {
        /// Job name.
        job: String,
        /// The job's plan fingerprint.
        fingerprint: String,
        /// Source table.
        source: String,
        /// Source partition.
        partition: i32,
    },
    /// A job's backfill has caught up and the job runs live: a restart does
    /// not backfill it again.
    BackfillDone {
        /// Job name.
        job: String,
        /// The job's plan fingerprint.
        fingerprint: String,
        /// The changelog partition it was written to, by the instance that
        /// owns it (absent in records of releases before scale-out).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        partition: Option<i32>,
    },
    /// The largest event time a source partition has delivered.
    Watermark {
        /// Source table.
        source: String,
        /// Source partition.
        partition: i32,
    },
    /// A source's watermark (never moves backwards, also across restarts),
    /// as the instance owning one changelog partition had it.
    SourceWatermark {
        /// Source table.
        source: String,
        /// The changelog partition (absent in records of releases before
        /// scale-out).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        partition: Option<i32>,
    },
    /// One key's events of a stream's kept tables (written as `complaint`
    /// with an `id`, for the complaints, by earlier versions: still read).
    #[serde(alias = "complaint")]
    Kept {
        /// The stream.
        #[serde(default = "complaints")]
        source: String,
        /// The key (e.g. a `complaint_id`).
        #[serde(alias = "id")]
        key: String,
        /// The changelog partition: the key's home, the source partition of
        /// its events (absent in records of releases before scale-out, and
        /// of keys restored from them: placed by a hash then).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        partition: Option<i32>,
    },
    /// One key's events in the copy of a stream's kept tables that stage 2
    /// of a shuffled job reads when its windows fire ([`crate::shuffle`]).
    KeptCopy {
        /// Job name.
        job: String,
        /// The job's plan fingerprint.
        fingerprint: String,
        /// The changelog (and repartition) partition.
        partition: i32,
        /// The stream.
        source: String,
        /// The key (e.g. a `complaint_id`).
        key: String,
    },
    /// How far a lookup table's topic has been read, so that its invalid
    /// records are not sent to the dead-letter topic again after a restart.
    LookupPosition {
        /// Lookup topic.
        topic: String,
        /// Its partition.
        partition: i32,
        /// The changelog partition it is written to when several instances
        /// run (instance 0 dead-letters the tables' records and owns
        /// changelog partition 0); absent: the lookup partition's.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        home: Option<i32>,
    },
    /// The instance that owns one changelog partition (and the event
    /// partitions of that number), written when it starts; its value is
    /// its `cluster.generation`. The next owner, after a restart or a
    /// rescale, fences it, and an instance of another count and a lower
    /// generation that finds it stops.
    Member {
        /// The owner's `transactional.id`.
        transactional_id: String,
        /// How many instances it was one of.
        instances: i32,
        /// The changelog partition.
        partition: i32,
    },
    /// A mark stage 2 of a shuffled job has read from one repartition
    /// partition ([`crate::shuffle`]): how far one source partition's
    /// partials in it go. Kept in the changelog partition of the same
    /// number, so that its owner after a restart or a rescale knows it
    /// before the next mark comes; the value is
    /// [`crate::shuffle::mark_as_int`].
    ShuffleMark {
        /// Job name.
        job: String,
        /// The job's plan fingerprint.
        fingerprint: String,
        /// The changelog (and repartition) partition.
        partition: i32,
        /// Source table.
        source: String,
        /// The source partition the mark is about.
        source_partition: i32,
    },
    /// Where a checkpoint (a rewrite of all live state) starts in one
    /// changelog partition; restore begins at the latest one.
    Checkpoint {
        /// Changelog partition.
        partition: i32,
    },
}

/// Characters of a key value (a session key, a kept table's key) written
/// into a changelog key as they are; a longer value is written as its
/// prefix and a hash, so that no key outgrows a Kafka record (the whole
/// value is in the record's value).
pub const KEY_TEXT_CHARS: usize = 200;

/// `text` as a changelog key holds it: whole up to [`KEY_TEXT_CHARS`]
/// characters, else its prefix, `…#` and 16 hex digits of its xxHash64.
pub fn key_text(text: &str) -> String {
    match text.char_indices().nth(KEY_TEXT_CHARS) {
        None => text.to_owned(),
        Some((cut, _)) => format!(
            "{}…#{:016x}",
            &text[..cut],
            twox_hash::XxHash64::oneshot(0, text.as_bytes())
        ),
    }
}

/// The version of [`session_key`]: written as `"v"` in session keys.
pub const SESSION_KEY_VERSION: u32 = 2;

/// Session keys without a version were written by earlier releases.
fn first_version() -> u32 {
    1
}

/// A session key as the changelog key holds it (version
/// [`SESSION_KEY_VERSION`]): a text of the value that does not depend on
/// how DataFusion prints values for debugging, whole up to
/// [`KEY_TEXT_CHARS`] characters. Strings are written as they are,
/// integers and booleans as numbers and `true`/`false`, a null as `null`,
/// other values as DataFusion displays them; the typed key is in the
/// record's value.
pub fn session_key(value: &ScalarValue) -> String {
    let text = match value {
        ScalarValue::Utf8(Some(s))
        | ScalarValue::LargeUtf8(Some(s))
        | ScalarValue::Utf8View(Some(s)) => s.clone(),
        ScalarValue::Int8(Some(n)) => n.to_string(),
        ScalarValue::Int16(Some(n)) => n.to_string(),
        ScalarValue::Int32(Some(n)) => n.to_string(),
        ScalarValue::Int64(Some(n)) => n.to_string(),
        ScalarValue::UInt8(Some(n)) => n.to_string(),
        ScalarValue::UInt16(Some(n)) => n.to_string(),
        ScalarValue::UInt32(Some(n)) => n.to_string(),
        ScalarValue::UInt64(Some(n)) => n.to_string(),
        ScalarValue::Boolean(Some(b)) => b.to_string(),
        v if v.is_null() => "null".to_owned(),
        other => other.to_string(),
    };
    key_text(&text)
}

/// A record key as stored: the state key and which part of its value
/// (values larger than a Kafka message are split).
/// The stream of [`StateKey::Kept`] records written before streams other
/// than the complaints could keep tables.
fn complaints() -> String {
    "complaints".to_owned()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct RecordKey {
    #[serde(flatten)]
    key: StateKey,
    part: u32,
}

impl StateKey {
    /// The record key of part `part` of this state's value.
    pub fn encode(&self, part: u32) -> Vec<u8> {
        let record = RecordKey {
            key: self.clone(),
            part,
        };
        // Serialising plain strings and integers cannot fail.
        serde_json::to_vec(&record).unwrap_or_default()
    }

    /// Reads a record key back: the state key and the part.
    pub fn decode(bytes: &[u8]) -> Result<(StateKey, u32), FormatError> {
        serde_json::from_slice::<RecordKey>(bytes)
            .map(|r| (r.key, r.part))
            .map_err(|e| FormatError::Key(e.to_string()))
    }

    /// The changelog partition of this state among `partitions`: its source
    /// (or changelog) partition where it has one, so that state follows its
    /// partition to the instance that owns it; else a hash of the key.
    pub fn partition(&self, partitions: i32) -> i32 {
        let partitions = partitions.max(1);
        match self {
            StateKey::Pane { partition, .. }
            | StateKey::BackfillOffset { partition, .. }
            | StateKey::BackfillEventTime { partition, .. }
            | StateKey::Watermark { partition, .. }
            | StateKey::LookupPosition {
                home: None,
                partition,
                ..
            }
            | StateKey::LookupPosition {
                home: Some(partition),
                ..
            }
            | StateKey::Closed {
                partition: Some(partition),
                ..
            }
            | StateKey::BackfillDone {
                partition: Some(partition),
                ..
            }
            | StateKey::SourceWatermark {
                partition: Some(partition),
                ..
            }
            | StateKey::Session {
                partition: Some(partition),
                ..
            }
            | StateKey::SessionPart {
                partition: Some(partition),
                ..
            }
            | StateKey::Kept {
                partition: Some(partition),
                ..
            }
            | StateKey::KeptCopy { partition, .. }
            | StateKey::Member { partition, .. }
            | StateKey::ShuffleMark { partition, .. }
            | StateKey::Checkpoint { partition } => partition.rem_euclid(partitions),
            other => {
                let hash = twox_hash::XxHash64::oneshot(0, &other.encode(0));
                (hash % partitions as u64) as i32
            }
        }
    }

    /// The job and fingerprint this state belongs to, for job state.
    pub fn job(&self) -> Option<(&str, &str)> {
        match self {
            StateKey::Pane {
                job, fingerprint, ..
            }
            | StateKey::Session {
                job, fingerprint, ..
            }
            | StateKey::SessionPart {
                job, fingerprint, ..
            }
            | StateKey::BackfillOffset {
                job, fingerprint, ..
            }
            | StateKey::BackfillEventTime {
                job, fingerprint, ..
            }
            | StateKey::Closed {
                job, fingerprint, ..
            }
            | StateKey::BackfillDone {
                job, fingerprint, ..
            }
            | StateKey::ShuffleMark {
                job, fingerprint, ..
            }
            | StateKey::KeptCopy {
                job, fingerprint, ..
            } => Some((job, fingerprint)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_stable_json_and_read_back() {
        let key = StateKey::Pane {
            job: "need_by_category".into(),
            fingerprint: "00ff".into(),
            source: "transactions".into(),
            partition: 2,
            pane_start: 3_600_000,
            seq: 7,
        };
        let bytes = key.encode(1);
        assert_eq!(
            String::from_utf8_lossy(&bytes),
            r#"{"kind":"pane","job":"need_by_category","fingerprint":"00ff","source":"transactions","partition":2,"pane_start":3600000,"seq":7,"part":1}"#
        );
        assert_eq!(StateKey::decode(&bytes), Ok((key.clone(), 1)));
        assert_eq!(key.partition(3), 2);
        assert_eq!(key.partition(2), 0);
        assert_eq!(key.job(), Some(("need_by_category", "00ff")));
    }

    #[test]
    fn backfill_keys_belong_to_their_job_and_follow_their_partition() {
        let key = StateKey::BackfillOffset {
            job: "loyalty".into(),
            fingerprint: "00ff".into(),
            source: "transactions".into(),
            partition: 5,
        };
        let bytes = key.encode(0);
        assert_eq!(
            String::from_utf8_lossy(&bytes),
            r#"{"kind":"backfill_offset","job":"loyalty","fingerprint":"00ff","source":"transactions","partition":5,"part":0}"#
        );
        assert_eq!(StateKey::decode(&bytes), Ok((key.clone(), 0)));
        assert_eq!(key.partition(4), 1);
        assert_eq!(key.job(), Some(("loyalty", "00ff")));
        let done = StateKey::BackfillDone {
            job: "loyalty".into(),
            fingerprint: "00ff".into(),
            partition: None,
        };
        assert_eq!(
            String::from_utf8_lossy(&done.encode(0)),
            r#"{"kind":"backfill_done","job":"loyalty","fingerprint":"00ff","part":0}"#,
            "as releases before scale-out wrote it"
        );
        assert_eq!(done.job(), Some(("loyalty", "00ff")));
        let done = StateKey::BackfillDone {
            job: "loyalty".into(),
            fingerprint: "00ff".into(),
            partition: Some(6),
        };
        assert_eq!(
            String::from_utf8_lossy(&done.encode(0)),
            r#"{"kind":"backfill_done","job":"loyalty","fingerprint":"00ff","partition":6,"part":0}"#
        );
        assert_eq!(StateKey::decode(&done.encode(0)), Ok((done.clone(), 0)));
        assert_eq!(done.partition(4), 2, "the partition it names");
        let member = StateKey::Member {
            transactional_id: "cxpulse-2".into(),
            instances: 3,
            partition: 5,
        };
        assert_eq!(
            String::from_utf8_lossy(&member.encode(0)),
            r#"{"kind":"member","transactional_id":"cxpulse-2","instances":3,"partition":5,"part":0}"#
        );
        assert_eq!(member.partition(6), 5);
        let position = StateKey::LookupPosition {
            topic: "cx.customers".into(),
            partition: 3,
            home: None,
        };
        assert_eq!(position.partition(4), 3);
        let position = StateKey::LookupPosition {
            topic: "cx.customers".into(),
            partition: 3,
            home: Some(0),
        };
        assert_eq!(position.partition(4), 0);
    }

    #[test]
    fn a_long_key_value_is_written_as_its_prefix_and_hash() {
        assert_eq!(key_text("c-42"), "c-42");
        let long = "x".repeat(700_000);
        let text = key_text(&long);
        assert_eq!(text.chars().count(), KEY_TEXT_CHARS + 2 + 16);
        assert!(text.starts_with(&"x".repeat(KEY_TEXT_CHARS)));
        assert_eq!(key_text(&long), text, "deterministic");
        let mut other = long.clone();
        other.push('y');
        assert_ne!(key_text(&other), text);
    }

    #[test]
    fn keys_without_a_partition_hash_to_a_fixed_one() {
        let key = StateKey::Kept {
            source: "complaints".into(),
            key: "k1".into(),
            partition: None,
        };
        let p = key.partition(4);
        assert!((0..4).contains(&p));
        assert_eq!(key.partition(4), p, "deterministic");
        assert_eq!(key.partition(1), 0);
        assert!(StateKey::decode(br#"{"kind":"pane"}"#).is_err());
        assert!(StateKey::decode(br#"{"kind":"complaint","id":"k","part":0,"x":1}"#).is_err());
        // Written by earlier versions for the complaint tables: still read.
        assert_eq!(
            StateKey::decode(br#"{"kind":"complaint","id":"k","part":0}"#),
            Ok((
                StateKey::Kept {
                    source: "complaints".into(),
                    key: "k".into(),
                    partition: None
                },
                0
            ))
        );
    }

    #[test]
    fn session_keys_carry_their_version_and_those_of_earlier_releases_still_read() {
        let key = StateKey::SessionPart {
            version: SESSION_KEY_VERSION,
            job: "visits".into(),
            fingerprint: "00ff".into(),
            key: session_key(&ScalarValue::Utf8(Some("c1".into()))),
            start: 600_000,
            seq: 3,
            partition: Some(4),
        };
        let bytes = key.encode(0);
        assert_eq!(
            String::from_utf8_lossy(&bytes),
            r#"{"kind":"session_part","v":2,"job":"visits","fingerprint":"00ff","key":"c1","start":600000,"seq":3,"partition":4,"part":0}"#
        );
        assert_eq!(key.partition(6), 4, "its key's home partition");
        assert_eq!(StateKey::decode(&bytes), Ok((key, 0)));
        // As the release of 2026-12-07 wrote it (tests/fixtures/changelog-v1).
        let old = br#"{"kind":"session","job":"visits","fingerprint":"759c09bb087e2a57","key":"Utf8(\"c1\")","start":1767226200000,"part":0}"#;
        assert_eq!(
            StateKey::decode(old),
            Ok((
                StateKey::Session {
                    version: 1,
                    job: "visits".into(),
                    fingerprint: "759c09bb087e2a57".into(),
                    key: r#"Utf8("c1")"#.into(),
                    start: 1_767_226_200_000,
                    partition: None,
                },
                0
            ))
        );
    }

    #[test]
    fn session_key_text_does_not_depend_on_debug_output() {
        assert_eq!(session_key(&ScalarValue::Utf8(Some("c1".into()))), "c1");
        assert_eq!(session_key(&ScalarValue::Int64(Some(-42))), "-42");
        assert_eq!(session_key(&ScalarValue::UInt32(Some(7))), "7");
        assert_eq!(session_key(&ScalarValue::Boolean(Some(true))), "true");
        assert_eq!(session_key(&ScalarValue::Utf8(None)), "null");
        let long = "x".repeat(300);
        assert_eq!(
            session_key(&ScalarValue::Utf8(Some(long.clone()))),
            key_text(&long)
        );
    }
}
