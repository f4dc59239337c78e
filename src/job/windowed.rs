//! A windowed job at run time: events in, state rows into the pane or
//! session store, and window results out when the watermark closes windows
//! (or early, on the `@emit every` timer).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{ArrayRef, BooleanArray, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::ScalarValue;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_plan::execution_plan::reset_plan_states;
use datafusion::physical_plan::{ExecutionPlan, collect};

use super::BatchSlot;
use crate::schema::Source;
use crate::window::WindowSpec;
use crate::window::panes::{PaneChange, PaneKey, PaneStore, StateBatch, WindowContents};
use crate::window::sessions::{SessionChange, SessionStore};
use crate::window::split::{SplitPlan, WindowInfo};

/// Name of the column the engine adds to windowed rows.
pub const FINAL_COLUMN: &str = "final";

/// A pane holding more batches than this is compacted.
const MAX_PANE_BATCHES: usize = 16;

/// Windows closed at a time, between two looks at the firing deadline.
const WINDOWS_PER_STEP: usize = 8;

/// Sessions closed at a time (a firing runs over all of them at once).
const SESSIONS_PER_STEP: usize = 4_096;

enum WindowState {
    Panes(PaneStore),
    Sessions(SessionStore),
}

/// Changes to a windowed job's state since they were last drained (or its
/// whole state, for a checkpoint): what the changelog records.
#[derive(Debug)]
pub enum StateChanges {
    /// Pane batches added and removed (TUMBLE, HOP).
    Panes(Vec<PaneChange>),
    /// Sessions written whole, or removed (SESSION).
    Sessions(Vec<SessionChange>),
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

/// Plans and state of one windowed job.
pub struct WindowedJob {
    /// What the query windows, and how.
    pub info: WindowInfo,
    /// How long after its end a window still accepts events (ms).
    pub lateness: i64,
    source_slots: BTreeMap<Source, Arc<BatchSlot>>,
    pub(super) split: SplitPlan,
    state: WindowState,
    task_ctx: Arc<TaskContext>,
    windows_closed: u64,
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
        let state = match (info.spec, split.key_column) {
            (WindowSpec::Session { .. }, Some(key)) => {
                WindowState::Sessions(SessionStore::new(split.window_columns, key))
            }
            (WindowSpec::Session { .. }, None) => {
                return Err(DataFusionError::Internal("SESSION without key".into()));
            }
            (spec, _) => WindowState::Panes(PaneStore::new(spec, split.window_columns)),
        };
        Ok(Self {
            info,
            lateness: lateness_ms,
            source_slots,
            split,
            state,
            task_ctx,
            windows_closed: 0,
        })
    }

    /// Rows of `events` (one partition of the windowed source) that are late
    /// for every window they belong to: those windows have all closed.
    pub fn late_rows(&self, events: &RecordBatch) -> Result<BooleanArray> {
        let times = event_times(events, &self.info.time_col)?;
        let spec = self.info.spec;
        let mask = match &self.state {
            WindowState::Panes(store) => {
                let Some(closed) = store.closed_through() else {
                    return Ok(BooleanArray::from(vec![false; events.num_rows()]));
                };
                times
                    .iter()
                    .map(|t| Some(t.is_some_and(|t| spec.last_window_end(t) <= closed)))
                    .collect()
            }
            WindowState::Sessions(store) => {
                let Some(closed) = store.closed_through() else {
                    return Ok(BooleanArray::from(vec![false; events.num_rows()]));
                };
                let key_col = self.info.key_col.as_deref().unwrap_or_default();
                let keys = events
                    .column_by_name(key_col)
                    .ok_or_else(|| DataFusionError::Internal(format!("no column {key_col}")))?;
                let gap = spec.size();
                let mut late = Vec::with_capacity(events.num_rows());
                for (row, t) in times.iter().enumerate() {
                    let is_late = match t {
                        Some(t) if t.saturating_add(gap) <= closed => {
                            let key = ScalarValue::try_from_array(keys, row)?;
                            !store.joins_open_session(&key, t, gap)
                        }
                        _ => false,
                    };
                    late.push(Some(is_late));
                }
                late.into_iter().collect()
            }
        };
        Ok(mask)
    }

    /// Aggregates the on-time events of one partition of `source` into the
    /// job's state (the job's other sources read nothing in this run).
    pub async fn accumulate(
        &mut self,
        source: Source,
        partition: i32,
        events: RecordBatch,
    ) -> Result<()> {
        let Some(slot) = self.source_slots.get(&source) else {
            return Err(DataFusionError::Internal(format!(
                "the window does not read {}",
                source.name()
            )));
        };
        slot.set(vec![events]);
        let partial = run(&self.split.batch_plan, &self.task_ctx).await;
        slot.set(Vec::new());
        let partial = exact(partial?)?;
        match &mut self.state {
            WindowState::Panes(store) => {
                for batch in &partial {
                    store.insert((source, partition), batch)?;
                }
                for key in store.fragmented(MAX_PANE_BATCHES) {
                    let batches = store.take_pane(key);
                    self.split.reduce_slot.set(batches.clone());
                    let reduced = run(&self.split.reduce_plan, &self.task_ctx)
                        .await
                        .and_then(exact);
                    self.split.reduce_slot.set(Vec::new());
                    match reduced {
                        Ok(reduced) => store.put_pane(key, reduced),
                        Err(e) => {
                            store.put_pane(key, batches);
                            return Err(e);
                        }
                    }
                }
            }
            WindowState::Sessions(store) => {
                store.add_spans(self.info.spans.take());
                for batch in &partial {
                    store.insert(batch)?;
                }
            }
        }
        Ok(())
    }

    /// Closes the windows the watermark has passed (plus lateness), in
    /// order, and returns their rows, `final = true`. Stops after
    /// `deadline`: the windows left close on the next call, so a watermark
    /// that jumps a long way does not hold the engine up.
    pub async fn fire(&mut self, watermark: i64, deadline: Instant) -> Result<Vec<RecordBatch>> {
        let through = watermark.saturating_sub(self.lateness);
        if let WindowState::Panes(store) = &mut self.state {
            for (block, batches) in store.blocks_due(through) {
                self.split.reduce_slot.set(batches);
                let merged = run(&self.split.reduce_plan, &self.task_ctx).await;
                self.split.reduce_slot.set(Vec::new());
                store.put_block(block, exact(merged?)?);
            }
        }
        let mut rows = Vec::new();
        loop {
            let windows = match &mut self.state {
                WindowState::Panes(store) => store.close(through, WINDOWS_PER_STEP),
                WindowState::Sessions(store) => store.close(through, SESSIONS_PER_STEP),
            };
            if windows.is_empty() {
                break;
            }
            self.windows_closed += windows.len() as u64;
            rows.extend(self.finish(windows, true).await?);
            if Instant::now() >= deadline {
                break;
            }
        }
        Ok(rows)
    }

    /// Results of every open window so far, `final = false`.
    pub async fn early(&mut self) -> Result<Vec<RecordBatch>> {
        let windows = match &self.state {
            WindowState::Panes(store) => store.open_windows(),
            WindowState::Sessions(store) => store.open_windows(),
        };
        self.finish(windows, false).await
    }

    /// Runs the fire plan: once per window for TUMBLE and HOP (so ORDER BY,
    /// LIMIT and OVER apply per window), once for all due sessions.
    async fn finish(
        &self,
        windows: Vec<WindowContents>,
        is_final: bool,
    ) -> Result<Vec<RecordBatch>> {
        let groups: Vec<Vec<RecordBatch>> = match self.state {
            WindowState::Panes(_) => windows.into_iter().map(|w| w.batches).collect(),
            WindowState::Sessions(_) if windows.is_empty() => Vec::new(),
            WindowState::Sessions(_) => vec![windows.into_iter().flat_map(|w| w.batches).collect()],
        };
        let mut out = Vec::new();
        for batches in groups {
            self.split.pane_slot.set(batches);
            let rows = run(&self.split.fire_plan, &self.task_ctx).await;
            self.split.pane_slot.set(Vec::new());
            for batch in rows? {
                if batch.num_rows() > 0 {
                    out.push(with_final(&batch, is_final)?);
                }
            }
        }
        Ok(out)
    }

    /// Windows fired so far are those ending at or before this.
    pub fn closed_through(&self) -> Option<i64> {
        match &self.state {
            WindowState::Panes(store) => store.closed_through(),
            WindowState::Sessions(store) => store.closed_through(),
        }
    }

    /// The state changes since the last call.
    pub fn drain_changes(&mut self) -> StateChanges {
        match &mut self.state {
            WindowState::Panes(store) => StateChanges::Panes(store.drain_changes()),
            WindowState::Sessions(store) => StateChanges::Sessions(store.drain_changes()),
        }
    }

    /// The whole state, as changes that rebuild it from empty.
    pub fn contents(&self) -> StateChanges {
        match &self.state {
            WindowState::Panes(store) => StateChanges::Panes(store.contents()),
            WindowState::Sessions(store) => StateChanges::Sessions(store.contents()),
        }
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

    /// Puts back one pane batch read from the changelog. Call
    /// [`Self::restore_closed_through`] first.
    pub fn restore_pane(&mut self, pane: PaneKey, batch: StateBatch) -> Result<()> {
        match &mut self.state {
            WindowState::Panes(store) => {
                store.restore(pane, batch);
                Ok(())
            }
            WindowState::Sessions(_) => Err(DataFusionError::Internal(
                "a pane record for a SESSION job".into(),
            )),
        }
    }

    /// Puts back one session read from the changelog.
    pub fn restore_session(
        &mut self,
        key: ScalarValue,
        start: i64,
        end: i64,
        batches: Vec<RecordBatch>,
    ) -> Result<()> {
        match &mut self.state {
            WindowState::Sessions(store) => {
                store.restore(key, start, end, batches);
                Ok(())
            }
            WindowState::Panes(_) => Err(DataFusionError::Internal(
                "a session record for a TUMBLE or HOP job".into(),
            )),
        }
    }

    /// Restores how far windows have closed.
    pub fn restore_closed_through(&mut self, closed_through: i64) {
        match &mut self.state {
            WindowState::Panes(store) => store.restore_closed_through(closed_through),
            WindowState::Sessions(store) => store.restore_closed_through(closed_through),
        }
    }

    /// Windows (or sessions) with data closed so far.
    pub fn windows_closed(&self) -> u64 {
        self.windows_closed
    }

    /// State rows held.
    pub fn state_rows(&self) -> usize {
        match &self.state {
            WindowState::Panes(store) => store.rows(),
            WindowState::Sessions(store) => store.rows(),
        }
    }

    /// Memory held by state rows, in bytes.
    pub fn state_bytes(&self) -> usize {
        match &self.state {
            WindowState::Panes(store) => store.bytes(),
            WindowState::Sessions(store) => store.bytes(),
        }
    }
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
