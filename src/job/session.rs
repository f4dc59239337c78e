//! The DataFusion session a job is planned in: window table functions, the
//! window plan node, optimizer rules that keep the plan splittable, and
//! cxpulse's own SQL functions.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::Result;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::context::QueryPlanner;
use datafusion::execution::memory_pool::GreedyMemoryPool;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::{LogicalPlan, UserDefinedLogicalNode};
use datafusion::optimizer::Optimizer;
use datafusion::physical_optimizer::optimizer::PhysicalOptimizer;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_planner::{DefaultPhysicalPlanner, ExtensionPlanner, PhysicalPlanner};
use datafusion::prelude::{SessionConfig, SessionContext};

use super::codings;
use crate::schema::Sources;
use crate::window::assign::{SessionSpans, WindowAssign};
use crate::window::exec::WindowAssignExec;
use crate::window::sql::WindowRelationPlanner;

/// Logical rules left out. `push_down_filter` would move a HAVING on the
/// window columns below the aggregate, where HOP and SESSION rows still
/// hold pane bounds; `single_distinct_aggregation_to_group_by` would turn one
/// windowed aggregate into two.
const SKIPPED_RULES: &[&str] = &[
    "push_down_filter",
    "single_distinct_aggregation_to_group_by",
];

/// A session for planning one job over `sources` (the event source tables,
/// which window functions read, of the `declared` sources); SESSION
/// windows report to `spans`. With
/// `memory_limit`, the job's plans share a memory pool of that many bytes:
/// a plan that needs more fails (a job error), never the process.
pub fn job_context(
    spans: SessionSpans,
    sources: HashMap<String, Arc<dyn TableProvider>>,
    declared: Sources,
    memory_limit: Option<usize>,
) -> SessionContext {
    let optimizer_rules = Optimizer::new()
        .rules
        .into_iter()
        .filter(|r| !SKIPPED_RULES.contains(&r.name()))
        .collect();
    let physical_rules = PhysicalOptimizer::new().rules;
    let mut runtime = RuntimeEnvBuilder::new();
    if let Some(limit) = memory_limit {
        runtime = runtime.with_memory_pool(Arc::new(GreedyMemoryPool::new(limit)));
    }
    let state = SessionStateBuilder::new()
        .with_config(session_config())
        .with_default_features()
        .with_optimizer_rules(optimizer_rules)
        .with_physical_optimizer_rules(physical_rules)
        .with_relation_planners(vec![Arc::new(WindowRelationPlanner::new(
            spans, sources, declared,
        ))])
        .with_query_planner(Arc::new(JobQueryPlanner));
    let state = match runtime.build_arc() {
        Ok(runtime) => state.with_runtime_env(runtime),
        Err(e) => {
            tracing::warn!(error = %e, "a job's memory pool could not be set up; it runs without one");
            state
        }
    }
    .build();
    let context = SessionContext::new_with_state(state);
    context.register_udf(codings::gender_code_udf());
    if super::faults::enabled() {
        context.register_udf(super::faults::panic_udf());
    }
    context
}

/// One partition (plans run on one micro-batch at a time), no dynamic
/// filters (plans are re-executed), no aggregate shortcuts that assume the
/// whole input is seen at once, spans for error lines.
fn session_config() -> SessionConfig {
    SessionConfig::new()
        .with_target_partitions(1)
        .with_information_schema(false)
        .set_bool("datafusion.optimizer.enable_dynamic_filter_pushdown", false)
        .set_bool("datafusion.optimizer.enable_topk_aggregation", false)
        .set_bool(
            "datafusion.optimizer.enable_distinct_aggregation_soft_limit",
            false,
        )
        .set_str(
            "datafusion.execution.skip_partial_aggregation_probe_ratio_threshold",
            "1.0",
        )
        .set_bool("datafusion.sql_parser.collect_spans", true)
        .set_str("datafusion.execution.time_zone", "UTC")
}

/// DataFusion's planner, plus the window assignment node.
#[derive(Debug)]
struct JobQueryPlanner;

#[async_trait]
impl QueryPlanner for JobQueryPlanner {
    async fn create_physical_plan(
        &self,
        logical_plan: &LogicalPlan,
        session: &dyn Session,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        DefaultPhysicalPlanner::with_extension_planners(vec![Arc::new(WindowAssignPlanner)])
            .create_physical_plan(logical_plan, session)
            .await
    }
}

struct WindowAssignPlanner;

#[async_trait]
impl ExtensionPlanner for WindowAssignPlanner {
    async fn plan_extension(
        &self,
        _planner: &dyn PhysicalPlanner,
        node: &dyn UserDefinedLogicalNode,
        _logical_inputs: &[&LogicalPlan],
        physical_inputs: &[Arc<dyn ExecutionPlan>],
        _session: &dyn Session,
        _planning_ctx: &PhysicalPlanningContext,
    ) -> Result<Option<Arc<dyn ExecutionPlan>>> {
        let Some(assign) = node.as_any().downcast_ref::<WindowAssign>() else {
            return Ok(None);
        };
        let [input] = physical_inputs else {
            return Ok(None);
        };
        Ok(Some(Arc::new(WindowAssignExec::try_new(
            assign,
            Arc::clone(input),
        )?)))
    }
}
