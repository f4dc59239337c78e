//! One seam over the window kinds: [`WindowStore`], the state of a
//! windowed job, implemented by the pane store (TUMBLE, HOP) and the
//! session store (SESSION). The job runs DataFusion plans over what a store
//! hands out (state rows to compact, blocks to merge, windows to fire) and
//! never asks which kind it holds.

use std::collections::BTreeMap;

use arrow::array::{ArrayRef, BooleanArray, RecordBatch, TimestampMillisecondArray};
use arrow::error::ArrowError;
use datafusion::common::ScalarValue;

use super::WindowSpec;
use super::assign::SessionSpan;
use super::panes::{PaneChange, PaneKey, PaneStore, StateBatch, StatePartition, WindowContents};
use super::sessions::{SessionChange, SessionId, SessionStore};

/// Windows closed at a time, between two looks at the firing deadline.
const WINDOWS_PER_STEP: usize = 8;

/// Sessions closed at a time (a firing runs over all of them at once).
const SESSIONS_PER_STEP: usize = 4_096;

/// A pane holding more batches than this is compacted.
const MAX_PANE_BATCHES: usize = 16;

/// Changes to a windowed job's state since they were last drained (or its
/// whole state, for a checkpoint): what the changelog records.
#[derive(Debug)]
pub enum StateChanges {
    /// Pane batches added and removed (TUMBLE, HOP).
    Panes(Vec<PaneChange>),
    /// Session headers and parts written or removed (SESSION), each with
    /// its key's home partition when it has one.
    Sessions(Vec<(Option<i32>, SessionChange)>),
}

impl StateChanges {
    /// Whether there is nothing to record.
    pub fn is_empty(&self) -> bool {
        match self {
            StateChanges::Panes(c) => c.is_empty(),
            StateChanges::Sessions(c) => c.is_empty(),
        }
    }
}

/// A piece of state a store hands out to be compacted or merged, and takes
/// back: the job passes it through without looking inside.
#[derive(Debug, Clone)]
pub enum Piece {
    /// A pane, or a block of panes.
    Pane(PaneKey),
    /// A session.
    Session(SessionId),
}

/// State read back from the changelog, for the store of its kind.
#[derive(Debug)]
pub enum Restored {
    /// One batch of a pane.
    Pane(PaneKey, StateBatch),
    /// A session written whole (by an earlier release), or its header
    /// (`batches` empty).
    Session {
        /// Session key.
        key: ScalarValue,
        /// Start (ms).
        start: i64,
        /// End (ms, exclusive).
        end: i64,
        /// Its state rows, when written whole.
        batches: Vec<RecordBatch>,
        /// Its key's home partition, if the record names one.
        home: Option<i32>,
    },
    /// One part of a session.
    SessionPart {
        /// Session key.
        key: ScalarValue,
        /// Start (ms).
        start: i64,
        /// The part.
        part: StateBatch,
        /// Its key's home partition, if the record names one.
        home: Option<i32>,
    },
    /// A session restored from records keyed as an earlier release keyed
    /// them: written again, under today's key, at the next commit.
    Rewrite {
        /// Session key.
        key: ScalarValue,
        /// Start (ms).
        start: i64,
    },
}

/// State of one window kind handed to the store of another (a changelog
/// record that cannot belong to the job).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WrongKind {
    /// A session record for a TUMBLE or HOP job.
    #[error("a session record for a TUMBLE or HOP job")]
    SessionForPanes,
    /// A pane record for a SESSION job.
    #[error("a pane record for a SESSION job")]
    PaneForSessions,
}

/// The state of a windowed job: lateness, closing, contents, size and the
/// changelog's deltas, whatever the window kind.
pub trait WindowStore: Send + Sync {
    /// Windows ending at or before this have closed (fired).
    fn closed_through(&self) -> Option<i64>;

    /// How far the windows of source partition `partition` have closed.
    fn closed_for(&self, _partition: i32) -> Option<i64> {
        self.closed_through()
    }

    /// Which rows of source partition `partition` (event `times`, and
    /// their session `keys` where the window has keys) are late for every
    /// window they belong to.
    fn late_rows(
        &self,
        spec: &WindowSpec,
        partition: i32,
        times: &TimestampMillisecondArray,
        keys: Option<&ArrayRef>,
    ) -> Result<BooleanArray, ArrowError>;

    /// Adds the state rows of one partition's run, with the mini-sessions
    /// that run reported (SESSION).
    fn insert(
        &mut self,
        partition: StatePartition,
        rows: &[RecordBatch],
        spans: Vec<SessionSpan>,
    ) -> Result<(), ArrowError>;

    /// Pieces held in too many batches, handed out to be compacted: each
    /// goes back with [`Self::put_back`], compacted or as it was.
    fn take_fragmented(&mut self) -> Vec<(Piece, Vec<RecordBatch>)>;

    /// Puts a piece from [`Self::take_fragmented`] back: its rows
    /// `compacted`, or as they were when compacting failed.
    fn put_back(&mut self, piece: Piece, batches: Vec<RecordBatch>, compacted: bool);

    /// Groups of state rows worth merging once before the windows ending at
    /// or before `through` close (blocks of panes); the merged rows go back
    /// with [`Self::put_merged`].
    fn merges_due(&self, through: i64) -> Vec<(Piece, Vec<RecordBatch>)>;

    /// Caches the merged rows of a group from [`Self::merges_due`].
    fn put_merged(&mut self, piece: Piece, merged: Vec<RecordBatch>);

    /// Closes some of the windows ending at or before `through`, in order
    /// (the rest close on the next call), and returns their rows.
    fn close(&mut self, through: i64) -> Vec<WindowContents>;

    /// The rows of every open window, for early results.
    fn open_windows(&self) -> Vec<WindowContents>;

    /// The runs of the fire plan over `windows`: one per window (TUMBLE,
    /// HOP: ORDER BY and LIMIT apply per window), or one for all (SESSION).
    fn fire_units(&self, windows: Vec<WindowContents>) -> Vec<Vec<RecordBatch>>;

    /// Journals the whole state again (after a job took it over).
    fn journal_everything(&mut self);

    /// The changes since the last call.
    fn drain_changes(&mut self) -> StateChanges;

    /// The whole state, as changes that rebuild it from empty.
    fn contents(&self) -> StateChanges;

    /// Puts back state read from the changelog; refuses state of another
    /// window kind. Restore how far windows closed first.
    fn restore(&mut self, restored: Restored) -> Result<(), WrongKind>;

    /// Restores how far windows have closed.
    fn restore_closed_through(&mut self, closed_through: i64);

    /// Restores how far windows had closed for the state of each partition
    /// (by number; `None`: its owner closed nothing), as the instances that
    /// owned them last wrote it: they differ after a rescale. The store goes on from the least of them,
    /// and (panes) does not fire a partition's windows again, nor take its
    /// late rows, up to its own mark.
    fn restore_closed_partitions(&mut self, closed: &BTreeMap<i32, Option<i64>>) {
        if let Some(least) = closed.values().copied().min().flatten() {
            self.restore_closed_through(least);
        }
    }

    /// Ends a restore.
    fn finish_restore(&mut self);

    /// State rows held.
    fn rows(&self) -> usize;

    /// Memory held by the state rows, in bytes.
    fn bytes(&self) -> usize;
}

impl WindowStore for PaneStore {
    fn closed_through(&self) -> Option<i64> {
        PaneStore::closed_through(self)
    }

    fn late_rows(
        &self,
        spec: &WindowSpec,
        partition: i32,
        times: &TimestampMillisecondArray,
        _keys: Option<&ArrayRef>,
    ) -> Result<BooleanArray, ArrowError> {
        let closed = self.closed_for(partition);
        Ok(times
            .iter()
            .map(|t| {
                Some(
                    t.zip(closed)
                        .is_some_and(|(t, c)| spec.last_window_end(t) <= c),
                )
            })
            .collect())
    }

    fn insert(
        &mut self,
        partition: StatePartition,
        rows: &[RecordBatch],
        _spans: Vec<SessionSpan>,
    ) -> Result<(), ArrowError> {
        for batch in rows {
            PaneStore::insert(self, partition, batch)?;
        }
        Ok(())
    }

    fn take_fragmented(&mut self) -> Vec<(Piece, Vec<RecordBatch>)> {
        self.fragmented(MAX_PANE_BATCHES)
            .into_iter()
            .map(|key| (Piece::Pane(key), self.take_pane(key)))
            .collect()
    }

    fn put_back(&mut self, piece: Piece, batches: Vec<RecordBatch>, _compacted: bool) {
        // A pane's batches were taken out: they go back either way.
        if let Piece::Pane(key) = piece {
            self.put_pane(key, batches);
        }
    }

    fn merges_due(&self, through: i64) -> Vec<(Piece, Vec<RecordBatch>)> {
        self.blocks_due(through)
            .into_iter()
            .map(|(key, batches)| (Piece::Pane(key), batches))
            .collect()
    }

    fn put_merged(&mut self, piece: Piece, merged: Vec<RecordBatch>) {
        if let Piece::Pane(key) = piece {
            self.put_block(key, merged);
        }
    }

    fn close(&mut self, through: i64) -> Vec<WindowContents> {
        PaneStore::close(self, through, WINDOWS_PER_STEP)
    }

    fn open_windows(&self) -> Vec<WindowContents> {
        PaneStore::open_windows(self)
    }

    fn fire_units(&self, windows: Vec<WindowContents>) -> Vec<Vec<RecordBatch>> {
        windows.into_iter().map(|w| w.batches).collect()
    }

    fn journal_everything(&mut self) {
        PaneStore::journal_everything(self);
    }

    fn drain_changes(&mut self) -> StateChanges {
        StateChanges::Panes(PaneStore::drain_changes(self))
    }

    fn contents(&self) -> StateChanges {
        StateChanges::Panes(PaneStore::contents(self))
    }

    fn restore(&mut self, restored: Restored) -> Result<(), WrongKind> {
        match restored {
            Restored::Pane(pane, batch) => {
                PaneStore::restore(self, pane, batch);
                Ok(())
            }
            _ => Err(WrongKind::SessionForPanes),
        }
    }

    fn restore_closed_through(&mut self, closed_through: i64) {
        PaneStore::restore_closed_through(self, closed_through);
    }

    fn restore_closed_partitions(&mut self, closed: &BTreeMap<i32, Option<i64>>) {
        PaneStore::restore_closed_partitions(self, closed);
    }

    fn closed_for(&self, partition: i32) -> Option<i64> {
        PaneStore::closed_for(self, partition)
    }

    fn finish_restore(&mut self) {}

    fn rows(&self) -> usize {
        PaneStore::rows(self)
    }

    fn bytes(&self) -> usize {
        PaneStore::bytes(self)
    }
}

impl WindowStore for SessionStore {
    fn closed_through(&self) -> Option<i64> {
        SessionStore::closed_through(self)
    }

    fn late_rows(
        &self,
        spec: &WindowSpec,
        _partition: i32,
        times: &TimestampMillisecondArray,
        keys: Option<&ArrayRef>,
    ) -> Result<BooleanArray, ArrowError> {
        let Some(closed) = SessionStore::closed_through(self) else {
            return Ok(BooleanArray::from(vec![false; times.len()]));
        };
        let keys = keys.ok_or_else(|| {
            ArrowError::InvalidArgumentError("a SESSION window without its key column".into())
        })?;
        let gap = spec.size();
        let mut late = Vec::with_capacity(times.len());
        for (row, t) in times.iter().enumerate() {
            let is_late = match t {
                Some(t) if t.saturating_add(gap) <= closed => {
                    let key = ScalarValue::try_from_array(keys, row)
                        .map_err(|e| ArrowError::ComputeError(e.to_string()))?;
                    !self.joins_open_session(&key, t, gap)
                }
                _ => false,
            };
            late.push(Some(is_late));
        }
        Ok(late.into_iter().collect())
    }

    fn insert(
        &mut self,
        partition: StatePartition,
        rows: &[RecordBatch],
        spans: Vec<SessionSpan>,
    ) -> Result<(), ArrowError> {
        let mut keys: Vec<ScalarValue> = spans.iter().map(|s| s.key.clone()).collect();
        for batch in rows {
            keys.extend(self.keys_of(batch)?);
        }
        self.settle(partition.1, keys);
        self.add_spans(spans);
        for batch in rows {
            SessionStore::insert(self, batch)?;
        }
        Ok(())
    }

    fn take_fragmented(&mut self) -> Vec<(Piece, Vec<RecordBatch>)> {
        self.fragmented(super::sessions::MAX_SESSION_BATCHES)
            .into_iter()
            .map(|id| {
                let batches = self.batches_of(&id);
                (Piece::Session(id), batches)
            })
            .collect()
    }

    fn put_back(&mut self, piece: Piece, batches: Vec<RecordBatch>, compacted: bool) {
        // A session's batches were copied out: it is as it was unless
        // compacted.
        if let (Piece::Session(id), true) = (piece, compacted) {
            self.replace(&id, batches);
        }
    }

    fn merges_due(&self, _through: i64) -> Vec<(Piece, Vec<RecordBatch>)> {
        Vec::new()
    }

    fn put_merged(&mut self, _piece: Piece, _merged: Vec<RecordBatch>) {}

    fn close(&mut self, through: i64) -> Vec<WindowContents> {
        SessionStore::close(self, through, SESSIONS_PER_STEP)
    }

    fn open_windows(&self) -> Vec<WindowContents> {
        SessionStore::open_windows(self)
    }

    fn fire_units(&self, windows: Vec<WindowContents>) -> Vec<Vec<RecordBatch>> {
        if windows.is_empty() {
            return Vec::new();
        }
        vec![windows.into_iter().flat_map(|w| w.batches).collect()]
    }

    fn journal_everything(&mut self) {
        SessionStore::journal_everything(self);
    }

    fn drain_changes(&mut self) -> StateChanges {
        StateChanges::Sessions(self.drain_homed_changes())
    }

    fn contents(&self) -> StateChanges {
        StateChanges::Sessions(self.homed_contents())
    }

    fn restore(&mut self, restored: Restored) -> Result<(), WrongKind> {
        match restored {
            Restored::Session {
                key,
                start,
                end,
                batches,
                home,
            } => {
                if let Some(partition) = home {
                    self.restore_home(key.clone(), partition);
                }
                SessionStore::restore(self, key, start, end, batches);
            }
            Restored::SessionPart {
                key,
                start,
                part,
                home,
            } => {
                if let Some(partition) = home {
                    self.restore_home(key.clone(), partition);
                }
                self.restore_part(key, start, part);
            }
            Restored::Rewrite { key, start } => self.rewrite(key, start),
            Restored::Pane(..) => return Err(WrongKind::PaneForSessions),
        }
        Ok(())
    }

    fn restore_closed_through(&mut self, closed_through: i64) {
        SessionStore::restore_closed_through(self, closed_through);
    }

    fn finish_restore(&mut self) {
        SessionStore::finish_restore(self);
    }

    fn rows(&self) -> usize {
        SessionStore::rows(self)
    }

    fn bytes(&self) -> usize {
        SessionStore::bytes(self)
    }
}
