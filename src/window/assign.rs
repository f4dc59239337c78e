//! The `WindowAssign` plan node: adds `window_start` and `window_end` to
//! every row of its input.
//!
//! Below the windowed aggregate these columns hold **pane** bounds (TUMBLE:
//! the window; HOP: a `gcd(size, slide)` slice) or **mini-session** bounds
//! (SESSION: the run of one key's events within one micro-batch). The pane
//! and session stores turn them into window bounds before a firing.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, PoisonError};

use arrow::array::{ArrayRef, AsArray, RecordBatch, TimestampMillisecondArray, make_comparator};
use arrow::compute::{SortColumn, SortOptions, cast, concat_batches, lexsort_to_indices};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit, TimestampMillisecondType};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DFSchema, DFSchemaRef, Result, ScalarValue, plan_err};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{Expr, LogicalPlan, UserDefinedLogicalNodeCore};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, PlanProperties,
};
use futures::{StreamExt, TryStreamExt};

use super::{WindowSpec, floor_to};

/// Name of the column holding the window (or pane) start.
pub const WINDOW_START: &str = "window_start";
/// Name of the column holding the window (or pane) end.
pub const WINDOW_END: &str = "window_end";

/// One key's run of events within one execution: `[start, end)` where
/// `end` is the last event plus the gap.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionSpan {
    /// Value of the session key column.
    pub key: ScalarValue,
    /// First event time.
    pub start: i64,
    /// Last event time plus the gap.
    pub end: i64,
}

/// Where a SESSION assignment reports every mini-session it saw, even those
/// whose rows a later filter drops: they still bridge sessions.
#[derive(Debug, Clone, Default)]
pub struct SessionSpans(Arc<Mutex<Vec<SessionSpan>>>);

impl SessionSpans {
    /// Takes the spans reported since the last call.
    pub fn take(&self) -> Vec<SessionSpan> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn extend(&self, spans: Vec<SessionSpan>) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(spans);
    }
}

// The sink is plumbing, not part of the plan's identity.
impl PartialEq for SessionSpans {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl Eq for SessionSpans {}
impl Hash for SessionSpans {
    fn hash<H: Hasher>(&self, _: &mut H) {}
}

/// Logical node for `TUMBLE(…)`, `HOP(…)` and `SESSION(…)`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WindowAssign {
    /// The source relation.
    pub input: LogicalPlan,
    /// Window shape.
    pub spec: WindowSpec,
    /// Event-time column of the input.
    pub time_col: String,
    /// SESSION key column of the input.
    pub key_col: Option<String>,
    /// Mini-sessions reported by the physical node (SESSION only).
    pub spans: SessionSpans,
    schema: DFSchemaRef,
}

impl PartialOrd for WindowAssign {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        (&self.spec, &self.time_col, &self.key_col).partial_cmp(&(
            &other.spec,
            &other.time_col,
            &other.key_col,
        ))
    }
}

impl WindowAssign {
    /// The node over `input`; its schema is the input's plus the two window
    /// columns (typed like the time column, qualified like it).
    pub fn try_new(
        input: LogicalPlan,
        spec: WindowSpec,
        time_col: String,
        key_col: Option<String>,
        spans: SessionSpans,
    ) -> Result<Self> {
        let schema = window_schema(input.schema(), &time_col)?;
        Ok(Self {
            input,
            spec,
            time_col,
            key_col,
            spans,
            schema,
        })
    }
}

fn window_schema(input: &DFSchema, time_col: &str) -> Result<DFSchemaRef> {
    let (qualifier, time_field) = input
        .qualified_field_with_unqualified_name(time_col)
        .map(|(q, f)| (q.cloned(), f.clone()))?;
    let tz = match time_field.data_type() {
        DataType::Timestamp(_, tz) => tz.clone(),
        other => return plan_err!("the time column `{time_col}` is {other}, not a timestamp"),
    };
    for name in [WINDOW_START, WINDOW_END] {
        if input.has_column_with_unqualified_name(name) {
            return plan_err!("the window input already has a column named `{name}`");
        }
    }
    let window_type = DataType::Timestamp(TimeUnit::Millisecond, tz);
    let mut fields: Vec<_> = input
        .iter()
        .map(|(q, f)| (q.cloned(), Arc::clone(f)))
        .collect();
    for name in [WINDOW_START, WINDOW_END] {
        fields.push((
            qualifier.clone(),
            Arc::new(Field::new(name, window_type.clone(), true)),
        ));
    }
    Ok(Arc::new(DFSchema::new_with_metadata(
        fields,
        input.metadata().clone(),
    )?))
}

impl UserDefinedLogicalNodeCore for WindowAssign {
    fn name(&self) -> &str {
        "WindowAssign"
    }

    fn inputs(&self) -> Vec<&LogicalPlan> {
        vec![&self.input]
    }

    fn schema(&self) -> &DFSchemaRef {
        &self.schema
    }

    fn expressions(&self) -> Vec<Expr> {
        Vec::new()
    }

    fn fmt_for_explain(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "WindowAssign: {} on {}", self.spec, self.time_col)?;
        if let Some(key) = &self.key_col {
            write!(f, " by {key}")?;
        }
        Ok(())
    }

    fn with_exprs_and_inputs(
        &self,
        _exprs: Vec<Expr>,
        mut inputs: Vec<LogicalPlan>,
    ) -> Result<Self> {
        let Some(input) = inputs.pop() else {
            return plan_err!("WindowAssign needs one input");
        };
        Self::try_new(
            input,
            self.spec,
            self.time_col.clone(),
            self.key_col.clone(),
            self.spans.clone(),
        )
    }
}

/// Physical node of [`WindowAssign`].
#[derive(Debug)]
pub struct WindowAssignExec {
    input: Arc<dyn ExecutionPlan>,
    spec: WindowSpec,
    time_index: usize,
    key_index: Option<usize>,
    spans: SessionSpans,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
}

impl WindowAssignExec {
    /// The physical node for `node` over the planned `input`.
    pub fn try_new(node: &WindowAssign, input: Arc<dyn ExecutionPlan>) -> Result<Self> {
        let input_schema = input.schema();
        let time_index = input_schema.index_of(&node.time_col)?;
        let key_index = node
            .key_col
            .as_deref()
            .map(|k| input_schema.index_of(k))
            .transpose()?;
        let schema: SchemaRef = Arc::new(node.schema.as_arrow().clone());
        Self::build(
            input,
            node.spec,
            time_index,
            key_index,
            node.spans.clone(),
            schema,
        )
    }

    fn build(
        input: Arc<dyn ExecutionPlan>,
        spec: WindowSpec,
        time_index: usize,
        key_index: Option<usize>,
        spans: SessionSpans,
        schema: SchemaRef,
    ) -> Result<Self> {
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&schema)),
            input.output_partitioning().clone(),
            input.pipeline_behavior(),
            input.boundedness(),
        ));
        Ok(Self {
            input,
            spec,
            time_index,
            key_index,
            spans,
            schema,
            properties,
        })
    }

    /// The window shape this node assigns.
    pub fn spec(&self) -> WindowSpec {
        self.spec
    }

    /// Name of the SESSION key column.
    pub fn key_name(&self) -> Option<String> {
        self.key_index
            .map(|i| self.input.schema().field(i).name().clone())
    }
}

impl DisplayAs for WindowAssignExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "WindowAssignExec: {}", self.spec)
    }
}

impl ExecutionPlan for WindowAssignExec {
    fn name(&self) -> &str {
        "WindowAssignExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let Some(input) = children.pop() else {
            return plan_err!("WindowAssignExec needs one input");
        };
        Ok(Arc::new(Self::build(
            input,
            self.spec,
            self.time_index,
            self.key_index,
            self.spans.clone(),
            Arc::clone(&self.schema),
        )?))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let input = self.input.execute(partition, context)?;
        let schema = Arc::clone(&self.schema);
        let (spec, time_index) = (self.spec, self.time_index);
        match (spec, self.key_index) {
            (WindowSpec::Session { gap }, Some(key_index)) => {
                let spans = self.spans.clone();
                let input_schema = self.input.schema();
                let out = Arc::clone(&schema);
                let stream = futures::stream::once(async move {
                    let batches: Vec<RecordBatch> = input.try_collect().await?;
                    let batch = concat_batches(&input_schema, &batches)?;
                    let (with_sessions, found) =
                        assign_sessions(&batch, &out, time_index, key_index, gap)?;
                    spans.extend(found);
                    Ok(with_sessions)
                });
                Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
            }
            _ => {
                let out = Arc::clone(&schema);
                let stream = input.map(move |batch| {
                    let batch = batch?;
                    let times = millis(batch.column(time_index))?;
                    let pane = spec.pane().unwrap_or(spec.size());
                    let starts: TimestampMillisecondArray = times.unary(|ts| floor_to(ts, pane));
                    let ends: TimestampMillisecondArray =
                        times.unary(|ts| floor_to(ts, pane) + pane);
                    with_window_columns(&batch, &out, Arc::new(starts), Arc::new(ends))
                });
                Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
            }
        }
    }
}

/// The time column as epoch milliseconds.
fn millis(column: &ArrayRef) -> Result<TimestampMillisecondArray> {
    let as_ms = cast(column, &DataType::Timestamp(TimeUnit::Millisecond, None))?;
    Ok(as_ms.as_primitive::<TimestampMillisecondType>().clone())
}

/// `batch` with its window columns (at `columns`) set to `[start, end)`:
/// how pane and mini-session bounds become window bounds before a firing.
pub fn set_window(
    batch: &RecordBatch,
    columns: (usize, usize),
    start: i64,
    end: i64,
) -> Result<RecordBatch> {
    let rows = batch.num_rows();
    let mut values = batch.columns().to_vec();
    for (index, value) in [(columns.0, start), (columns.1, end)] {
        let constant: ArrayRef = Arc::new(TimestampMillisecondArray::from(vec![value; rows]));
        values[index] = cast(&constant, batch.schema().field(index).data_type())?;
    }
    Ok(RecordBatch::try_new(batch.schema(), values)?)
}

/// `batch` plus the two window columns, typed as in `schema`.
pub fn with_window_columns(
    batch: &RecordBatch,
    schema: &SchemaRef,
    starts: ArrayRef,
    ends: ArrayRef,
) -> Result<RecordBatch> {
    let window_type = schema.field(schema.fields().len() - 1).data_type().clone();
    let mut columns = batch.columns().to_vec();
    columns.push(cast(&starts, &window_type)?);
    columns.push(cast(&ends, &window_type)?);
    Ok(RecordBatch::try_new(Arc::clone(schema), columns)?)
}

/// Cuts each key's events into mini-sessions (a new one starts after more
/// than `gap` without events) and sets the window columns to their bounds.
fn assign_sessions(
    batch: &RecordBatch,
    schema: &SchemaRef,
    time_index: usize,
    key_index: usize,
    gap: i64,
) -> Result<(RecordBatch, Vec<SessionSpan>)> {
    let times = millis(batch.column(time_index))?;
    let keys = batch.column(key_index);
    let order = lexsort_to_indices(
        &[
            SortColumn {
                values: Arc::clone(keys),
                options: None,
            },
            SortColumn {
                values: Arc::new(times.clone()),
                options: None,
            },
        ],
        None,
    )?;
    let same_key = make_comparator(keys.as_ref(), keys.as_ref(), SortOptions::default())?;
    let mut starts = vec![0_i64; batch.num_rows()];
    let mut ends = vec![0_i64; batch.num_rows()];
    let mut spans = Vec::new();
    let mut run: Vec<usize> = Vec::new();
    let mut close = |run: &mut Vec<usize>, spans: &mut Vec<SessionSpan>| -> Result<()> {
        let (Some(&first), Some(&last)) = (run.first(), run.last()) else {
            return Ok(());
        };
        let (start, end) = (times.value(first), times.value(last) + gap);
        for &row in run.iter() {
            starts[row] = start;
            ends[row] = end;
        }
        spans.push(SessionSpan {
            key: ScalarValue::try_from_array(keys, first)?,
            start,
            end,
        });
        run.clear();
        Ok(())
    };
    for row in order.values().iter().map(|&i| i as usize) {
        if let Some(&prev) = run.last()
            && (same_key(prev, row) != Ordering::Equal
                || times.value(row) - times.value(prev) > gap)
        {
            close(&mut run, &mut spans)?;
        }
        run.push(row);
    }
    close(&mut run, &mut spans)?;
    let with = with_window_columns(
        batch,
        schema,
        Arc::new(TimestampMillisecondArray::from(starts)),
        Arc::new(TimestampMillisecondArray::from(ends)),
    )?;
    Ok((with, spans))
}

/// The arrow schema of a `WindowAssign` over `input` (for tests and the store).
pub fn window_arrow_schema(input: &Schema, time_col: &str) -> Result<SchemaRef> {
    let df = DFSchema::try_from(input.clone())?;
    Ok(Arc::new(window_schema(&df, time_col)?.as_arrow().clone()))
}

#[cfg(test)]
mod tests {
    use arrow::array::{Int64Array, StringArray};

    use super::*;

    fn events(keys: &[&str], times: &[i64]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, false),
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                false,
            ),
            Field::new("v", DataType::Int64, false),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(keys.to_vec())),
                Arc::new(TimestampMillisecondArray::from(times.to_vec()).with_timezone("UTC")),
                Arc::new(Int64Array::from(vec![1; keys.len()])),
            ],
        )
        .expect("batch")
    }

    fn window_column(batch: &RecordBatch, name: &str) -> Vec<i64> {
        let column = batch.column_by_name(name).expect("column");
        column
            .as_primitive::<TimestampMillisecondType>()
            .values()
            .to_vec()
    }

    #[test]
    fn sessions_split_on_gaps_per_key() {
        let batch = events(&["a", "b", "a", "a", "b"], &[100, 105, 108, 200, 300]);
        let schema = window_arrow_schema(&batch.schema(), "ts").expect("schema");
        let (out, spans) = assign_sessions(&batch, &schema, 1, 0, 10).expect("assign");
        // a: 100, 108 → [100, 118); 200 → [200, 210). b: 105 → [105, 115); 300 → [300, 310).
        assert_eq!(
            window_column(&out, WINDOW_START),
            vec![100, 105, 100, 200, 300]
        );
        assert_eq!(
            window_column(&out, WINDOW_END),
            vec![118, 115, 118, 210, 310]
        );
        let bounds: Vec<(String, i64, i64)> = spans
            .iter()
            .map(|s| (s.key.to_string(), s.start, s.end))
            .collect();
        assert_eq!(
            bounds,
            vec![
                ("a".into(), 100, 118),
                ("a".into(), 200, 210),
                ("b".into(), 105, 115),
                ("b".into(), 300, 310),
            ]
        );
    }

    #[test]
    fn a_gap_of_exactly_the_session_gap_keeps_the_session_open() {
        let batch = events(&["a", "a"], &[0, 10]);
        let schema = window_arrow_schema(&batch.schema(), "ts").expect("schema");
        let (_, spans) = assign_sessions(&batch, &schema, 1, 0, 10).expect("assign");
        assert_eq!((spans.len(), spans[0].start, spans[0].end), (1, 0, 20));
    }
}
