//! Cuts a windowed job's plan at its windowed aggregate.
//!
//! * The **batch plan** runs on every micro-batch, one partition at a time:
//!   scan, window assignment, filters, lookup joins, and the aggregate in
//!   `Partial` mode. Its output rows are accumulator states, one per group
//!   and pane (or mini-session).
//! * The **fire plan** runs when a window closes (or emits early): the
//!   aggregate in `Final` mode over the stored states, then whatever the
//!   query does above it (HAVING, projections, OVER, ORDER BY, LIMIT).
//!
//! The logical plan is checked first, so a query that cannot run this way
//! is rejected with an explanation.

use std::collections::BTreeSet;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{DataFusionError, Result};
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};

use super::WindowSpec;
use super::assign::{SessionSpans, WINDOW_END, WINDOW_START, WindowAssign};
use super::exec::WindowAssignExec;
use crate::batch_slot::BatchSlot;
use crate::schema::{Source, Sources};

/// What the logical checks found out about a windowed query.
#[derive(Debug, Clone)]
pub struct WindowInfo {
    /// Window shape.
    pub spec: WindowSpec,
    /// The windowed sources (several when the window is over a `UNION ALL`).
    pub sources: Vec<Source>,
    /// Its event-time column.
    pub time_col: String,
    /// SESSION key column.
    pub key_col: Option<String>,
    /// Where SESSION assignment reports mini-sessions.
    pub spans: SessionSpans,
}

/// The two halves of a windowed job's physical plan.
#[derive(Debug)]
pub struct SplitPlan {
    /// `Partial` aggregate over the sources: run per micro-batch and partition.
    pub batch_plan: Arc<dyn ExecutionPlan>,
    /// The query from the `Final` aggregate up, reading [`Self::pane_slot`].
    pub fire_plan: Arc<dyn ExecutionPlan>,
    /// What the fire plan's `Final` aggregate reads.
    pub pane_slot: Arc<BatchSlot>,
    /// `PartialReduce` over [`Self::reduce_slot`]: merges state rows of
    /// equal groups (pane compaction, session merges).
    pub reduce_plan: Arc<dyn ExecutionPlan>,
    /// What the reduce plan reads.
    pub reduce_slot: Arc<BatchSlot>,
    /// Schema of the state rows.
    pub partial_schema: SchemaRef,
    /// Indices of `window_start` and `window_end` in the state rows.
    pub window_columns: (usize, usize),
    /// Index of the SESSION key in the state rows.
    pub key_column: Option<usize>,
    /// How many leading columns of the state rows are the GROUP BY
    /// columns (the window bounds among them).
    pub group_columns: usize,
    /// Whether the fire plan computes each group's row from that group's
    /// state alone (projections and filters over the final aggregate, no
    /// LIMIT, window function or other aggregate across groups): then the
    /// groups of a window can be fired apart, so that one failing group
    /// does not keep the others from being published.
    pub fire_row_wise: bool,
}

/// A query that cannot run continuously: what is wrong and what to write
/// instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unsupported(pub String);

impl From<&str> for Unsupported {
    fn from(message: &str) -> Self {
        Self(message.to_owned())
    }
}

impl From<String> for Unsupported {
    fn from(message: String) -> Self {
        Self(message)
    }
}

/// Finds the query's window, if any, and checks that the query can run
/// continuously: one window, aggregated by `window_start, window_end`, with
/// only row-by-row operators between the two.
pub fn check_windowed(
    plan: &LogicalPlan,
    sources: Sources,
) -> std::result::Result<Option<WindowInfo>, Unsupported> {
    let mut windows = Vec::new();
    plan.apply_with_subqueries(|node| {
        if let Some(w) = as_window(node) {
            windows.push(w.clone());
        }
        Ok(TreeNodeRecursion::Continue)
    })
    .map_err(|e| Unsupported(e.to_string()))?;
    let window = match windows.as_slice() {
        [] => return Ok(None),
        [one] => one.clone(),
        _ => return Err("a query may use one window (TUMBLE, HOP or SESSION), not several".into()),
    };
    let streams = streams_in(&window.input, sources);
    if streams.is_empty() {
        return Err(
            "the window must be over an event source (transactions, feedback or complaints)".into(),
        );
    }
    check_row_wise(&window.input)?;
    let Some(path) = path_to_window(plan) else {
        return Err(
            "a window inside a subquery expression (IN, EXISTS, scalar subquery) cannot run continuously"
                .into(),
        );
    };
    let Some(agg_at) = path
        .iter()
        .rposition(|n| matches!(n, LogicalPlan::Aggregate(_)))
    else {
        return Err(format!(
            "a windowed query must aggregate per window: add GROUP BY {WINDOW_START}, {WINDOW_END}, … \
             (rows are emitted when a window closes)"
        ).into());
    };
    let LogicalPlan::Aggregate(aggregate) = path[agg_at] else {
        return Err("internal error: aggregate expected".into());
    };
    let pane_bounds = !matches!(window.spec, WindowSpec::Tumble { .. });
    let refers_to_window = |e: &Expr| {
        e.column_refs()
            .iter()
            .any(|c| c.name == WINDOW_START || c.name == WINDOW_END)
    };
    let is_bare = |e: &Expr, name: &str| matches!(e, Expr::Column(c) if c.name == name);
    for node in &path[agg_at + 1..path.len() - 1] {
        match node {
            LogicalPlan::Projection(_) | LogicalPlan::Filter(_) | LogicalPlan::SubqueryAlias(_) => {
            }
            LogicalPlan::Join(join) => {
                let other = if contains_window(&join.left) {
                    &join.right
                } else {
                    &join.left
                };
                if !streams_in(other, sources).is_empty() {
                    return Err(format!(
                        "joining two event streams is not supported; a windowed source can be \
                         joined with {}",
                        table_sources(sources)
                    )
                    .into());
                }
            }
            other => {
                return Err(format!(
                    "{} between the window and its GROUP BY cannot run continuously; \
                     aggregate per window first and apply it to the aggregated rows",
                    describe(other)
                )
                .into());
            }
        }
        if pane_bounds
            && node.expressions().iter().any(|e| {
                refers_to_window(e) && !is_bare(e, WINDOW_START) && !is_bare(e, WINDOW_END)
            })
        {
            return Err(window_column_misuse(&window.spec).into());
        }
    }
    let scans = count_stream_scans(&window.input, sources);
    if count_stream_scans(plan, sources) != scans || scans != streams.len() {
        return Err(format!(
            "a windowed query reads each event source once, inside its window; \
             join it only with {}",
            table_sources(sources)
        )
        .into());
    }
    let groups = &aggregate.group_expr;
    for name in [WINDOW_START, WINDOW_END] {
        if !groups.iter().any(|g| is_bare(g, name)) {
            return Err(format!(
                "a windowed query must GROUP BY {WINDOW_START}, {WINDOW_END} (it groups by {})",
                groups
                    .iter()
                    .map(|g| g.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
            .into());
        }
    }
    if pane_bounds
        && (aggregate.aggr_expr.iter().any(refers_to_window)
            || groups.iter().any(|g| {
                refers_to_window(g) && !is_bare(g, WINDOW_START) && !is_bare(g, WINDOW_END)
            }))
    {
        return Err(window_column_misuse(&window.spec).into());
    }
    if let Some(key) = &window.key_col
        && !groups.iter().any(|g| is_bare(g, key))
    {
        return Err(format!(
            "a SESSION query must GROUP BY its session key `{key}` (sessions are per key)"
        )
        .into());
    }
    for name in [WINDOW_START, WINDOW_END] {
        if !plan.schema().has_column_with_unqualified_name(name) {
            return Err(format!(
                "a windowed query must return `{WINDOW_START}` and `{WINDOW_END}`: they identify the \
                 window in every output row and its Kafka key"
            ).into());
        }
    }
    Ok(Some(WindowInfo {
        spec: window.spec,
        sources: streams,
        time_col: window.time_col.clone(),
        key_col: window.key_col.clone(),
        spans: window.spans.clone(),
    }))
}

/// The relation inside a window is read event by event: no aggregates,
/// sorting or limits there (`UNION` without `ALL` is a `DISTINCT`).
fn check_row_wise(input: &LogicalPlan) -> std::result::Result<(), Unsupported> {
    let mut problem = None;
    let _ = input.apply_with_subqueries(|node| {
        match node {
            LogicalPlan::Aggregate(_)
            | LogicalPlan::Distinct(_)
            | LogicalPlan::Window(_)
            | LogicalPlan::Limit(_)
            | LogicalPlan::Sort(_) => {
                let what = match node {
                    LogicalPlan::Aggregate(_) => "an aggregate".to_owned(),
                    LogicalPlan::Distinct(_) => "DISTINCT".to_owned(),
                    other => describe(other),
                };
                problem = Some(format!(
                    "{what} inside a window's input cannot run continuously{}",
                    if matches!(node, LogicalPlan::Distinct(_)) {
                        " (write UNION ALL, not UNION)"
                    } else {
                        ""
                    }
                ));
                return Ok(TreeNodeRecursion::Stop);
            }
            _ => {}
        }
        Ok(TreeNodeRecursion::Continue)
    });
    problem.map_or(Ok(()), |p| Err(Unsupported(p)))
}

fn window_column_misuse(spec: &WindowSpec) -> String {
    let what = if matches!(spec, WindowSpec::Session { .. }) {
        "SESSION"
    } else {
        "HOP"
    };
    format!(
        "in a {what} query, {WINDOW_START} and {WINDOW_END} may only be grouped by below the \
         aggregate (a session or hop window is known only when it closes); use them in the \
         SELECT list or HAVING instead"
    )
}

fn as_window(node: &LogicalPlan) -> Option<&WindowAssign> {
    match node {
        LogicalPlan::Extension(e) => e.node.as_any().downcast_ref::<WindowAssign>(),
        _ => None,
    }
}

fn contains_window(plan: &LogicalPlan) -> bool {
    plan.exists(|n| Ok(as_window(n).is_some())).unwrap_or(false)
}

/// The nodes from `plan` down to the window, through plan inputs only.
fn path_to_window(plan: &LogicalPlan) -> Option<Vec<&LogicalPlan>> {
    if as_window(plan).is_some() {
        return Some(vec![plan]);
    }
    plan.inputs().into_iter().find_map(|input| {
        path_to_window(input).map(|mut below| {
            below.insert(0, plan);
            below
        })
    })
}

fn source_of(plan: &LogicalPlan, sources: Sources) -> Option<Source> {
    match plan {
        LogicalPlan::TableScan(scan) => sources.named(scan.table_name.table()),
        _ => None,
    }
}

/// The table sources a stream can be joined with, for messages.
pub fn table_sources(sources: Sources) -> String {
    let names: Vec<String> = sources
        .tables()
        .map(|t| format!("`{}`", t.name()))
        .collect();
    match names.len() {
        0 => "a table source (none is declared)".to_owned(),
        1 => format!("the table source {}", names[0]),
        _ => format!("a table source ({})", names.join(", ")),
    }
}

/// Event sources scanned anywhere in `plan`, subqueries included.
pub fn streams_in(plan: &LogicalPlan, sources: Sources) -> Vec<Source> {
    let mut read = Vec::new();
    let _ = plan.apply_with_subqueries(|node| {
        if let Some(kind) = source_of(node, sources).filter(|k| k.is_stream())
            && !read.contains(&kind)
        {
            read.push(kind);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    read
}

/// Every table scanned anywhere in `plan` (sources and lookup tables),
/// subqueries included.
pub fn tables_in(plan: &LogicalPlan) -> BTreeSet<String> {
    let mut tables = BTreeSet::new();
    let _ = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            tables.insert(scan.table_name.table().to_owned());
        }
        Ok(TreeNodeRecursion::Continue)
    });
    tables
}

fn count_stream_scans(plan: &LogicalPlan, sources: Sources) -> usize {
    let mut n = 0;
    let _ = plan.apply_with_subqueries(|node| {
        if source_of(node, sources).is_some_and(|k| k.is_stream()) {
            n += 1;
        }
        Ok(TreeNodeRecursion::Continue)
    });
    n
}

fn describe(node: &LogicalPlan) -> String {
    match node {
        LogicalPlan::Window(_) => "a window function (OVER …)".into(),
        LogicalPlan::Aggregate(_) | LogicalPlan::Distinct(_) => "another aggregate".into(),
        LogicalPlan::Limit(_) => "LIMIT".into(),
        LogicalPlan::Sort(_) => "ORDER BY".into(),
        LogicalPlan::Union(_) => "UNION".into(),
        other => format!("`{}`", other.display()),
    }
}

/// Splits the physical plan of a query that passed [`check_windowed`].
pub fn split_physical(plan: &Arc<dyn ExecutionPlan>) -> Result<SplitPlan> {
    let internal = |m: &str| DataFusionError::Internal(format!("splitting the windowed plan: {m}"));
    let aggregate =
        windowed_aggregate(plan).ok_or_else(|| internal("no aggregate above the window"))?;
    let Some(agg) = aggregate.downcast_ref::<AggregateExec>() else {
        return Err(internal("not an aggregate"));
    };
    let partial: Arc<dyn ExecutionPlan> = match agg.mode() {
        AggregateMode::Single | AggregateMode::SinglePartitioned => {
            Arc::new(AggregateExec::try_new(
                AggregateMode::Partial,
                agg.group_expr().clone(),
                agg.aggr_expr().to_vec(),
                agg.filter_expr().to_vec(),
                Arc::clone(agg.input()),
                agg.input_schema(),
            )?)
        }
        AggregateMode::Final | AggregateMode::FinalPartitioned => {
            let mut below = Arc::clone(agg.input());
            loop {
                if below
                    .downcast_ref::<AggregateExec>()
                    .is_some_and(|a| *a.mode() == AggregateMode::Partial)
                {
                    break below;
                }
                let next = match below.children().as_slice() {
                    [only] => Arc::clone(only),
                    _ => return Err(internal("no partial aggregate under the final one")),
                };
                below = next;
            }
        }
        _ => return Err(internal("unexpected aggregate mode")),
    };
    let Some(partial_agg) = partial.downcast_ref::<AggregateExec>() else {
        return Err(internal("partial is not an aggregate"));
    };
    let partial_schema = partial.schema();
    let n = partial_agg.aggr_expr().len();

    let pane_slot = BatchSlot::new(Arc::clone(&partial_schema));
    let final_agg: Arc<dyn ExecutionPlan> = Arc::new(AggregateExec::try_new(
        AggregateMode::Final,
        partial_agg.group_expr().as_final(),
        partial_agg.aggr_expr().to_vec(),
        vec![None; n],
        pane_slot.exec()?,
        partial_agg.input_schema(),
    )?);
    let same_columns = |a: &SchemaRef, b: &SchemaRef| {
        a.fields().len() == b.fields().len()
            && a.fields()
                .iter()
                .zip(b.fields())
                .all(|(x, y)| x.name() == y.name() && x.data_type() == y.data_type())
    };
    if !same_columns(&final_agg.schema(), &aggregate.schema()) {
        return Err(internal(
            "the final aggregate's schema differs from the planned one",
        ));
    }
    let target = Arc::as_ptr(&aggregate).cast::<()>();
    let fire_plan = Arc::clone(plan)
        .transform_up(|node| {
            if Arc::as_ptr(&node).cast::<()>() == target {
                Ok(Transformed::yes(Arc::clone(&final_agg)))
            } else {
                Ok(Transformed::no(node))
            }
        })?
        .data;

    let reduce_slot = BatchSlot::new(Arc::clone(&partial_schema));
    let reduce_plan: Arc<dyn ExecutionPlan> = Arc::new(AggregateExec::try_new(
        AggregateMode::PartialReduce,
        partial_agg.group_expr().as_final(),
        partial_agg.aggr_expr().to_vec(),
        vec![None; n],
        reduce_slot.exec()?,
        partial_agg.input_schema(),
    )?);
    if !same_columns(&reduce_plan.schema(), &partial_schema) {
        return Err(internal(
            "the reduce aggregate's schema differs from the partial one",
        ));
    }

    let group_names: Vec<&str> = partial_agg
        .group_expr()
        .expr()
        .iter()
        .map(|(_, name)| name.as_str())
        .collect();
    let group_index = |name: &str| {
        group_names
            .iter()
            .position(|g| *g == name)
            .ok_or_else(|| internal(&format!("`{name}` is not a group column")))
    };
    let window_columns = (group_index(WINDOW_START)?, group_index(WINDOW_END)?);
    let key_column = window_spec(plan)
        .and_then(|(_, key)| key)
        .map(|key| group_index(&key))
        .transpose()?;
    let fire_row_wise = row_wise(&fire_plan);
    let group_columns = group_names.len();
    Ok(SplitPlan {
        batch_plan: partial,
        fire_plan,
        pane_slot,
        reduce_plan,
        reduce_slot,
        partial_schema,
        window_columns,
        key_column,
        group_columns,
        fire_row_wise,
    })
}

/// Whether every operator of the fire plan maps each group's row on its
/// own: projections, filters, repartitioning, sorting without a limit, and
/// the one final aggregate (over the groups' states, fed by the slot).
fn row_wise(fire_plan: &Arc<dyn ExecutionPlan>) -> bool {
    let mut aggregates = 0;
    let mut row_wise = true;
    let _ = fire_plan.apply(|node| {
        let ok = match node.name() {
            "ProjectionExec"
            | "FilterExec"
            | "CoalesceBatchesExec"
            | "CoalescePartitionsExec"
            | "RepartitionExec"
            | "DataSourceExec"
            | "StreamingTableExec"
            | "MemoryExec"
            | "CooperativeExec" => true,
            "SortExec" | "SortPreservingMergeExec" => node.fetch().is_none(),
            "AggregateExec" => {
                aggregates += 1;
                aggregates == 1
            }
            _ => false,
        };
        if ok {
            Ok(TreeNodeRecursion::Continue)
        } else {
            row_wise = false;
            Ok(TreeNodeRecursion::Stop)
        }
    });
    row_wise
}

/// The lowest aggregate above the window assignment.
fn windowed_aggregate(plan: &Arc<dyn ExecutionPlan>) -> Option<Arc<dyn ExecutionPlan>> {
    fn walk(node: &Arc<dyn ExecutionPlan>) -> (bool, Option<Arc<dyn ExecutionPlan>>) {
        if node.downcast_ref::<WindowAssignExec>().is_some() {
            return (true, None);
        }
        for child in node.children() {
            match walk(child) {
                (_, Some(found)) => return (true, Some(found)),
                (true, None) if node.downcast_ref::<AggregateExec>().is_some() => {
                    return (true, Some(Arc::clone(node)));
                }
                (true, None) => return (true, None),
                (false, None) => {}
            }
        }
        (false, None)
    }
    walk(plan).1
}

/// The window spec and SESSION key name of the physical plan's assignment.
fn window_spec(plan: &Arc<dyn ExecutionPlan>) -> Option<(WindowSpec, Option<String>)> {
    let mut found = None;
    let _ = plan.apply(|node| {
        if let Some(assign) = node.downcast_ref::<WindowAssignExec>() {
            found = Some((assign.spec(), assign.key_name()));
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    found
}
