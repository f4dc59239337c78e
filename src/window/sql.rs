//! `TUMBLE(table, time_col, size)`, `HOP(table, time_col, slide, size)` and
//! `SESSION(table, time_col, gap, key_col)` in `FROM`, planned into a
//! [`WindowAssign`] node over the named source table.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::catalog::TableProvider;
use datafusion::common::{DFSchema, DataFusionError, Diagnostic, Result, ScalarValue, Span};
use datafusion::datasource::provider_as_source;
use datafusion::logical_expr::planner::{
    PlannedRelation, RelationPlanner, RelationPlannerContext, RelationPlanning,
};
use datafusion::logical_expr::{Expr, Extension, LogicalPlan, LogicalPlanBuilder};
use datafusion::sql::sqlparser::ast::{self, FunctionArg, FunctionArgExpr, Spanned, TableFactor};

use super::WindowSpec;
use super::assign::{SessionSpans, WindowAssign};
use crate::schema::{Source, Sources};

/// Plans the relation `name` names where the statement stands (a `WITH`
/// query, e.g. an expanded shared view), if it names one.
fn plan_named(name: &str, context: &mut dyn RelationPlannerContext) -> Option<LogicalPlan> {
    let dialect = datafusion::sql::sqlparser::dialect::GenericDialect {};
    let factor = datafusion::sql::sqlparser::parser::Parser::new(&dialect)
        .try_with_sql(name)
        .ok()?
        .parse_table_factor()
        .ok()?;
    context.plan(factor).ok()
}

/// Plans the window table functions; every other relation is left to
/// DataFusion.
#[derive(Debug, Default)]
pub struct WindowRelationPlanner {
    spans: SessionSpans,
    /// The event source tables. DataFusion resolves the tables a statement
    /// names before planning it, and a table named only inside a table
    /// function's arguments is not among them.
    sources: HashMap<String, Arc<dyn TableProvider>>,
    /// The declared sources, to tell streams from tables by name.
    declared: Sources,
}

impl WindowRelationPlanner {
    /// A planner over the tables of `sources` (of the `declared` sources)
    /// whose SESSION nodes report mini-sessions to `spans`.
    pub fn new(
        spans: SessionSpans,
        sources: HashMap<String, Arc<dyn TableProvider>>,
        declared: Sources,
    ) -> Self {
        Self {
            spans,
            sources,
            declared,
        }
    }
}

#[derive(Clone, Copy)]
enum WindowFunction {
    Tumble,
    Hop,
    Session,
}

impl WindowFunction {
    fn signature(self) -> &'static str {
        match self {
            WindowFunction::Tumble => "TUMBLE(table, time_column, INTERVAL 'size')",
            WindowFunction::Hop => "HOP(table, time_column, INTERVAL 'slide', INTERVAL 'size')",
            WindowFunction::Session => "SESSION(table, time_column, INTERVAL 'gap', key_column)",
        }
    }
}

impl RelationPlanner for WindowRelationPlanner {
    fn plan_relation(
        &self,
        relation: TableFactor,
        context: &mut dyn RelationPlannerContext,
    ) -> Result<RelationPlanning> {
        let function = match &relation {
            TableFactor::Table {
                name,
                args: Some(_),
                ..
            } => match name.to_string().to_ascii_lowercase().as_str() {
                "tumble" => WindowFunction::Tumble,
                "hop" => WindowFunction::Hop,
                "session" => WindowFunction::Session,
                _ => return Ok(RelationPlanning::Original(Box::new(relation))),
            },
            _ => return Ok(RelationPlanning::Original(Box::new(relation))),
        };
        let span = Span::try_from_sqlparser_span(relation.span());
        let fail = |message: String| -> DataFusionError {
            DataFusionError::Plan(message.clone())
                .with_diagnostic(Diagnostic::new_error(message, span))
        };
        let TableFactor::Table {
            args: Some(args),
            alias,
            ..
        } = relation
        else {
            return Ok(RelationPlanning::Original(Box::new(relation)));
        };
        let signature = function.signature();
        let mut exprs = Vec::new();
        for arg in args.args {
            match arg {
                FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => exprs.push(e),
                other => return Err(fail(format!("{signature}: unexpected argument `{other}`"))),
            }
        }
        let wanted = match function {
            WindowFunction::Tumble => 3,
            _ => 4,
        };
        if exprs.len() != wanted {
            return Err(fail(format!(
                "{signature} takes {wanted} arguments, not {}",
                exprs.len()
            )));
        }

        let mut derived = matches!(exprs[0], ast::Expr::Subquery(_));
        let (source, input) = match &exprs[0] {
            // Several sources in one window: `(SELECT … FROM a UNION ALL SELECT … FROM b)`.
            ast::Expr::Subquery(query) => {
                let input = context.plan(TableFactor::Derived {
                    lateral: false,
                    subquery: query.clone(),
                    alias: None,
                    sample: None,
                })?;
                ("the subquery".to_owned(), input)
            }
            first => {
                let source = identifier(first, context).ok_or_else(|| {
                    fail(format!(
                        "{signature}: the first argument must name a source table or be a (SELECT …)"
                    ))
                })?;
                let provider = match self.declared.named(&source) {
                    Some(kind) if kind.is_stream() => self.sources.get(&source),
                    _ => None,
                };
                match provider {
                    Some(provider) => {
                        let input = LogicalPlanBuilder::scan(
                            source.as_str(),
                            provider_as_source(Arc::clone(provider)),
                            None,
                        )?
                        .build()?;
                        (format!("`{source}`"), input)
                    }
                    // A shared view (a `WITH` query): windowed like a subquery.
                    None => match plan_named(&source, context) {
                        Some(input)
                            if !crate::window::split::streams_in(&input, self.declared)
                                .is_empty() =>
                        {
                            derived = true;
                            (format!("view `{source}`"), input)
                        }
                        _ => {
                            let streams: Vec<&str> =
                                self.declared.streams().map(Source::name).collect();
                            return Err(fail(format!(
                                "{signature}: `{source}` is neither an event source nor a view over one; window one of the streams ({}) or a view of queries/views/",
                                streams.join(", ")
                            )));
                        }
                    },
                }
            }
        };
        let column = |index: usize, what: &str, context: &mut dyn RelationPlannerContext| {
            let name = identifier(&exprs[index], context)
                .ok_or_else(|| fail(format!("{signature}: the {what} must be a column name")))?;
            if !input.schema().has_column_with_unqualified_name(&name) {
                let columns: Vec<String> = input
                    .schema()
                    .fields()
                    .iter()
                    .map(|f| f.name().clone())
                    .collect();
                return Err(fail(format!(
                    "{signature}: {source} has no column `{name}`; its columns are: {}",
                    columns.join(", ")
                )));
            }
            Ok(name)
        };
        let time_col = column(1, "time column", context)?;
        if derived {
            let streams = crate::window::split::streams_in(&input, self.declared);
            if let Some(other) = streams.iter().find(|s| s.time_or_key() != time_col) {
                return Err(fail(format!(
                    "{signature}: over a subquery or view, the time column must be the sources' `{}` \
                     (the event-time column of `{}`), not `{time_col}`",
                    other.time_or_key(),
                    other.name()
                )));
            }
        }
        let mut duration = |index: usize, what: &str| -> Result<i64> {
            let expr = context.sql_to_expr(exprs[index].clone(), &DFSchema::empty())?;
            interval_millis(&expr)
                .map_err(|problem| fail(format!("{signature}: the {what} {problem}")))
        };
        let (spec, key_col) = match function {
            WindowFunction::Tumble => (
                WindowSpec::Tumble {
                    size: duration(2, "size")?,
                },
                None,
            ),
            WindowFunction::Hop => {
                let slide = duration(2, "slide")?;
                let size = duration(3, "size")?;
                if slide > size {
                    return Err(fail(format!(
                        "{signature}: the slide ({slide} ms) is longer than the size ({size} ms), \
                         so some events would be in no window"
                    )));
                }
                (WindowSpec::Hop { size, slide }, None)
            }
            WindowFunction::Session => {
                let gap = duration(2, "gap")?;
                (
                    WindowSpec::Session { gap },
                    Some(column(3, "key column", context)?),
                )
            }
        };
        let node = WindowAssign::try_new(input, spec, time_col, key_col, self.spans.clone())
            .map_err(|e| fail(format!("{signature}: {}", e.strip_backtrace())))?;
        let plan = LogicalPlan::Extension(Extension {
            node: Arc::new(node),
        });
        Ok(RelationPlanning::Planned(Box::new(PlannedRelation::new(
            plan, alias,
        ))))
    }
}

/// `name` for a bare (or quoted) identifier argument.
fn identifier(expr: &ast::Expr, context: &dyn RelationPlannerContext) -> Option<String> {
    match expr {
        ast::Expr::Identifier(ident) => Some(context.normalize_ident(ident.clone())),
        _ => None,
    }
}

/// Why a window's duration cannot be used; said after "the size" (or
/// "the slide", "the gap").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum IntervalError {
    /// Months and years have no fixed length.
    #[error("may not use months or years (their length varies); use days")]
    Months,
    /// Finer than a millisecond.
    #[error("must be a whole number of milliseconds")]
    Fraction,
    /// Not an `INTERVAL` literal.
    #[error("must be an INTERVAL literal such as INTERVAL '1 hour', not `{0}`")]
    NotLiteral(String),
    /// Zero or negative.
    #[error("must be positive")]
    NotPositive,
}

/// A positive `INTERVAL` literal without months, in milliseconds.
fn interval_millis(expr: &Expr) -> std::result::Result<i64, IntervalError> {
    let ms = match expr {
        Expr::Literal(ScalarValue::IntervalMonthDayNano(Some(v)), _) => {
            if v.months != 0 {
                return Err(IntervalError::Months);
            }
            if v.nanoseconds % 1_000_000 != 0 {
                return Err(IntervalError::Fraction);
            }
            i64::from(v.days) * 86_400_000 + v.nanoseconds / 1_000_000
        }
        Expr::Literal(ScalarValue::IntervalDayTime(Some(v)), _) => {
            i64::from(v.days) * 86_400_000 + i64::from(v.milliseconds)
        }
        Expr::Literal(ScalarValue::IntervalYearMonth(Some(_)), _) => {
            return Err(IntervalError::Months);
        }
        other => return Err(IntervalError::NotLiteral(other.to_string())),
    };
    if ms <= 0 {
        return Err(IntervalError::NotPositive);
    }
    Ok(ms)
}
