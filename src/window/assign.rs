//! The `WindowAssign` logical plan node: adds `window_start` and
//! `window_end` to every row of its input ([`super::exec`] computes them).
//!
//! Below the windowed aggregate these columns hold **pane** bounds (TUMBLE:
//! the window; HOP: a `gcd(size, slide)` slice) or **mini-session** bounds
//! (SESSION: the run of one key's events within one micro-batch). The pane
//! and session stores turn them into window bounds before a firing.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, PoisonError};

use arrow::datatypes::{DataType, Field, TimeUnit};
use datafusion::common::{DFSchema, DFSchemaRef, Result, ScalarValue, plan_err};
use datafusion::logical_expr::{Expr, LogicalPlan, UserDefinedLogicalNodeCore};

use super::WindowSpec;

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

    pub(super) fn extend(&self, spans: Vec<SessionSpan>) {
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

pub(super) fn window_schema(input: &DFSchema, time_col: &str) -> Result<DFSchemaRef> {
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
