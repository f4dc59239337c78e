//! `cxpulse explain JOB`: what the engine does with a query, in words and
//! physical plans.

use std::fmt::Write;

use datafusion::physical_plan::{ExecutionPlan, displayable};

use super::{Job, Runner};
use crate::config::TopicsConfig;
use crate::window::panes::{BLOCK_PANES, block_width};
use crate::window::{WindowSpec, plain_duration};

impl Job {
    /// A plain account of this job: sources, window and panes, state per
    /// pane, plans, output topic and key, gauges.
    pub fn explain(&self, topics: &TopicsConfig) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "job {}", self.name);
        let sources = self.sources();
        let described: Vec<String> = sources
            .iter()
            .map(|s| format!("{} (topic {})", s.name(), topics.source_topic(*s)))
            .collect();
        let _ = writeln!(out, "\nsources: {}", described.join(", "));
        if !self.views.is_empty() {
            let _ = writeln!(
                out,
                "views: {} (queries/views/, expanded into the query)",
                self.views.join(", ")
            );
        }
        let lookups: Vec<&str> = self
            .tables
            .iter()
            .map(String::as_str)
            .filter(|t| !sources.iter().any(|s| s.name() == *t))
            .collect();
        if !lookups.is_empty() {
            let _ = writeln!(
                out,
                "tables: {} (looked up as they are when each micro-batch runs)",
                lookups.join(", ")
            );
        }
        match &self.runner {
            Runner::Stateless(plan) => {
                let _ = writeln!(
                    out,
                    "\nwindow: none. The job is stateless: the whole query runs on each \
                     micro-batch and publishes its rows at once; nothing is kept."
                );
                section(&mut out, "plan (each micro-batch)", plan);
            }
            Runner::Windowed(w) => {
                let info = &w.info;
                let over: Vec<&str> = info.sources.iter().map(|s| s.name()).collect();
                let _ = writeln!(
                    out,
                    "\nwindow: {} over {} by event time `{}`",
                    info.spec,
                    over.join(" + "),
                    info.time_col
                );
                let _ = writeln!(
                    out,
                    "{}",
                    panes_in_words(&info.spec, info.key_col.as_deref())
                );
                let _ = writeln!(
                    out,
                    "lateness: {}; a window closes when the watermark passes its end plus the lateness",
                    plain_duration(w.lateness)
                );
                let _ = match self.emit_every {
                    Some(every) => writeln!(
                        out,
                        "early results: every {} for the open windows (final = false)",
                        plain_duration(i64::try_from(every.as_millis()).unwrap_or(i64::MAX))
                    ),
                    None => writeln!(out, "early results: none (only final rows)"),
                };
                let columns: Vec<String> = w
                    .split
                    .partial_schema
                    .fields()
                    .iter()
                    .map(|f| format!("{} {}", f.name(), f.data_type()))
                    .collect();
                let _ = writeln!(
                    out,
                    "\nstate per pane and source partition: one row per group of the query's \
                     GROUP BY, holding the partial aggregates:\n  {}",
                    columns.join("\n  ")
                );
                section(
                    &mut out,
                    "batch plan (each micro-batch and source partition, into the panes)",
                    &w.split.batch_plan,
                );
                section(
                    &mut out,
                    "reduce plan (merges state rows of equal groups: pane compaction, blocks, sessions)",
                    &w.split.reduce_plan,
                );
                section(
                    &mut out,
                    "fire plan (each closed window: the final aggregate and the rest of the query)",
                    &w.split.fire_plan,
                );
            }
        }
        let key_columns = self.record_key_columns();
        let key = if key_columns.is_empty() && self.windowed().is_none() {
            "no key (the job has no @key)".to_owned()
        } else {
            format!("key {{job, {}}}", key_columns.join(", "))
        };
        let _ = writeln!(
            out,
            "\noutput: topic {}, one JSON record per row, {key}",
            self.output_topic
        );
        if self.placement() == super::Placement::Shuffled {
            let whole = self.windowed().is_some_and(|w| !w.fires_row_wise());
            let (why, split) = match (self.kept_table_read(), whole) {
                (Some(_), _) => (
                    "it reads a kept table, of which each instance holds only its partitions' keys",
                    "all go to one partition",
                ),
                (None, true) => (
                    "its result rows depend on other groups (OVER, LIMIT or an aggregate across groups)",
                    "all go to one partition",
                ),
                (None, false) => (
                    "its groups span their partitions (grouped by something else than its sources' partition_key)",
                    "are split by group",
                ),
            };
            let _ = writeln!(
                out,
                "shuffle: with several instances (cluster.instances), {why}: each micro-batch's partial aggregates {split} in the repartition topic `<group_id>-{}-{}-repartition` (its name changes with the query file), whose partitions' owners merge them and close the windows on the watermark of every source partition; one instance needs no shuffle",
                self.name,
                self.version()
            );
            if self.kept_table_read().is_some() {
                let _ = writeln!(
                    out,
                    "        stage 1 also writes there the events the kept tables took in, and the owner keeps from them a copy of the whole tables, which the windows fire with"
                );
            }
        }
        let _ = match (self.backfill, self.kept_table_read()) {
            (Some(from), _) => writeln!(
                out,
                "backfill: when added or changed, reads its sources' history from {from} (Kafka record time), then goes live"
            ),
            (None, Some(kept)) => writeln!(
                out,
                "backfill: none, and not possible (it reads the kept table `{kept}`)"
            ),
            (None, None) => writeln!(
                out,
                "backfill: none (starts from the live position; `@backfill` or `cxpulse backfill` reads history)"
            ),
        };
        if self.gauges.is_empty() {
            let _ = writeln!(out, "gauges: none");
        }
        for gauge in &self.gauges {
            let labels = if gauge.by.is_empty() {
                String::new()
            } else {
                format!("{{{}}}", gauge.by.join(", "))
            };
            for column in &gauge.columns {
                let name = crate::gauges::gauge_name(&self.name, column);
                let _ = writeln!(
                    out,
                    "gauge: {name}{labels} (latest final value), {name}_early{labels} (latest early value)"
                );
            }
        }
        out
    }
}

/// How a window's state is cut into panes, in words.
fn panes_in_words(spec: &WindowSpec, session_key: Option<&str>) -> String {
    match (*spec, spec.pane()) {
        (WindowSpec::Session { gap }, _) => format!(
            "state: per key `{}`, one mini-session per run of events less than {} apart; \
             sessions that touch are merged, and a session closes {} after its last event",
            session_key.unwrap_or("?"),
            plain_duration(gap),
            plain_duration(gap)
        ),
        (_, Some(pane)) => {
            let per_window = spec.size() / pane;
            let blocks = match block_width(spec) {
                Some(width) => format!(
                    "; complete blocks of {BLOCK_PANES} panes are merged once and reused, so a \
                     window reads at most {} blocks and {} single panes",
                    spec.size() / width,
                    2 * (BLOCK_PANES - 1)
                ),
                None => String::new(),
            };
            format!(
                "panes: {} each; an event is stored in one pane, and a window merges its {} \
                 pane(s) when it closes{blocks}",
                plain_duration(pane),
                per_window
            )
        }
        (_, None) => String::new(),
    }
}

fn section(out: &mut String, title: &str, plan: &std::sync::Arc<dyn ExecutionPlan>) {
    let _ = writeln!(out, "\n{title}:");
    for line in displayable(plan.as_ref()).indent(false).to_string().lines() {
        let _ = writeln!(out, "  {line}");
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use crate::job::Job;
    use crate::lookup::Lookups;
    use crate::query::QueryFile;

    async fn explained(name: &str) -> String {
        let config = Config::load(None).expect("default config");
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("queries/{name}.sql"));
        let query = QueryFile::read(&path, &config.views_dir()).expect("query");
        let job = Job::plan(
            query,
            &Lookups::new(config.declared),
            &config.topics.output_prefix,
        )
        .await
        .expect("plans");
        job.explain(&config.topics)
    }

    #[tokio::test]
    async fn a_tumbling_job_is_explained_pane_state_plans_key_and_gauges() {
        let text = explained("need_by_category").await;
        for line in [
            "sources: transactions (topic cx.transactions)",
            "window: TUMBLE(1h) over transactions by event time `ts`",
            "panes: 1h each; an event is stored in one pane, and a window merges its 1 pane(s) when it closes",
            "early results: every 1m for the open windows (final = false)",
            "backfill: none (starts from the live position; `@backfill` or `cxpulse backfill` reads history)",
            "  category Utf8",
            "  sum(transactions.amount)[sum] Float64",
            "output: topic cx.metrics.need_by_category, one JSON record per row, key {job, window_start, window_end, category}",
            "gauge: cxpulse_need_by_category_orders{category} (latest final value), cxpulse_need_by_category_orders_early{category} (latest early value)",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "no line {line:?} in:\n{text}"
            );
        }
        let batch = text.find("batch plan").expect("batch plan");
        let fire = text.find("fire plan").expect("fire plan");
        assert!(
            text[batch..].contains("AggregateExec: mode=Partial,"),
            "{text}"
        );
        assert!(
            text[fire..].contains("AggregateExec: mode=Final,"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_year_long_hop_reads_blocks_and_a_stateless_job_keeps_nothing() {
        let text = explained("loyalty_rfm").await;
        assert!(
            text.contains("window: HOP(slide 1d, size 365d) over transactions"),
            "{text}"
        );
        assert!(
            text.contains("a window merges its 365 pane(s) when it closes; complete blocks of 32 panes are merged once and reused, so a window reads at most 11 blocks and 62 single panes"),
            "{text}"
        );
        let config = Config::load(None).expect("default config");
        let query = QueryFile::parse(
            std::path::Path::new("q/big_orders.sql"),
            "-- @backfill 30d\nSELECT customer_id, amount FROM transactions WHERE amount > 100"
                .to_owned(),
        )
        .expect("query");
        let job = Job::plan(query, &Lookups::new(config.declared), "cx.metrics.")
            .await
            .expect("plans");
        let big_orders = job.explain(&config.topics);
        for line in [
            "output: topic cx.metrics.big_orders, one JSON record per row, no key (the job has no @key)",
            "backfill: when added or changed, reads its sources' history from 30d ago (Kafka record time), then goes live",
        ] {
            assert!(
                big_orders.lines().any(|l| l == line),
                "{line:?} in {big_orders}"
            );
        }
        let text = explained("complaint_alerts").await;
        assert!(
            text.contains("window: none. The job is stateless"),
            "{text}"
        );
        assert!(text.contains("tables: customers"), "{text}");
    }
}
