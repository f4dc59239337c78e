//! A windowed job at run time: events in, state rows into the pane or
//! session store, and window results out when the watermark closes windows
//! (or early, on the `@emit every` timer).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use arrow::array::{ArrayRef, BooleanArray, RecordBatch, UInt32Array};
use arrow::compute::take_record_batch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::row::{RowConverter, SortField};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_plan::execution_plan::reset_plan_states;
use datafusion::physical_plan::{ExecutionPlan, collect};

use super::MAX_FAILED_RUNS;
use crate::batch_slot::BatchSlot;
use crate::lookup::kept::KeptTable;
use crate::lookup::{TableOverrides, kept_snapshots};
use crate::query::FINAL_COLUMN;
use crate::schema::Source;
use crate::window::WindowSpec;
use crate::window::assign::{WINDOW_END, WINDOW_START};
use crate::window::panes::{PaneStore, WindowContents};
use crate::window::sessions::SessionStore;
use crate::window::split::{SplitPlan, WindowInfo};
use crate::window::store::{Restored, StateChanges, WindowStore};

/// A window whose rows could not be computed (or one group of it, when the
/// failure could be narrowed down to it).
#[derive(Debug)]
pub struct WindowFailure {
    /// Window (or session) start, ms.
    pub start: i64,
    /// Window (or session) end, ms.
    pub end: i64,
    /// The failing group, as `column=value, …`, when the window's other
    /// groups were published.
    pub group: Option<String>,
    /// What failed.
    pub error: DataFusionError,
}

/// What firing (or early results) produced: the rows of the windows that
/// computed, and the windows that failed.
#[derive(Debug, Default)]
pub struct Fired {
    /// Result rows, `final` set.
    pub rows: Vec<RecordBatch>,
    /// Windows (or groups) whose rows failed.
    pub failures: Vec<WindowFailure>,
}

impl Fired {
    /// The rows if no window failed, else what failed.
    pub fn into_result(self) -> std::result::Result<Vec<RecordBatch>, WindowsFailed> {
        if self.failures.is_empty() {
            Ok(self.rows)
        } else {
            Err(WindowsFailed(self.failures))
        }
    }
}

/// Windows whose rows failed, each with its bounds and error.
#[derive(Debug, thiserror::Error)]
#[error("{}", self.0.iter().map(|f| format!("[{}, {}): {}", f.start, f.end, f.error)).collect::<Vec<_>>().join("; "))]
pub struct WindowsFailed(pub Vec<WindowFailure>);

/// One event of a micro-batch that the job's plan failed on, alone.
#[derive(Debug)]
pub struct RowFailure {
    /// The event's row in the batch handed to [`WindowedJob::accumulate`].
    pub row: usize,
    /// What failed.
    pub error: DataFusionError,
}

/// Plans and state of one windowed job.
pub struct WindowedJob {
    /// What the query windows, and how.
    pub info: WindowInfo,
    /// How long after its end a window still accepts events (ms).
    pub lateness: i64,
    source_slots: BTreeMap<Source, Arc<BatchSlot>>,
    pub(super) split: SplitPlan,
    state: Box<dyn WindowStore>,
    task_ctx: Arc<TaskContext>,
    windows_closed: u64,
    /// Stage 1 of a shuffle ([`crate::shuffle`]): each run's partial
    /// aggregates wait in [`Self::take_partials`]'s outbox instead of going
    /// into the state, which takes the partials stage 2 reads back.
    shuffled: bool,
    /// Partial aggregates per source partition, waiting to be shuffled.
    outbox: Vec<(Source, i32, Vec<RecordBatch>)>,
    /// A shuffled job reading kept tables: its copy of them, per stream,
    /// fed by stage 1 through the shuffle with every partition's events
    /// (an instance's own tables only hold its partitions' keys).
    kept_copies: BTreeMap<Source, Arc<Mutex<KeptTable>>>,
    /// The task context the fire plan runs with: it reads the kept
    /// tables' copies (`None`: the job's own context).
    fire_ctx: Option<Arc<TaskContext>>,
}

impl std::fmt::Debug for WindowedJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WindowedJob")
            .field("spec", &self.info.spec)
            .field("lateness", &self.lateness)
            .finish()
    }
}

impl WindowedJob {
    /// A job with empty state.
    pub fn new(
        info: WindowInfo,
        split: SplitPlan,
        source_slots: BTreeMap<Source, Arc<BatchSlot>>,
        lateness_ms: i64,
        task_ctx: Arc<TaskContext>,
    ) -> Result<Self> {
        let state: Box<dyn WindowStore> = match (info.spec, split.key_column) {
            (WindowSpec::Session { .. }, Some(key)) => {
                Box::new(SessionStore::new(split.window_columns, key))
            }
            (WindowSpec::Session { .. }, None) => {
                return Err(DataFusionError::Internal("SESSION without key".into()));
            }
            (spec, _) => Box::new(PaneStore::new(spec, split.window_columns)),
        };
        Ok(Self {
            info,
            lateness: lateness_ms,
            source_slots,
            split,
            state,
            task_ctx,
            windows_closed: 0,
            shuffled: false,
            outbox: Vec::new(),
            kept_copies: BTreeMap::new(),
            fire_ctx: None,
        })
    }

    /// Gives the job an empty copy of the tables each of `sources` keeps,
    /// which its fire plan reads instead of the instance's own (stage 2 of
    /// a shuffle); the batch plan still reads the instance's, which hold
    /// the keys of the events it runs on.
    pub fn copy_kept_tables(&mut self, sources: &[Source]) {
        let mut overrides = TableOverrides::default();
        for &source in sources {
            let Some(spec) = source.keep() else { continue };
            let copy = Arc::new(Mutex::new(KeptTable::new(spec.clone())));
            overrides.0.extend(kept_snapshots(&copy));
            self.kept_copies.insert(source, copy);
        }
        if overrides.0.is_empty() {
            return;
        }
        let ctx = &self.task_ctx;
        let config = ctx
            .session_config()
            .clone()
            .with_extension(Arc::new(overrides));
        self.fire_ctx = Some(Arc::new(TaskContext::new(
            ctx.task_id(),
            ctx.session_id(),
            config,
            ctx.scalar_functions().clone(),
            ctx.higher_order_functions().clone(),
            ctx.aggregate_functions().clone(),
            ctx.window_functions().clone(),
            ctx.runtime_env(),
        )));
    }

    /// The copies of kept tables the fire plan reads, by stream (a
    /// shuffled job reading kept tables).
    pub fn kept_copies(&self) -> &BTreeMap<Source, Arc<Mutex<KeptTable>>> {
        &self.kept_copies
    }

    /// Makes this job shuffle: its runs' partial aggregates go to
    /// [`Self::take_partials`], and its state takes only those read back
    /// ([`Self::insert_partials`]).
    pub fn set_shuffled(&mut self) {
        self.shuffled = true;
    }

    /// Whether this job shuffles.
    pub fn is_shuffled(&self) -> bool {
        self.shuffled
    }

    /// The partial aggregates of the runs since the last call, by source
    /// partition (a shuffled job).
    pub fn take_partials(&mut self) -> Vec<(Source, i32, Vec<RecordBatch>)> {
        std::mem::take(&mut self.outbox)
    }

    /// The columns of the state rows that key a group, less the window
    /// bounds: what the shuffle splits by. None when a result row depends
    /// on other groups (OVER, LIMIT, an aggregate across groups): every
    /// group then goes to one repartition partition.
    /// A job reading copies of kept tables also sends every group to one
    /// partition: one copy of the tables does.
    pub fn group_key_columns(&self) -> Vec<usize> {
        if !self.split.fire_row_wise || !self.kept_copies.is_empty() {
            return Vec::new();
        }
        let (start, end) = self.split.window_columns;
        (0..self.split.group_columns)
            .filter(|c| *c != start && *c != end)
            .collect()
    }

    /// Adds partial aggregates read back from the repartition topic, as
    /// the state of its partition `partition` (stage 2 of a shuffle).
    pub async fn insert_partials(
        &mut self,
        source: Source,
        partition: i32,
        rows: RecordBatch,
    ) -> Result<()> {
        self.state
            .insert((source, partition), std::slice::from_ref(&rows), Vec::new())?;
        self.compact().await;
        Ok(())
    }

    /// Rows of `events` late for every window they belong to by
    /// `watermark` (minus the lateness): how stage 1 of a shuffle judges
    /// them, with the watermark of the partitions this instance reads.
    pub fn late_by(&self, watermark: i64, events: &RecordBatch) -> Result<BooleanArray> {
        let times = event_times(events, &self.info.time_col)?;
        let through = watermark.saturating_sub(self.lateness);
        Ok(times
            .iter()
            .map(|t| Some(t.is_some_and(|t| self.info.spec.last_window_end(t) <= through)))
            .collect())
    }

    /// Rows of `events` (source partition `partition` of the windowed
    /// source) that are late for every window they belong to: those windows
    /// have all closed.
    pub fn late_rows(&self, partition: i32, events: &RecordBatch) -> Result<BooleanArray> {
        let times = event_times(events, &self.info.time_col)?;
        let keys = match &self.info.key_col {
            Some(key_col) => Some(
                events
                    .column_by_name(key_col)
                    .ok_or_else(|| DataFusionError::Internal(format!("no column {key_col}")))?,
            ),
            None => None,
        };
        Ok(self
            .state
            .late_rows(&self.info.spec, partition, &times, keys)?)
    }

    /// Aggregates the on-time events of one partition of `source` into the
    /// job's state (the job's other sources read nothing in this run). When
    /// the plan fails, the batch is halved until the failing events are
    /// found alone: the others count, and those are returned.
    pub async fn accumulate(
        &mut self,
        source: Source,
        partition: i32,
        events: RecordBatch,
    ) -> Result<Vec<RowFailure>> {
        let Some(slot) = self.source_slots.get(&source) else {
            return Err(DataFusionError::Internal(format!(
                "the window does not read {}",
                source.name()
            )));
        };
        let mut partial = Vec::new();
        let mut spans = Vec::new();
        let mut failures = Vec::new();
        let mut pending = vec![(0, events.num_rows())];
        let mut failed_runs = 0;
        while let Some((offset, len)) = pending.pop() {
            slot.set(vec![events.slice(offset, len)]);
            let result = run(&self.split.batch_plan, &self.task_ctx)
                .await
                .and_then(exact);
            slot.set(Vec::new());
            // Mini-sessions the assignment reported count only if their run did.
            let reported = self.info.spans.take();
            match result {
                Ok(states) => {
                    partial.extend(states);
                    spans.extend(reported);
                }
                Err(error) if len == 1 => failures.push(RowFailure { row: offset, error }),
                Err(error) if failed_runs >= MAX_FAILED_RUNS => {
                    let text = error.to_string();
                    failures.extend((offset..offset + len).map(|row| RowFailure {
                        row,
                        error: DataFusionError::Execution(text.clone()),
                    }));
                }
                Err(_) => {
                    failed_runs += 1;
                    let half = len / 2;
                    pending.push((offset + half, len - half));
                    pending.push((offset, half));
                }
            }
        }
        if self.shuffled {
            self.outbox.push((source, partition, partial));
            return Ok(failures);
        }
        self.state.insert((source, partition), &partial, spans)?;
        self.compact().await;
        Ok(failures)
    }

    /// Compacts the pieces of state held in too many batches.
    async fn compact(&mut self) {
        for (piece, batches) in self.state.take_fragmented() {
            self.split.reduce_slot.set(batches.clone());
            let reduced = run(&self.split.reduce_plan, &self.task_ctx)
                .await
                .and_then(exact);
            self.split.reduce_slot.set(Vec::new());
            match reduced {
                Ok(reduced) => self.state.put_back(piece, reduced, true),
                Err(e) => {
                    // The piece stays as it was: every batch still counts.
                    tracing::warn!(error = %e, "compacting window state failed; it is kept uncompacted");
                    self.state.put_back(piece, batches, false);
                }
            }
        }
    }

    /// Closes the windows the watermark has passed (plus lateness), in
    /// order, and returns their rows, `final = true`, and the windows whose
    /// rows failed (their state is dropped with the window either way).
    /// Stops after `deadline`: the windows left close on the next call, so
    /// a watermark that jumps a long way does not hold the engine up.
    pub async fn fire(&mut self, watermark: i64, deadline: Instant) -> Fired {
        let through = watermark.saturating_sub(self.lateness);
        for (piece, batches) in self.state.merges_due(through) {
            self.split.reduce_slot.set(batches);
            let merged = run(&self.split.reduce_plan, &self.task_ctx)
                .await
                .and_then(exact);
            self.split.reduce_slot.set(Vec::new());
            match merged {
                Ok(merged) => self.state.put_merged(piece, merged),
                // Its windows read the unmerged rows instead.
                Err(e) => tracing::warn!(error = %e, "merging window state before firing failed"),
            }
        }
        let mut fired = Fired::default();
        loop {
            let windows = self.state.close(through);
            if windows.is_empty() {
                break;
            }
            self.windows_closed += windows.len() as u64;
            self.finish(windows, true, &mut fired).await;
            if Instant::now() >= deadline {
                break;
            }
        }
        // Its copies of kept tables serve only its own windows.
        if let Some(closed) = self.closed_through() {
            for copy in self.kept_copies.values() {
                copy.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .expire(closed);
            }
        }
        fired
    }

    /// Results of every open window so far, `final = false`.
    pub async fn early(&mut self) -> Fired {
        let windows = self.state.open_windows();
        let mut fired = Fired::default();
        self.finish(windows, false, &mut fired).await;
        fired
    }

    /// Runs the fire plan: once per window for TUMBLE and HOP (so ORDER BY,
    /// LIMIT and OVER apply per window), once for all due sessions. Where a
    /// run fails and the plan is row-wise, its groups are fired in halves
    /// until the failing ones are alone, so that every other row is
    /// published.
    async fn finish(&self, windows: Vec<WindowContents>, is_final: bool, fired: &mut Fired) {
        let units = self.state.fire_units(windows);
        let mut pending: Vec<(Vec<RecordBatch>, usize)> =
            units.into_iter().enumerate().map(|(i, u)| (u, i)).collect();
        pending.reverse();
        let mut failed_runs = vec![0; pending.len()];
        while let Some((batches, unit)) = pending.pop() {
            self.split.pane_slot.set(batches.clone());
            let ctx = self.fire_ctx.as_ref().unwrap_or(&self.task_ctx);
            let rows = run(&self.split.fire_plan, ctx).await;
            self.split.pane_slot.set(Vec::new());
            let error = match rows.and_then(|rows| {
                rows.iter()
                    .filter(|b| b.num_rows() > 0)
                    .map(|b| with_final(b, is_final))
                    .collect::<Result<Vec<_>>>()
            }) {
                Ok(rows) => {
                    fired.rows.extend(rows);
                    continue;
                }
                Err(error) => error,
            };
            let halves = (self.split.fire_row_wise && failed_runs[unit] < MAX_FAILED_RUNS)
                .then(|| split_groups(&batches, self.split.group_columns))
                .flatten();
            match halves {
                Some((first, second)) => {
                    failed_runs[unit] += 1;
                    pending.push((second, unit));
                    pending.push((first, unit));
                }
                None => fired.failures.push(self.failure(&batches, error)),
            }
        }
    }

    /// The failure of the state rows `batches`: their window's bounds, and
    /// their group when they are one.
    fn failure(&self, batches: &[RecordBatch], error: DataFusionError) -> WindowFailure {
        let (start_col, end_col) = self.split.window_columns;
        let bound = |col: usize, pick: fn(i64, i64) -> i64| {
            batches
                .iter()
                .filter_map(|b| crate::window::epoch_millis(b.column(col)).ok())
                .flat_map(|t| t.iter().flatten().collect::<Vec<_>>())
                .reduce(pick)
                .unwrap_or_default()
        };
        let group = (self.split.fire_row_wise && groups_in(batches, self.split.group_columns) == 1)
            .then(|| group_text(batches, self.split.group_columns, self.split.window_columns))
            .flatten();
        WindowFailure {
            start: bound(start_col, i64::min),
            end: bound(end_col, i64::max),
            group,
            error,
        }
    }

    /// Whether this job can take over the state of `other`: the same
    /// window, lateness and state columns.
    pub fn can_adopt(&self, other: &WindowedJob) -> bool {
        self.info.spec == other.info.spec
            && self.split.partial_schema == other.split.partial_schema
            && self.lateness == other.lateness
    }

    /// Takes over the state of `other` (a stopped job whose query changed),
    /// which [`WindowedJob::can_adopt`] allows; all of it is then written to
    /// the changelog again, under this job's fingerprint.
    pub fn adopt_state(&mut self, other: &mut WindowedJob) {
        debug_assert!(self.can_adopt(other));
        std::mem::swap(&mut self.state, &mut other.state);
        self.state.journal_everything();
    }

    /// Windows fired so far are those ending at or before this.
    pub fn closed_through(&self) -> Option<i64> {
        self.state.closed_through()
    }

    /// The state changes since the last call.
    pub fn drain_changes(&mut self) -> StateChanges {
        self.state.drain_changes()
    }

    /// The whole state, as changes that rebuild it from empty.
    pub fn contents(&self) -> StateChanges {
        self.state.contents()
    }

    /// Schema of the state rows (the `Partial` aggregate's output).
    pub fn state_schema(&self) -> SchemaRef {
        Arc::clone(&self.split.partial_schema)
    }

    /// Type of the SESSION key (`None` for TUMBLE and HOP).
    pub fn session_key_type(&self) -> Option<DataType> {
        self.split
            .key_column
            .map(|i| self.split.partial_schema.field(i).data_type().clone())
    }

    /// Puts back state read from the changelog. Call
    /// [`Self::restore_closed_through`] first.
    pub fn restore(&mut self, restored: Restored) -> Result<()> {
        self.state
            .restore(restored)
            .map_err(|e| DataFusionError::Internal(e.to_string()))
    }

    /// Whether a window's result row for a group depends on that group's
    /// state alone (no OVER, LIMIT or aggregate across groups above the
    /// windowed aggregate).
    pub fn fires_row_wise(&self) -> bool {
        self.split.fire_row_wise
    }

    /// The columns the window's groups are keyed by, less the window bounds.
    pub fn group_columns(&self) -> Vec<String> {
        self.split.partial_schema.fields()[..self.split.group_columns]
            .iter()
            .map(|f| f.name().clone())
            .filter(|n| n != WINDOW_START && n != WINDOW_END)
            .collect()
    }

    /// How far the windows of source partition `partition` have closed.
    pub fn closed_for(&self, partition: i32) -> Option<i64> {
        self.state.closed_for(partition)
    }

    /// Restores how far windows have closed: for every partition (records
    /// of releases before scale-out), or per changelog partition.
    pub fn restore_closed_through(&mut self, closed_through: i64) {
        self.state.restore_closed_through(closed_through);
    }

    /// Restores how far windows had closed for each partition's state
    /// (`None`: nothing closed there).
    pub fn restore_closed_partitions(&mut self, closed: &BTreeMap<i32, Option<i64>>) {
        self.state.restore_closed_partitions(closed);
    }

    /// Ends a restore: sessions read from records of earlier versions are
    /// to be written again in today's form.
    pub fn finish_restore(&mut self) {
        self.state.finish_restore();
    }

    /// Windows (or sessions) with data closed so far.
    pub fn windows_closed(&self) -> u64 {
        self.windows_closed
    }

    /// State rows held.
    pub fn state_rows(&self) -> usize {
        self.state.rows()
    }

    /// Memory held by state rows and copies of kept tables, in bytes.
    pub fn state_bytes(&self) -> usize {
        let copies: usize = self
            .kept_copies
            .values()
            .map(|c| c.lock().unwrap_or_else(PoisonError::into_inner).bytes())
            .sum();
        self.state.bytes() + copies
    }
}

/// The group keys (the first `group_columns` columns) of `batches`' rows,
/// in order, each once.
fn group_keys(
    batches: &[RecordBatch],
    group_columns: usize,
) -> Option<(Vec<Vec<u32>>, Vec<RecordBatch>)> {
    let first = batches.first()?;
    let one = arrow::compute::concat_batches(&first.schema(), batches).ok()?;
    let fields = one
        .schema()
        .fields()
        .iter()
        .take(group_columns)
        .map(|f| SortField::new(f.data_type().clone()))
        .collect();
    let converter = RowConverter::new(fields).ok()?;
    let rows = converter
        .convert_columns(&one.columns()[..group_columns.min(one.num_columns())])
        .ok()?;
    let mut groups: BTreeMap<arrow::row::Row<'_>, Vec<u32>> = BTreeMap::new();
    for i in 0..rows.num_rows() {
        groups.entry(rows.row(i)).or_default().push(i as u32);
    }
    Some((groups.into_values().collect(), vec![one]))
}

/// How many groups `batches` hold.
fn groups_in(batches: &[RecordBatch], group_columns: usize) -> usize {
    group_keys(batches, group_columns).map_or(0, |(groups, _)| groups.len())
}

/// `batches` split into two halves of whole groups; `None` for one group.
fn split_groups(
    batches: &[RecordBatch],
    group_columns: usize,
) -> Option<(Vec<RecordBatch>, Vec<RecordBatch>)> {
    let (groups, one) = group_keys(batches, group_columns)?;
    if groups.len() < 2 {
        return None;
    }
    let (first, second) = groups.split_at(groups.len() / 2);
    let take = |part: &[Vec<u32>]| {
        let indices = UInt32Array::from(part.concat());
        take_record_batch(&one[0], &indices).ok().map(|b| vec![b])
    };
    Some((take(first)?, take(second)?))
}

/// The group of `batches` (one group's state rows) as `column=value, …`,
/// window bounds left out.
fn group_text(
    batches: &[RecordBatch],
    group_columns: usize,
    window_columns: (usize, usize),
) -> Option<String> {
    let batch = batches.iter().find(|b| b.num_rows() > 0)?;
    let schema = batch.schema();
    let options = arrow::util::display::FormatOptions::default().with_null("null");
    let parts: Vec<String> = (0..group_columns.min(batch.num_columns()))
        .filter(|i| *i != window_columns.0 && *i != window_columns.1)
        .filter_map(|i| {
            let formatter =
                arrow::util::display::ArrayFormatter::try_new(batch.column(i), &options).ok()?;
            Some(format!("{}={}", schema.field(i).name(), formatter.value(0)))
        })
        .collect();
    Some(parts.join(", "))
}

async fn run(plan: &Arc<dyn ExecutionPlan>, ctx: &Arc<TaskContext>) -> Result<Vec<RecordBatch>> {
    collect(reset_plan_states(Arc::clone(plan))?, Arc::clone(ctx)).await
}

/// State rows as one batch of their own. An aggregate hands its output
/// out in slices of one allocation, each of which would keep (and count,
/// in `state_bytes`) the whole; a copy holds exactly its rows.
fn exact(batches: Vec<RecordBatch>) -> Result<Vec<RecordBatch>> {
    let Some(first) = batches.first() else {
        return Ok(batches);
    };
    let one = arrow::compute::concat_batches(&first.schema(), &batches)?;
    Ok(if one.num_rows() == 0 {
        Vec::new()
    } else {
        vec![one]
    })
}

/// The event-time column as epoch milliseconds.
pub fn event_times(
    events: &RecordBatch,
    time_col: &str,
) -> Result<arrow::array::TimestampMillisecondArray> {
    let column = events
        .column_by_name(time_col)
        .ok_or_else(|| DataFusionError::Internal(format!("no time column {time_col}")))?;
    Ok(crate::window::epoch_millis(column)?)
}

/// The schema of windowed output rows: the query's columns plus `final`.
fn with_final_schema(schema: &SchemaRef) -> SchemaRef {
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new(FINAL_COLUMN, DataType::Boolean, false));
    Arc::new(Schema::new(fields))
}

fn with_final(batch: &RecordBatch, is_final: bool) -> Result<RecordBatch> {
    let schema = with_final_schema(&batch.schema());
    let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
    columns.push(Arc::new(BooleanArray::from(vec![
        is_final;
        batch.num_rows()
    ])));
    Ok(RecordBatch::try_new(schema, columns)?)
}
