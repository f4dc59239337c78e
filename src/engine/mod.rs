//! The engine: wires source → decode → jobs → sink, and drains on shutdown.
//!
//! Each micro-batch is processed to the end before the next one starts:
//! customers changes are applied, every job that reads a source in the batch
//! runs (windowed jobs add the batch to their state), the watermarks advance
//! and windowed jobs fire the windows they closed; outputs and dead letters
//! are published, and only once Kafka has acknowledged all of them are the
//! batch's offsets committed. A timer also fires windows when partitions go
//! idle, emits early results, and reloads changed query files.

mod event_time;
mod jobs;
mod reload;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::watch;

use crate::admin::{ensure_topics, sink_topics};
use crate::config::Config;
use crate::decode::RejectKind;
use crate::http::{Health, HttpServer};
use crate::job::{self, Job};
use crate::lookup::Lookups;
use crate::metrics::Metrics;
use crate::query::{QueryError, QueryFile};
use crate::schema::SourceKind;
use crate::sink::{DeadLetter, Sink, SinkError};
use crate::source::{self, Batcher, MicroBatch, SourceConsumer};
use event_time::EventTime;
use jobs::{JobOutput, RunningJob};
use reload::{QueryChange, QueryWatcher};

/// How often idle partitions and early results are checked.
const TICK: Duration = Duration::from_millis(200);

/// Why the engine could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Query files that do not plan.
    #[error("{} query file(s) are invalid:\n{}", .0.len(), .0.iter().map(|e| format!("  {e}")).collect::<Vec<_>>().join("\n"))]
    Queries(Vec<QueryError>),
    /// A Kafka client could not be created or used.
    #[error("Kafka {context}: {source}")]
    Kafka {
        /// What the engine was doing.
        context: &'static str,
        /// The client error.
        source: KafkaError,
    },
    /// The HTTP listener could not be bound or served.
    #[error("HTTP listener on {addr}: {source}")]
    Http {
        /// The configured address.
        addr: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Outputs could not be delivered; their offsets were not committed.
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// Metrics could not be registered (a bug).
    #[error("metrics registry: {0}")]
    Metrics(#[from] prometheus::Error),
    /// A micro-batch could not be assembled (a bug).
    #[error("assembling a micro-batch: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// The SIGHUP handler could not be installed.
    #[error("installing the SIGHUP handler: {source}")]
    Signal {
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Runs the engine until `shutdown` resolves, then drains and returns.
/// `metrics` is served on `/metrics` (and can be read in process, as the
/// demo's live view does); `on_listening` receives the bound HTTP address
/// (useful with port 0).
pub async fn run(
    config: Config,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
    on_listening: impl FnOnce(SocketAddr),
) -> Result<(), EngineError> {
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
    let server = HttpServer::bind(addr, Arc::clone(&metrics), Arc::clone(&health))
        .await
        .map_err(http_error)?;
    let bound = server.local_addr().map_err(http_error)?;
    tracing::info!(addr = %bound, "serving /metrics, /healthz, /readyz");
    on_listening(bound);
    let http = tokio::spawn(server.serve(async move {
        let _ = http_stopped.wait_for(|stopped| *stopped).await;
    }));

    let result = match Engine::start(config, Arc::clone(&metrics), Arc::clone(&health)).await {
        Ok(engine) => engine.run(shutdown).await,
        Err(e) => Err(e),
    };
    let _ = stop_http.send(true);
    let _ = http.await;
    if result.is_ok() {
        tracing::info!("stopped");
    }
    result
}

struct Engine {
    config: Config,
    metrics: Arc<Metrics>,
    lookups: Lookups,
    jobs: Vec<RunningJob>,
    event_time: EventTime,
    watcher: QueryWatcher,
    invalid_queries: BTreeSet<PathBuf>,
    sink: Sink,
    consumer: SourceConsumer,
}

impl Engine {
    async fn start(
        config: Config,
        metrics: Arc<Metrics>,
        health: Arc<Health>,
    ) -> Result<Engine, EngineError> {
        let lookups = Lookups::default();
        let watcher = QueryWatcher::new(&config.engine.queries_dir);
        let (jobs, problems) = job::load_all(
            &config.engine.queries_dir,
            &lookups,
            &config.topics.output_prefix,
        )
        .await;
        if !problems.is_empty() {
            return Err(EngineError::Queries(problems));
        }
        for job in &jobs {
            tracing::info!(job = %job.name, output = %job.output_topic, sources = ?job.sources(), "job loaded");
        }
        ensure_topics(&config, &sink_topics(&config, &jobs))
            .await
            .map_err(|source| EngineError::Kafka {
                context: "creating output topics",
                source,
            })?;

        let sink =
            Sink::new(&config, Arc::clone(&metrics)).map_err(|source| EngineError::Kafka {
                context: "creating the producer",
                source,
            })?;
        for kind in SourceKind::ALL {
            metrics.init_topic(config.topics.source_topic(kind));
        }
        let now = tokio::time::Instant::now();
        let dir = config.engine.queries_dir.clone();
        let gauge_limit = gauge_limit(&config);
        let jobs: Vec<RunningJob> = jobs
            .into_iter()
            .map(|job| {
                let path = dir.join(format!("{}.sql", job.name));
                RunningJob::new(job, path, &metrics, gauge_limit, now)
            })
            .collect::<Result<_, _>>()?;
        metrics.jobs_loaded.set(jobs.len() as i64);
        metrics.query_files_invalid.set(0);
        health.set_jobs_loaded(true);
        let consumer =
            source::subscribe(&config, health, Arc::clone(&metrics)).map_err(|source| {
                EngineError::Kafka {
                    context: "creating the consumer",
                    source,
                }
            })?;
        Ok(Engine {
            event_time: EventTime::new(&config),
            config,
            metrics,
            lookups,
            jobs,
            watcher,
            invalid_queries: BTreeSet::new(),
            sink,
            consumer,
        })
    }

    async fn run(mut self, shutdown: impl Future<Output = ()>) -> Result<(), EngineError> {
        let max_rows = usize::try_from(self.config.engine.batch_max_rows).unwrap_or(1);
        let linger = millis(self.config.engine.batch_linger_ms);
        let mut batcher = Batcher::new(self.config.topics.clone());
        let mut deadline: Option<tokio::time::Instant> = None;
        let mut ticker = tokio::time::interval(TICK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let reload_every = (self.config.engine.reload_interval_ms > 0)
            .then(|| millis(self.config.engine.reload_interval_ms));
        let mut next_reload = reload_every.map(|every| tokio::time::Instant::now() + every);
        let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .map_err(|source| EngineError::Signal { source })?;
        tokio::pin!(shutdown);
        loop {
            let linger_elapsed = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                () = linger_elapsed => {
                    self.process(batcher.take()?).await?;
                    deadline = None;
                }
                _ = hangup.recv() => {
                    tracing::info!("SIGHUP: reloading queries");
                    self.reload().await;
                }
                _ = ticker.tick() => {
                    self.tick().await?;
                    if let (Some(at), Some(every)) = (next_reload, reload_every)
                        && tokio::time::Instant::now() >= at
                    {
                        self.reload().await;
                        next_reload = Some(tokio::time::Instant::now() + every);
                    }
                }
                received = self.consumer.recv() => match received {
                    Ok(message) => {
                        batcher.push(&message);
                        drop(message);
                        if batcher.len() >= max_rows {
                            self.process(batcher.take()?).await?;
                            deadline = None;
                        } else if deadline.is_none() {
                            deadline = Some(tokio::time::Instant::now() + linger);
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "consumer error"),
                },
            }
        }
        self.drain(batcher).await
    }

    /// Finishes the open micro-batch, flushes and commits, within the drain time.
    async fn drain(mut self, mut batcher: Batcher) -> Result<(), EngineError> {
        let drain = millis(self.config.engine.shutdown_drain_ms);
        tracing::info!(
            pending = batcher.len(),
            drain_ms = drain.as_millis() as u64,
            "stopping: draining"
        );
        let finished = tokio::time::timeout(drain, async {
            if !batcher.is_empty() {
                self.process(batcher.take()?).await?;
            }
            Ok::<_, EngineError>(())
        })
        .await;
        match finished {
            Ok(result) => result?,
            Err(_) => tracing::warn!(
                "drain time elapsed; the last micro-batch will be read again on restart"
            ),
        }
        if let Err(e) = self.sink.flush(Duration::from_secs(1)) {
            tracing::warn!(error = %e, "producer flush at shutdown");
        }
        if let Err(e) = self.consumer.commit_consumer_state(CommitMode::Sync) {
            tracing::debug!(error = %e, "final offset commit (nothing new to commit)");
        }
        self.consumer.unsubscribe();
        Ok(())
    }

    /// Runs one micro-batch end to end and commits its offsets.
    async fn process(&mut self, batch: MicroBatch) -> Result<(), EngineError> {
        let started = Instant::now();
        let MicroBatch {
            events,
            customer_changes,
            dead_letters,
            consumed,
            next_offsets,
        } = batch;
        if !customer_changes.is_empty() {
            self.lookups
                .customers
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .apply(customer_changes);
        }
        self.update_complaint_tables(&events)?;

        let now = tokio::time::Instant::now();
        self.refresh_assignment(now);
        let mut output = jobs::process(&mut self.jobs, &events, &self.metrics).await;
        self.event_time.observe(&events, now);
        self.event_time.refresh(now, &self.metrics);
        // By the slowest source, so that no job's unfired window still needs
        // a forgotten complaint.
        let slowest_watermark = self.event_time.of_sources(&SourceKind::ALL);
        if let Some(watermark) = slowest_watermark {
            self.lookups
                .complaints
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .expire(watermark);
        }
        let fired = jobs::fire(&mut self.jobs, &self.event_time, &self.metrics, now).await;
        output.records.extend(fired.records);
        for (job, n) in fired.rows {
            *output.rows.entry(job).or_default() += n;
        }
        output.dead_letters.extend(dead_letters);

        self.publish(output).await?;
        self.commit(&next_offsets);

        for (topic, n) in consumed {
            self.metrics
                .records_consumed
                .with_label_values(&[topic.as_str()])
                .inc_by(n);
        }
        self.metrics
            .batch_duration
            .observe(started.elapsed().as_secs_f64());
        Ok(())
    }

    /// Sends job rows and dead letters, and counts them once delivered.
    async fn publish(&self, output: JobOutput) -> Result<(), EngineError> {
        let JobOutput {
            mut records,
            dead_letters,
            rows,
        } = output;
        let mut invalid: BTreeMap<(String, RejectKind), u64> = BTreeMap::new();
        for letter in &dead_letters {
            *invalid
                .entry((letter.topic.clone(), letter.rejection.kind))
                .or_default() += 1;
        }
        records.extend(
            dead_letters
                .into_iter()
                .map(|d: DeadLetter| d.into_record(&self.config.topics.deadletter)),
        );
        if records.is_empty() {
            return Ok(());
        }
        self.sink.send_all(records).await?;
        for ((topic, kind), n) in invalid {
            self.metrics
                .records_invalid
                .with_label_values(&[topic.as_str(), kind.as_str()])
                .inc_by(n);
        }
        for (job, n) in rows {
            self.metrics
                .output_records
                .with_label_values(&[job.as_str()])
                .inc_by(n);
        }
        Ok(())
    }

    /// Feeds the complaints events of a micro-batch to the complaint tables,
    /// before the jobs run, so a resolution sees its opening.
    fn update_complaint_tables(
        &self,
        events: &BTreeMap<SourceKind, Vec<source::SourceBatch>>,
    ) -> Result<(), EngineError> {
        let Some(batches) = events.get(&SourceKind::Complaints) else {
            return Ok(());
        };
        let mut table = self
            .lookups
            .complaints
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for batch in batches {
            table.apply(&batch.rows)?;
        }
        Ok(())
    }

    /// Timer work: idle partitions may move watermarks, early results may be due.
    async fn tick(&mut self) -> Result<(), EngineError> {
        let now = tokio::time::Instant::now();
        self.refresh_assignment(now);
        self.event_time.refresh(now, &self.metrics);
        let output = jobs::fire(&mut self.jobs, &self.event_time, &self.metrics, now).await;
        self.publish(output).await
    }

    fn refresh_assignment(&mut self, now: tokio::time::Instant) {
        if let Ok(assignment) = self.consumer.assignment() {
            let assigned: Vec<(String, i32)> = assignment
                .elements()
                .iter()
                .map(|e| (e.topic().to_owned(), e.partition()))
                .collect();
            self.event_time.assign(&assigned, now);
        }
    }

    /// Applies query file changes: new files start jobs, removed files stop
    /// them, changed files restart them (with empty state). A file that does
    /// not plan is reported, and the job it would replace keeps running.
    async fn reload(&mut self) {
        let changes = self.watcher.changes();
        if changes.is_empty() {
            return;
        }
        let now = tokio::time::Instant::now();
        for change in changes {
            let path = match &change {
                QueryChange::Removed(path) => {
                    self.invalid_queries.remove(path);
                    if let Some(i) = self.jobs.iter().position(|j| &j.path == path) {
                        let removed = self.jobs.remove(i);
                        removed.forget_metrics(&self.metrics);
                        tracing::info!(job = %removed.job.name, "query file removed: job stopped");
                    }
                    continue;
                }
                QueryChange::Added(path) | QueryChange::Changed(path) => path,
            };
            let planned = match QueryFile::read(path) {
                Ok(query) => {
                    Job::plan(query, &self.lookups, &self.config.topics.output_prefix).await
                }
                Err(e) => Err(e),
            };
            let job = match planned {
                Ok(job) => job,
                Err(problem) => {
                    self.invalid_queries.insert(path.clone());
                    tracing::error!(%problem, "query file not loaded; running jobs are unchanged");
                    continue;
                }
            };
            if let Err(e) = ensure_topics(
                &self.config,
                &sink_topics(&self.config, std::slice::from_ref(&job)),
            )
            .await
            {
                self.invalid_queries.insert(path.clone());
                tracing::error!(job = %job.name, error = %e, "cannot create the output topic; job not started");
                continue;
            }
            let existing = self.jobs.iter().position(|j| &j.path == path);
            if let Some(i) = existing {
                self.jobs[i].forget_metrics(&self.metrics);
            }
            let gauge_limit = gauge_limit(&self.config);
            let running = match RunningJob::new(job, path.clone(), &self.metrics, gauge_limit, now)
            {
                Ok(running) => running,
                Err(e) => {
                    self.invalid_queries.insert(path.clone());
                    tracing::error!(path = %path.display(), error = %e, "cannot register the job's gauges; job not started");
                    if let Some(i) = existing {
                        self.jobs.remove(i);
                    }
                    continue;
                }
            };
            self.invalid_queries.remove(path);
            match existing {
                Some(i) => {
                    tracing::info!(job = %running.job.name, "query file changed: job restarted with empty state");
                    self.jobs[i] = running;
                }
                None => {
                    tracing::info!(job = %running.job.name, output = %running.job.output_topic, "query file added: job started");
                    self.jobs.push(running);
                }
            }
        }
        self.metrics.jobs_loaded.set(self.jobs.len() as i64);
        self.metrics
            .query_files_invalid
            .set(self.invalid_queries.len() as i64);
    }

    /// Commits the next offsets of a delivered micro-batch.
    fn commit(&self, next_offsets: &BTreeMap<(String, i32), i64>) {
        if next_offsets.is_empty() {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), offset) in next_offsets {
            if let Err(e) = tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset)) {
                tracing::warn!(topic, partition, error = %e, "cannot record offset to commit");
            }
        }
        if let Err(e) = self.consumer.commit(&tpl, CommitMode::Async) {
            tracing::warn!(error = %e, "offset commit failed; the batch may be read again after a restart");
        }
    }
}

/// Most `@gauge` series one job may export.
fn gauge_limit(config: &Config) -> usize {
    usize::try_from(config.engine.gauge_series_limit).unwrap_or(0)
}

fn millis(ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}
