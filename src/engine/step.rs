//! One step of the engine's work with Kafka left out: a micro-batch through
//! the kept tables, the jobs and the watermarks, or a timer tick. The
//! engine runs these on what it consumes; `cxpulse test` runs the same
//! steps on a test case's files ([`super::offline`]).

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError};

use tokio::time::Instant;

use super::EngineError;
use super::event_time::EventTime;
use super::jobs::{self, JobOutput, RunningJob};
use crate::lookup::Lookups;
use crate::metrics::Metrics;
use crate::schema::Source;
use crate::source::SourceBatch;
use crate::source::{TableChange, apply_table_changes};

/// What a step works on: the jobs, the tables they read, event time.
pub struct Core<'a> {
    /// The running jobs.
    pub jobs: &'a mut Vec<RunningJob>,
    /// Table sources and kept tables.
    pub lookups: &'a Lookups,
    /// Watermarks per source.
    pub event_time: &'a mut EventTime,
    /// The metrics registry.
    pub metrics: &'a Arc<Metrics>,
    /// A backfill's step: its events are history, so the shared tables
    /// (table sources, kept tables) are left as they are.
    pub history: bool,
}

impl Core<'_> {
    /// Runs one micro-batch: table-source changes are applied, kept tables
    /// updated, every job that reads a source of the batch runs, the
    /// watermarks advance and windowed jobs fire the windows they closed.
    pub async fn micro_batch(
        &mut self,
        events: BTreeMap<Source, Vec<SourceBatch>>,
        table_changes: Vec<TableChange>,
        now: Instant,
    ) -> Result<JobOutput, EngineError> {
        let mut refused = Vec::new();
        if !self.history {
            refused = apply_table_changes(self.lookups, table_changes);
            self.update_kept_tables(&events)?;
        }
        for running in self.jobs.iter_mut() {
            if let (Some(route), Some(windowed)) =
                (running.shuffle.as_mut(), running.job.windowed())
            {
                route.local = self.event_time.of_sources(&windowed.info.sources);
            }
        }
        let events = Arc::new(events);
        let mut output = jobs::process(self.jobs, &events, self.metrics)
            .await
            .map_err(EngineError::JobPanicked)?;
        output.dead_letters.extend(refused);
        self.event_time.observe(&events, now);
        self.event_time.refresh(now, self.metrics);
        let fired = jobs::fire(self.jobs, self.event_time, self.metrics, now)
            .await
            .map_err(EngineError::JobPanicked)?;
        output.absorb(fired);
        self.expire_kept();
        Ok(output)
    }

    /// Timer work: idle partitions may move watermarks, windows close,
    /// early results may be due.
    pub async fn tick(&mut self, now: Instant) -> Result<JobOutput, EngineError> {
        self.event_time.refresh(now, self.metrics);
        let output = jobs::fire(self.jobs, self.event_time, self.metrics, now)
            .await
            .map_err(EngineError::JobPanicked)?;
        self.expire_kept();
        Ok(output)
    }

    /// Feeds each stream's events of a micro-batch to its kept tables,
    /// before the jobs run (so a complaint's resolution sees its opening).
    fn update_kept_tables(
        &self,
        events: &BTreeMap<Source, Vec<SourceBatch>>,
    ) -> Result<(), EngineError> {
        for (source, table) in self.lookups.all_kept() {
            let Some(batches) = events.get(&source) else {
                continue;
            };
            let mut table = table.lock().unwrap_or_else(PoisonError::into_inner);
            for batch in batches {
                table.apply(&batch.rows, Some(batch.partition))?;
            }
        }
        Ok(())
    }

    /// Forgets the keys of each stream's kept tables whose last event is
    /// the retention older than every window that has yet to fire in a job
    /// joining those tables (so the result of a window never depends on
    /// when it fired); without such a job, the retention behind the slowest
    /// source.
    fn expire_kept(&mut self) {
        if self.history {
            return;
        }
        for (_, table) in self.lookups.all_kept() {
            let mut table = table.lock().unwrap_or_else(PoisonError::into_inner);
            let spec = table.spec();
            let readers: Vec<Option<i64>> = self
                .jobs
                .iter()
                .filter(|j| {
                    spec.latest
                        .iter()
                        .chain(&spec.history)
                        .any(|name| j.job.reads_table(name))
                })
                .filter_map(|j| j.job.windowed())
                .map(|w| w.closed_through())
                .collect();
            let now = if readers.is_empty() {
                self.event_time
                    .of_sources(&self.lookups.sources().streams().collect::<Vec<_>>())
            } else {
                readers.into_iter().min().flatten()
            };
            if let Some(now) = now {
                table.expire(now);
            }
        }
    }
}
