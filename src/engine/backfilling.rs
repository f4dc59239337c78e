//! The engine's side of its backfills (kept in [`super::backfill`]):
//! started for new or changed jobs, stepped when the engine has nothing
//! live to do, asked for by `cxpulse backfill`, handed over to the live
//! jobs once caught up, and recorded in the changelog.

use tokio::time::Instant;

use super::backfill::{Backfill, PreparedBackfill, begin, open};
use super::restore::BackfillState;
use super::{Core, Engine, EngineError, RunningJob, gauge_limit};
use crate::control::{BackfillRequest, Refusal};
use crate::job::{Job, backfill_refused};
use crate::query::{BackfillFrom, QueryFile};
use crate::state::key::StateKey;
use crate::state::record::resume_positions;

impl Engine {
    /// Every job, live or backfilling.
    pub(super) fn all_jobs(&self) -> impl Iterator<Item = &RunningJob> {
        self.jobs
            .live()
            .iter()
            .chain(self.backfills.iter().map(Backfill::job))
    }

    /// Starts a backfill of `running` from `from`, or runs it live when it
    /// has none.
    pub(super) async fn add_job(
        &mut self,
        running: RunningJob,
        from: Option<BackfillFrom>,
    ) -> Result<(), EngineError> {
        match from {
            Some(from) => {
                let fresh = BackfillState::default();
                let opened = open(&self.config, running.job.sources(), Some(from), &fresh)
                    .await
                    .inspect_err(|_| running.forget_metrics(&self.metrics))
                    .map_err(EngineError::kafka("starting a backfill"))?;
                let backfill = begin(
                    &self.config,
                    running,
                    (Some(from), opened),
                    &fresh,
                    &self.metrics,
                );
                self.backfills.add(backfill, &self.metrics);
            }
            None => self.jobs.add(running),
        }
        Ok(())
    }

    /// Replaces the stopped job read from `path` by `job`, planned from its
    /// changed file. With the same window and state columns, `job` takes
    /// the stopped job's state and resumes from where it stopped (as a
    /// backfill, then live); otherwise it starts anew and the old state is
    /// deleted. Whatever can fail (registering the job's gauges, opening
    /// the reader) happens before the stopped job is touched: on failure it
    /// stays stopped with its state, and the error is logged.
    pub(super) async fn replace_stopped(
        &mut self,
        path: &std::path::Path,
        job: Job,
        now: Instant,
    ) -> Result<(), EngineError> {
        let Some(stopped) = self.jobs.stopped_at(path) else {
            return Ok(());
        };
        let adoptable = match (job.windowed(), stopped.job.windowed()) {
            (Some(new), Some(old)) => new.can_adopt(old),
            (None, None) => true,
            _ => false,
        };
        let opened = if adoptable && stopped.resume.running() {
            match open(&self.config, job.sources(), None, &stopped.resume).await {
                Ok(opened) => Some(opened),
                Err(e) => {
                    self.watcher.mark_invalid(path);
                    tracing::error!(job = %job.name, error = %e, "cannot open the reader to resume the stopped job: it stays stopped with its state; save its query file again to retry");
                    return Ok(());
                }
            }
        } else {
            None
        };
        let from = job.backfill;
        let limit = gauge_limit(&self.config);
        let mut running = match RunningJob::new(job, path.to_owned(), &self.metrics, limit, now) {
            Ok(running) => running,
            Err(e) => {
                self.watcher.mark_invalid(path);
                tracing::error!(path = %path.display(), error = %e, "cannot register the job's gauges: the stopped job stays stopped with its state");
                return Ok(());
            }
        };
        let stopped = self
            .take_stopped(path)
            .expect("the stopped job was found above");
        let mut stopped_job = stopped.job;
        if let (true, Some(new), Some(old)) = (
            adoptable,
            running.job.windowed_mut(),
            stopped_job.windowed_mut(),
        ) {
            new.adopt_state(old);
        }
        self.watcher.mark_valid(path);
        self.forget_job_state(&stopped_job.name, &stopped_job.fingerprint);
        match opened {
            None if adoptable => {
                tracing::warn!(job = %running.job.name, "query file of a stopped job changed: the job resumes live with its state; it reads a kept table, so the records it missed while stopped are not read again");
                self.jobs.add(running);
                Ok(())
            }
            Some(opened) => {
                tracing::info!(job = %running.job.name, "query file of a stopped job changed: the job resumes with its state (the same state columns) from where it stopped");
                let backfill = begin(
                    &self.config,
                    running,
                    (None, opened),
                    &stopped.resume,
                    &self.metrics,
                );
                self.backfills.add(backfill, &self.metrics);
                Ok(())
            }
            None => {
                tracing::info!(job = %running.job.name, "query file of a stopped job changed: its state has other columns, so the job starts anew and its old state is deleted");
                self.add_job(running, from).await
            }
        }
    }

    /// Removes the job read from `path`, live or backfilling.
    pub(super) fn take_job(&mut self, path: &std::path::Path) -> Option<RunningJob> {
        if let Some(running) = self.jobs.take_at(path) {
            return Some(running);
        }
        let i = self.backfills.iter().position(|b| b.job().path == path)?;
        let backfill = self.backfills.take(i, &self.metrics);
        let _ = self
            .metrics
            .backfill_lag
            .remove_label_values(&[backfill.job().job.name.as_str()]);
        Some(backfill.into_job())
    }

    /// One step of every backfill: a micro-batch of history records below
    /// the live position (or timer work when there are none), its outputs
    /// into the open epoch; a backfill that has caught up hands its job
    /// over to the live jobs.
    pub(super) async fn backfill_step(&mut self) -> Result<(), EngineError> {
        let max_rows = usize::try_from(self.config.engine.backfill_batch_rows).unwrap_or(1);
        let now = Instant::now();
        let mut read_any = false;
        let mut caught_up = Vec::new();
        for i in 0..self.backfills.len() {
            let backfill = self.backfills.get_mut(i);
            let behind = backfill.behind(self.inputs.live_positions());
            backfill.keep_active(&behind, now);
            let name = backfill.job().job.name.clone();
            let span = tracing::info_span!("job", job = %name, backfill = true);
            let batch = span
                .in_scope(|| backfill.read(self.inputs.live_positions(), max_rows))
                .map_err(EngineError::kafka("reading history for a backfill"))?;
            let (jobs, event_time) = backfill.step_parts();
            let mut core = Core {
                jobs,
                lookups: &self.lookups,
                event_time,
                metrics: &self.metrics,
                history: true,
            };
            let output = match batch {
                Some(batch) => {
                    read_any = true;
                    let read: u64 = batch.consumed.values().sum();
                    self.metrics
                        .backfill_records
                        .with_label_values(&[name.as_str()])
                        .inc_by(read);
                    // Invalid records were sent to the dead-letter topic
                    // when the live consumer read them.
                    core.micro_batch(batch.events, Vec::new(), now).await?
                }
                None => core.tick(now).await?,
            };
            self.publish(output).await?;
            let backfill = self.backfills.get_mut(i);
            let lag = backfill.lag(self.inputs.live_positions());
            self.metrics
                .backfill_lag
                .with_label_values(&[name.as_str()])
                .set(lag);
            if let Some(progress) = backfill.progress_due() {
                let _in_job = span.enter();
                tracing::info!(
                    read = progress.read,
                    left = lag,
                    per_second = (progress.read as f64 / progress.seconds.max(0.001)) as u64,
                    watermark = ?backfill.watermark(),
                    "backfilling"
                );
            }
            if lag == 0 {
                caught_up.push(i);
            }
        }
        // From the last, so that the indexes before stay valid.
        for i in caught_up.into_iter().rev() {
            let backfill = self.backfills.take(i, &self.metrics);
            self.go_live(backfill, now);
        }
        self.backfills.stepped(read_any, now);
        Ok(())
    }

    /// Hands a caught-up backfill's job to the live jobs, between two
    /// micro-batches: the live consumer has processed exactly the records
    /// the backfill read, and the job gets every record after them.
    fn go_live(&mut self, backfill: Backfill, now: Instant) {
        let progress = backfill.progress();
        let (read, seconds) = (progress.read, progress.seconds);
        let mut running = backfill.into_job();
        running.restart_early_results(now);
        running.backfilled(chrono::Utc::now().timestamp_millis());
        let (name, fingerprint) = (running.job.name.clone(), running.job.fingerprint.clone());
        let positions = self.changelog.delete_where(|key| {
            matches!(
                key,
                StateKey::BackfillOffset { .. } | StateKey::BackfillEventTime { .. }
            ) && key.job() == Some((name.as_str(), fingerprint.as_str()))
        });
        self.epoch.defer_state(positions);
        let _ = self
            .metrics
            .backfill_lag
            .remove_label_values(&[name.as_str()]);
        tracing::info!(job = %name, read, seconds, "backfill caught up: the job runs live");
        self.jobs.add(running);
    }

    /// Takes a backfill request (`cxpulse backfill`) for a running job: what
    /// can be checked at once is, then planning the job again and finding
    /// where its history starts run on a task of their own, off the engine
    /// loop, which finishes the request when they are done
    /// ([`Engine::finish_backfill_request`]).
    pub(super) fn take_backfill_request(
        &self,
        request: BackfillRequest,
        prepared: tokio::sync::mpsc::Sender<PreparedBackfill>,
    ) {
        let BackfillRequest { job, from, reply } = request;
        let running = match self.backfill_candidate(&job) {
            Ok(running) => running,
            Err(refusal) => {
                let _ = reply.send(Err(refusal));
                return;
            }
        };
        let path = running.path.clone();
        let fingerprint = running.job.fingerprint.clone();
        let (config, lookups) = (self.config.clone(), self.lookups.clone());
        tokio::spawn(async move {
            let outcome = async {
                let planned = match QueryFile::read(&path, &config.views_dir()) {
                    Ok(query) => {
                        Job::plan_bounded(
                            query,
                            &lookups,
                            &config.topics.output_prefix,
                            Some(config.job_memory_limit()),
                        )
                        .await
                    }
                    Err(e) => Err(e),
                };
                let fresh = planned
                    .map_err(|e| Refusal::Conflict(format!("cannot plan {job}: {e}")))?;
                if fresh.fingerprint != fingerprint {
                    return Err(Refusal::Conflict(format!(
                        "{} changed since job {job} started; the next reload restarts it (with its @backfill, if any)",
                        path.display()
                    )));
                }
                let opened = open(&config, fresh.sources(), Some(from), &BackfillState::default())
                    .await
                    .map_err(|e| Refusal::Conflict(format!("reading the history's offsets: {e}")))?;
                Ok((fresh, opened))
            }
            .await;
            let _ = prepared
                .send(PreparedBackfill {
                    job,
                    fingerprint,
                    from,
                    path,
                    outcome,
                    reply,
                })
                .await;
        });
    }

    /// The running job `job`, if it can be backfilled now.
    fn backfill_candidate(&self, job: &str) -> Result<&RunningJob, Refusal> {
        if self.backfills.iter().any(|b| b.job().job.name == job) {
            return Err(Refusal::Conflict(format!(
                "job {job} is already backfilling"
            )));
        }
        let Some(running) = self.jobs.named(job) else {
            let names: Vec<&str> = self
                .jobs
                .live()
                .iter()
                .map(|j| j.job.name.as_str())
                .collect();
            return Err(Refusal::UnknownJob(format!(
                "no running job is named {job}; running: {}",
                names.join(", ")
            )));
        };
        if let Some(kept) = running.job.kept_table_read() {
            return Err(Refusal::Conflict(backfill_refused(kept)));
        }
        if running.shuffle.is_some() && !self.config.cluster().is_single() {
            return Err(Refusal::Conflict(crate::job::SHUFFLED_BACKFILL.to_owned()));
        }
        Ok(running)
    }

    /// Finishes a backfill request prepared off the loop: if the job is
    /// still the one planned, its state is deleted and rebuilt from
    /// history, then it goes live again.
    pub(super) fn finish_backfill_request(&mut self, prepared: PreparedBackfill) {
        let PreparedBackfill {
            job,
            fingerprint,
            from,
            path,
            outcome,
            reply,
        } = prepared;
        if reply.is_closed() {
            // The asker gave up (the engine was busy or restarting).
            return;
        }
        let answer = outcome.and_then(|(fresh, opened)| {
            self.backfill_candidate(&job)?;
            let Some(old) = self.jobs.take_if_unchanged(&job, &fingerprint) else {
                return Err(Refusal::Conflict(format!(
                    "job {job} changed while its backfill was prepared; ask again"
                )));
            };
            let now = Instant::now();
            old.forget_metrics(&self.metrics);
            self.forget_job_state(&old.job.name, &old.job.fingerprint);
            let running =
                RunningJob::new(fresh, path, &self.metrics, gauge_limit(&self.config), now)
                    .map_err(|e| Refusal::Conflict(format!("registering the job's metrics: {e}")))?;
            tracing::info!(job = %job, "backfill requested: the job's state is deleted and rebuilt from history");
            let fresh_state = BackfillState::default();
            let backfill = begin(
                &self.config,
                running,
                (Some(from), opened),
                &fresh_state,
                &self.metrics,
            );
            let lag = backfill.lag(self.inputs.live_positions());
            self.backfills.add(backfill, &self.metrics);
            Ok(format!(
                "backfill of {job} started: {lag} records to read; its state is rebuilt, then it goes live (progress: cxpulse_backfill_lag_records{{job=\"{job}\"}})\n"
            ))
        });
        let _ = reply.send(answer);
    }

    /// Changelog records of the running backfills' positions and event times.
    pub(super) fn backfill_records(&mut self) -> Vec<crate::sink::OutRecord> {
        let mut records = Vec::new();
        for backfill in self.backfills.iter() {
            let (job, fingerprint) = (&backfill.job().job.name, &backfill.job().job.fingerprint);
            let positions = resume_positions(
                job,
                fingerprint,
                backfill.positions(),
                backfill.partition_times(),
            );
            for (key, value) in positions {
                records.extend(self.changelog.put_int(key, value));
            }
        }
        for running in self.jobs.live() {
            if let Some(at) = running.backfilled_at() {
                let key = |partition| StateKey::BackfillDone {
                    job: running.job.name.clone(),
                    fingerprint: running.job.fingerprint.clone(),
                    partition: Some(partition),
                };
                records.extend(self.changelog.put_int_in_owned(key, at));
            }
        }
        records
    }
}
