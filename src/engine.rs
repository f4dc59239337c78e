//! The engine: wires source → decode → jobs → sink, and drains on shutdown.
//!
//! Each micro-batch is processed to the end before the next one starts:
//! customers changes are applied, every job that reads a source in the batch
//! runs, outputs and dead letters are published, and only once Kafka has
//! acknowledged all of them are the batch's offsets committed.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
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
use crate::lookup::CustomerTable;
use crate::metrics::Metrics;
use crate::query::QueryError;
use crate::schema::SourceKind;
use crate::sink::{OutRecord, RowEncoder, Sink, SinkError};
use crate::source::{self, Batcher, MicroBatch, SourceConsumer};

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
}

/// Runs the engine until `shutdown` resolves, then drains and returns.
/// `on_listening` receives the bound HTTP address (useful with port 0).
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()>,
    on_listening: impl FnOnce(SocketAddr),
) -> Result<(), EngineError> {
    let metrics = Arc::new(Metrics::new()?);
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

struct PlannedJob {
    job: Job,
    encoder: RowEncoder,
}

struct Engine {
    config: Config,
    metrics: Arc<Metrics>,
    customers: Arc<Mutex<CustomerTable>>,
    jobs: Vec<PlannedJob>,
    sink: Sink,
    consumer: SourceConsumer,
}

impl Engine {
    async fn start(
        config: Config,
        metrics: Arc<Metrics>,
        health: Arc<Health>,
    ) -> Result<Engine, EngineError> {
        let customers = Arc::new(Mutex::new(CustomerTable::default()));
        let (jobs, problems) = job::load_all(
            &config.engine.queries_dir,
            &customers,
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
        let jobs: Vec<PlannedJob> = jobs
            .into_iter()
            .map(|job| {
                metrics
                    .output_records
                    .with_label_values(&[job.name.as_str()]);
                metrics.job_errors.with_label_values(&[job.name.as_str()]);
                PlannedJob {
                    encoder: RowEncoder {
                        job: job.name.clone(),
                        topic: job.output_topic.clone(),
                        key_columns: job.key_columns.clone(),
                    },
                    job,
                }
            })
            .collect();
        metrics.jobs_loaded.set(jobs.len() as i64);
        health.set_jobs_loaded(true);
        let consumer =
            source::subscribe(&config, health, Arc::clone(&metrics)).map_err(|source| {
                EngineError::Kafka {
                    context: "creating the consumer",
                    source,
                }
            })?;
        Ok(Engine {
            config,
            metrics,
            customers,
            jobs,
            sink,
            consumer,
        })
    }

    async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), EngineError> {
        let max_rows = usize::try_from(self.config.engine.batch_max_rows).unwrap_or(1);
        let linger = millis(self.config.engine.batch_linger_ms);
        let mut batcher = Batcher::new(self.config.topics.clone());
        let mut deadline: Option<tokio::time::Instant> = None;
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
    async fn drain(self, mut batcher: Batcher) -> Result<(), EngineError> {
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
    async fn process(&self, batch: MicroBatch) -> Result<(), EngineError> {
        let started = Instant::now();
        let MicroBatch {
            events,
            customer_changes,
            dead_letters,
            consumed,
            next_offsets,
        } = batch;
        if !customer_changes.is_empty() {
            self.customers
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .apply(customer_changes);
        }

        let emitted_at = chrono::Utc::now().timestamp_millis();
        let mut records: Vec<OutRecord> = Vec::new();
        let mut per_job: Vec<(&str, u64)> = Vec::new();
        for planned in &self.jobs {
            if !planned
                .job
                .sources()
                .iter()
                .any(|kind| events.contains_key(kind))
            {
                continue;
            }
            let encoded = match planned.job.run(&events).await {
                Ok(rows) => planned
                    .encoder
                    .encode(&rows, emitted_at)
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            match encoded {
                Ok(rows) => {
                    per_job.push((planned.job.name.as_str(), rows.len() as u64));
                    records.extend(rows);
                }
                Err(error) => {
                    self.metrics
                        .job_errors
                        .with_label_values(&[planned.job.name.as_str()])
                        .inc();
                    tracing::error!(job = %planned.job.name, %error, "job failed on a micro-batch; its rows for this batch are skipped");
                }
            }
        }

        let mut invalid: BTreeMap<(String, RejectKind), u64> = BTreeMap::new();
        for letter in &dead_letters {
            *invalid
                .entry((letter.topic.clone(), letter.rejection.kind))
                .or_default() += 1;
        }
        records.extend(
            dead_letters
                .into_iter()
                .map(|d| d.into_record(&self.config.topics.deadletter)),
        );

        self.sink.send_all(records).await?;
        self.commit(&next_offsets);

        for (topic, n) in consumed {
            self.metrics
                .records_consumed
                .with_label_values(&[topic.as_str()])
                .inc_by(n);
        }
        for ((topic, kind), n) in invalid {
            self.metrics
                .records_invalid
                .with_label_values(&[topic.as_str(), kind.as_str()])
                .inc_by(n);
        }
        for (job, n) in per_job {
            self.metrics
                .output_records
                .with_label_values(&[job])
                .inc_by(n);
        }
        self.metrics
            .batch_duration
            .observe(started.elapsed().as_secs_f64());
        Ok(())
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

fn millis(ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}
