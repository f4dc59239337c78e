//! Applying what the query watcher ([`super::watcher`]) saw: jobs added,
//! changed or removed while the engine runs, their state kept, restarted
//! or deleted.

use super::watcher::QueryChange;
use super::{Engine, EngineError, RunningJob, gauge_limit};
use crate::admin::{ensure_topics, sink_topics, topic_limits};
use crate::job::Job;
use crate::query::QueryFile;

impl Engine {
    /// Applies query file changes: new files start jobs, removed files stop
    /// them, changed files restart them with empty state; a new or changed
    /// job with `@backfill` first reads its history. The state of a stopped
    /// or restarted job is deleted from the changelog. A file that does not
    /// plan is reported, and the job it would replace keeps running. Fails
    /// only when Kafka does (a backfill's offsets cannot be read): the
    /// restart that follows starts the job as the file says.
    pub(super) async fn reload(&mut self) -> Result<(), EngineError> {
        let changes = self.watcher.changes();
        if changes.is_empty() {
            return Ok(());
        }
        let now = tokio::time::Instant::now();
        for change in changes {
            let path = match &change {
                QueryChange::Removed(path) => {
                    self.watcher.mark_valid(path);
                    if let Some(removed) = self.take_job(path) {
                        removed.forget_metrics(&self.metrics);
                        self.forget_job_state(&removed.job.name, &removed.job.fingerprint);
                        tracing::info!(job = %removed.job.name, "query file removed: job stopped, its state deleted");
                    }
                    if let Some(removed) = self.take_stopped(path) {
                        self.forget_job_state(&removed.job.name, &removed.job.fingerprint);
                        tracing::info!(job = %removed.job.name, "query file of a stopped job removed: its state deleted");
                    }
                    continue;
                }
                QueryChange::Added(path) | QueryChange::Changed(path) => path,
            };
            let planned = match QueryFile::read(path, &self.config.views_dir()) {
                Ok(query) => {
                    Job::plan_bounded(
                        query,
                        &self.lookups,
                        &self.config.topics.output_prefix,
                        Some(self.config.job_memory_limit()),
                    )
                    .await
                }
                Err(e) => Err(e),
            };
            let planned = planned.and_then(|job| {
                let running: Vec<&Job> = self
                    .all_jobs()
                    .map(|j| &j.job)
                    .chain(self.jobs.stopped().iter().map(|s| &s.job))
                    .collect();
                match crate::job::output_problems(
                    std::slice::from_ref(&job),
                    &running,
                    &self.config,
                )
                .into_iter()
                .next()
                {
                    Some((_, problem)) => Err(problem),
                    None => Ok(job),
                }
            });
            let mut job = match planned {
                Ok(job) => job,
                Err(problem) => {
                    self.watcher.mark_invalid(path);
                    tracing::error!(%problem, "query file not loaded; running jobs are unchanged");
                    continue;
                }
            };
            job.place(self.config.cluster());
            // The same plan as the running job's (a view edited and put
            // back, a comment changed in a view): the job keeps its state.
            let unchanged = self
                .all_jobs()
                .any(|j| &j.path == path && j.job.fingerprint == job.fingerprint);
            if unchanged {
                self.watcher.mark_valid(path);
                tracing::info!(job = %job.name, "query file changed, its plan did not: job kept with its state");
                continue;
            }
            if self
                .jobs
                .stopped_at(path)
                .is_some_and(|s| s.job.fingerprint == job.fingerprint)
            {
                tracing::info!(job = %job.name, "query file changed, its plan did not: the job stays stopped (it panicked in this process)");
                continue;
            }
            if let Err(e) = ensure_topics(
                &self.config,
                &sink_topics(&self.config, std::slice::from_ref(&job)),
            )
            .await
            {
                self.watcher.mark_invalid(path);
                tracing::error!(job = %job.name, error = %e, "cannot create the output topic; job not started");
                continue;
            }
            match topic_limits(&self.config, std::slice::from_ref(&job.output_topic)).await {
                Ok(limits) => self.sink.learn_limits(limits),
                Err(e) => {
                    tracing::warn!(job = %job.name, error = %e, "cannot describe the output topic; assuming Kafka's default limits")
                }
            }
            if self.jobs.stopped_at(path).is_some() && !job.shuffles() {
                self.replace_stopped(path, job, now).await?;
                continue;
            }
            // A job that shuffles, stopped here after a panic, starts again
            // as a changed job does, as the instances that did not stop it
            // restart it (its state is spread over all of them).
            if let Some(stopped) = self.take_stopped(path) {
                self.forget_job_state(&stopped.job.name, &stopped.job.fingerprint);
                tracing::info!(job = %stopped.job.name, "query file of a stopped job changed: the job shuffles, so it starts anew, its old state deleted, as on the instances that did not stop it");
            }
            let old = self.take_job(path);
            if let Some(old) = &old {
                old.forget_metrics(&self.metrics);
                self.forget_job_state(&old.job.name, &old.job.fingerprint);
            }
            let limit = gauge_limit(&self.config);
            let from = job.backfill;
            let mut running = match RunningJob::new(job, path.clone(), &self.metrics, limit, now) {
                Ok(running) => running,
                Err(e) => {
                    self.watcher.mark_invalid(path);
                    tracing::error!(path = %path.display(), error = %e, "cannot register the job's gauges; job not started");
                    continue;
                }
            };
            if let Err(e) = super::shuffling::route(
                &self.config,
                std::slice::from_mut(&mut running),
                self.changelog.partitions(),
                &mut std::collections::BTreeMap::new(),
            )
            .await
            {
                self.watcher.mark_invalid(path);
                tracing::error!(job = %running.job.name, error = %e, "cannot create the repartition topic; job not started");
                continue;
            }
            self.watcher.mark_valid(path);
            match &old {
                Some(old) => {
                    tracing::info!(job = %old.job.name, "query file changed: job restarted with empty state, its old state deleted");
                }
                None if from.is_some() => {
                    tracing::info!(job = %running.job.name, output = %running.job.output_topic, "query file added: job started; it reads its sources' history first (@backfill)");
                }
                None => {
                    tracing::info!(job = %running.job.name, output = %running.job.output_topic, "query file added: job started");
                }
            }
            let shuffles = running.shuffle.is_some();
            self.add_job(running, from).await?;
            if shuffles {
                self.follow_partitions().await?;
            }
        }
        self.metrics
            .jobs_loaded
            .set((self.jobs.live_count() + self.backfills.len()) as i64);
        self.metrics
            .query_files_invalid
            .set(self.watcher.invalid_count() as i64);
        Ok(())
    }
}
