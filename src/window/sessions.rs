//! The session store of SESSION jobs: per key, the open sessions and their
//! partial aggregates; sessions merge when an event bridges them, and close
//! once the watermark passes their end.
//!
//! Sessions are kept per key across all partitions, so a key whose events
//! arrive on several partitions still forms one session. Each key has a
//! home: the source partition of its first session's events, kept while it
//! has sessions. Its records go to that changelog partition, so that the
//! instance owning the partition restores them (with several instances a
//! SESSION job is keyed by the partition key, so a key has one partition).
//!
//! The store journals its changes for the changelog
//! ([`SessionStore::drain_changes`]) as deltas: a session's key and bounds
//! (its header), each batch of state rows added to it (a part, with a
//! sequence number), parts removed by compaction, and sessions gone. A
//! session that grows is never written whole again; only a merge (which
//! moves its rows under another start) or a compaction rewrites its rows.
//! A session holding more than [`MAX_SESSION_BATCHES`] batches is due for
//! compaction ([`SessionStore::fragmented`]): its rows are merged into one
//! batch by the job's reduce plan.

use std::collections::{BTreeMap, HashMap, HashSet};

use arrow::array::{RecordBatch, UInt32Array};
use arrow::compute::take_record_batch;
use arrow::error::ArrowError;
use datafusion::common::ScalarValue;

use super::assign::SessionSpan;
use super::epoch_millis;
use super::exec::set_window;
use super::panes::{StateBatch, WindowContents};

/// A session holding more batches than this is compacted.
pub const MAX_SESSION_BATCHES: usize = 16;

/// Memory a session holds besides its rows' arrays: its map entries, key,
/// bounds and batch list, and each batch's own structures (schema pointer,
/// column list). Counted so that the state limit follows the process's
/// memory even with a million sessions of one row each (measured:
/// `tests/memory.rs`).
const SESSION_OVERHEAD: usize = 1_000;
const BATCH_OVERHEAD: usize = 192;

/// One open session of one key.
#[derive(Debug, Default)]
struct Session {
    end: i64,
    batches: Vec<StateBatch>,
}

/// A session: its key and start.
pub type SessionId = (ScalarValue, i64);

/// A change to a session store, as the changelog records it.
#[derive(Debug, Clone)]
pub enum SessionChange {
    /// A session's key and bounds: new, or its end moved.
    Header {
        /// Session key.
        key: ScalarValue,
        /// Start (ms).
        start: i64,
        /// End (ms, exclusive).
        end: i64,
    },
    /// A batch of state rows added to a session.
    Part {
        /// Session key.
        key: ScalarValue,
        /// Session start (ms).
        start: i64,
        /// The batch.
        batch: StateBatch,
    },
    /// A batch removed from a session (compacted).
    DropPart {
        /// Session key.
        key: ScalarValue,
        /// Session start (ms).
        start: i64,
        /// The batch's sequence number.
        seq: u64,
    },
    /// A session that no longer exists (closed, or merged into another),
    /// with the parts it held.
    Delete {
        /// Session key.
        key: ScalarValue,
        /// Start (ms).
        start: i64,
        /// Sequence numbers of its parts.
        seqs: Vec<u64>,
    },
}

impl SessionChange {
    /// The session key it changes.
    pub fn key(&self) -> &ScalarValue {
        match self {
            SessionChange::Header { key, .. }
            | SessionChange::Part { key, .. }
            | SessionChange::DropPart { key, .. }
            | SessionChange::Delete { key, .. } => key,
        }
    }
}

/// Open sessions by key, then by start.
#[derive(Debug)]
pub struct SessionStore {
    window_columns: (usize, usize),
    key_column: usize,
    sessions: HashMap<ScalarValue, BTreeMap<i64, Session>>,
    closed_through: Option<i64>,
    next_seq: u64,
    journal: Vec<SessionChange>,
    /// Sessions to write again as headers and parts once every part is
    /// restored: those an earlier release wrote whole (with their batches,
    /// numbered then) or keyed differently.
    legacy: HashMap<SessionId, Vec<RecordBatch>>,
    /// Memory held by the sessions.
    bytes: usize,
    /// Each key's home partition, while it has sessions or changes to
    /// journal (absent for keys restored from records without one).
    home: HashMap<ScalarValue, i32>,
}

impl SessionStore {
    /// An empty store for state rows whose window columns are at
    /// `window_columns` and session key at `key_column`.
    pub fn new(window_columns: (usize, usize), key_column: usize) -> Self {
        Self {
            window_columns,
            key_column,
            sessions: HashMap::new(),
            closed_through: None,
            next_seq: 0,
            journal: Vec::new(),
            legacy: HashMap::new(),
            bytes: 0,
            home: HashMap::new(),
        }
    }

    /// Makes `partition` the home of those of `keys` that have no sessions
    /// (nor a home) yet.
    pub fn settle(&mut self, partition: i32, keys: impl IntoIterator<Item = ScalarValue>) {
        for key in keys {
            let has_sessions = self.sessions.get(&key).is_some_and(|s| !s.is_empty());
            if !has_sessions && !self.home.contains_key(&key) {
                self.home.insert(key, partition);
            }
        }
    }

    /// The keys of the rows of `batch`.
    pub fn keys_of(&self, batch: &RecordBatch) -> Result<Vec<ScalarValue>, ArrowError> {
        let keys = batch.column(self.key_column);
        (0..batch.num_rows())
            .map(|row| {
                ScalarValue::try_from_array(keys, row)
                    .map_err(|e| ArrowError::ComputeError(e.to_string()))
            })
            .collect()
    }

    /// The changes since the last call ([`Self::drain_changes`]), each with
    /// its key's home partition; keys left without sessions lose theirs.
    pub fn drain_homed_changes(&mut self) -> Vec<(Option<i32>, SessionChange)> {
        let changes = self.drain_changes();
        let homed = changes
            .into_iter()
            .map(|c| (self.home.get(c.key()).copied(), c))
            .collect();
        let sessions = &self.sessions;
        self.home
            .retain(|key, _| sessions.get(key).is_some_and(|s| !s.is_empty()));
        homed
    }

    /// Every open session as changes ([`Self::contents`]), each with its
    /// key's home partition.
    pub fn homed_contents(&self) -> Vec<(Option<i32>, SessionChange)> {
        self.contents()
            .into_iter()
            .map(|c| (self.home.get(c.key()).copied(), c))
            .collect()
    }

    /// Restores the home of `key`, from a record that names one.
    pub fn restore_home(&mut self, key: ScalarValue, partition: i32) {
        self.home.insert(key, partition);
    }

    fn state_batch(&mut self, batch: RecordBatch) -> StateBatch {
        let seq = self.next_seq;
        self.next_seq += 1;
        StateBatch { seq, batch }
    }

    /// Adds mini-sessions, merging every session they touch (a gap of
    /// exactly the session gap still joins, as in Flink).
    pub fn add_spans(&mut self, spans: Vec<SessionSpan>) {
        for span in spans {
            let sessions = self.sessions.entry(span.key.clone()).or_default();
            let (mut start, mut end) = (span.start, span.end);
            let touching: Vec<i64> = sessions
                .range(..=end)
                .rev()
                .take_while(|(_, s)| s.end >= span.start)
                .map(|(&s, _)| s)
                .collect();
            // One session that the span extends without moving its start:
            // only its end changes.
            if let [only] = touching.as_slice()
                && *only <= span.start
                && let Some(session) = sessions.get_mut(only)
            {
                if span.end > session.end {
                    session.end = span.end;
                    self.journal.push(SessionChange::Header {
                        key: span.key,
                        start: *only,
                        end: span.end,
                    });
                }
                continue;
            }
            let mut moved = Vec::new();
            for s in touching {
                if let Some(old) = sessions.remove(&s) {
                    start = start.min(s);
                    end = end.max(old.end);
                    self.journal.push(SessionChange::Delete {
                        key: span.key.clone(),
                        start: s,
                        seqs: old.batches.iter().map(|b| b.seq).collect(),
                    });
                    self.bytes -= SESSION_OVERHEAD;
                    moved.extend(old.batches.into_iter().map(|b| b.batch));
                }
            }
            self.bytes += SESSION_OVERHEAD;
            self.journal.push(SessionChange::Header {
                key: span.key.clone(),
                start,
                end,
            });
            let mut batches = Vec::with_capacity(moved.len());
            for batch in moved {
                let part = self.state_batch(batch);
                self.journal.push(SessionChange::Part {
                    key: span.key.clone(),
                    start,
                    batch: part.clone(),
                });
                batches.push(part);
            }
            self.sessions
                .entry(span.key)
                .or_default()
                .insert(start, Session { end, batches });
        }
    }

    /// Stores state rows, each in the session that contains its mini-session.
    pub fn insert(&mut self, batch: &RecordBatch) -> Result<(), ArrowError> {
        let starts = epoch_millis(batch.column(self.window_columns.0))?;
        let ends = epoch_millis(batch.column(self.window_columns.1))?;
        let keys = batch.column(self.key_column);
        let mut routes: HashMap<(ScalarValue, i64), Vec<u32>> = HashMap::new();
        for row in 0..batch.num_rows() {
            let key = ScalarValue::try_from_array(keys, row)
                .map_err(|e| ArrowError::ComputeError(e.to_string()))?;
            let (start, end) = (starts.value(row), ends.value(row));
            let sessions = self.sessions.entry(key.clone()).or_default();
            let owner = match sessions.range(..=start).next_back() {
                Some((&s, session)) if start < session.end => s,
                _ => {
                    sessions.insert(
                        start,
                        Session {
                            end,
                            batches: Vec::new(),
                        },
                    );
                    self.bytes += SESSION_OVERHEAD;
                    self.journal.push(SessionChange::Header {
                        key: key.clone(),
                        start,
                        end,
                    });
                    start
                }
            };
            routes.entry((key, owner)).or_default().push(row as u32);
        }
        // In the order of each session's first row, so that parts are
        // numbered the same on every run.
        let mut routes: Vec<((ScalarValue, i64), Vec<u32>)> = routes.into_iter().collect();
        routes.sort_unstable_by_key(|(_, rows)| rows[0]);
        for ((key, owner), rows) in routes {
            let part = take_record_batch(batch, &UInt32Array::from(rows))?;
            if self.get(&key, owner).is_none() {
                continue;
            }
            self.bytes += batch_bytes(&part);
            let part = self.state_batch(part);
            self.journal.push(SessionChange::Part {
                key: key.clone(),
                start: owner,
                batch: part.clone(),
            });
            if let Some(session) = self.sessions.get_mut(&key).and_then(|s| s.get_mut(&owner)) {
                session.batches.push(part);
            }
        }
        Ok(())
    }

    /// Sessions holding more than `max_batches` batches: due for
    /// compaction.
    pub fn fragmented(&self, max_batches: usize) -> Vec<SessionId> {
        self.sessions
            .iter()
            .flat_map(|(key, sessions)| {
                sessions
                    .iter()
                    .filter(|(_, s)| s.batches.len() > max_batches)
                    .map(move |(start, _)| (key.clone(), *start))
            })
            .collect()
    }

    /// The batches of a session, window columns set to its bounds, for
    /// compaction (the session keeps them until [`Self::replace`]).
    pub fn batches_of(&self, (key, start): &SessionId) -> Vec<RecordBatch> {
        self.get(key, *start).map_or_else(Vec::new, |session| {
            session
                .batches
                .iter()
                .filter_map(|b| set_window(&b.batch, self.window_columns, *start, session.end).ok())
                .collect()
        })
    }

    /// Replaces a session's batches by `merged` (their compaction),
    /// journaled as parts dropped and added.
    pub fn replace(&mut self, (key, start): &SessionId, merged: Vec<RecordBatch>) {
        let Some(session) = self.sessions.get_mut(key).and_then(|s| s.get_mut(start)) else {
            return;
        };
        let old = std::mem::take(&mut session.batches);
        for batch in &old {
            self.bytes -= batch_bytes(&batch.batch);
            self.journal.push(SessionChange::DropPart {
                key: key.clone(),
                start: *start,
                seq: batch.seq,
            });
        }
        let mut parts = Vec::with_capacity(merged.len());
        for batch in merged {
            self.bytes += batch_bytes(&batch);
            let part = self.state_batch(batch);
            self.journal.push(SessionChange::Part {
                key: key.clone(),
                start: *start,
                batch: part.clone(),
            });
            parts.push(part);
        }
        if let Some(session) = self.sessions.get_mut(key).and_then(|s| s.get_mut(start)) {
            session.batches = parts;
        }
    }

    /// Whether an event of `key` at `ts` would join an open session.
    pub fn joins_open_session(&self, key: &ScalarValue, ts: i64, gap: i64) -> bool {
        self.sessions.get(key).is_some_and(|sessions| {
            sessions
                .range(..=ts.saturating_add(gap))
                .next_back()
                .is_some_and(|(_, s)| s.end >= ts)
        })
    }

    /// Sessions ending at or before this have closed.
    pub fn closed_through(&self) -> Option<i64> {
        self.closed_through
    }

    /// Closes the sessions ending at or before `through`, in end order, at
    /// most `limit` of them (the rest stay open for the next call), and
    /// returns their state rows, window columns set to each session's bounds.
    pub fn close(&mut self, through: i64, limit: usize) -> Vec<WindowContents> {
        let mut closing: Vec<(i64, i64, ScalarValue)> = self
            .sessions
            .iter()
            .flat_map(|(key, sessions)| {
                sessions
                    .iter()
                    .filter(|(_, s)| s.end <= through)
                    .map(move |(&start, s)| (s.end, start, key.clone()))
            })
            .collect();
        // Keys last, so that sessions ending together close in one order
        // whatever the hash map's.
        closing.sort_by(|a, b| {
            (a.0, a.1)
                .cmp(&(b.0, b.1))
                .then_with(|| a.2.partial_cmp(&b.2).unwrap_or(std::cmp::Ordering::Equal))
        });
        // Cut between two ends, so that "closed through" stays true.
        let mut closed = through;
        if let Some(&(cut, _, _)) = closing.get(limit) {
            if closing[0].0 < cut {
                closing.retain(|(end, _, _)| *end < cut);
                closed = cut - 1;
            } else {
                // Every session up to the limit ends at `cut`: close them
                // all, or nothing would ever close.
                closing.retain(|(end, _, _)| *end <= cut);
                closed = cut;
            }
        }
        self.closed_through = Some(self.closed_through.map_or(closed, |c| c.max(closed)));
        let mut due = Vec::new();
        for (_, start, key) in closing {
            let Some(sessions) = self.sessions.get_mut(&key) else {
                continue;
            };
            if let Some(session) = sessions.remove(&start) {
                self.bytes -= SESSION_OVERHEAD
                    + session
                        .batches
                        .iter()
                        .map(|b| batch_bytes(&b.batch))
                        .sum::<usize>();
                due.push(contents(start, &session, self.window_columns));
                self.journal.push(SessionChange::Delete {
                    key,
                    start,
                    seqs: session.batches.iter().map(|b| b.seq).collect(),
                });
            }
        }
        self.sessions.retain(|_, s| !s.is_empty());
        due.retain(|w| !w.batches.is_empty());
        due
    }

    /// Every open session that holds data: early results.
    pub fn open_windows(&self) -> Vec<WindowContents> {
        let mut open: Vec<WindowContents> = self
            .sessions
            .values()
            .flat_map(|s| s.iter())
            .map(|(&start, session)| contents(start, session, self.window_columns))
            .filter(|w| !w.batches.is_empty())
            .collect();
        open.sort_by_key(|w| (w.end, w.start));
        open
    }

    /// The changes since the last call, in order. A part added and dropped
    /// in between (a session that closed, merged or was compacted within
    /// the epoch) appears in neither; a session's header, once, as it is
    /// now.
    pub fn drain_changes(&mut self) -> Vec<SessionChange> {
        let journal = std::mem::take(&mut self.journal);
        let mut added = HashSet::new();
        let mut dropped = HashSet::new();
        let mut last_header: HashMap<SessionId, usize> = HashMap::new();
        for (i, change) in journal.iter().enumerate() {
            match change {
                SessionChange::Part { batch, .. } => {
                    added.insert(batch.seq);
                }
                SessionChange::DropPart { seq, .. } => {
                    dropped.insert(*seq);
                }
                SessionChange::Delete {
                    key, start, seqs, ..
                } => {
                    dropped.extend(seqs.iter().copied());
                    last_header.remove(&(key.clone(), *start));
                }
                SessionChange::Header { key, start, .. } => {
                    last_header.insert((key.clone(), *start), i);
                }
            }
        }
        journal
            .into_iter()
            .enumerate()
            .filter_map(|(i, change)| match change {
                SessionChange::Part { ref batch, .. } => {
                    (!dropped.contains(&batch.seq)).then_some(change)
                }
                SessionChange::DropPart { seq, .. } => (!added.contains(&seq)).then_some(change),
                SessionChange::Delete { key, start, seqs } => {
                    let seqs: Vec<u64> = seqs.into_iter().filter(|s| !added.contains(s)).collect();
                    Some(SessionChange::Delete { key, start, seqs })
                }
                SessionChange::Header { ref key, start, .. } => {
                    (last_header.get(&(key.clone(), start)) == Some(&i)).then_some(change)
                }
            })
            .collect()
    }

    /// Every open session, as the changes that rebuild it from empty: what
    /// a changelog checkpoint writes.
    pub fn contents(&self) -> Vec<SessionChange> {
        let mut changes = Vec::new();
        for (key, sessions) in &self.sessions {
            for (&start, session) in sessions {
                changes.push(SessionChange::Header {
                    key: key.clone(),
                    start,
                    end: session.end,
                });
                changes.extend(session.batches.iter().map(|batch| SessionChange::Part {
                    key: key.clone(),
                    start,
                    batch: batch.clone(),
                }));
            }
        }
        changes
    }

    /// Journals every open session as new: the store is to be written
    /// whole under another job's name (a stopped job's state taken over).
    pub fn journal_everything(&mut self) {
        self.journal = self.contents();
    }

    /// Puts back a session's header read from the changelog. A session
    /// written whole by an earlier version comes with its `batches`;
    /// [`Self::finish_restore`] writes it again as a header and parts.
    pub fn restore(&mut self, key: ScalarValue, start: i64, end: i64, batches: Vec<RecordBatch>) {
        let sessions = self.sessions.entry(key.clone()).or_default();
        let session = sessions.entry(start).or_insert_with(|| {
            self.bytes += SESSION_OVERHEAD;
            Session::default()
        });
        session.end = end;
        if !batches.is_empty() {
            self.bytes += batches.iter().map(batch_bytes).sum::<usize>();
            self.legacy.entry((key, start)).or_default().extend(batches);
        }
    }

    /// Journals the sessions earlier versions wrote whole, as a header and
    /// parts, so that the next commit writes them so (and the record that
    /// held them whole is replaced by the header). Their batches are
    /// numbered after every part restored, so that no two parts share a
    /// number.
    pub fn finish_restore(&mut self) {
        for ((key, start), batches) in std::mem::take(&mut self.legacy) {
            let parts: Vec<StateBatch> = batches
                .into_iter()
                .map(|batch| self.state_batch(batch))
                .collect();
            let Some(session) = self.sessions.get_mut(&key).and_then(|s| s.get_mut(&start)) else {
                continue;
            };
            session.batches.extend(parts);
            let mut changes = vec![SessionChange::Header {
                key: key.clone(),
                start,
                end: session.end,
            }];
            changes.extend(session.batches.iter().map(|batch| SessionChange::Part {
                key: key.clone(),
                start,
                batch: batch.clone(),
            }));
            self.journal.extend(changes);
        }
    }

    /// Writes the session (`key`, `start`) whole, as a header and parts,
    /// at [`Self::finish_restore`]: its records were keyed by an earlier
    /// release.
    pub fn rewrite(&mut self, key: ScalarValue, start: i64) {
        self.legacy.entry((key, start)).or_default();
    }

    /// Puts back one part of a session read from the changelog (not
    /// journaled); its header may come before or after it.
    pub fn restore_part(&mut self, key: ScalarValue, start: i64, part: StateBatch) {
        self.next_seq = self.next_seq.max(part.seq + 1);
        self.bytes += batch_bytes(&part.batch);
        let sessions = self.sessions.entry(key).or_default();
        let session = sessions.entry(start).or_insert_with(|| {
            self.bytes += SESSION_OVERHEAD;
            Session {
                end: start,
                batches: Vec::new(),
            }
        });
        let at = session.batches.partition_point(|b| b.seq < part.seq);
        session.batches.insert(at, part);
    }

    /// Restores how far sessions have closed (not journaled).
    pub fn restore_closed_through(&mut self, closed_through: i64) {
        self.closed_through = Some(closed_through);
    }

    fn get(&self, key: &ScalarValue, start: i64) -> Option<&Session> {
        self.sessions.get(key).and_then(|s| s.get(&start))
    }

    /// State rows held.
    pub fn rows(&self) -> usize {
        self.all_batches().map(RecordBatch::num_rows).sum()
    }

    /// Memory held by the sessions, in bytes (their rows and what holds
    /// them); kept up to date as sessions come and go, so reading it costs
    /// nothing.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Open sessions.
    pub fn len(&self) -> usize {
        self.sessions.values().map(BTreeMap::len).sum()
    }

    /// Whether no session is open.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    fn all_batches(&self) -> impl Iterator<Item = &RecordBatch> {
        self.sessions
            .values()
            .flat_map(|s| s.values())
            .flat_map(|s| s.batches.iter().map(|b| &b.batch))
    }
}

/// Memory one batch of state rows holds, its structures included.
fn batch_bytes(batch: &RecordBatch) -> usize {
    BATCH_OVERHEAD + batch.get_array_memory_size()
}

fn contents(start: i64, session: &Session, columns: (usize, usize)) -> WindowContents {
    WindowContents {
        start,
        end: session.end,
        batches: session
            .batches
            .iter()
            .filter_map(|b| set_window(&b.batch, columns, start, session.end).ok())
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::AsArray;
    use arrow::array::{Int64Array, StringArray, TimestampMillisecondArray};
    use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

    use super::*;

    fn schema() -> SchemaRef {
        let ts = DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
        Arc::new(Schema::new(vec![
            Field::new("window_start", ts.clone(), true),
            Field::new("window_end", ts, true),
            Field::new("k", DataType::Utf8, true),
            Field::new("count(*)[count]", DataType::Int64, true),
        ]))
    }

    fn states(rows: &[(i64, i64, &str, i64)]) -> RecordBatch {
        RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(
                    TimestampMillisecondArray::from(rows.iter().map(|r| r.0).collect::<Vec<_>>())
                        .with_timezone("UTC"),
                ),
                Arc::new(
                    TimestampMillisecondArray::from(rows.iter().map(|r| r.1).collect::<Vec<_>>())
                        .with_timezone("UTC"),
                ),
                Arc::new(StringArray::from(
                    rows.iter().map(|r| r.2).collect::<Vec<_>>(),
                )),
                Arc::new(Int64Array::from(
                    rows.iter().map(|r| r.3).collect::<Vec<_>>(),
                )),
            ],
        )
        .expect("batch")
    }

    fn span(key: &str, start: i64, end: i64) -> SessionSpan {
        SessionSpan {
            key: ScalarValue::Utf8(Some(key.into())),
            start,
            end,
        }
    }

    fn summary(windows: &[WindowContents]) -> Vec<(i64, i64, i64)> {
        windows
            .iter()
            .map(|w| {
                let n = w
                    .batches
                    .iter()
                    .map(|b| {
                        b.column(3)
                            .as_primitive::<arrow::datatypes::Int64Type>()
                            .values()
                            .iter()
                            .sum::<i64>()
                    })
                    .sum();
                (w.start, w.end, n)
            })
            .collect()
    }

    #[test]
    fn a_bridging_event_merges_two_sessions() {
        let mut store = SessionStore::new((0, 1), 2);
        // gap 10: a at 0 → [0,10); a at 30 → [30,40); b at 5 → [5,15).
        store.add_spans(vec![span("a", 0, 10), span("a", 30, 40), span("b", 5, 15)]);
        store
            .insert(&states(&[
                (0, 10, "a", 1),
                (30, 40, "a", 2),
                (5, 15, "b", 4),
            ]))
            .expect("insert");
        assert_eq!(store.len(), 3);
        // a at 15 and 20 → [15,30): touches [30,40) (a gap of exactly 10 joins), not [0,10).
        store.add_spans(vec![span("a", 15, 30)]);
        store.insert(&states(&[(15, 30, "a", 8)])).expect("insert");
        assert_eq!(store.len(), 3);
        assert_eq!(
            summary(&store.close(15, usize::MAX)),
            vec![(0, 10, 1), (5, 15, 4)]
        );
        assert!(!store.joins_open_session(&ScalarValue::Utf8(Some("a".into())), 41, 10));
        assert!(store.joins_open_session(&ScalarValue::Utf8(Some("a".into())), 5, 10));
        assert_eq!(summary(&store.open_windows()), vec![(15, 40, 10)]);
        assert_eq!(summary(&store.close(40, usize::MAX)), vec![(15, 40, 10)]);
        assert!(store.is_empty());
    }

    #[test]
    fn a_limited_close_cuts_between_two_ends() {
        let mut store = SessionStore::new((0, 1), 2);
        store.add_spans(vec![span("a", 0, 10), span("b", 0, 10), span("c", 5, 20)]);
        store
            .insert(&states(&[
                (0, 10, "a", 1),
                (0, 10, "b", 2),
                (5, 20, "c", 4),
            ]))
            .expect("insert");
        // a and b both end at 10: a limit of 1 still closes both.
        assert_eq!(summary(&store.close(30, 1)), vec![(0, 10, 1), (0, 10, 2)]);
        assert_eq!(store.closed_through(), Some(10));
        assert_eq!(summary(&store.close(30, 1)), vec![(5, 20, 4)]);
        assert_eq!(store.closed_through(), Some(30));
    }

    /// (kind, key, start, end or seq, count) of each change, sorted.
    fn changes(changes: Vec<SessionChange>) -> Vec<(&'static str, String, i64, i64, i64)> {
        let count = |b: &RecordBatch| {
            b.column(3)
                .as_primitive::<arrow::datatypes::Int64Type>()
                .values()
                .iter()
                .sum::<i64>()
        };
        let mut out: Vec<_> = changes
            .into_iter()
            .map(|c| match c {
                SessionChange::Header { key, start, end } => {
                    ("header", key.to_string(), start, end, 0)
                }
                SessionChange::Part { key, start, batch } => (
                    "part",
                    key.to_string(),
                    start,
                    batch.seq as i64,
                    count(&batch.batch),
                ),
                SessionChange::DropPart { key, start, seq } => {
                    ("drop", key.to_string(), start, seq as i64, 0)
                }
                SessionChange::Delete { key, start, seqs } => {
                    ("delete", key.to_string(), start, seqs.len() as i64, 0)
                }
            })
            .collect();
        out.sort();
        out
    }

    /// A store rebuilt from `changes`, as a restore does.
    fn rebuilt(changes: Vec<SessionChange>, closed_through: i64) -> SessionStore {
        let mut restored = SessionStore::new((0, 1), 2);
        restored.restore_closed_through(closed_through);
        for change in changes {
            match change {
                SessionChange::Header { key, start, end } => {
                    restored.restore(key, start, end, Vec::new());
                }
                SessionChange::Part { key, start, batch } => {
                    restored.restore_part(key, start, batch)
                }
                _ => panic!("contents are headers and parts"),
            }
        }
        restored
    }

    #[test]
    fn merges_and_closes_are_recorded_as_deltas_and_a_restored_store_fires_the_same() {
        let mut store = SessionStore::new((0, 1), 2);
        store.add_spans(vec![span("a", 0, 10), span("a", 30, 40)]);
        store
            .insert(&states(&[(0, 10, "a", 1), (30, 40, "a", 2)]))
            .expect("insert");
        assert_eq!(
            changes(store.drain_changes()),
            [
                ("header", "a".into(), 0, 10, 0),
                ("header", "a".into(), 30, 40, 0),
                ("part", "a".into(), 0, 0, 1),
                ("part", "a".into(), 30, 1, 2),
            ]
        );
        // An event at 35..45 only moves the end of [30, 40): its header,
        // and its rows as one more part; nothing is written again.
        store.add_spans(vec![span("a", 35, 45)]);
        store.insert(&states(&[(35, 45, "a", 16)])).expect("insert");
        assert_eq!(
            changes(store.drain_changes()),
            [
                ("header", "a".into(), 30, 45, 0),
                ("part", "a".into(), 30, 2, 16),
            ]
        );
        // A bridge at 10..30 merges both into [0, 45): the session at 30 is
        // gone, its rows move under 0.
        store.add_spans(vec![span("a", 10, 30)]);
        store.insert(&states(&[(10, 30, "a", 4)])).expect("insert");
        // b opens and closes before the next drain: never recorded.
        store.add_spans(vec![span("b", 0, 5)]);
        store.insert(&states(&[(0, 5, "b", 8)])).expect("insert");
        assert_eq!(summary(&store.close(5, usize::MAX)), vec![(0, 5, 8)]);
        assert_eq!(
            changes(store.drain_changes()),
            [
                ("delete", "a".into(), 0, 1, 0),
                ("delete", "a".into(), 30, 2, 0),
                ("delete", "b".into(), 0, 0, 0),
                ("header", "a".into(), 0, 45, 0),
                ("part", "a".into(), 0, 3, 2),
                ("part", "a".into(), 0, 4, 16),
                ("part", "a".into(), 0, 5, 1),
                ("part", "a".into(), 0, 6, 4),
            ]
        );
        let mut restored = rebuilt(store.contents(), 5);
        assert_eq!(restored.bytes(), store.bytes());
        assert_eq!(
            summary(&restored.close(45, usize::MAX)),
            summary(&store.close(45, usize::MAX))
        );
        assert_eq!((store.bytes(), restored.bytes()), (0, 0));
        assert_eq!(
            changes(restored.drain_changes()),
            [("delete", "a".into(), 0, 4, 0)],
            "a restored session is in the changelog, so its close is recorded"
        );
    }

    #[test]
    fn a_compacted_session_drops_its_parts_for_one() {
        let mut store = SessionStore::new((0, 1), 2);
        store.add_spans(vec![span("a", 0, 10)]);
        for i in 0..3 {
            store
                .insert(&states(&[(i, i + 10, "a", 1)]))
                .expect("insert");
        }
        store.drain_changes();
        assert_eq!(
            store.fragmented(2),
            [(ScalarValue::Utf8(Some("a".into())), 0)]
        );
        let id = (ScalarValue::Utf8(Some("a".into())), 0);
        let batches = store.batches_of(&id);
        assert_eq!(batches.len(), 3);
        // What the reduce plan makes of them: one row of count 3.
        store.replace(&id, vec![states(&[(0, 12, "a", 3)])]);
        assert_eq!(
            changes(store.drain_changes()),
            [
                ("drop", "a".into(), 0, 0, 0),
                ("drop", "a".into(), 0, 1, 0),
                ("drop", "a".into(), 0, 2, 0),
                ("part", "a".into(), 0, 3, 3),
            ]
        );
        assert!(store.fragmented(2).is_empty());
        assert_eq!(summary(&store.close(100, usize::MAX)), vec![(0, 10, 3)]);
    }

    #[test]
    fn the_memory_counted_grows_with_the_sessions_held() {
        let mut store = SessionStore::new((0, 1), 2);
        let keys: Vec<String> = (0..100).map(|i| format!("k{i}")).collect();
        store.add_spans(keys.iter().map(|k| span(k, 0, 10)).collect());
        let rows: Vec<(i64, i64, &str, i64)> =
            keys.iter().map(|k| (0, 10, k.as_str(), 1)).collect();
        store.insert(&states(&rows)).expect("insert");
        assert_eq!(store.len(), 100);
        assert!(
            store.bytes() >= 100 * (SESSION_OVERHEAD + BATCH_OVERHEAD),
            "{}",
            store.bytes()
        );
        store.close(10, usize::MAX);
        assert_eq!(store.bytes(), 0);
    }

    #[test]
    fn a_session_written_whole_by_an_earlier_version_is_numbered_after_the_parts_restored() {
        let mut store = SessionStore::new((0, 1), 2);
        let key = |k: &str| ScalarValue::Utf8(Some(k.into()));
        // Session b, whole (legacy), comes before session a's parts 0 and 4.
        store.restore(
            key("b"),
            5,
            15,
            vec![states(&[(5, 15, "b", 2)]), states(&[(5, 15, "b", 3)])],
        );
        store.restore_part(
            key("a"),
            0,
            StateBatch {
                seq: 0,
                batch: states(&[(0, 10, "a", 1)]),
            },
        );
        store.restore_part(
            key("a"),
            0,
            StateBatch {
                seq: 4,
                batch: states(&[(0, 10, "a", 6)]),
            },
        );
        store.restore(key("a"), 0, 10, Vec::new());
        store.finish_restore();
        let parts: Vec<(String, u64)> = store
            .drain_changes()
            .into_iter()
            .filter_map(|c| match c {
                SessionChange::Part { key, batch, .. } => Some((key.to_string(), batch.seq)),
                _ => None,
            })
            .collect();
        assert_eq!(parts, [("b".to_owned(), 5), ("b".to_owned(), 6)]);
        let closed = store.close(100, 10);
        assert_eq!(summary(&closed), [(0, 10, 7), (5, 15, 5)]);
    }
}
