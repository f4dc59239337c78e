//! The engine: source → decode → jobs → sink, one Kafka transaction per
//! epoch, state restored from the changelog after any failure.
//!
//! * [`run`] serves HTTP and supervises. It starts the engine; when Kafka
//!   fails under it (an aborted transaction, every broker lost, a broker
//!   unreachable at start) it drops everything held in memory, waits
//!   (capped exponential backoff, a log line per attempt, `/readyz` false)
//!   and starts again from the changelog. Only a fenced instance, a broker
//!   without transactions, invalid queries or a corrupt changelog stop it.
//! * [`start`] fences the previous instance, restores window state,
//!   watermarks and kept tables from the changelog, reads the table
//!   sources (by default `customers`) to their end, then subscribes.
//! * [`batches`] runs micro-batches and timer ticks, every job on a task of
//!   its own ([`jobs`]); [`epoch`] commits
//!   outputs, dead letters, state changes ([`changelog`]) and consumer
//!   offsets in one transaction every `engine.commit_interval_ms`.
//! * [`memory`] pauses consumption while window state is over its limit.
//! * The parts of a started engine each own their fields: [`inputs`],
//!   [`epoch`], [`job_set`], [`backfill`], [`watcher`], [`memory`],
//!   [`event_time`] (see `docs/ARCHITECTURE.md`, "Who owns what").

mod backfill;
mod backfilling;
mod batches;
mod changelog;
mod commit;
mod epoch;
mod error;
mod event_time;
mod inputs;
mod job_set;
mod jobs;
mod members;
mod memory;
mod offline;
mod reload;
mod restore;
mod shuffling;
mod start;
mod step;
mod stopped;
mod tables;
mod watcher;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::config::Config;
use crate::control::BackfillRequest;
use crate::health::Health;
use crate::http::HttpServer;
use crate::lookup::Lookups;
use crate::metrics::Metrics;
use crate::sink::Sink;
use crate::state::writer::ChangelogWriter;
use event_time::EventTime;
use jobs::{JobOutput, RunningJob};
use memory::MemoryGate;
use step::Core;
use watcher::QueryWatcher;

pub use error::EngineError;
pub use offline::{OfflineOutput, run_offline};

/// How often idle partitions and early results are checked.
const TICK: Duration = Duration::from_millis(200);

/// First wait after a failure; it doubles per failed attempt, up to
/// [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// Longest wait between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// A run this long counts as a success: the next failure waits
/// [`FIRST_BACKOFF`] again.
const HEALTHY_RUN: Duration = Duration::from_secs(30);

/// Runs the engine until `shutdown` resolves, then drains and returns.
/// `metrics` is served on `/metrics` (and can be read in process, as the
/// demo's live view does); `on_listening` receives the bound HTTP address
/// (useful with port 0).
pub async fn run(
    mut config: Config,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
    on_listening: impl FnOnce(SocketAddr),
) -> Result<(), EngineError> {
    // The entries are what counts: a program may have changed them since
    // the configuration was loaded.
    config.declare_sources().map_err(EngineError::Sources)?;
    let health = Arc::new(Health::default());
    let (stop_http, mut http_stopped) = watch::channel(false);
    let http_error = |source| EngineError::Http {
        addr: config.http.listen.clone(),
        source,
    };
    let addr: SocketAddr = config
        .http
        .listen
        .parse()
        .map_err(|e| http_error(std::io::Error::new(std::io::ErrorKind::InvalidInput, e)))?;
    let (backfill_requests, mut requests) = tokio::sync::mpsc::channel(8);
    let server = HttpServer::bind(addr, Arc::clone(&metrics), Arc::clone(&health))
        .await
        .map_err(http_error)?
        .with_backfills(backfill_requests, Some(config.http.admin_token.as_str()));
    let bound = server.local_addr().map_err(http_error)?;
    tracing::info!(addr = %bound, "serving /metrics, /healthz, /readyz");
    on_listening(bound);
    let http = tokio::spawn(server.serve(async move {
        let _ = http_stopped.wait_for(|stopped| *stopped).await;
    }));

    tokio::pin!(shutdown);
    let result = supervise(&config, &metrics, &health, &mut requests, shutdown).await;
    let _ = stop_http.send(true);
    let _ = http.await;
    if result.is_ok() {
        tracing::info!("stopped");
    }
    result
}

/// Starts the engine and starts it again, from the changelog, after every
/// failure that retrying can cure.
async fn supervise(
    config: &Config,
    metrics: &Arc<Metrics>,
    health: &Arc<Health>,
    requests: &mut tokio::sync::mpsc::Receiver<BackfillRequest>,
    shutdown: Pin<&mut impl Future<Output = ()>>,
) -> Result<(), EngineError> {
    // Fused: the engine's drain may already have seen it complete.
    let mut shutdown = futures::FutureExt::fuse(shutdown);
    let mut failures = 0u32;
    let mut reason = "start";
    let mut lessons = Lessons::default();
    loop {
        let began = tokio::time::Instant::now();
        let started = tokio::select! {
            biased;
            () = &mut shutdown => return Ok(()),
            started = Engine::start(config, metrics, health, reason, &mut lessons) => started,
        };
        let error = match started {
            Ok(engine) => match engine
                .run(requests, Pin::new(&mut shutdown), &mut lessons)
                .await
            {
                Ok(()) => return Ok(()),
                Err(e) => e,
            },
            Err(e) => e,
        };
        metrics.restore_in_progress.set(0);
        metrics.backfills_running.set(0);
        if error.is_fatal() {
            tracing::error!(error = %error, "stopping");
            return Err(error);
        }
        if let EngineError::Sink(e) = &error {
            lessons.learned.absorb(e.learned.clone());
        }
        if let EngineError::JobPanicked(panic) = &error {
            tracing::error!(
                job = %panic.job,
                panic = %panic.message,
                "a job panicked: it is stopped (its state is kept, and it resumes where it stopped \
                 once the engine runs a build without the bug, or its query file is fixed); the \
                 open epoch is aborted and the other jobs go on from the last commit"
            );
            metrics
                .job_errors
                .with_label_values(&[panic.job.as_str()])
                .inc();
            lessons.stop(panic.clone());
            reason = "recovery";
            continue;
        }
        if began.elapsed() > HEALTHY_RUN {
            failures = 0;
        }
        failures += 1;
        let wait = backoff(failures);
        tracing::warn!(
            error = %error,
            attempt = failures,
            retry_in_ms = wait.as_millis() as u64,
            "Kafka failed under the engine; in-memory state is dropped and restored from the changelog"
        );
        health.set_blocker(Some(format!(
            "recovering (attempt {failures}) after: {error}"
        )));
        health.set_partitions_assigned(false);
        tokio::select! {
            biased;
            () = &mut shutdown => return Ok(()),
            () = tokio::time::sleep(wait) => {}
        }
        reason = "recovery";
    }
}

/// What the engine learns and keeps across its restarts within one
/// process: the limits the broker's refusals taught, and the jobs stopped
/// because they panicked.
#[derive(Debug, Default)]
pub(super) struct Lessons {
    /// Topic limits learned from refused records.
    pub learned: crate::sink::Learned,
    /// Jobs that panicked, by (name, fingerprint): they stay stopped in
    /// this process.
    pub stopped: Vec<jobs::JobPanic>,
    /// The panics not yet published as dead letters.
    pub unreported: Vec<jobs::JobPanic>,
    /// The queries the last engine ran (`None` before one ran): a
    /// recovery start runs them where their files do not plan now, so that
    /// an invalid or momentarily absent file (an edit or a ConfigMap swap
    /// under way when Kafka failed) neither stops the engine nor deletes a
    /// job's state.
    pub queries: Option<Vec<crate::query::QueryFile>>,
}

impl Lessons {
    fn stop(&mut self, panic: jobs::JobPanic) {
        if !self
            .stopped
            .iter()
            .any(|p| p.job == panic.job && p.fingerprint == panic.fingerprint)
        {
            self.stopped.push(panic.clone());
            self.unreported.push(panic);
        }
    }

    /// Whether the job `name` with `fingerprint` panicked in this process.
    pub fn is_stopped(&self, name: &str, fingerprint: &str) -> Option<&jobs::JobPanic> {
        self.stopped
            .iter()
            .find(|p| p.job == name && p.fingerprint == fingerprint)
    }
}

/// The wait before attempt `failures + 1`: doubling, capped.
fn backoff(failures: u32) -> Duration {
    FIRST_BACKOFF
        .saturating_mul(1 << failures.saturating_sub(1).min(16))
        .min(MAX_BACKOFF)
}

/// A started engine: clients, jobs, state, and the open epoch.
struct Engine {
    config: Config,
    metrics: Arc<Metrics>,
    lookups: Lookups,
    /// The live jobs and those stopped because they panicked.
    jobs: job_set::JobSet,
    /// Jobs reading history before they go live.
    backfills: backfill::Backfills,
    event_time: EventTime,
    watcher: QueryWatcher,
    sink: Sink,
    /// This start's `transactional.id`, recorded again as the owner of its
    /// changelog partitions in every checkpoint (a restore reads from the
    /// last one).
    transactional_id: String,
    /// The consumers, the broker watch, and the positions processed.
    inputs: inputs::Inputs,
    changelog: ChangelogWriter,
    epoch: epoch::Epoch,
    memory: MemoryGate,
}

/// Most `@gauge` series one job may export.
fn gauge_limit(config: &Config) -> usize {
    usize::try_from(config.engine.gauge_series_limit).unwrap_or(0)
}

fn millis(ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let waits: Vec<u64> = (1..=8).map(|f| backoff(f).as_millis() as u64).collect();
        assert_eq!(
            waits,
            [250, 500, 1_000, 2_000, 4_000, 8_000, 10_000, 10_000]
        );
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }
}
