//! The pane store of TUMBLE and HOP jobs: partial aggregates per pane and
//! Kafka partition, and the decision of which windows close.
//!
//! A pane is `[p, p + width)` with `width = gcd(size, slide)`; a window is
//! the union of the panes it covers, so a HOP event is stored once however
//! many windows it belongs to. A pane is dropped as soon as the last window
//! that covers it has closed.
//!
//! Every batch a pane holds has a sequence number, unique in the store, and
//! every change (a batch added, a batch removed because its pane closed or
//! was compacted) is journaled: the journal is what the state changelog
//! records ([`PaneStore::drain_changes`]), and [`PaneStore::restore`] puts
//! the records back after a restart.
//!
//! A window of many panes (a year of days) would merge every pane at every
//! firing. So panes are also grouped in blocks of [`BLOCK_PANES`]: once a
//! block's panes are complete, their state is merged once (the job's reduce
//! plan) and cached, and a window covering the whole block reads the merged
//! rows instead of its panes. A block is derived state: not journaled,
//! rebuilt after a restart, and dropped when one of its panes changes.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use arrow::array::RecordBatch;
use arrow::compute::take_record_batch;
use arrow::error::ArrowError;

use super::WindowSpec;
use super::exec::set_window;
use super::{epoch_millis, floor_to};
use crate::schema::Source;

/// One window's state rows, ready for the `Final` aggregate.
#[derive(Debug, Clone)]
pub struct WindowContents {
    /// Window start (ms).
    pub start: i64,
    /// Window end (ms, exclusive).
    pub end: i64,
    /// State rows of every pane and partition, window columns set to the window.
    pub batches: Vec<RecordBatch>,
}

/// One batch of partial state and the sequence number that names it in
/// the changelog.
#[derive(Debug, Clone)]
pub struct StateBatch {
    /// Unique in its store; never reused while the batch lives.
    pub seq: u64,
    /// State rows (groups may repeat across batches until compacted).
    pub batch: RecordBatch,
}

/// Partial state of one pane of one partition.
#[derive(Debug, Default)]
pub struct Pane {
    /// State batches, in the order they were added.
    pub batches: Vec<StateBatch>,
}

impl Pane {
    fn rows(&self) -> usize {
        self.batches.iter().map(|b| b.batch.num_rows()).sum()
    }
}

/// Where state rows came from: a source and one of its Kafka partitions.
pub type StatePartition = (Source, i32);

/// A pane: its start and the source partition its rows came from.
pub type PaneKey = (i64, StatePartition);

/// A change to a pane store, as the changelog records it.
#[derive(Debug, Clone)]
pub enum PaneChange {
    /// A batch was added to a pane.
    Put {
        /// The pane.
        pane: PaneKey,
        /// The batch.
        batch: StateBatch,
    },
    /// A batch was removed: its pane closed or was compacted.
    Delete {
        /// The pane.
        pane: PaneKey,
        /// The batch's sequence number.
        seq: u64,
    },
}

/// Panes per block. Blocks are used by windows of at least twice as many
/// panes; 32 daily panes keep a 365-day window to at most 11 blocks and 62
/// panes.
pub const BLOCK_PANES: i64 = 32;

/// The width of a block of panes for windows of `spec`, if they are long
/// enough to use blocks (at least two blocks' worth of panes).
pub fn block_width(spec: &WindowSpec) -> Option<i64> {
    let width = spec.pane()? * BLOCK_PANES;
    (spec.size() >= 2 * width).then_some(width)
}

/// The smallest [`StatePartition`], for ranges over pane starts.
fn first_partition() -> StatePartition {
    (Source::first(), i32::MIN)
}

/// Partial aggregates keyed by (pane start, source partition).
#[derive(Debug)]
pub struct PaneStore {
    spec: WindowSpec,
    window_columns: (usize, usize),
    panes: BTreeMap<PaneKey, Pane>,
    /// Every window ending at or before this has closed.
    closed_through: Option<i64>,
    /// Partitions (by number) whose windows had closed further than
    /// `closed_through` when their state was restored, after a rescale
    /// gave this store partitions that other instances had closed further.
    ahead: BTreeMap<i32, i64>,
    next_seq: u64,
    journal: Vec<PaneChange>,
    /// Merged state of whole blocks, by (block start, source partition).
    blocks: BTreeMap<PaneKey, Vec<RecordBatch>>,
    /// Memory held by the panes' and blocks' batches.
    bytes: usize,
}

impl PaneStore {
    /// An empty store for state rows whose window columns are at
    /// `window_columns`.
    pub fn new(spec: WindowSpec, window_columns: (usize, usize)) -> Self {
        Self {
            spec,
            window_columns,
            panes: BTreeMap::new(),
            closed_through: None,
            ahead: BTreeMap::new(),
            next_seq: 0,
            journal: Vec::new(),
            blocks: BTreeMap::new(),
            bytes: 0,
        }
    }

    /// The end of the last closed window, if any has closed.
    pub fn closed_through(&self) -> Option<i64> {
        self.closed_through
    }

    /// Stores the state rows of one partition's micro-batch, split by pane.
    /// Rows of panes whose windows have all closed are dropped (the engine
    /// routes late events to the dead-letter topic before they get here).
    pub fn insert(
        &mut self,
        partition: StatePartition,
        batch: &RecordBatch,
    ) -> Result<(), ArrowError> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let starts = epoch_millis(batch.column(self.window_columns.0))?;
        let mut rows: BTreeMap<i64, Vec<u32>> = BTreeMap::new();
        for (row, start) in starts.iter().enumerate() {
            if let Some(start) = start {
                rows.entry(start).or_default().push(row as u32);
            }
        }
        for (start, indices) in rows {
            if self.is_closed_for(self.spec.last_window_end(start), partition.1) {
                continue;
            }
            let part = if indices.len() == batch.num_rows() {
                batch.clone()
            } else {
                take_record_batch(batch, &arrow::array::UInt32Array::from(indices))?
            };
            self.add((start, partition), part);
        }
        Ok(())
    }

    /// Adds one batch to a pane, under a new sequence number, and journals it.
    fn add(&mut self, pane: PaneKey, batch: RecordBatch) {
        self.bytes += batch.get_array_memory_size();
        self.drop_block_of(pane);
        let batch = StateBatch {
            seq: self.next_seq,
            batch,
        };
        self.next_seq += 1;
        self.journal.push(PaneChange::Put {
            pane,
            batch: batch.clone(),
        });
        self.panes.entry(pane).or_default().batches.push(batch);
    }

    /// Journals the removal of every batch of `pane`.
    fn journal_removal(journal: &mut Vec<PaneChange>, pane: PaneKey, batches: &[StateBatch]) {
        journal.extend(
            batches
                .iter()
                .map(|b| PaneChange::Delete { pane, seq: b.seq }),
        );
    }

    fn is_closed(&self, window_end: i64) -> bool {
        self.closed_through.is_some_and(|c| window_end <= c)
    }

    /// How far the windows of partition `partition`'s state have closed.
    pub fn closed_for(&self, partition: i32) -> Option<i64> {
        match (self.closed_through, self.ahead.get(&partition)) {
            (Some(c), Some(&a)) => Some(c.max(a)),
            (c, a) => c.or(a.copied()),
        }
    }

    /// Whether the window ending at `window_end` has closed for the state
    /// of `partition`.
    fn is_closed_for(&self, window_end: i64, partition: i32) -> bool {
        self.closed_for(partition).is_some_and(|c| window_end <= c)
    }

    /// Closes the windows that end at or before `through`, in end order,
    /// and returns those that hold data, at most `limit` of them: the rest
    /// stay open for the next call. Drops the panes no longer needed.
    pub fn close(&mut self, through: i64, limit: usize) -> Vec<WindowContents> {
        let mut through = through;
        let mut due = Vec::new();
        if self.is_closed(through) {
            return due;
        }
        let slide = self.spec.slide();
        let size = self.spec.size();
        let mut end = match self.panes.keys().next() {
            Some(&(first, _)) => self.spec.first_window_end(first),
            None => through.saturating_add(1),
        };
        if let Some(closed) = self.closed_through
            && end <= closed
        {
            end = super::floor_to(closed - size, slide) + slide + size;
        }
        while end <= through {
            let start = end - size;
            let window = self.window(start, end);
            if !window.batches.is_empty() {
                due.push(window);
                if due.len() >= limit {
                    through = end;
                    break;
                }
            }
            // Jump over stretches without panes.
            let next_pane = self
                .panes
                .range((start + slide, first_partition())..)
                .next();
            end = match next_pane {
                Some((&(pane_start, _), _)) => {
                    (end + slide).max(self.spec.first_window_end(pane_start))
                }
                None => break,
            };
        }
        self.closed_through = Some(self.closed_through.map_or(through, |c| c.max(through)));
        self.ahead.retain(|_, closed| *closed > through);
        let spec = self.spec;
        let journal = &mut self.journal;
        let mut freed = 0;
        self.panes.retain(|&key, pane| {
            let keep = spec.last_window_end(key.0) > through;
            if !keep {
                Self::journal_removal(journal, key, &pane.batches);
                freed += memory(pane.batches.iter().map(|b| &b.batch));
            }
            keep
        });
        // A block starting before the next window no future window covers.
        let next_start = floor_to(through, slide) + slide - size;
        self.blocks.retain(|&(block_start, _), block| {
            let keep = block_start >= next_start;
            if !keep {
                freed += memory(block.iter());
            }
            keep
        });
        self.bytes -= freed;
        due
    }

    /// Every window that holds data and has not closed: early results.
    pub fn open_windows(&self) -> Vec<WindowContents> {
        let (Some(&(first, _)), Some(&(last, _))) =
            (self.panes.keys().next(), self.panes.keys().next_back())
        else {
            return Vec::new();
        };
        let slide = self.spec.slide();
        let size = self.spec.size();
        let mut windows = Vec::new();
        let mut end = self.spec.first_window_end(first);
        while end <= self.spec.last_window_end(last) {
            if !self.is_closed(end) {
                let window = self.window(end - size, end);
                if !window.batches.is_empty() {
                    windows.push(window);
                }
            }
            end += slide;
        }
        windows
    }

    /// State rows of `[start, end)` with the window columns set to it.
    fn window(&self, start: i64, end: i64) -> WindowContents {
        let mut rows: Vec<&RecordBatch> = Vec::new();
        let mut blocks_used = BTreeSet::new();
        for (&(pane_start, partition), pane) in self
            .panes
            .range((start, first_partition())..(end, first_partition()))
        {
            if self.ahead.get(&partition.1).is_some_and(|&c| end <= c) {
                // Fired by the instance that owned the partition before.
                continue;
            }
            let block = self.block_of(pane_start).and_then(|(block_start, width)| {
                let inside = block_start >= start && block_start + width <= end;
                let key = (block_start, partition);
                inside.then(|| self.blocks.get(&key).map(|b| (key, b)))?
            });
            match block {
                Some((key, merged)) => {
                    if blocks_used.insert(key) {
                        rows.extend(merged);
                    }
                }
                None => rows.extend(pane.batches.iter().map(|b| &b.batch)),
            }
        }
        let batches = rows
            .into_iter()
            .filter_map(|b| set_window(b, self.window_columns, start, end).ok())
            .collect();
        WindowContents {
            start,
            end,
            batches,
        }
    }

    /// Panes holding more than `max_batches` batches: candidates for compaction.
    pub fn fragmented(&self, max_batches: usize) -> Vec<PaneKey> {
        self.panes
            .iter()
            .filter(|(_, p)| p.batches.len() > max_batches)
            .map(|(k, _)| *k)
            .collect()
    }

    /// The batches of one pane, taken out for compaction (journaled as
    /// removed).
    pub fn take_pane(&mut self, key: PaneKey) -> Vec<RecordBatch> {
        let taken = self
            .panes
            .get_mut(&key)
            .map(|p| std::mem::take(&mut p.batches))
            .unwrap_or_default();
        Self::journal_removal(&mut self.journal, key, &taken);
        self.bytes -= memory(taken.iter().map(|b| &b.batch));
        self.drop_block_of(key);
        taken.into_iter().map(|b| b.batch).collect()
    }

    /// Puts compacted batches back into a pane (journaled as added).
    pub fn put_pane(&mut self, key: PaneKey, batches: Vec<RecordBatch>) {
        for batch in batches {
            self.add(key, batch);
        }
    }

    /// The changes since the last call, in order. A batch added and removed
    /// in between (a pane that closed or was compacted within the same
    /// epoch) appears in neither.
    pub fn drain_changes(&mut self) -> Vec<PaneChange> {
        let journal = std::mem::take(&mut self.journal);
        let (mut added, mut removed) = (HashSet::new(), HashSet::new());
        for change in &journal {
            match change {
                PaneChange::Put { batch, .. } => added.insert(batch.seq),
                PaneChange::Delete { seq, .. } => removed.insert(*seq),
            };
        }
        journal
            .into_iter()
            .filter(|change| match change {
                PaneChange::Put { batch, .. } => !removed.contains(&batch.seq),
                PaneChange::Delete { seq, .. } => !added.contains(seq),
            })
            .collect()
    }

    /// Every batch held, as the changes that would build the store from
    /// empty: what a changelog checkpoint writes.
    pub fn contents(&self) -> Vec<PaneChange> {
        self.panes
            .iter()
            .flat_map(|(&pane, p)| {
                p.batches.iter().map(move |batch| PaneChange::Put {
                    pane,
                    batch: batch.clone(),
                })
            })
            .collect()
    }

    /// Journals every batch held as added: the store is to be written
    /// whole under another job's name (a stopped job's state taken over).
    pub fn journal_everything(&mut self) {
        let everything = self.contents();
        self.journal = everything;
    }

    /// Puts back a batch read from the changelog (not journaled). Batches of
    /// panes whose windows have all closed are ignored.
    pub fn restore(&mut self, pane: PaneKey, batch: StateBatch) {
        if self.is_closed_for(self.spec.last_window_end(pane.0), pane.1.1) {
            return;
        }
        self.next_seq = self.next_seq.max(batch.seq + 1);
        self.bytes += batch.batch.get_array_memory_size();
        self.drop_block_of(pane);
        let batches = &mut self.panes.entry(pane).or_default().batches;
        let at = batches.partition_point(|b| b.seq < batch.seq);
        batches.insert(at, batch);
    }

    /// Restores how far windows have closed (not journaled).
    pub fn restore_closed_through(&mut self, closed_through: i64) {
        self.closed_through = Some(closed_through);
    }

    /// Restores how far windows had closed per partition (not journaled;
    /// `None`: nothing closed there): the store closes on from the least
    /// mark, and a partition closed further neither fires nor takes rows up
    /// to its own mark.
    pub fn restore_closed_partitions(&mut self, closed: &BTreeMap<i32, Option<i64>>) {
        if closed.is_empty() {
            return;
        }
        let least = closed.values().copied().min().flatten();
        self.closed_through = least;
        self.ahead = closed
            .iter()
            .filter_map(|(p, c)| Some((*p, (*c)?)))
            .filter(|(_, c)| least.is_none_or(|least| *c > least))
            .collect();
    }

    /// State rows held.
    pub fn rows(&self) -> usize {
        self.panes.values().map(Pane::rows).sum()
    }

    /// Memory held by state rows (panes and merged blocks), in bytes; kept
    /// up to date as batches come and go, so reading it costs nothing.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The start and width of the block `pane_start` belongs to, if this
    /// store's windows are long enough to use blocks.
    fn block_of(&self, pane_start: i64) -> Option<(i64, i64)> {
        let width = block_width(&self.spec)?;
        Some((floor_to(pane_start, width), width))
    }

    /// Drops the merged block holding `pane`, which changed.
    fn drop_block_of(&mut self, pane: PaneKey) {
        if let Some((block_start, _)) = self.block_of(pane.0)
            && let Some(block) = self.blocks.remove(&(block_start, pane.1))
        {
            self.bytes -= memory(block.iter());
        }
    }

    /// Blocks to merge before closing the windows that end at or before
    /// `through`: whole blocks inside them, complete by then and not yet
    /// merged. Each comes with its panes' batches, window columns set to
    /// the block's bounds, ready for the reduce plan.
    pub fn blocks_due(&self, through: i64) -> Vec<(PaneKey, Vec<RecordBatch>)> {
        let (slide, size) = (self.spec.slide(), self.spec.size());
        let first_start = self
            .closed_through
            .map_or(i64::MIN, |c| floor_to(c, slide) + slide - size);
        let mut due: BTreeMap<PaneKey, Vec<RecordBatch>> = BTreeMap::new();
        for (&(pane_start, partition), pane) in &self.panes {
            let Some((block_start, width)) = self.block_of(pane_start) else {
                return Vec::new();
            };
            let key = (block_start, partition);
            if block_start < first_start
                || block_start + width > through
                || self.blocks.contains_key(&key)
            {
                continue;
            }
            due.entry(key)
                .or_default()
                .extend(pane.batches.iter().filter_map(|b| {
                    set_window(
                        &b.batch,
                        self.window_columns,
                        block_start,
                        block_start + width,
                    )
                    .ok()
                }));
        }
        due.into_iter().collect()
    }

    /// Caches the merged state of a block from [`Self::blocks_due`].
    pub fn put_block(&mut self, key: PaneKey, merged: Vec<RecordBatch>) {
        self.bytes += memory(merged.iter());
        if let Some(old) = self.blocks.insert(key, merged) {
            self.bytes -= memory(old.iter());
        }
    }

    /// Number of panes held (all partitions).
    pub fn panes(&self) -> usize {
        self.panes.len()
    }
}

/// Memory held by `batches`, in bytes.
fn memory<'a>(batches: impl Iterator<Item = &'a RecordBatch>) -> usize {
    batches.map(RecordBatch::get_array_memory_size).sum()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::AsArray;
    use arrow::array::{Int64Array, TimestampMillisecondArray};
    use arrow::datatypes::{
        DataType, Field, Schema, SchemaRef, TimeUnit, TimestampMillisecondType,
    };

    use super::*;

    fn transactions() -> Source {
        crate::config::default_source("transactions")
    }

    fn p0() -> StatePartition {
        (transactions(), 0)
    }

    fn p1() -> StatePartition {
        (transactions(), 1)
    }

    fn state_schema() -> SchemaRef {
        let ts = DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
        Arc::new(Schema::new(vec![
            Field::new("window_start", ts.clone(), true),
            Field::new("window_end", ts, true),
            Field::new("count(*)[count]", DataType::Int64, true),
        ]))
    }

    /// State rows for panes starting at `starts` (width `w`), counts `n`.
    fn states(starts: &[i64], w: i64, n: &[i64]) -> RecordBatch {
        let ends: Vec<i64> = starts.iter().map(|s| s + w).collect();
        RecordBatch::try_new(
            state_schema(),
            vec![
                Arc::new(TimestampMillisecondArray::from(starts.to_vec()).with_timezone("UTC")),
                Arc::new(TimestampMillisecondArray::from(ends).with_timezone("UTC")),
                Arc::new(Int64Array::from(n.to_vec())),
            ],
        )
        .expect("batch")
    }

    fn summary(windows: &[WindowContents]) -> Vec<(i64, i64, i64)> {
        windows
            .iter()
            .map(|w| {
                let total: i64 = w
                    .batches
                    .iter()
                    .map(|b| {
                        let c = b.column(2).as_primitive::<arrow::datatypes::Int64Type>();
                        c.values().iter().sum::<i64>()
                    })
                    .sum();
                (w.start, w.end, total)
            })
            .collect()
    }

    #[test]
    fn a_partition_closed_further_before_a_rescale_neither_fires_again_nor_takes_late_rows() {
        // HOP 20 every 10: panes of 10. Partition 1's previous owner had
        // closed through 30, partition 0's through 10.
        let mut store = PaneStore::new(
            WindowSpec::Hop {
                size: 20,
                slide: 10,
            },
            (0, 1),
        );
        store.restore_closed_partitions(&BTreeMap::from([(0, Some(10)), (1, Some(30))]));
        assert_eq!(
            (store.closed_for(0), store.closed_for(1)),
            (Some(10), Some(30))
        );
        // Pane [10,20) of partition 1 is not restored: its last window,
        // [10,30), has closed there. Pane [20,30) of partition 1 is (its
        // window [20,40) is open), and so are partition 0's panes.
        for (partition, start, n) in [(p1(), 10, 100), (p1(), 20, 5), (p0(), 10, 1), (p0(), 20, 2)]
        {
            store.restore(
                (start, partition),
                StateBatch {
                    seq: start as u64 + partition.1 as u64,
                    batch: states(&[start], 10, &[n]),
                },
            );
        }
        // Rows of partition 1 for panes whose windows all closed there are
        // dropped; partition 0 takes them.
        store
            .insert(p1(), &states(&[10], 10, &[1000]))
            .expect("insert");
        store
            .insert(p0(), &states(&[10], 10, &[10]))
            .expect("insert");
        // [0,20) and [10,30) close now for partition 0 only: partition 1's
        // owner published them already. [20,40) has both.
        assert_eq!(
            summary(&store.close(40, usize::MAX)),
            vec![(0, 20, 11), (10, 30, 13), (20, 40, 7)]
        );
        assert_eq!(
            (store.closed_for(0), store.closed_for(1)),
            (Some(40), Some(40))
        );
    }

    #[test]
    fn a_partition_whose_owner_closed_nothing_holds_the_others_back() {
        // Partition 0's previous owner never closed a window (it had no
        // watermark yet); partition 1's closed through 20.
        let mut store = PaneStore::new(WindowSpec::Tumble { size: 10 }, (0, 1));
        store.restore_closed_partitions(&BTreeMap::from([(0, None), (1, Some(20))]));
        assert_eq!((store.closed_for(0), store.closed_for(1)), (None, Some(20)));
        for (partition, start, n) in [(p0(), 0, 1), (p0(), 10, 2), (p1(), 20, 4)] {
            store.restore(
                (start, partition),
                StateBatch {
                    seq: start as u64 + partition.1 as u64,
                    batch: states(&[start], 10, &[n]),
                },
            );
        }
        // Partition 0's windows up to 20 fire now, not skipped as closed.
        assert_eq!(
            summary(&store.close(30, usize::MAX)),
            vec![(0, 10, 1), (10, 20, 2), (20, 30, 4)]
        );
    }

    #[test]
    fn tumbling_windows_close_in_order_and_free_their_panes() {
        let mut store = PaneStore::new(WindowSpec::Tumble { size: 10 }, (0, 1));
        store
            .insert(p0(), &states(&[0, 10, 30], 10, &[1, 2, 3]))
            .expect("insert");
        store
            .insert(p1(), &states(&[10], 10, &[4]))
            .expect("insert");
        assert_eq!(store.panes(), 4);
        // Watermark at 25: [0,10) and [10,20) close; [20,30) is empty.
        assert_eq!(
            summary(&store.close(25, usize::MAX)),
            vec![(0, 10, 1), (10, 20, 6)]
        );
        assert_eq!(store.panes(), 1);
        assert_eq!(store.closed_through(), Some(25));
        // State for a closed window is refused; the open one is kept.
        store
            .insert(p0(), &states(&[10, 20], 10, &[7, 8]))
            .expect("insert");
        assert_eq!(
            summary(&store.open_windows()),
            vec![(20, 30, 8), (30, 40, 3)]
        );
        assert_eq!(
            summary(&store.close(40, usize::MAX)),
            vec![(20, 30, 8), (30, 40, 3)]
        );
        assert_eq!((store.panes(), store.rows()), (0, 0));
    }

    #[test]
    fn hop_windows_share_panes() {
        // size 10, slide 4 → panes of 2.
        let spec = WindowSpec::Hop { size: 10, slide: 4 };
        let mut store = PaneStore::new(spec, (0, 1));
        // Events at panes 12 and 16 (one each).
        store
            .insert(p0(), &states(&[12, 16], 2, &[1, 10]))
            .expect("insert");
        assert_eq!(store.panes(), 2);
        // Windows containing 12: [4,14) [8,18) [12,22); containing 16: [8,18) [12,22) [16,26).
        assert_eq!(
            summary(&store.close(18, usize::MAX)),
            vec![(4, 14, 1), (8, 18, 11)]
        );
        // Pane 12 is still needed by [12,22).
        assert_eq!(store.panes(), 2);
        assert_eq!(summary(&store.close(22, usize::MAX)), vec![(12, 22, 11)]);
        assert_eq!(store.panes(), 1);
        assert_eq!(summary(&store.close(100, usize::MAX)), vec![(16, 26, 10)]);
        assert_eq!(store.panes(), 0);
    }

    /// The (kind, pane start, seq) of each change.
    fn journal(changes: &[PaneChange]) -> Vec<(&'static str, i64, u64)> {
        changes
            .iter()
            .map(|c| match c {
                PaneChange::Put { pane, batch } => ("put", pane.0, batch.seq),
                PaneChange::Delete { pane, seq } => ("delete", pane.0, *seq),
            })
            .collect()
    }

    #[test]
    fn changes_are_journaled_and_cancel_out_within_one_drain() {
        let mut store = PaneStore::new(WindowSpec::Tumble { size: 10 }, (0, 1));
        store
            .insert(p0(), &states(&[0, 10], 10, &[1, 2]))
            .expect("insert");
        assert_eq!(
            journal(&store.drain_changes()),
            [("put", 0, 0), ("put", 10, 1)]
        );
        store
            .insert(p0(), &states(&[10], 10, &[3]))
            .expect("insert");
        store
            .insert(p0(), &states(&[20], 10, &[4]))
            .expect("insert");
        // [0,10) and [10,20) close; pane 20's batch is added and closed
        // before the drain, so it never reaches the changelog.
        store.close(30, usize::MAX);
        assert_eq!(
            journal(&store.drain_changes()),
            [("delete", 0, 0), ("delete", 10, 1)],
            "seq 2 (pane 10) and 3 (pane 20) were added and removed in one epoch"
        );
        store
            .insert(p1(), &states(&[40], 10, &[5]))
            .expect("insert");
        let taken = store.take_pane((40, p1()));
        store.put_pane((40, p1()), taken);
        assert_eq!(journal(&store.drain_changes()), [("put", 40, 5)]);
        assert_eq!(journal(&store.contents()), [("put", 40, 5)]);
    }

    #[test]
    fn a_restored_store_closes_the_same_windows() {
        let mut live = PaneStore::new(WindowSpec::Hop { size: 10, slide: 5 }, (0, 1));
        live.insert(p0(), &states(&[0, 5], 5, &[1, 2]))
            .expect("insert");
        live.insert(p1(), &states(&[5, 10], 5, &[3, 4]))
            .expect("insert");
        assert_eq!(
            summary(&live.close(10, usize::MAX)),
            vec![(-5, 5, 1), (0, 10, 6)]
        );
        let mut restored = PaneStore::new(WindowSpec::Hop { size: 10, slide: 5 }, (0, 1));
        restored.restore_closed_through(live.closed_through().expect("closed"));
        // In any order, and with a batch of a pane that has closed since.
        let mut puts = live.contents();
        puts.reverse();
        for change in puts {
            if let PaneChange::Put { pane, batch } = change {
                restored.restore(pane, batch);
            }
        }
        restored.restore(
            (0, p0()),
            StateBatch {
                seq: 0,
                batch: states(&[0], 5, &[1]),
            },
        );
        assert_eq!(restored.panes(), live.panes());
        assert_eq!(
            summary(&restored.close(20, usize::MAX)),
            summary(&live.close(20, usize::MAX))
        );
        // New batches get sequence numbers after the restored ones.
        restored
            .insert(p0(), &states(&[30], 5, &[9]))
            .expect("insert");
        assert_eq!(
            journal(&restored.drain_changes()).last(),
            Some(&("put", 30, 4))
        );
    }

    #[test]
    fn a_limited_close_leaves_the_later_windows_open() {
        let mut store = PaneStore::new(WindowSpec::Tumble { size: 10 }, (0, 1));
        store
            .insert(p0(), &states(&[0, 10, 20, 30], 10, &[1, 2, 3, 4]))
            .expect("insert");
        assert_eq!(summary(&store.close(35, 2)), vec![(0, 10, 1), (10, 20, 2)]);
        assert_eq!(store.closed_through(), Some(20), "only as far as it closed");
        assert_eq!(
            summary(&store.open_windows()),
            vec![(20, 30, 3), (30, 40, 4)]
        );
        assert_eq!(summary(&store.close(35, 2)), vec![(20, 30, 3)]);
        assert_eq!(store.closed_through(), Some(35));
    }

    #[test]
    fn windows_get_their_own_bounds_before_firing() {
        let spec = WindowSpec::Hop { size: 10, slide: 5 };
        let mut store = PaneStore::new(spec, (0, 1));
        store
            .insert(
                (crate::config::default_source("feedback"), 3),
                &states(&[5], 5, &[1]),
            )
            .expect("insert");
        let windows = store.close(10, usize::MAX);
        let batch = &windows[0].batches[0];
        let start = batch.column(0).as_primitive::<TimestampMillisecondType>();
        let end = batch.column(1).as_primitive::<TimestampMillisecondType>();
        assert_eq!((start.value(0), end.value(0)), (0, 10));
        assert_eq!(batch.schema(), state_schema());
    }

    /// What `bytes()` must equal: every batch held, counted afresh.
    fn counted_bytes(store: &PaneStore) -> usize {
        memory(
            store
                .panes
                .values()
                .flat_map(|p| p.batches.iter().map(|b| &b.batch)),
        ) + memory(store.blocks.values().flatten())
    }

    /// What the reduce plan does to a block here: one row, the sum.
    fn merge(batches: &[RecordBatch]) -> Vec<RecordBatch> {
        let start = batches[0]
            .column(0)
            .as_primitive::<TimestampMillisecondType>()
            .value(0);
        let end = batches[0]
            .column(1)
            .as_primitive::<TimestampMillisecondType>()
            .value(0);
        let total: i64 = batches
            .iter()
            .map(|b| {
                b.column(2)
                    .as_primitive::<arrow::datatypes::Int64Type>()
                    .values()
                    .iter()
                    .sum::<i64>()
            })
            .sum();
        vec![states(&[start], end - start, &[total])]
    }

    #[test]
    fn long_windows_read_merged_blocks_instead_of_their_panes() {
        // 100 panes per window: blocks of 32 panes are used.
        let mut store = PaneStore::new(
            WindowSpec::Hop {
                size: 100,
                slide: 1,
            },
            (0, 1),
        );
        for p in [p0(), p1()] {
            let starts: Vec<i64> = (0..140).collect();
            store
                .insert(p, &states(&starts, 1, &vec![1; 140]))
                .expect("insert");
        }
        assert_eq!(store.bytes(), counted_bytes(&store));
        // The windows ending at 1 to 99 have closed (no block is whole in
        // them). Closing through 100: blocks [0,32), [32,64), [64,96) of
        // both partitions are complete and inside the window [0,100).
        assert_eq!(store.close(99, usize::MAX).len(), 99);
        assert!(store.blocks.is_empty());
        let due = store.blocks_due(100);
        let keys: Vec<(i64, i32)> = due.iter().map(|((start, p), _)| (*start, p.1)).collect();
        assert_eq!(keys, [(0, 0), (0, 1), (32, 0), (32, 1), (64, 0), (64, 1)]);
        for (key, batches) in due {
            assert_eq!(batches.len(), 32);
            store.put_block(key, merge(&batches));
        }
        assert!(store.blocks_due(100).is_empty(), "merged once");
        assert_eq!(store.bytes(), counted_bytes(&store));
        let windows = store.close(100, 1);
        assert_eq!(summary(&windows), [(0, 100, 200)]);
        // 3 blocks and 4 panes per partition instead of 100 panes.
        assert_eq!(windows[0].batches.len(), 2 * (3 + 4));
        // A pane that changes drops its block; the next window, [1, 101),
        // cannot use block [0, 32) and reads block [32, 64) of p0() pane by
        // pane until it is merged again.
        store.insert(p0(), &states(&[40], 1, &[5])).expect("insert");
        assert_eq!(store.bytes(), counted_bytes(&store));
        let windows = store.close(101, 1);
        assert_eq!(summary(&windows), [(1, 101, 205)]);
        assert_eq!(windows[0].batches.len(), 31 * 2 + (33 + 1) + 2 + 5 * 2);
        // Blocks no later window covers are freed with their panes.
        assert_eq!(store.close(133, usize::MAX).len(), 32);
        let kept: Vec<PaneKey> = store.blocks.keys().copied().collect();
        assert_eq!(kept, [(64, p0()), (64, p1())]);
        assert_eq!(store.bytes(), counted_bytes(&store));
    }
}
