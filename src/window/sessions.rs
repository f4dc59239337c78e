//! The session store of SESSION jobs: per key, the open sessions and their
//! partial aggregates; sessions merge when an event bridges them, and close
//! once the watermark passes their end.
//!
//! Sessions are kept per key across all partitions, so a key whose events
//! arrive on several partitions still forms one session.
//!
//! The store remembers which sessions changed or disappeared since the
//! changelog last recorded it ([`SessionStore::drain_changes`]); a session
//! is recorded whole, as Kafka Streams records its session stores.

use std::collections::{BTreeMap, HashMap, HashSet};

use arrow::array::{RecordBatch, UInt32Array};
use arrow::compute::take_record_batch;
use arrow::error::ArrowError;
use datafusion::common::ScalarValue;

use super::assign::SessionSpan;
use super::epoch_millis;
use super::exec::set_window;
use super::panes::WindowContents;

/// One open session of one key.
#[derive(Debug, Default)]
struct Session {
    end: i64,
    batches: Vec<RecordBatch>,
}

/// A session: its key and start.
pub type SessionId = (ScalarValue, i64);

/// A change to a session store, as the changelog records it.
#[derive(Debug, Clone)]
pub enum SessionChange {
    /// A session as it is now (new, grown or merged).
    Put {
        /// Session key.
        key: ScalarValue,
        /// Start (ms).
        start: i64,
        /// End (ms, exclusive).
        end: i64,
        /// Its state rows.
        batches: Vec<RecordBatch>,
    },
    /// A session that no longer exists: closed, or merged into another.
    Delete {
        /// Session key.
        key: ScalarValue,
        /// Start (ms).
        start: i64,
    },
}

/// Open sessions by key, then by start.
#[derive(Debug)]
pub struct SessionStore {
    window_columns: (usize, usize),
    key_column: usize,
    sessions: HashMap<ScalarValue, BTreeMap<i64, Session>>,
    closed_through: Option<i64>,
    /// Sessions created or changed since the last drain.
    touched: HashSet<SessionId>,
    /// Sessions removed since the last drain.
    removed: HashSet<SessionId>,
    /// Sessions the changelog holds.
    persisted: HashSet<SessionId>,
    /// Memory held by the sessions' batches.
    bytes: usize,
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
            touched: HashSet::new(),
            removed: HashSet::new(),
            persisted: HashSet::new(),
            bytes: 0,
        }
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
            let mut batches = Vec::new();
            for s in touching {
                if let Some(old) = sessions.remove(&s) {
                    start = start.min(s);
                    end = end.max(old.end);
                    batches.extend(old.batches);
                    self.removed.insert((span.key.clone(), s));
                }
            }
            sessions.insert(start, Session { end, batches });
            self.touched.insert((span.key, start));
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
                    start
                }
            };
            routes.entry((key, owner)).or_default().push(row as u32);
        }
        for ((key, owner), rows) in routes {
            let part = take_record_batch(batch, &UInt32Array::from(rows))?;
            if let Some(session) = self.sessions.get_mut(&key).and_then(|s| s.get_mut(&owner)) {
                self.bytes += part.get_array_memory_size();
                session.batches.push(part);
                self.touched.insert((key, owner));
            }
        }
        Ok(())
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
                self.bytes -= memory(&session.batches);
                due.push(contents(start, &session, self.window_columns));
                self.removed.insert((key, start));
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

    /// The changes since the last call: sessions that disappeared (closed,
    /// or merged into another) and sessions as they are now, whole.
    pub fn drain_changes(&mut self) -> Vec<SessionChange> {
        let mut changes = Vec::new();
        for (key, start) in std::mem::take(&mut self.removed) {
            let live = self.get(&key, start).is_some();
            if !live && self.persisted.remove(&(key.clone(), start)) {
                changes.push(SessionChange::Delete { key, start });
            }
        }
        for (key, start) in std::mem::take(&mut self.touched) {
            if let Some(change) = self.put(&key, start) {
                self.persisted.insert((key, start));
                changes.push(change);
            }
        }
        changes
    }

    /// Every open session, whole: what a changelog checkpoint writes.
    pub fn contents(&self) -> Vec<SessionChange> {
        self.sessions
            .iter()
            .flat_map(|(key, sessions)| sessions.keys().map(move |start| (key, *start)))
            .filter_map(|(key, start)| self.put(key, start))
            .collect()
    }

    /// Marks every open session as changed and none as written: the store
    /// is to be written whole under another job's name (a stopped job's
    /// state taken over).
    pub fn journal_everything(&mut self) {
        self.persisted.clear();
        self.removed.clear();
        self.touched = self
            .sessions
            .iter()
            .flat_map(|(key, sessions)| sessions.keys().map(move |start| (key.clone(), *start)))
            .collect();
    }

    /// Puts back a session read from the changelog (not journaled).
    pub fn restore(&mut self, key: ScalarValue, start: i64, end: i64, batches: Vec<RecordBatch>) {
        self.persisted.insert((key.clone(), start));
        self.bytes += memory(&batches);
        self.sessions
            .entry(key)
            .or_default()
            .insert(start, Session { end, batches });
    }

    /// Restores how far sessions have closed (not journaled).
    pub fn restore_closed_through(&mut self, closed_through: i64) {
        self.closed_through = Some(closed_through);
    }

    fn get(&self, key: &ScalarValue, start: i64) -> Option<&Session> {
        self.sessions.get(key).and_then(|s| s.get(&start))
    }

    fn put(&self, key: &ScalarValue, start: i64) -> Option<SessionChange> {
        self.get(key, start).map(|session| SessionChange::Put {
            key: key.clone(),
            start,
            end: session.end,
            batches: session.batches.clone(),
        })
    }

    /// State rows held.
    pub fn rows(&self) -> usize {
        self.all_batches().map(RecordBatch::num_rows).sum()
    }

    /// Memory held by state rows, in bytes; kept up to date as batches
    /// come and go, so reading it costs nothing.
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
            .flat_map(|s| s.batches.iter())
    }
}

/// Memory held by `batches`, in bytes.
fn memory(batches: &[RecordBatch]) -> usize {
    batches.iter().map(RecordBatch::get_array_memory_size).sum()
}

fn contents(start: i64, session: &Session, columns: (usize, usize)) -> WindowContents {
    WindowContents {
        start,
        end: session.end,
        batches: session
            .batches
            .iter()
            .filter_map(|b| set_window(b, columns, start, session.end).ok())
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

    /// (kind, key, start, end, count) of each change, sorted.
    fn changes(changes: Vec<SessionChange>) -> Vec<(&'static str, String, i64, i64, i64)> {
        let mut out: Vec<_> = changes
            .into_iter()
            .map(|c| match c {
                SessionChange::Put {
                    key,
                    start,
                    end,
                    batches,
                } => {
                    let n = batches
                        .iter()
                        .map(|b| {
                            b.column(3)
                                .as_primitive::<arrow::datatypes::Int64Type>()
                                .values()
                                .iter()
                                .sum::<i64>()
                        })
                        .sum();
                    ("put", key.to_string(), start, end, n)
                }
                SessionChange::Delete { key, start } => ("delete", key.to_string(), start, 0, 0),
            })
            .collect();
        out.sort();
        out
    }

    #[test]
    fn merges_and_closes_are_recorded_and_a_restored_store_fires_the_same() {
        let mut store = SessionStore::new((0, 1), 2);
        store.add_spans(vec![span("a", 0, 10), span("a", 30, 40)]);
        store
            .insert(&states(&[(0, 10, "a", 1), (30, 40, "a", 2)]))
            .expect("insert");
        assert_eq!(
            changes(store.drain_changes()),
            [
                ("put", "a".into(), 0, 10, 1),
                ("put", "a".into(), 30, 40, 2)
            ]
        );
        // A bridge at 10..30 merges both into [0, 40): the session at 30 is gone.
        store.add_spans(vec![span("a", 10, 30)]);
        store.insert(&states(&[(10, 30, "a", 4)])).expect("insert");
        // b opens and closes before the next drain: never recorded.
        store.add_spans(vec![span("b", 0, 5)]);
        store.insert(&states(&[(0, 5, "b", 8)])).expect("insert");
        assert_eq!(summary(&store.close(5, usize::MAX)), vec![(0, 5, 8)]);
        assert_eq!(
            changes(store.drain_changes()),
            [
                ("delete", "a".into(), 30, 0, 0),
                ("put", "a".into(), 0, 40, 7)
            ]
        );
        let mut restored = SessionStore::new((0, 1), 2);
        restored.restore_closed_through(5);
        for change in store.contents() {
            if let SessionChange::Put {
                key,
                start,
                end,
                batches,
            } = change
            {
                restored.restore(key, start, end, batches);
            }
        }
        let counted = |s: &SessionStore| memory(&s.all_batches().cloned().collect::<Vec<_>>());
        assert_eq!(store.bytes(), counted(&store));
        assert_eq!(restored.bytes(), store.bytes());
        assert_eq!(
            summary(&restored.close(40, usize::MAX)),
            summary(&store.close(40, usize::MAX))
        );
        assert_eq!((store.bytes(), restored.bytes()), (0, 0));
        assert_eq!(
            changes(restored.drain_changes()),
            [("delete", "a".into(), 0, 0, 0)],
            "a restored session is in the changelog, so its close is recorded"
        );
    }
}
