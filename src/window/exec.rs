//! `WindowAssignExec`, the physical side of [`WindowAssign`]: computes the
//! window columns of each micro-batch (pane bounds for TUMBLE and HOP,
//! mini-sessions for SESSION), and rewrites them to window bounds before a
//! firing.

use std::cmp::Ordering;
use std::fmt;
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, TimestampMillisecondArray, make_comparator};
use arrow::compute::{SortColumn, SortOptions, cast, concat_batches, lexsort_to_indices};
use arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{Result, ScalarValue, plan_err};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::UserDefinedLogicalNodeCore;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, Distribution, ExecutionPlan, ExecutionPlanProperties,
    Partitioning, PlanProperties,
};
use futures::{StreamExt, TryStreamExt};

use super::assign::{SessionSpan, SessionSpans, WindowAssign};
use super::{WindowSpec, epoch_millis, floor_to};

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
        let schema: SchemaRef =
            Arc::new(UserDefinedLogicalNodeCore::schema(node).as_arrow().clone());
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
            Partitioning::UnknownPartitioning(1),
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

    /// One input partition: a SESSION assignment sees all of a micro-batch's
    /// rows at once, and a window over a `UNION ALL` reads its branches as one.
    fn required_input_distribution(&self) -> Vec<Distribution> {
        vec![Distribution::SinglePartition]
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
                    let times = epoch_millis(batch.column(time_index))?;
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
    let times = epoch_millis(batch.column(time_index))?;
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

#[cfg(test)]
mod tests {
    use arrow::array::AsArray;
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit, TimestampMillisecondType};
    use datafusion::common::DFSchema;

    use super::*;
    use crate::window::assign::{WINDOW_END, WINDOW_START, window_schema};

    /// The arrow schema of a `WindowAssign` over `input`.
    fn window_arrow_schema(input: &Schema, time_col: &str) -> Result<SchemaRef> {
        let df = DFSchema::try_from(input.clone())?;
        Ok(Arc::new(window_schema(&df, time_col)?.as_arrow().clone()))
    }

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
