//! Jobs: a query file planned once into a DataFusion physical plan, executed
//! on every micro-batch of the sources it reads.
//!
//! Stateless jobs (no window) keep no state: each execution sees only the
//! current micro-batch plus the `customers` lookup table. Windowed jobs
//! ([`windowed`]) keep partial aggregates until the watermark closes a window.

pub mod codings;
mod explain;
mod faults;
mod session;
mod tables;
pub mod windowed;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use datafusion::catalog::TableProvider;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::DataFusionError;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::execution_plan::reset_plan_states;
use datafusion::physical_plan::{ExecutionPlan, collect};
use datafusion::prelude::SQLOptions;

pub use tables::LookupStream;
pub use windowed::WindowedJob;

use crate::batch_slot::BatchSlot;
use crate::lookup::Lookups;
use crate::query::{QueryError, QueryFile, RESERVED_COLUMNS, first_sql_line, line_from_message};
use crate::schema::{Source, Sources};
use crate::window::assign::SessionSpans;
use crate::window::split::{Unsupported, check_windowed, split_physical, streams_in, tables_in};

/// How a job runs.
enum Runner {
    /// The whole plan on every micro-batch.
    Stateless(Arc<dyn ExecutionPlan>),
    /// State between micro-batches; results when windows close.
    Windowed(Box<WindowedJob>),
}

/// Where a job's work runs when several instances share the partitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// On each instance, over its own partitions: a job without a window,
    /// or a window grouped by the `partition_key` of every stream it reads.
    Local,
    /// In two stages joined by a repartition topic ([`crate::shuffle`]): a
    /// TUMBLE or HOP window grouped by something else.
    Shuffled,
    /// On one instance only, for now (why): it runs there as it is.
    SingleOnly(String),
}

/// A planned job, ready to run on micro-batches.
pub struct Job {
    /// Job name (the query file name).
    pub name: String,
    /// Output topic.
    pub output_topic: String,
    /// `@output … SHARED`: other jobs may write to the output topic too.
    pub output_shared: bool,
    /// The query file, and the line that sets the output topic (`@output`,
    /// else the first SQL line).
    pub output_at: (std::path::PathBuf, usize),
    /// `@key` columns.
    pub key_columns: Vec<String>,
    /// `@key … WITHOUT WINDOW`: the window bounds are not part of the key.
    pub key_without_window: bool,
    /// Schema of the query's result rows.
    pub schema: SchemaRef,
    /// `@gauge` lines: columns exported as Prometheus gauges.
    pub gauges: Vec<crate::query::GaugeSpec>,
    /// `@emit every`: interval of early results (windowed jobs).
    pub emit_every: Option<std::time::Duration>,
    /// Names the query file's content and the shape of its state: state
    /// in the changelog under another fingerprint is not restored.
    pub fingerprint: String,
    /// The shared views the query reads.
    pub views: Vec<String>,
    /// `@backfill`: where a new or changed job starts reading history.
    pub backfill: Option<crate::query::BackfillFrom>,
    /// The query file the job was planned from (views expanded).
    pub query: QueryFile,
    /// Every table the query reads, lookup tables included.
    tables: BTreeSet<String>,
    /// The streams whose kept tables it reads.
    kept_sources: Vec<Source>,
    slots: BTreeMap<Source, Arc<BatchSlot>>,
    runner: Runner,
    task_ctx: Arc<TaskContext>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("name", &self.name)
            .field("output_topic", &self.output_topic)
            .field("sources", &self.sources())
            .finish()
    }
}

impl Job {
    /// Plans `query` once against the source schemas, its plans with no
    /// memory pool (for checks, explain and tests).
    pub async fn plan(
        query: QueryFile,
        lookups: &Lookups,
        output_prefix: &str,
    ) -> Result<Job, QueryError> {
        Self::plan_bounded(query, lookups, output_prefix, None).await
    }

    /// Plans `query` once against the source schemas; its plans run in a
    /// memory pool of `memory_limit` bytes, if given
    /// (`engine.job_memory_limit`).
    pub async fn plan_bounded(
        query: QueryFile,
        lookups: &Lookups,
        output_prefix: &str,
        memory_limit: Option<usize>,
    ) -> Result<Job, QueryError> {
        let error_at = |line: usize, message: String| QueryError {
            file: query.path.clone(),
            line,
            message,
        };
        let mut slots = BTreeMap::new();
        let mut tables: Vec<(&str, Arc<dyn TableProvider>)> = Vec::new();
        for kind in lookups.sources().streams() {
            let slot = BatchSlot::new(kind.schema());
            let table = slot
                .table()
                .map_err(|e| error_at(1, format!("internal error creating tables: {e}")))?;
            slots.insert(kind, slot);
            tables.push((kind.name(), Arc::new(table)));
        }
        let sources = tables
            .iter()
            .map(|(name, t)| ((*name).to_owned(), Arc::clone(t)))
            .collect();
        for view in lookups.views() {
            let table = LookupStream::table(view.name, view.schema, view.snapshot)
                .map_err(|e| error_at(1, format!("internal error creating tables: {e}")))?;
            tables.push((view.name, Arc::new(table)));
        }
        let ctx = session::job_context(
            SessionSpans::default(),
            sources,
            lookups.sources(),
            memory_limit,
        );
        for (name, table) in tables {
            ctx.register_table(name, table)
                .map_err(|e| error_at(1, format!("internal error registering tables: {e}")))?;
        }

        let sql_options = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        let frame = ctx
            .sql_with_options(&query.sql, sql_options)
            .await
            .map_err(|e| datafusion_error(&query, &e))?;
        let logical = frame.logical_plan().clone();
        if let Some(view) = query
            .views
            .iter()
            .find(|v| lookups.sources().named(v).is_some())
        {
            return Err(error_at(
                first_sql_line(&query.sql),
                format!("reads the view {view}, whose name is a source's name; rename the view"),
            ));
        }
        let read = streams_in(&logical, lookups.sources());
        let tables_read = tables_in(&logical);
        let window = check_windowed(&logical, lookups.sources())
            .map_err(|m| error_at(first_sql_line(&query.sql), m.0))?;
        if window.is_none() {
            check_stateless(&logical, lookups.sources())
                .map_err(|m| error_at(first_sql_line(&query.sql), m.0))?;
        }
        if read.is_empty() {
            return Err(error_at(
                first_sql_line(&query.sql),
                "the query reads no event source; read transactions, feedback or complaints \
                 (customers is a lookup table to join with)"
                    .to_owned(),
            ));
        }
        slots.retain(|kind, _| read.contains(kind));

        let schema: SchemaRef = Arc::new(frame.schema().as_arrow().clone());
        for reserved in RESERVED_COLUMNS {
            if schema.field_with_name(reserved).is_ok() {
                return Err(error_at(
                    first_sql_line(&query.sql),
                    format!("the result column `{reserved}` is added by cxpulse; rename it"),
                ));
            }
        }
        if let Some((columns, line)) = &query.options.key {
            for column in columns {
                if schema.field_with_name(column).is_err() {
                    return Err(error_at(*line, unknown_column("@key", column, &schema)));
                }
            }
        }
        for gauge in &query.options.gauges {
            for column in gauge.columns.iter().chain(&gauge.by) {
                if schema.field_with_name(column).is_err() {
                    return Err(error_at(
                        gauge.line,
                        unknown_column("@gauge", column, &schema),
                    ));
                }
            }
            if let Some(problem) = crate::gauges::problem(gauge, &schema) {
                return Err(error_at(gauge.line, problem));
            }
        }
        let kept_sources = kept_sources_read(&tables_read, lookups.sources());
        if let Some((_, line)) = &query.options.backfill
            && let Some(kept) = first_kept_table(&kept_sources, &tables_read)
        {
            return Err(error_at(*line, backfill_refused(kept)));
        }
        if window.is_none() {
            for (option, line) in [
                ("@emit", query.options.emit.as_ref().map(|e| e.1)),
                ("@lateness", query.options.lateness.as_ref().map(|l| l.1)),
            ] {
                if let Some(line) = line {
                    return Err(error_at(
                        line,
                        format!("{option} applies to windowed queries; this query has no window"),
                    ));
                }
            }
        }

        let plan = frame
            .create_physical_plan()
            .await
            .map_err(|e| datafusion_error(&query, &e))?;
        let task_ctx = ctx.task_ctx();
        let runner = match window {
            None => Runner::Stateless(plan),
            Some(info) => {
                let internal = |e: DataFusionError| {
                    error_at(
                        first_sql_line(&query.sql),
                        format!(
                            "internal error planning the window: {}",
                            e.strip_backtrace()
                        ),
                    )
                };
                let split = split_physical(&plan).map_err(internal)?;
                let window_slots = slots
                    .iter()
                    .filter(|(kind, _)| info.sources.contains(kind))
                    .map(|(kind, slot)| (*kind, Arc::clone(slot)))
                    .collect();
                let lateness = query
                    .options
                    .lateness
                    .as_ref()
                    .map_or(0, |(d, _)| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
                Runner::Windowed(Box::new(
                    WindowedJob::new(info, split, window_slots, lateness, Arc::clone(&task_ctx))
                        .map_err(internal)?,
                ))
            }
        };
        let emit_every = match (&runner, &query.options.emit) {
            (Runner::Windowed(_), Some((crate::query::EmitMode::Every(d), _))) => Some(*d),
            _ => None,
        };
        let fingerprint = match &runner {
            Runner::Windowed(w) => fingerprint(&query.sql, &w.state_schema()),
            Runner::Stateless(_) => fingerprint(&query.sql, &schema),
        };
        let output_topic = query.options.output.as_ref().map_or_else(
            || format!("{output_prefix}{}", query.name),
            |(t, _)| t.clone(),
        );
        let output_line = query
            .options
            .output
            .as_ref()
            .map_or_else(|| first_sql_line(&query.sql), |(_, line)| *line);
        Ok(Job {
            query: query.clone(),
            key_columns: query.options.key_columns().to_vec(),
            key_without_window: query.options.key_without_window,
            gauges: query.options.gauges.clone(),
            name: query.name,
            output_topic,
            output_shared: query.options.output_shared,
            output_at: (query.path.clone(), output_line),
            schema,
            emit_every,
            fingerprint,
            views: query.views.clone(),
            backfill: query.options.backfill.map(|(from, _)| from),
            kept_sources,
            tables: tables_read,
            slots,
            runner,
            task_ctx,
        })
    }

    /// The windowed part of the job, if it has a window.
    pub fn windowed(&self) -> Option<&WindowedJob> {
        match &self.runner {
            Runner::Windowed(w) => Some(w),
            Runner::Stateless(_) => None,
        }
    }

    /// The windowed part of the job, mutably.
    pub fn windowed_mut(&mut self) -> Option<&mut WindowedJob> {
        match &mut self.runner {
            Runner::Windowed(w) => Some(w),
            Runner::Stateless(_) => None,
        }
    }

    /// The columns of the Kafka key: the window bounds for windowed jobs
    /// (unless `WITHOUT WINDOW`), then the `@key` columns.
    pub fn record_key_columns(&self) -> Vec<String> {
        let window = match self.runner {
            Runner::Windowed(_) if !self.key_without_window => vec![
                crate::window::assign::WINDOW_START.to_owned(),
                crate::window::assign::WINDOW_END.to_owned(),
            ],
            _ => Vec::new(),
        };
        window
            .into_iter()
            .chain(self.key_columns.iter().cloned())
            .collect()
    }

    /// Sets this job up for `cluster`: a job whose groups span partitions,
    /// on several instances, shuffles, and its state has another shape (it
    /// is kept per repartition partition), hence another fingerprint.
    /// A job reading kept tables gets a copy of them for its windows to
    /// fire with (stage 2 sees every partition's keys, stage 1 only its
    /// own).
    pub fn place(&mut self, cluster: crate::cluster::Cluster) {
        if !cluster.is_single() && self.placement() == Placement::Shuffled {
            self.fingerprint.push_str("-shuffled");
            let kept = self.kept_sources.clone();
            if let Some(windowed) = self.windowed_mut() {
                windowed.copy_kept_tables(&kept);
            }
        }
    }

    /// The version of its query file: the start of its fingerprint, in the
    /// name of its repartition topic.
    pub fn version(&self) -> &str {
        self.fingerprint.get(..8).unwrap_or(&self.fingerprint)
    }

    /// Whether this job shuffles on the instances it was placed for.
    pub fn shuffles(&self) -> bool {
        self.fingerprint.ends_with("-shuffled")
    }

    /// Where this job's work runs when instances share the partitions.
    pub fn placement(&self) -> Placement {
        if let Some(unkeyed) = self
            .kept_sources
            .iter()
            .find(|s| s.partition_key().is_none())
        {
            return Placement::SingleOnly(format!(
                "it reads a table kept from {}, which declares no partition_key: each instance keeps the keys of its partitions, so the events of one key must share a partition",
                unkeyed.name()
            ));
        }
        let Runner::Windowed(windowed) = &self.runner else {
            return match self.kept_table_read() {
                Some(kept) => Placement::SingleOnly(format!(
                    "it reads the kept table {kept} without a window: each instance keeps only the keys of its partitions, and only windows get a copy of the whole table"
                )),
                None => Placement::Local,
            };
        };
        // A window reading a kept table fires with a copy of the whole
        // table, which comes through the shuffle.
        if !self.kept_sources.is_empty() {
            return match windowed.info.spec {
                crate::window::WindowSpec::Session { .. } => Placement::SingleOnly(format!(
                    "it is a SESSION window reading the kept table {}, and sessions do not shuffle yet",
                    self.kept_table_read().unwrap_or_default()
                )),
                _ => Placement::Shuffled,
            };
        }
        let groups = windowed.group_columns();
        let by_key = windowed.info.sources.iter().all(|source| {
            source
                .partition_key()
                .is_some_and(|key| groups.iter().any(|g| g == key))
        });
        let session = matches!(
            windowed.info.spec,
            crate::window::WindowSpec::Session { .. }
        );
        // A result row that depends on other groups (OVER, LIMIT, an
        // aggregate across groups) needs every group of the window in one
        // place, even when the groups follow the partitions.
        let row_wise = windowed.fires_row_wise();
        match (by_key && row_wise, session) {
            (true, _) => Placement::Local,
            (false, false) => Placement::Shuffled,
            (false, true) if by_key => Placement::SingleOnly(
                "it is a SESSION window whose rows depend on other sessions (OVER, LIMIT or an aggregate across them), and sessions do not shuffle yet".to_owned(),
            ),
            (false, true) => Placement::SingleOnly(
                "it is a SESSION window keyed by something else than its sources' partition_key, and sessions do not shuffle yet".to_owned(),
            ),
        }
    }

    /// The event sources this job reads.
    pub fn sources(&self) -> Vec<Source> {
        self.slots.keys().copied().collect()
    }

    /// Whether the query reads the table `name` (a source or a lookup
    /// table).
    pub fn reads_table(&self, name: &str) -> bool {
        self.tables.contains(name)
    }

    /// The kept table (e.g. `complaint_history`) this job reads, if any: such
    /// a job cannot be backfilled.
    pub fn kept_table_read(&self) -> Option<&'static str> {
        first_kept_table(&self.kept_sources, &self.tables)
    }

    /// Whether this job reads `kind`.
    pub fn reads(&self, kind: Source) -> bool {
        self.slots.contains_key(&kind)
    }

    /// Runs a stateless job's plan on one micro-batch per source (absent
    /// sources are empty). A windowed job returns nothing here.
    pub async fn run(
        &self,
        inputs: &BTreeMap<Source, Vec<RecordBatch>>,
    ) -> Result<Vec<RecordBatch>, DataFusionError> {
        let Runner::Stateless(plan) = &self.runner else {
            return Ok(Vec::new());
        };
        for (kind, slot) in &self.slots {
            slot.set(inputs.get(kind).cloned().unwrap_or_default());
        }
        let plan = reset_plan_states(Arc::clone(plan))?;
        let result = collect(plan, Arc::clone(&self.task_ctx)).await;
        for slot in self.slots.values() {
            slot.set(Vec::new());
        }
        result
    }
}

/// Plans every query file of `dir`, with the views of `views_dir`, each in
/// a memory pool of `memory_limit` bytes if given; returns the jobs that
/// planned and the problems of those that did not.
pub async fn load_all(
    dir: &std::path::Path,
    views_dir: &std::path::Path,
    lookups: &Lookups,
    output_prefix: &str,
    memory_limit: Option<usize>,
) -> (Vec<Job>, Vec<QueryError>) {
    let files = match crate::query::list_query_files(dir) {
        Ok(files) => files,
        Err(e) => {
            let problem = QueryError {
                file: dir.to_path_buf(),
                line: 0,
                message: format!("cannot list the queries directory: {e}"),
            };
            return (Vec::new(), vec![problem]);
        }
    };
    let mut jobs = Vec::new();
    let mut problems = Vec::new();
    for path in files {
        let planned = match QueryFile::read(&path, views_dir) {
            Ok(query) => Job::plan_bounded(query, lookups, output_prefix, memory_limit).await,
            Err(e) => Err(e),
        };
        match planned {
            Ok(job) => jobs.push(job),
            Err(e) => problems.push(e),
        }
    }
    (jobs, problems)
}

/// Plans the job `name` of the configured queries directory over
/// `lookups`; returns it with the path of its file.
pub async fn plan_named(
    config: &crate::config::Config,
    name: &str,
    lookups: &Lookups,
) -> Result<(Job, std::path::PathBuf), QueryError> {
    let path = config.engine.queries_dir.join(format!("{name}.sql"));
    let query = QueryFile::read(&path, &config.views_dir())?;
    let job = Job::plan_bounded(
        query,
        lookups,
        &config.topics.output_prefix,
        Some(config.job_memory_limit()),
    )
    .await?;
    Ok((job, path))
}

/// Plans every query of the configured queries directory against an empty
/// customers table: for validation and topic set-up, not for running.
/// Jobs whose output topic is refused ([`output_problems`]) are problems.
pub async fn plan_configured(config: &crate::config::Config) -> (Vec<Job>, Vec<QueryError>) {
    let (jobs, mut problems) = load_all(
        &config.engine.queries_dir,
        &config.views_dir(),
        &Lookups::new(config.declared),
        &config.topics.output_prefix,
        None,
    )
    .await;
    let refused = output_problems(&jobs, &[], config);
    problems.extend(refused.iter().map(|(_, e)| e.clone()));
    let jobs = jobs
        .into_iter()
        .enumerate()
        .filter(|(i, _)| !refused.iter().any(|(r, _)| r == i))
        .map(|(_, j)| j)
        .collect();
    (jobs, problems)
}

/// Why a job may not write to `topic`: it is a source's topic (a feedback
/// loop), the dead-letter topic, a changelog (this engine's, or any topic
/// named `…-changelog`) or one of Kafka's internal topics.
pub fn output_refusal(topic: &str, config: &crate::config::Config) -> Option<String> {
    let source = config
        .sources
        .iter()
        .find(|s| s.topic == topic)
        .map(|s| s.name.clone())
        .or_else(|| {
            config
                .topics
                .source_of(config.declared, topic)
                .map(|s| s.name().to_owned())
        });
    if let Some(source) = source {
        return Some(format!(
            "the output topic {topic} is the topic of source {source}: the job would read its own rows back (a feedback loop)"
        ));
    }
    if topic == config.topics.deadletter {
        return Some(format!(
            "the output topic {topic} is the dead-letter topic (topics.deadletter); rows and dead letters must stay apart"
        ));
    }
    if topic == config.changelog_topic() || topic.ends_with("-changelog") {
        return Some(format!(
            "the output topic {topic} is a state changelog topic; rows written there would corrupt state"
        ));
    }
    if topic.starts_with("__") {
        return Some(format!(
            "the output topic {topic} is one of Kafka's internal topics"
        ));
    }
    None
}

/// Jobs among `jobs` (indexes, with the problem) whose output is refused
/// ([`output_refusal`]), that share an output topic with another job of
/// `jobs` or of `running` without both saying `@output … SHARED`, or that
/// cannot run with the configured instances ([`Job::placement`]).
pub fn output_problems(
    jobs: &[Job],
    running: &[&Job],
    config: &crate::config::Config,
) -> Vec<(usize, QueryError)> {
    let mut problems = Vec::new();
    for (i, job) in jobs.iter().enumerate() {
        let (file, line) = job.output_at.clone();
        let at = |message: String| QueryError {
            file: file.clone(),
            line,
            message,
        };
        if let Some(why) = output_refusal(&job.output_topic, config) {
            problems.push((i, at(why)));
            continue;
        }
        if !config.cluster().is_single()
            && let Placement::SingleOnly(why) = job.placement()
        {
            problems.push((
                i,
                at(format!(
                    "cannot run on {} instances yet: {why}",
                    config.cluster().instances()
                )),
            ));
            continue;
        }
        let others = jobs
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, o)| o)
            .chain(running.iter().copied().filter(|r| r.name != job.name));
        let clash = others
            .filter(|o| o.output_topic == job.output_topic)
            .find(|o| !(o.output_shared && job.output_shared));
        if let Some(other) = clash {
            problems.push((
                i,
                at(format!(
                    "job {} also writes to {}: two jobs write to one topic only when both say so, with `-- @output {} SHARED`",
                    other.name, job.output_topic, job.output_topic
                )),
            ));
        }
    }
    problems
}

/// The streams that keep a table among `tables`.
fn kept_sources_read(tables: &BTreeSet<String>, sources: Sources) -> Vec<Source> {
    sources
        .streams()
        .filter(|s| {
            s.keep().is_some_and(|spec| {
                spec.latest
                    .iter()
                    .chain(&spec.history)
                    .any(|name| tables.contains(name.as_str()))
            })
        })
        .collect()
}

/// The first table among `tables` that one of `kept` (streams) keeps.
fn first_kept_table(kept: &[Source], tables: &BTreeSet<String>) -> Option<&'static str> {
    kept.iter()
        .filter_map(|s| s.keep())
        .flat_map(|spec| spec.latest.iter().chain(&spec.history))
        .find(|name| tables.contains(name.as_str()))
        .map(String::as_str)
}

/// Why `cxpulse backfill` does not rebuild a job that shuffles on several
/// instances.
pub const SHUFFLED_BACKFILL: &str = "on several instances, a job that shuffles is rebuilt by every instance at once, and `cxpulse backfill` reaches one: add `-- @backfill <from>` to its query file instead (every instance reloads it, and the job starts again from history under a repartition topic of its own)";

/// Why a job reading kept table `kept` cannot be backfilled.
pub fn backfill_refused(kept: &str) -> String {
    format!(
        "a job reading the kept table `{kept}` cannot be backfilled: the table holds today's events, not those of the history read"
    )
}

/// Where a job's plan fails on a micro-batch (or a window), the events
/// (or groups) are run in halves until the failing ones are alone. After
/// this many failed runs on one micro-batch's partition (or one window),
/// a piece that fails is not halved again: all of its events (or groups)
/// fail together, so that input where most events fail costs a bounded
/// number of runs, not two per event.
pub const MAX_FAILED_RUNS: usize = 256;

/// Version of the state layout; part of every fingerprint, so a cxpulse
/// that stores state differently does not restore older records.
const STATE_FORMAT: &str = "cxpulse-state-1";

/// 16 hex digits of xxHash64 over the state format, the query file and the
/// state schema.
fn fingerprint(sql: &str, state_schema: &SchemaRef) -> String {
    let text = format!("{STATE_FORMAT}\n{sql}\n{state_schema:?}");
    format!("{:016x}", twox_hash::XxHash64::oneshot(0, text.as_bytes()))
}

/// Rejects operators whose meaning depends on seeing the whole stream.
fn check_stateless(plan: &LogicalPlan, sources: Sources) -> Result<(), Unsupported> {
    let mut problem = None;
    let _ = plan.apply_with_subqueries(|node| {
        let what = match node {
            LogicalPlan::Aggregate(_) | LogicalPlan::Distinct(_) => Some("an aggregate (GROUP BY, DISTINCT, count, sum, …)"),
            LogicalPlan::Window(_) => Some("a window function (OVER …)"),
            LogicalPlan::Limit(_) => Some("LIMIT"),
            _ => None,
        };
        if let Some(what) = what {
            let (stream, time) = streams_in(plan, sources)
                .into_iter()
                .chain(sources.streams())
                .next()
                .map_or(("events", "ts"), |s| (s.name(), s.time_or_key()));
            problem = Some(format!(
                "{what} over an unbounded stream never finishes; aggregate over a window instead, \
                 e.g. FROM TUMBLE({stream}, {time}, INTERVAL '1 hour') … GROUP BY window_start, window_end, …"
            ));
            return Ok(TreeNodeRecursion::Stop);
        }
        if let LogicalPlan::Join(join) = node
            && !streams_in(&join.left, sources).is_empty()
            && !streams_in(&join.right, sources).is_empty()
        {
            problem = Some(format!(
                "joining two event streams is not supported (each micro-batch would only \
                 match the events it holds); join an event stream with {}",
                crate::window::split::table_sources(sources)
            ));
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    problem.map_or(Ok(()), |p| Err(Unsupported(p)))
}

fn unknown_column(option: &str, column: &str, schema: &SchemaRef) -> String {
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    format!(
        "{option} names column `{column}`, which the query does not return; its columns are: {}",
        names.join(", ")
    )
}

/// A DataFusion error located at its SQL span, else at the line that calls
/// the function it names, else at the first SQL line.
fn datafusion_error(query: &QueryFile, error: &DataFusionError) -> QueryError {
    let message = match error.find_root() {
        DataFusionError::Plan(message) => message.clone(),
        other => other.to_string(),
    };
    let line = error
        .diagnostic()
        .and_then(|d| d.span)
        .map(|span| span.start.line as usize)
        .filter(|l| *l > 0)
        .or_else(|| line_from_message(&error.to_string()))
        .or_else(|| function_line(&message, &query.sql))
        .unwrap_or_else(|| first_sql_line(&query.sql));
    QueryError {
        file: query.path.clone(),
        line,
        message: message.trim().to_owned(),
    }
}

/// The first line calling the function a message names (`Function 'avg'`).
fn function_line(message: &str, sql: &str) -> Option<usize> {
    let rest = &message[message.find("Function '")? + 10..];
    let name = rest[..rest.find('\'')?].to_ascii_lowercase();
    let call = format!("{name}(");
    sql.lines()
        .position(|l| {
            let l = l.to_ascii_lowercase();
            !l.trim_start().starts_with("--") && l.contains(&call)
        })
        .map(|i| i + 1)
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod windowed_tests;
