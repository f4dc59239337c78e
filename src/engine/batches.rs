//! The engine's loop: micro-batches of consumed records, timer ticks,
//! epoch commits, query reloads, and the drain at shutdown.
//!
//! Consumed records are decoded on threads of their own, one per core, by
//! partition ([`DecodeStage`]), which hand micro-batches back while the
//! engine runs the previous one. A micro-batch is processed to the end
//! before the next one starts:
//! table-source changes are applied, kept tables updated, every job that
//! reads a source of the batch runs (windowed jobs add the batch to their
//! state), the watermarks advance and windowed jobs fire the windows they
//! closed (the jobs run side by side, each on a task of its own); rows and dead letters are sent in the open transaction. A 200 ms
//! timer also fires windows when partitions go idle and emits early
//! results; every `engine.commit_interval_ms` the epoch commits.

use std::collections::BTreeSet;
use std::pin::Pin;
use std::time::Instant;

use futures::FutureExt;
use rdkafka::error::KafkaError;

use super::backfill::Backfill;
use super::{BackfillRequest, Core, Engine, EngineError, TICK, millis};

/// How often the event topics' partition counts are looked at, for
/// partitions this instance owns that it does not read yet.
const PARTITIONS_EVERY: std::time::Duration = std::time::Duration::from_secs(10);
use crate::sink::transaction::TxnFailure;
use crate::source::{Admission, Batcher, DecodeStage, MicroBatch};

/// How soon a query file absent on one look is looked for again.
const RECHECK_REMOVED: std::time::Duration = std::time::Duration::from_secs(1);

/// How long a clean stop waits for its consumers to close.
const CLOSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

impl Engine {
    /// Runs until `shutdown` resolves (then drains) or Kafka fails. A
    /// failed engine unregisters its jobs' gauges, for the next one.
    pub(super) async fn run(
        mut self,
        requests: &mut tokio::sync::mpsc::Receiver<BackfillRequest>,
        shutdown: Pin<&mut impl Future<Output = ()>>,
        lessons: &mut super::Lessons,
    ) -> Result<(), EngineError> {
        let mut result = self.run_until_stopped(requests, shutdown).await;
        // Once fenced, whatever failed first (often records purged by the
        // fenced producer) is that fencing: retrying would fence the
        // instance that took over.
        let fenced = || {
            self.inputs
                .fenced()
                .or_else(|| self.sink.fenced_by_fatal_error())
        };
        if let (Err(_), Some(error)) = (&result, fenced()) {
            result = Err(EngineError::Transaction(TxnFailure::Fenced(error)));
        }
        if result.is_err() {
            for job in self.all_jobs() {
                job.forget_metrics(&self.metrics);
            }
            lessons.queries = Some(
                self.all_jobs()
                    .map(|j| j.job.query.clone())
                    .chain(self.jobs.stopped().iter().map(|s| s.job.query.clone()))
                    .collect(),
            );
            self.metrics.backfill_lag.reset();
            return result;
        }
        // A clean stop closes its consumers before saying it stopped.
        self.inputs.close_within(CLOSE_TIMEOUT);
        result
    }

    async fn run_until_stopped(
        &mut self,
        requests: &mut tokio::sync::mpsc::Receiver<BackfillRequest>,
        mut shutdown: Pin<&mut impl Future<Output = ()>>,
    ) -> Result<(), EngineError> {
        let max_rows = usize::try_from(self.config.engine.batch_max_rows).unwrap_or(1);
        let linger = millis(self.config.engine.batch_linger_ms);
        let threads = std::thread::available_parallelism().map_or(1, usize::from);
        let max_bytes = self.config.batch_max_bytes();
        let admission = Admission::new(&self.config);
        let mut stage = DecodeStage::start(
            self.config.topics.clone(),
            self.config.declared,
            admission.clone(),
            threads,
        )
        .map_err(|source| EngineError::Thread { source })?;
        let mut lookup_batcher =
            Batcher::new(self.config.topics.clone(), self.config.declared, admission);
        let mut deadline: Option<tokio::time::Instant> = None;
        let mut ticker = tokio::time::interval(TICK);
        let mut partitions_timer = tokio::time::interval_at(
            tokio::time::Instant::now() + PARTITIONS_EVERY,
            PARTITIONS_EVERY,
        );
        partitions_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let commit_every = millis(self.config.engine.commit_interval_ms);
        let mut commit_timer =
            tokio::time::interval_at(tokio::time::Instant::now() + commit_every, commit_every);
        commit_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let reload_every = (self.config.engine.reload_interval_ms > 0)
            .then(|| millis(self.config.engine.reload_interval_ms));
        let mut next_reload = reload_every.map(|every| tokio::time::Instant::now() + every);
        let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .map_err(|source| EngineError::Signal { source })?;
        let (prepared_tx, mut prepared_rx) = tokio::sync::mpsc::channel(4);
        let pending = self.epoch.take_first_output();
        self.publish(pending).await?;
        loop {
            if let Some(error) = self.inputs.fenced() {
                return Err(EngineError::Transaction(TxnFailure::Fenced(error)));
            }
            if self.inputs.lost() {
                return Err(EngineError::BrokersLost);
            }
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
                    stage.cut();
                    deadline = None;
                }
                // Before the records: a steady stream of micro-batches
                // must not hold the epoch open past its interval.
                _ = commit_timer.tick() => self.commit().await?,
                room = stage.room(), if stage.has_chunk() => stage.hand_over(room),
                batch = stage.next_batch() => {
                    self.process(batch?).await?;
                    if self.backfills.live_batch_ran() {
                        self.backfill_step().await?;
                    }
                }
                _ = hangup.recv() => {
                    tracing::info!("SIGHUP: reloading queries");
                    self.reload().await?;
                    next_reload = self.next_reload(reload_every);
                }
                Some(request) = requests.recv() => {
                    // One whose asker gave up (the engine was restarting)
                    // was answered "try again": it must not run later.
                    if !request.reply.is_closed() {
                        self.take_backfill_request(request, prepared_tx.clone());
                    }
                }
                Some(prepared) = prepared_rx.recv() => self.finish_backfill_request(prepared),
                _ = partitions_timer.tick() => self.follow_partitions().await?,
                _ = ticker.tick() => {
                    self.follow_tables(&mut lookup_batcher).await?;
                    if self.tick().await? {
                        // Early results are for now: commit them now, and
                        // the next epoch a whole interval later.
                        self.commit().await?;
                        commit_timer.reset();
                    }
                    if next_reload.is_some_and(|at| tokio::time::Instant::now() >= at) {
                        self.reload().await?;
                        next_reload = self.next_reload(reload_every);
                    }
                }
                shuffled = self.inputs.next_shuffled() => self.take_shuffled(shuffled).await?,
                received = self.inputs.recv(), if !stage.has_chunk() => {
                    // Take what the consumer already holds without going
                    // round the loop for every record.
                    let mut next = Some(received);
                    let full = |stage: &DecodeStage| {
                        stage.open_len() >= max_rows || stage.open_bytes() >= max_bytes
                    };
                    while let Some(received) = next.take() {
                        receive(received, &mut stage)?;
                        if stage.has_chunk() || full(&stage) {
                            break;
                        }
                        next = self.inputs.recv().now_or_never();
                    }
                    if full(&stage) {
                        stage.cut();
                        deadline = None;
                    } else if deadline.is_none() && stage.open_len() > 0 {
                        deadline = Some(tokio::time::Instant::now() + linger);
                    }
                }
                // Last: history is read only when nothing live is waiting.
                () = tokio::time::sleep_until(self.backfills.next_step()),
                    if !self.backfills.is_empty() =>
                {
                    self.backfill_step().await?;
                }
            }
        }
        self.drain(stage).await
    }

    /// When the queries directory is looked at next: after the reload
    /// interval, or sooner when a file was absent on the last look (a
    /// second look decides whether it was removed, SIGHUP-only reloads
    /// included).
    fn next_reload(&self, every: Option<std::time::Duration>) -> Option<tokio::time::Instant> {
        let now = tokio::time::Instant::now();
        let recheck = self
            .watcher
            .removal_pending()
            .then(|| now + RECHECK_REMOVED);
        match (every.map(|e| now + e), recheck) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Finishes the micro-batches read so far and commits the last epoch,
    /// within the drain time (what the memory gate holds is left: its
    /// offsets are not committed, so the next start reads it again). A
    /// failure here loses nothing (the epoch is replayed on restart); the
    /// engine stops either way, and says it failed (exit code 1).
    async fn drain(&mut self, mut stage: DecodeStage) -> Result<(), EngineError> {
        let drain = millis(self.config.engine.shutdown_drain_ms);
        tracing::info!(
            pending = stage.open_len(),
            drain_ms = drain.as_millis() as u64,
            "stopping: draining"
        );
        let finished = tokio::time::timeout(drain, async {
            stage.cut();
            while stage.busy() {
                tokio::select! {
                    room = stage.room(), if stage.has_chunk() => stage.hand_over(room),
                    batch = stage.next_batch() => self.process(batch?).await?,
                }
            }
            self.commit().await
        })
        .await;
        self.inputs.unassign();
        match finished {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                tracing::error!(
                    error = %e,
                    "the last epoch could not be committed; it will be replayed on restart"
                );
                Err(EngineError::Drain(format!(
                    "the last epoch could not be committed (it will be replayed on restart): {e}"
                )))
            }
            Err(_) => {
                tracing::error!(
                    "drain time elapsed; the last epoch is aborted and will be replayed on restart"
                );
                Err(EngineError::Drain(format!(
                    "engine.shutdown_drain_ms ({} ms) elapsed before the last epoch committed; it will be replayed on restart",
                    drain.as_millis()
                )))
            }
        }
    }

    /// Runs one micro-batch, less the parts the memory gate holds, and
    /// then whatever the gate released: the outputs join the open epoch.
    pub(super) async fn process(&mut self, batch: MicroBatch) -> Result<(), EngineError> {
        self.process_one(batch).await?;
        self.run_released().await
    }

    /// Runs the parts the memory gate held and has released, oldest first.
    async fn run_released(&mut self) -> Result<(), EngineError> {
        loop {
            let released = self.memory.take_released();
            if released.is_empty() {
                return Ok(());
            }
            for batch in released {
                self.process_one(batch).await?;
            }
        }
    }

    /// Runs one micro-batch, less the parts held for paused partitions.
    async fn process_one(&mut self, mut batch: MicroBatch) -> Result<(), EngineError> {
        let started = Instant::now();
        self.memory.hold(&mut batch);
        let MicroBatch {
            events,
            table_changes,
            dead_letters,
            consumed,
            next_offsets,
            lookup_offsets,
        } = batch;
        for (kind, batches) in &events {
            for b in batches {
                tracing::trace!(
                    source = kind.name(),
                    partition = b.partition,
                    first = b.raw.first().map(|r| r.offset),
                    last = b.raw.last().map(|r| r.offset),
                    rows = b.rows.num_rows(),
                    "micro-batch part"
                );
            }
        }
        let now = tokio::time::Instant::now();
        self.refresh_assignment(now);
        let mut output = self.core().micro_batch(events, table_changes, now).await?;
        let early = output.early;
        output.dead_letters.extend(dead_letters);

        self.publish(output).await?;
        self.inputs.processed(&next_offsets, lookup_offsets);
        self.epoch.advance(next_offsets);
        self.check_memory();
        if early {
            // Early results are for now: commit them now.
            self.commit().await?;
        }

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

    /// Timer work: idle partitions may move watermarks, early results may
    /// be due, state may have shrunk under its limit.
    /// Returns whether early results were published: the caller commits
    /// them at once rather than at the next commit interval.
    async fn tick(&mut self) -> Result<bool, EngineError> {
        let now = tokio::time::Instant::now();
        self.refresh_assignment(now);
        let output = self.core().tick(now).await?;
        let early = output.early;
        self.publish(output).await?;
        self.check_memory();
        self.run_released().await?;
        Ok(early)
    }

    /// The jobs, tables and watermarks, for one step.
    fn core(&mut self) -> Core<'_> {
        Core {
            jobs: self.jobs.live_for_step(),
            lookups: &self.lookups,
            event_time: &mut self.event_time,
            metrics: &self.metrics,
            history: false,
        }
    }

    fn refresh_assignment(&mut self, now: tokio::time::Instant) {
        if let Ok(assigned) = self.inputs.assigned() {
            let assigned: Vec<(String, i32)> = assigned.into_iter().collect();
            self.event_time.assign(&assigned, now);
        }
        let mut behind = self.inputs.behind();
        behind.extend(self.memory.held_partitions().cloned());
        self.event_time.keep_active(&behind, now);
    }
}

/// Hands a consumed record to the decode stage; a consumer error is
/// logged, or stops the engine when it is fatal.
fn receive(
    received: Result<rdkafka::message::BorrowedMessage<'_>, KafkaError>,
    stage: &mut DecodeStage,
) -> Result<(), EngineError> {
    match received {
        Ok(message) => stage.push(&message),
        Err(error @ KafkaError::MessageConsumptionFatal(_)) => {
            return Err(EngineError::kafka("consuming")(error));
        }
        Err(e) => tracing::warn!(error = %e, "consumer error"),
    }
    Ok(())
}

impl Engine {
    /// Reads the event partitions this instance owns that appeared since
    /// it last looked (a topic created, or given more partitions), and the
    /// repartition partitions it owns. A failure to look at the event
    /// topics is logged: the next look tries again.
    pub(super) async fn follow_partitions(&mut self) -> Result<(), EngineError> {
        let topics = self.config.topics.of(self.config.declared.streams());
        match crate::admin::partition_counts(&self.config, &topics).await {
            Ok(counts) => {
                let backfilling = self.backfills.iter_mut().map(Backfill::job_mut);
                super::shuffling::count_source_partitions(
                    &self.config,
                    self.jobs.live_for_step().iter_mut().chain(backfilling),
                    &counts,
                );
                self.inputs
                    .assign_owned(self.config.cluster(), &counts, &self.metrics)
                    .map_err(EngineError::kafka("assigning the event partitions"))?;
                self.follow_repartition_topics().await
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the event topics' partition counts");
                Ok(())
            }
        }
    }
}

impl Engine {
    /// Takes what arrived on the table sources' topics and applies it.
    pub(super) async fn follow_tables(&mut self, batcher: &mut Batcher) -> Result<(), EngineError> {
        if self.inputs.read_tables(batcher, &self.metrics) > 0 {
            let mut batch = batcher.take()?;
            if self.config.cluster().index() != 0 {
                // Every instance reads the tables whole; instance 0 alone
                // sends their invalid records to the dead-letter topic.
                batch.dead_letters.clear();
            }
            self.process(batch).await?;
        }
        Ok(())
    }
}

impl Engine {
    /// Measures window state and pauses or resumes consumption.
    pub(super) fn check_memory(&mut self) {
        // A backfill's state counts, but it is not paused: it frees its
        // state only by reading on, so that its windows close. The tables
        // kept from streams count: they shrink as windows close. Table
        // sources have a limit of their own. A stopped job's state is
        // exported but does not count: it cannot shrink until its query is
        // fixed, and pausing for it would stall every other job.
        let tables = self.lookups.memory();
        for (table, bytes) in &tables {
            self.metrics
                .table_memory
                .with_label_values(&[table.as_str()])
                .set(i64::try_from(*bytes).unwrap_or(i64::MAX));
        }
        let kept: Vec<(String, u64)> = tables
            .into_iter()
            .filter(|(name, _)| {
                self.config
                    .declared
                    .streams()
                    .filter_map(crate::schema::Source::keep)
                    .any(|k| {
                        k.latest.as_deref() == Some(name) || k.history.as_deref() == Some(name)
                    })
            })
            .map(|(name, bytes)| (name, bytes as u64))
            .collect();
        let window_bytes = |j: &crate::job::Job| {
            j.windowed()
                .map(|w| (j.name.clone(), w.state_bytes() as u64))
        };
        let sizes: Vec<(String, u64)> = self
            .all_jobs()
            .filter_map(|j| window_bytes(&j.job))
            .chain(kept)
            .collect();
        let total: u64 = sizes.iter().map(|(_, b)| b).sum();
        let stopped: u64 = self
            .jobs
            .stopped()
            .iter()
            .filter_map(|s| window_bytes(&s.job))
            .map(|(_, b)| b)
            .sum();
        self.metrics
            .state_memory
            .set(i64::try_from(total + stopped).unwrap_or(i64::MAX));
        let assigned = match self.inputs.assigned() {
            Ok(assigned) => assigned,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the assignment to pause or resume it");
                return;
            }
        };
        self.memory.update(total, &sizes, &self.metrics);
        let target: BTreeSet<(String, i32)> = if !self.memory.is_paused() {
            BTreeSet::new()
        } else {
            let named = |(kind, p)| (self.event_time.topic(kind).to_owned(), p);
            let ahead: BTreeSet<(String, i32)> =
                self.event_time.ahead().into_iter().map(named).collect();
            if ahead.is_empty() {
                // Every partition that has delivered is at its source's
                // watermark: they all pause. One that has not delivered yet
                // never does: its source's watermark waits for it.
                let delivered: BTreeSet<(String, i32)> = self
                    .event_time
                    .partition_times()
                    .into_keys()
                    .map(named)
                    .collect();
                assigned.intersection(&delivered).cloned().collect()
            } else {
                ahead
            }
        };
        let (resume, pause) = self.memory.repause(target);
        self.inputs.pause_and_resume(&pause, &resume);
    }
}
