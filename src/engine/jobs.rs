//! The running jobs: each micro-batch goes through every job that reads its
//! sources; windowed jobs also fire when the watermark moves and emit early
//! results on their timer.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::compute::{filter_record_batch, not};
use tokio::time::Instant;
use tracing::Instrument;

use super::event_time::EventTime;
use crate::decode::{RejectKind, Rejection};
use crate::gauges::JobGauges;
use crate::job::windowed::{Fired, WindowFailure};
use crate::job::{Job, MAX_FAILED_RUNS};
use crate::metrics::Metrics;
use crate::schema::Source;
use crate::sink::format_timestamp_millis;
use crate::sink::{DeadLetter, JobFailure, OutRecord, RowEncoder};
use crate::source::SourceBatch;
use crate::window::WindowSpec;

/// How long one firing round may close windows before it lets the engine
/// take in signals, commits and records again.
pub const FIRING_BUDGET: std::time::Duration = std::time::Duration::from_millis(250);

/// A job with its encoder, gauges and early-emission timer.
pub struct RunningJob {
    /// The planned job.
    pub job: Job,
    /// The file it was planned from.
    pub path: PathBuf,
    encoder: RowEncoder,
    gauges: JobGauges,
    next_early: Option<Instant>,
    /// Windows (start, end, group) whose early results failed, reported
    /// once: each later early run that fails on them is only counted.
    early_failed: std::collections::BTreeSet<(i64, i64, Option<String>)>,
    /// When this job's backfill caught up (ms since the epoch), kept in the
    /// changelog so that a restart does not backfill it again.
    backfilled_at: Option<i64>,
    /// Its way through its repartition topic, when it shuffles.
    pub shuffle: Option<crate::shuffle::Route>,
}

impl RunningJob {
    /// Wraps a planned job; registers its metric series and `@gauge`s.
    pub fn new(
        job: Job,
        path: PathBuf,
        metrics: &Metrics,
        gauge_limit: usize,
        now: Instant,
    ) -> Result<Self, prometheus::Error> {
        let gauges = JobGauges::register(&job.name, &job.gauges, gauge_limit, metrics)?;
        let name = job.name.as_str();
        metrics.output_records.with_label_values(&[name]);
        metrics.job_errors.with_label_values(&[name]);
        metrics
            .produce_errors
            .with_label_values(&[job.output_topic.as_str()]);
        metrics
            .last_output
            .with_label_values(&[name])
            .set(chrono::Utc::now().timestamp_millis() as f64 / 1000.0);
        if let Some(w) = job.windowed() {
            metrics.windows_fired.with_label_values(&[name]);
            for source in &w.info.sources {
                metrics
                    .late_records
                    .with_label_values(&[source.name(), name]);
            }
            metrics.window_state_bytes.with_label_values(&[name]).set(0);
            let slide = match w.info.spec {
                WindowSpec::Tumble { size } => Some(size),
                WindowSpec::Hop { slide, .. } => Some(slide),
                WindowSpec::Session { .. } => None,
            };
            if let Some(slide) = slide {
                metrics
                    .window_slide
                    .with_label_values(&[name])
                    .set(slide as f64 / 1000.0);
            }
        }
        Ok(Self {
            encoder: RowEncoder {
                job: job.name.clone(),
                topic: job.output_topic.clone(),
                key_columns: job.record_key_columns(),
            },
            gauges,
            next_early: job.emit_every.map(|every| now + every),
            early_failed: std::collections::BTreeSet::new(),
            backfilled_at: None,
            shuffle: None,
            job,
            path,
        })
    }

    /// Stops this job's early results (`@emit every`) until
    /// [`Self::restart_early_results`]: offline runs and backfills read
    /// history, on which wall-clock timers mean nothing.
    pub fn stop_early_results(&mut self) {
        self.next_early = None;
    }

    /// Starts this job's early results again, the first an interval after
    /// `now`.
    pub fn restart_early_results(&mut self, now: Instant) {
        self.next_early = self.job.emit_every.map(|every| now + every);
    }

    /// Its backfill caught up at `at` (ms since the epoch).
    pub fn backfilled(&mut self, at: i64) {
        self.backfilled_at = Some(at);
    }

    /// When its backfill caught up (ms since the epoch), if it had one.
    pub fn backfilled_at(&self) -> Option<i64> {
        self.backfilled_at
    }

    /// Removes this job's per-job metric series and gauges.
    pub fn forget_metrics(&self, metrics: &Metrics) {
        let name = self.job.name.as_str();
        let _ = metrics.window_state_bytes.remove_label_values(&[name]);
        let _ = metrics.window_close_lag.remove_label_values(&[name]);
        let _ = metrics.window_slide.remove_label_values(&[name]);
        let _ = metrics.last_output.remove_label_values(&[name]);
        for phase in ["batch", "fire"] {
            let _ = metrics.job_duration.remove_label_values(&[name, phase]);
        }
        self.gauges.unregister(metrics);
    }
}

/// What the jobs produced from one micro-batch or timer tick.
#[derive(Debug, Default)]
pub struct JobOutput {
    /// Result rows, encoded.
    pub records: Vec<OutRecord>,
    /// Events rejected by jobs (late, or a failed job).
    pub dead_letters: Vec<DeadLetter>,
    /// Failures of jobs that hold no event: windows that could not fire,
    /// rows that could not be encoded.
    pub failures: Vec<JobFailure>,
    /// Rows published, per job.
    pub rows: BTreeMap<String, u64>,
    /// Whether early results are among the rows (worth committing soon).
    pub early: bool,
}

impl JobOutput {
    /// Adds `other`'s records, dead letters and row counts to these.
    pub fn absorb(&mut self, other: JobOutput) {
        self.records.extend(other.records);
        self.dead_letters.extend(other.dead_letters);
        self.failures.extend(other.failures);
        for (job, n) in other.rows {
            *self.rows.entry(job).or_default() += n;
        }
        self.early |= other.early;
    }

    fn publish(&mut self, running: &mut RunningJob, batches: &[RecordBatch], metrics: &Metrics) {
        let emitted_at = chrono::Utc::now().timestamp_millis();
        match running.encoder.encode(batches, emitted_at) {
            Ok(records) => {
                running.gauges.update(batches, metrics);
                *self.rows.entry(running.job.name.clone()).or_default() += records.len() as u64;
                self.records.extend(records);
            }
            Err(e) => {
                let error = format!("encoding the job's rows failed: {e}");
                job_failed(running, &error, metrics);
                self.failures.push(running.failure(error, None));
            }
        }
    }
}

fn job_failed(running: &RunningJob, error: &str, metrics: &Metrics) {
    metrics
        .job_errors
        .with_label_values(&[running.job.name.as_str()])
        .inc();
    tracing::error!(%error, "job failed");
}

impl RunningJob {
    /// A failure of this job that holds no event (`job_error`).
    fn failure(&self, reason: String, window: Option<(i64, i64)>) -> JobFailure {
        JobFailure {
            job: self.job.name.clone(),
            output_topic: self.job.output_topic.clone(),
            rejection: Rejection::new(RejectKind::JobError, reason),
            window,
            key: None,
            payload: None,
        }
    }
}

/// Every raw record of `batch` as a dead letter of `job`.
fn reject_all(batch: &SourceBatch, job: &str, rejection: &Rejection) -> Vec<DeadLetter> {
    batch
        .raw
        .iter()
        .cloned()
        .map(|r| {
            r.into_dead_letter(
                &batch.topic,
                batch.partition,
                rejection.clone(),
                Some(job.to_owned()),
            )
        })
        .collect()
}

/// A job whose work panicked (a bug, in cxpulse or a library it calls, on
/// some input): the engine stops the job and goes on without it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobPanic {
    /// The job.
    pub job: String,
    /// Its plan fingerprint.
    pub fingerprint: String,
    /// What the panic said.
    pub message: String,
}

impl std::fmt::Display for JobPanic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "job {} panicked: {}", self.job, self.message)
    }
}

/// Runs `work` on every job, each on a task of its own, and merges their
/// outputs in job order. Jobs are independent, so on several cores they
/// run in parallel. A job whose work panicked is reported (the others'
/// outputs are dropped with the epoch, which the engine aborts).
async fn on_every_job<F, Fut>(jobs: &mut Vec<RunningJob>, work: F) -> Result<JobOutput, JobPanic>
where
    F: Fn(usize, RunningJob) -> Fut,
    Fut: Future<Output = (RunningJob, Result<JobOutput, Panicked>)> + Send + 'static,
{
    let names: Vec<(String, String)> = jobs
        .iter()
        .map(|j| (j.job.name.clone(), j.job.fingerprint.clone()))
        .collect();
    let tasks: Vec<_> = std::mem::take(jobs)
        .into_iter()
        .enumerate()
        .map(|(index, running)| {
            let span = tracing::info_span!("job", job = %running.job.name);
            tokio::spawn(work(index, running).instrument(span))
        })
        .collect();
    let mut out = JobOutput::default();
    let mut panicked = None;
    for (task, (job, fingerprint)) in tasks.into_iter().zip(names) {
        let outcome = match task.await {
            Ok((running, outcome)) => {
                jobs.push(running);
                outcome
            }
            Err(e) => Err(Panicked(e.to_string())),
        };
        match outcome {
            Ok(output) => out.absorb(output),
            Err(Panicked(message)) => {
                panicked.get_or_insert(JobPanic {
                    job,
                    fingerprint,
                    message,
                });
            }
        }
    }
    match panicked {
        None => Ok(out),
        Some(panic) => Err(panic),
    }
}

/// A job's work that panicked, with the panic's message.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Panicked(String);

/// Runs `work` on one job, turning a panic into its message.
async fn contained(work: impl Future<Output = JobOutput>) -> Result<JobOutput, Panicked> {
    futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(work))
        .await
        .map_err(|panic| {
            Panicked(
                panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "no message".to_owned()),
            )
        })
}

/// Runs every job on one micro-batch, each on a task of its own. Windowed
/// jobs first route the events that are late for all their windows to the
/// dead-letter topic, then add the rest to their state; nothing fires here
/// (see [`fire`]).
pub async fn process(
    jobs: &mut Vec<RunningJob>,
    events: &Arc<BTreeMap<Source, Vec<SourceBatch>>>,
    metrics: &Arc<Metrics>,
) -> Result<JobOutput, JobPanic> {
    on_every_job(jobs, |_, mut running| {
        let (events, metrics) = (Arc::clone(events), Arc::clone(metrics));
        async move {
            let outcome = contained(async {
                let mut out = JobOutput::default();
                ship_kept_events(&running, &events, &metrics, &mut out);
                if running.job.sources().iter().any(|k| events.contains_key(k)) {
                    let started = std::time::Instant::now();
                    if running.job.windowed().is_some() {
                        accumulate(&mut running, &events, &metrics, &mut out).await;
                    } else {
                        run_stateless(&mut running, &events, &metrics, &mut out).await;
                    }
                    metrics
                        .job_duration
                        .with_label_values(&[running.job.name.as_str(), "batch"])
                        .observe(started.elapsed().as_secs_f64());
                }
                out
            })
            .await;
            (running, outcome)
        }
    })
    .await
}

/// Stage 1 of a shuffled job reading kept tables: the micro-batch's events
/// of the streams keeping them go to the repartition topic, for the copy of
/// the tables stage 2 fires with.
fn ship_kept_events(
    running: &RunningJob,
    events: &BTreeMap<Source, Vec<SourceBatch>>,
    metrics: &Metrics,
    out: &mut JobOutput,
) {
    let (Some(route), Some(windowed)) = (running.shuffle.as_ref(), running.job.windowed()) else {
        return;
    };
    for source in windowed.kept_copies().keys() {
        let Some(spec) = source.keep() else { continue };
        for batch in events.get(source).into_iter().flatten() {
            match route.kept_events(source.name(), batch.partition, &batch.rows, spec) {
                Ok(records) => out.records.extend(records),
                Err(e) => {
                    job_failed(running, &e.to_string(), metrics);
                    tracing::error!(error = %e, job = %running.job.name, "kept-table events could not be written for the shuffle");
                }
            }
        }
    }
}

/// A stateless job on one micro-batch: its rows. Where the plan fails,
/// each source partition's events are run in halves until the failing
/// events are alone: those are dead letters (`job_error`), the others'
/// rows are published.
async fn run_stateless(
    running: &mut RunningJob,
    events: &BTreeMap<Source, Vec<SourceBatch>>,
    metrics: &Metrics,
    out: &mut JobOutput,
) {
    let inputs: BTreeMap<Source, Vec<RecordBatch>> = events
        .iter()
        .map(|(k, batches)| (*k, batches.iter().map(|b| b.rows.clone()).collect()))
        .collect();
    let error = match running.job.run(&inputs).await {
        Ok(rows) => return out.publish(running, &rows, metrics),
        Err(e) => e,
    };
    job_failed(running, &error.to_string(), metrics);
    let name = running.job.name.clone();
    for kind in running.job.sources() {
        for batch in events.get(&kind).into_iter().flatten() {
            let mut pending = vec![(0, batch.rows.num_rows())];
            let mut failed_runs = 0;
            while let Some((offset, len)) = pending.pop() {
                let input = BTreeMap::from([(kind, vec![batch.rows.slice(offset, len)])]);
                match running.job.run(&input).await {
                    Ok(rows) => out.publish(running, &rows, metrics),
                    Err(e) if len == 1 || failed_runs >= MAX_FAILED_RUNS => {
                        let rejection =
                            Rejection::new(RejectKind::JobError, format!("job {name} failed: {e}"));
                        for raw in &batch.raw[offset..offset + len] {
                            out.dead_letters.push(raw.clone().into_dead_letter(
                                &batch.topic,
                                batch.partition,
                                rejection.clone(),
                                Some(name.clone()),
                            ));
                        }
                    }
                    Err(_) => {
                        failed_runs += 1;
                        let half = len / 2;
                        pending.push((offset + half, len - half));
                        pending.push((offset, half));
                    }
                }
            }
        }
    }
}

/// A windowed job on one micro-batch: late events to the dead-letter
/// topic, the others into its state, one source partition at a time; an
/// event the job's plan fails on is a dead letter (`job_error`), the
/// others count.
async fn accumulate(
    running: &mut RunningJob,
    events: &BTreeMap<Source, Vec<SourceBatch>>,
    metrics: &Metrics,
    out: &mut JobOutput,
) {
    let name = running.job.name.clone();
    // Stage 1 of a shuffle judges lateness by this instance's watermark.
    let local = running.shuffle.as_ref().map(|route| route.local);
    let Some(windowed) = running.job.windowed_mut() else {
        return;
    };
    let sources = windowed.info.sources.clone();
    for source in sources {
        for batch in events.get(&source).into_iter().flatten() {
            let result = async {
                let late = match local {
                    Some(Some(watermark)) => windowed.late_by(watermark, &batch.rows)?,
                    Some(None) => arrow::array::BooleanArray::from(vec![false; batch.rows.num_rows()]),
                    None => windowed.late_rows(batch.partition, &batch.rows)?,
                };
                if late.true_count() > 0 {
                    let reason = match local {
                        Some(watermark) => format!(
                            "late for every window of job {name}: the watermark of this instance's partitions is at {}",
                            format_timestamp_millis(watermark.unwrap_or_default())
                        ),
                        None => format!(
                            "late for every window of job {name}: windows up to {} have closed",
                            format_timestamp_millis(
                                windowed.closed_for(batch.partition).unwrap_or_default()
                            )
                        ),
                    };
                    for (row, is_late) in late.iter().enumerate() {
                        if is_late == Some(true) {
                            out.dead_letters
                                .push(batch.raw[row].clone().into_dead_letter(
                                    &batch.topic,
                                    batch.partition,
                                    Rejection::new(RejectKind::Late, reason.clone()),
                                    Some(name.clone()),
                                ));
                        }
                    }
                    metrics
                        .late_records
                        .with_label_values(&[source.name(), name.as_str()])
                        .inc_by(late.true_count() as u64);
                }
                let on_time_rows: Vec<usize> = late
                    .iter()
                    .enumerate()
                    .filter(|(_, l)| *l != Some(true))
                    .map(|(row, _)| row)
                    .collect();
                let on_time = filter_record_batch(&batch.rows, &not(&late)?)?;
                let failed = if on_time.num_rows() > 0 {
                    windowed
                        .accumulate(source, batch.partition, on_time)
                        .await?
                } else {
                    Vec::new()
                };
                Ok::<_, datafusion::error::DataFusionError>((on_time_rows, failed))
            }
            .await;
            match result {
                Ok((_, failed)) if failed.is_empty() => {}
                Ok((on_time_rows, failed)) => {
                    metrics.job_errors.with_label_values(&[name.as_str()]).inc();
                    tracing::error!(events = failed.len(), error = %failed[0].error, "events the job's plan failed on go to the dead-letter topic; the others count");
                    for failure in failed {
                        let row = on_time_rows[failure.row];
                        let rejection = Rejection::new(
                            RejectKind::JobError,
                            format!("job {name} failed: {}", failure.error),
                        );
                        out.dead_letters
                            .push(batch.raw[row].clone().into_dead_letter(
                                &batch.topic,
                                batch.partition,
                                rejection,
                                Some(name.clone()),
                            ));
                    }
                }
                Err(e) => {
                    metrics.job_errors.with_label_values(&[name.as_str()]).inc();
                    tracing::error!(error = %e, "windowed job failed on a micro-batch");
                    let rejection =
                        Rejection::new(RejectKind::JobError, format!("job {name} failed: {e}"));
                    out.dead_letters
                        .extend(reject_all(batch, &name, &rejection));
                }
            }
        }
    }
    // Stage 1 of a shuffle: the partial aggregates go to the repartition
    // topic, in the epoch's transaction.
    if let Some(route) = running.shuffle.as_ref() {
        for (source, partition, partials) in windowed.take_partials() {
            match route.partials(source.name(), partition, &partials) {
                Ok(records) => out.records.extend(records),
                Err(e) => {
                    metrics.job_errors.with_label_values(&[name.as_str()]).inc();
                    tracing::error!(error = %e, "partial aggregates could not be written for the shuffle");
                }
            }
        }
    }
}

/// Fires the windows each windowed job's watermark has closed, and the
/// early results that are due, each job on a task of its own. A job stops
/// closing windows once [`FIRING_BUDGET`] has passed since this call began;
/// the next call goes on.
pub async fn fire(
    jobs: &mut Vec<RunningJob>,
    event_time: &EventTime,
    metrics: &Arc<Metrics>,
    now: Instant,
) -> Result<JobOutput, JobPanic> {
    let deadline = std::time::Instant::now() + FIRING_BUDGET;
    // A shuffled job closes windows on the marks it read back (stage 2).
    let watermarks: Vec<Option<i64>> = jobs
        .iter_mut()
        .map(|j| match j.shuffle.as_mut() {
            Some(route) => route.watermark(),
            None => j
                .job
                .windowed()
                .and_then(|w| event_time.of_sources(&w.info.sources)),
        })
        .collect();
    on_every_job(jobs, |index, mut running| {
        let (watermark, metrics) = (watermarks[index], Arc::clone(metrics));
        async move {
            let outcome = contained(async {
                let mut out = JobOutput::default();
                fire_job(&mut running, watermark, deadline, now, &metrics, &mut out).await;
                out
            })
            .await;
            (running, outcome)
        }
    })
    .await
}

/// One windowed job's part of [`fire`]. A window whose rows fail is a
/// failure of the job (a dead letter naming the window), and the job's
/// other windows and groups are published.
async fn fire_job(
    running: &mut RunningJob,
    watermark: Option<i64>,
    deadline: std::time::Instant,
    now: Instant,
    metrics: &Metrics,
    out: &mut JobOutput,
) {
    let started = std::time::Instant::now();
    let every = running.job.emit_every;
    let early_due = running.next_early.is_some_and(|at| now >= at);
    let Some(windowed) = running.job.windowed_mut() else {
        return;
    };
    let mut fired = Fired::default();
    let closed_before = windowed.windows_closed();
    if let Some(watermark) = watermark {
        fired = windowed.fire(watermark, deadline).await;
    }
    let closed = windowed.windows_closed() - closed_before;
    let mut early_failures = Vec::new();
    if early_due {
        let early = windowed.early().await;
        out.early |= !early.rows.is_empty();
        fired.rows.extend(early.rows);
        early_failures = early.failures;
    }
    let state_bytes = windowed.state_bytes();
    let closed_through = windowed.closed_through();
    let lag = watermark.zip(windowed.closed_through()).map(|(w, closed)| {
        w.saturating_sub(windowed.lateness)
            .saturating_sub(closed)
            .max(0)
    });
    let name = running.job.name.clone();
    if let Some(lag) = lag {
        metrics
            .window_close_lag
            .with_label_values(&[name.as_str()])
            .set(lag as f64 / 1000.0);
    }
    if early_due {
        running.next_early = every.map(|e| now + e);
    }
    metrics
        .window_state_bytes
        .with_label_values(&[name.as_str()])
        .set(state_bytes as i64);
    if closed > 0 {
        metrics
            .windows_fired
            .with_label_values(&[name.as_str()])
            .inc_by(closed);
    }
    if let Some(closed) = closed_through {
        running.early_failed.retain(|(_, end, _)| *end > closed);
    }
    let failures = fired
        .failures
        .into_iter()
        .map(|f| (f, false))
        .chain(early_failures.into_iter().map(|f| (f, true)));
    for (failure, early) in failures {
        let WindowFailure {
            start,
            end,
            group,
            error,
        } = failure;
        if early && !running.early_failed.insert((start, end, group.clone())) {
            // Reported at an earlier early run: counted, not repeated.
            metrics.job_errors.with_label_values(&[name.as_str()]).inc();
            continue;
        }
        let what = if early {
            "early results; the window stays open, and later early runs that fail on it are only counted"
        } else {
            "its state is dropped with the window"
        };
        let window = format!(
            "[{}, {})",
            format_timestamp_millis(start),
            format_timestamp_millis(end)
        );
        let which = match &group {
            Some(group) => format!("the group {group} of window {window}"),
            None => format!("window {window}"),
        };
        let reason = format!("job {name} failed to compute {which} ({what}): {error}");
        job_failed(running, &reason, metrics);
        out.failures
            .push(running.failure(reason, Some((start, end))));
    }
    if !fired.rows.is_empty() {
        out.publish(running, &fired.rows, metrics);
    }
    metrics
        .job_duration
        .with_label_values(&[name.as_str(), "fire"])
        .observe(started.elapsed().as_secs_f64());
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::lookup::Lookups;
    use crate::query::QueryFile;

    async fn running(name: &str, sql: &str, metrics: &Metrics) -> RunningJob {
        let query = QueryFile::parse(Path::new(name), sql.to_owned()).expect("parses");
        let job = Job::plan(
            query,
            &Lookups::new(crate::config::default_sources()),
            "cx.metrics.",
        )
        .await
        .expect("plans");
        RunningJob::new(job, name.into(), metrics, 10, Instant::now()).expect("registers")
    }

    #[tokio::test]
    async fn a_job_exports_how_often_its_windows_close_and_when_it_last_published() {
        let metrics = Metrics::new().expect("metrics");
        let before = chrono::Utc::now().timestamp_millis() as f64 / 1000.0;
        let tumble = running(
            "q/hourly.sql",
            "SELECT window_start, window_end, count(*) AS n FROM TUMBLE(transactions, ts, INTERVAL '1 hour') GROUP BY window_start, window_end",
            &metrics,
        )
        .await;
        running(
            "q/daily.sql",
            "SELECT window_start, window_end, count(*) AS n FROM HOP(transactions, ts, INTERVAL '1 day', INTERVAL '7 days') GROUP BY window_start, window_end",
            &metrics,
        )
        .await;
        running(
            "q/visits.sql",
            "SELECT window_start, window_end, customer_id, count(*) AS n FROM SESSION(transactions, ts, INTERVAL '30 minutes', customer_id) GROUP BY window_start, window_end, customer_id",
            &metrics,
        )
        .await;
        let slide = |job: &str| {
            metrics
                .window_slide
                .get_metric_with_label_values(&[job])
                .map(|g| g.get())
        };
        assert_eq!(slide("hourly").ok(), Some(3_600.0));
        assert_eq!(slide("daily").ok(), Some(86_400.0));
        let text = metrics.encode();
        assert!(
            !text.contains("cxpulse_window_slide_seconds{job=\"visits\"}"),
            "{text}"
        );
        let started = metrics.last_output.with_label_values(&["hourly"]).get();
        assert!(
            started >= before.floor() && started <= before + 60.0,
            "{started}"
        );
        tumble.forget_metrics(&metrics);
        let text = metrics.encode();
        for gone in [
            "cxpulse_window_slide_seconds{job=\"hourly\"}",
            "cxpulse_last_output_timestamp_seconds{job=\"hourly\"}",
        ] {
            assert!(!text.contains(gone), "{gone} in {text}");
        }
    }

    /// Collects what a `fmt` subscriber writes.
    #[derive(Clone, Default)]
    struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn each_jobs_work_is_logged_inside_a_job_span_with_its_name() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let _logging = tracing::subscriber::set_default(subscriber);
        let metrics = Metrics::new().expect("metrics");
        let mut jobs = vec![
            running(
                "q/big_spend.sql",
                "SELECT customer_id FROM transactions WHERE amount > 100",
                &metrics,
            )
            .await,
            running(
                "q/all_feedback.sql",
                "SELECT customer_id FROM feedback",
                &metrics,
            )
            .await,
        ];
        on_every_job(&mut jobs, |_, running| async move {
            tracing::info!("working");
            (running, Ok(JobOutput::default()))
        })
        .await
        .expect("no job panicked");
        let text = String::from_utf8(captured.0.lock().expect("log").clone()).expect("utf-8");
        let working: Vec<&str> = text.lines().filter(|l| l.ends_with("working")).collect();
        assert_eq!(working.len(), 2, "{text}");
        assert!(working[0].contains("job{job=big_spend}:"), "{text}");
        assert!(working[1].contains("job{job=all_feedback}:"), "{text}");
    }
}
