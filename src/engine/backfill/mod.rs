//! The engine's backfills (each one a [`history::Backfill`]): started for new or changed
//! jobs with `@backfill`, resumed after a restart where the changelog says
//! they stood, requested for a running job by `cxpulse backfill`, stepped
//! when the engine has nothing live to do, and handed over to the live jobs
//! once caught up.
//!
//! Throttling: the engine loop runs a backfill step when no live record,
//! commit, timer or signal is waiting (it is the last branch of a biased
//! select), and after every [`BACKFILL_EVERY`] live micro-batches (so that
//! a live stream that never lets the loop idle does not starve it); a step
//! reads at most `engine.backfill_batch_rows` records per backfill: a live
//! record waits at most one such micro-batch.
//! A backfill's outputs and state changes join the open epoch, with its
//! positions, so a crash resumes it where the last commit left it.

mod history;

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

pub(in crate::engine) use history::Backfill;

use super::EngineError;
use super::jobs::RunningJob;
use super::restore::BackfillState;
use crate::config::Config;
use crate::control::Refusal;
use crate::job::Job;
use crate::metrics::Metrics;
use crate::query::BackfillFrom;

/// Under a live stream that never lets the engine loop idle, the backfills
/// still take a step after this many live micro-batches.
const BACKFILL_EVERY: u32 = 8;

/// How long the engine waits before reading again when no backfill found
/// anything to read.
const IDLE_WAIT: Duration = Duration::from_millis(50);

/// The engine's running backfills, and when they take their next step.
pub(in crate::engine) struct Backfills {
    running: Vec<Backfill>,
    /// When the backfills may take their next step.
    next_step: Instant,
    /// Live micro-batches since their last step.
    live_batches: u32,
}

impl Backfills {
    /// `running`, due for a step at once.
    pub fn new(running: Vec<Backfill>) -> Self {
        Self {
            running,
            next_step: Instant::now(),
            live_batches: 0,
        }
    }

    /// How many are running.
    pub fn len(&self) -> usize {
        self.running.len()
    }

    /// Whether none is running.
    pub fn is_empty(&self) -> bool {
        self.running.is_empty()
    }

    /// Every running backfill.
    pub fn iter(&self) -> impl Iterator<Item = &Backfill> {
        self.running.iter()
    }

    /// Every running backfill, to change.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Backfill> {
        self.running.iter_mut()
    }

    /// The backfill at `index`.
    pub fn get_mut(&mut self, index: usize) -> &mut Backfill {
        &mut self.running[index]
    }

    /// Starts `backfill`; the gauge of running backfills says so.
    pub fn add(&mut self, backfill: Backfill, metrics: &Metrics) {
        self.running.push(backfill);
        metrics.backfills_running.set(self.running.len() as i64);
    }

    /// Takes out the backfill at `index` (it caught up, or its job is
    /// gone); the gauge says so.
    pub fn take(&mut self, index: usize, metrics: &Metrics) -> Backfill {
        let backfill = self.running.remove(index);
        metrics.backfills_running.set(self.running.len() as i64);
        backfill
    }

    /// When the next step is due.
    pub fn next_step(&self) -> Instant {
        self.next_step
    }

    /// A live micro-batch ran: whether the backfills are owed a step now (a
    /// live stream that never lets the loop idle must not starve them).
    pub fn live_batch_ran(&mut self) -> bool {
        self.live_batches += 1;
        !self.running.is_empty() && self.live_batches >= BACKFILL_EVERY
    }

    /// A step ran at `now`: the next one is due at once if it read
    /// anything, else after a pause.
    pub fn stepped(&mut self, read_any: bool, now: Instant) {
        self.live_batches = 0;
        self.next_step = if read_any { now } else { now + IDLE_WAIT };
    }
}

/// A backfill request whose job was planned again and whose history's
/// offsets were found, off the engine loop.
pub(in crate::engine) struct PreparedBackfill {
    /// The job.
    pub job: String,
    /// Its plan's fingerprint when it was asked for.
    pub fingerprint: String,
    /// Where the history starts.
    pub from: BackfillFrom,
    /// Its query file.
    pub path: std::path::PathBuf,
    /// The job planned again, and where its reader starts; or why not.
    pub outcome: Result<(Job, history::Opened), Refusal>,
    /// Where the answer goes.
    pub reply: oneshot::Sender<Result<String, Refusal>>,
}

/// Finds where a backfill of a job reading `sources` starts (from `from`,
/// or where `resumed` stood) and where the live consumer stands, off the
/// engine's thread.
pub(in crate::engine) async fn open(
    config: &Config,
    sources: Vec<crate::schema::Source>,
    from: Option<BackfillFrom>,
    resumed: &BackfillState,
) -> Result<history::Opened, rdkafka::error::KafkaError> {
    let (config, resumed) = (config.clone(), resumed.clone());
    tokio::task::spawn_blocking(move || history::open(&config, &sources, from, &resumed))
        .await
        .map_err(|_| rdkafka::error::KafkaError::Canceled)?
}

/// A backfill of `running` from `from` over what [`open`] found.
pub(in crate::engine) fn begin(
    config: &Config,
    running: RunningJob,
    (from, opened): (Option<BackfillFrom>, history::Opened),
    resumed: &BackfillState,
    metrics: &Metrics,
) -> Backfill {
    let backfill = Backfill::new(config, running, opened, resumed, Instant::now());
    let name = backfill.job().job.name.as_str();
    metrics.backfill_records.with_label_values(&[name]);
    if resumed.running() {
        tracing::info!(
            job = %name,
            resumed = true,
            "backfill resumed where the last commit left it"
        );
    } else {
        tracing::info!(
            job = %name,
            from = %from.unwrap_or(BackfillFrom::Earliest),
            "backfill started: the job reads its sources' history, then goes live"
        );
    }
    backfill
}

/// Splits restored jobs into live ones and backfills: a job whose backfill
/// was running (on one instance at least) resumes it; a job with
/// `@backfill` that never finished one starts it; the others run live.
/// `live_times` are the live stream's largest event times per source
/// partition: a resumed backfill's watermark starts from them in the
/// partitions whose owner had caught up.
pub(super) async fn resume(
    config: &Config,
    metrics: &Metrics,
    jobs: Vec<RunningJob>,
    mut states: BTreeMap<String, BackfillState>,
    live_times: &BTreeMap<(crate::schema::Source, i32), i64>,
) -> Result<(Vec<RunningJob>, Vec<Backfill>), EngineError> {
    let (mut live, mut to_open) = (Vec::new(), Vec::new());
    for mut running in jobs {
        let mut state = states.remove(&running.job.name).unwrap_or_default();
        if state.running() {
            let sources = running.job.sources();
            for (&(source, partition), &t) in live_times {
                if sources.contains(&source) && state.done_in.contains(&partition) {
                    state.event_times.entry((source, partition)).or_insert(t);
                }
            }
            to_open.push((running, state));
        } else if let Some(at) = state.done {
            running.backfilled(at);
            live.push(running);
        } else if running.job.backfill.is_some() {
            to_open.push((running, state));
        } else {
            live.push(running);
        }
    }
    let mut opened = Vec::new();
    for (running, state) in &to_open {
        match open(config, running.job.sources(), running.job.backfill, state).await {
            Ok(o) => opened.push(o),
            Err(e) => {
                // Nothing stays registered for the next start to collide with.
                for running in live.iter().chain(to_open.iter().map(|(r, _)| r)) {
                    running.forget_metrics(metrics);
                }
                return Err(EngineError::kafka("starting a backfill")(e));
            }
        }
    }
    let backfills: Vec<Backfill> = to_open
        .into_iter()
        .zip(opened)
        .map(|((running, state), opened)| {
            let from = running.job.backfill;
            begin(config, running, (from, opened), &state, metrics)
        })
        .collect();
    metrics.backfills_running.set(backfills.len() as i64);
    Ok((live, backfills))
}
