//! Starting the engine: plan the jobs, fence the previous instance, restore
//! state, read the lookup tables to their end, assign the owned partitions.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, PoisonError};
use std::time::Instant;

use super::restore::{Restore, Restorer};
use super::stopped;
use super::{Engine, EngineError, EventTime, JobOutput, MemoryGate, QueryWatcher, RunningJob};
use crate::admin::{ensure_changelog, ensure_topics, partition_counts, sink_topics, topic_limits};
use crate::brokers::BrokerWatch;
use crate::config::Config;
use crate::health::Health;
use crate::job::{self, Job};
use crate::lookup::Lookups;
use crate::metrics::Metrics;
use crate::sink::{Limits, Sink};
use crate::source::{self, Admission, Batcher, LookupConsumer};
use crate::state::reader;
use crate::state::writer::ChangelogWriter;

impl Engine {
    /// Starts the engine; `reason` (`start` or `recovery`) labels the
    /// restore in the metrics.
    pub(super) async fn start(
        config: &Config,
        metrics: &Arc<Metrics>,
        health: &Arc<Health>,
        reason: &'static str,
        lessons: &mut super::Lessons,
    ) -> Result<Engine, EngineError> {
        health.set_blocker(Some("loading queries".to_owned()));
        health.set_tables_failing(None);
        let lookups = Lookups::new(config.declared);
        let views_dir = config.views_dir();
        let mut watcher = QueryWatcher::new(&config.engine.queries_dir, &views_dir);
        let (mut jobs, mut problems) = job::load_all(
            &config.engine.queries_dir,
            &views_dir,
            &lookups,
            &config.topics.output_prefix,
            Some(config.job_memory_limit()),
        )
        .await;
        if let Some(ran) = &lessons.queries {
            // A recovery start: a job the engine ran whose file does not
            // plan now, or cannot be read, listed or found, runs its last
            // query; the watcher looks at its file again at once, so that an
            // edit or a removal applies as it would have without the
            // restart. Files that do not plan are reported, not fatal.
            let mut from_before = BTreeSet::new();
            for query in ran {
                if jobs.iter().any(|j| j.query.path == query.path) {
                    continue;
                }
                match Job::plan_bounded(
                    query.clone(),
                    &lookups,
                    &config.topics.output_prefix,
                    Some(config.job_memory_limit()),
                )
                .await
                {
                    Ok(job) => {
                        tracing::warn!(job = %job.name, path = %query.path.display(), "the query file does not plan, or cannot be read, now: the job runs the query it ran before the restart");
                        watcher.look_again(&query.path);
                        from_before.insert(query.path.clone());
                        jobs.push(job);
                    }
                    Err(e) => problems.push(e),
                }
            }
            for problem in problems.drain(..) {
                if !from_before.contains(&problem.file) {
                    tracing::error!(%problem, "query file not loaded");
                }
                watcher.mark_invalid(&problem.file);
            }
            // A file added since must not take a running job's output.
            let (ran_jobs, new_jobs): (Vec<Job>, Vec<Job>) = jobs
                .into_iter()
                .partition(|j| ran.iter().any(|q| q.path == j.query.path));
            let refused: BTreeSet<usize> =
                job::output_problems(&new_jobs, &ran_jobs.iter().collect::<Vec<_>>(), config)
                    .into_iter()
                    .map(|(i, problem)| {
                        tracing::error!(%problem, "query file not loaded");
                        watcher.mark_invalid(&problem.file);
                        i
                    })
                    .collect();
            jobs = ran_jobs;
            jobs.extend(
                new_jobs
                    .into_iter()
                    .enumerate()
                    .filter(|(i, _)| !refused.contains(i))
                    .map(|(_, j)| j),
            );
        }
        problems.extend(
            job::output_problems(&jobs, &[], config)
                .into_iter()
                .map(|(_, problem)| problem),
        );
        if !problems.is_empty() {
            return Err(EngineError::Queries(problems));
        }
        for job in &mut jobs {
            job.place(config.cluster());
            tracing::info!(job = %job.name, output = %job.output_topic, sources = ?job.sources(), "job loaded");
        }

        health.set_blocker(Some(format!(
            "connecting to Kafka at {}",
            config.kafka.brokers
        )));
        partition_counts(config, &[])
            .await
            .map_err(EngineError::kafka("connecting"))?;
        let watch = BrokerWatch::new(Arc::clone(health));
        // The producer comes after the restore (its id depends on the
        // previous one); a cluster without transactions is refused now.
        crate::sink::transaction::check_supported(
            &config.client_config(),
            &format!("{}-0", config.transactional_id_prefix()),
        )
        .await?;
        ensure_topics(config, &sink_topics(config, &jobs))
            .await
            .map_err(EngineError::kafka("creating output topics"))?;
        let partitions = ensure_changelog(config)
            .await
            .map_err(EngineError::kafka("creating the changelog topic"))?;
        let cluster = config.cluster();
        super::members::check_changelog_width(config, partitions).await?;
        // What the topics written take, once they all exist.
        let mut written: Vec<String> = sink_topics(config, &jobs)
            .into_iter()
            .map(|t| t.name)
            .collect();
        written.push(config.changelog_topic());
        let described = topic_limits(config, &written)
            .await
            .map_err(EngineError::kafka("describing the output topics"))?;
        let limits = Limits::new(described, &lessons.learned);

        health.set_blocker(Some("restoring state from the changelog".to_owned()));
        metrics.restore_in_progress.set(1);
        let began = Instant::now();
        let topic = config.changelog_topic();
        let restorer = Restorer::new(
            jobs,
            EventTime::new(config),
            lookups.clone(),
            ChangelogWriter::new(&topic, partitions)
                .with_record_limit(limits.record_bytes(&topic))
                .owned_by(cluster),
            config.topics.clone(),
        );
        let (restorer, replayed) = {
            let client = config.client_config();
            let group = config.kafka.group_id.clone();
            let topic = topic.clone();
            let owned = cluster.owned(partitions);
            let span = tracing::info_span!("restore", changelog = %topic, partitions = ?owned);
            tokio::task::spawn_blocking(move || {
                span.in_scope(|| {
                    let mut restorer = restorer;
                    reader::replay(&client, &group, &topic, &owned, |change| {
                        restorer.apply(change)
                    })
                    .map(|replayed| (restorer, replayed))
                })
            })
            .await
            .map_err(|_| {
                EngineError::kafka("reading the changelog")(rdkafka::error::KafkaError::Canceled)
            })??
        };
        let (read_records, read_bytes) = (replayed.records, replayed.bytes);
        let restored_to = replayed.ends;

        let mut batcher = Batcher::new(
            config.topics.clone(),
            config.declared,
            Admission::new(config),
        );
        let table_topics = config.topics.of(config.declared.tables());
        let lookup = LookupConsumer::read_to_end(config, &table_topics, &mut batcher)
            .await
            .map_err(EngineError::kafka("reading the table sources' topics"))?;
        let bootstrap = batcher.take()?;
        for (topic, n) in &bootstrap.consumed {
            metrics
                .records_consumed
                .with_label_values(&[topic.as_str()])
                .inc_by(*n);
        }
        lookups.set_table_limit(
            usize::try_from(config.table_memory_limit_bytes()).unwrap_or(usize::MAX),
        );
        let refused = crate::source::apply_table_changes(&lookups, bootstrap.table_changes);
        metrics
            .table_memory_limit
            .set(i64::try_from(config.table_memory_limit_bytes()).unwrap_or(i64::MAX));

        for source in config.declared.all() {
            metrics.init_topic(config.topics.source_topic(source));
        }
        for sink in [config.topics.deadletter.as_str(), topic.as_str()] {
            metrics.produce_errors.with_label_values(&[sink]);
        }
        let (jobs, event_time, mut changelog, restored) = restorer.finish();
        let Restore {
            stale,
            lookup_positions,
            mut backfills,
            members,
            mut shuffle_marks,
        } = restored;
        super::members::check_not_superseded(config, &members)?;
        let transactional_id =
            super::members::next_transactional_id(&config.transactional_id_prefix(), &members);
        let sink = Sink::new(
            config,
            &transactional_id,
            limits,
            Arc::clone(metrics),
            watch.clone(),
        )
        .map_err(EngineError::kafka("creating the producer"))?;
        sink.init().await?;
        tracing::info!(%transactional_id, "transactions initialised");
        super::members::take_over(
            config,
            &sink,
            &mut changelog,
            &members,
            &transactional_id,
            &restored_to,
        )
        .await?;
        changelog.restore_read(read_bytes as usize);
        // Invalid table records dead-lettered before the restart are not
        // sent again.
        let mut pending_output = JobOutput {
            dead_letters: bootstrap
                .dead_letters
                .into_iter()
                .chain(refused)
                // Every instance reads the tables; instance 0 dead-letters.
                .filter(|_| cluster.index() == 0)
                .filter(|d| {
                    lookup_positions
                        .get(&(d.topic.clone(), d.partition))
                        .is_none_or(|&next| d.offset >= next)
                })
                .collect(),
            ..JobOutput::default()
        };
        let mut positions = lookup_positions;
        positions.extend(bootstrap.lookup_offsets);

        let seconds = began.elapsed().as_secs_f64();
        metrics.restore_records.set(read_records as i64);
        metrics.restore_bytes.set(read_bytes as i64);
        metrics.restore_duration.set(seconds);
        metrics.restores.with_label_values(&[reason]).inc();
        metrics.restore_in_progress.set(0);
        let table_rows: BTreeMap<&str, usize> = config
            .declared
            .tables()
            .filter_map(|t| {
                let rows = lookups
                    .table(t)?
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .len();
                Some((t.name(), rows))
            })
            .collect();
        tracing::info!(
            records = read_records,
            bytes = read_bytes,
            live_state_bytes = changelog.live_bytes(),
            ?table_rows,
            seconds,
            "state restored"
        );

        // Jobs that panicked in this process stay stopped, their state kept.
        let (stopped_jobs, jobs): (Vec<_>, Vec<_>) = jobs
            .into_iter()
            .partition(|j| lessons.is_stopped(&j.name, &j.fingerprint).is_some());
        let stopped = stopped::stop(config, stopped_jobs, &mut backfills, &event_time, metrics)
            .await
            .map_err(EngineError::kafka("reading where a stopped job stopped"))?;
        for panic in lessons.unreported.drain(..) {
            pending_output
                .failures
                .push(stopped::dead_letter(&panic, &stopped));
        }
        let streams = source::Reported::Topics(config.topics.of(config.declared.streams()));
        let consumer = source::consumer(config, streams, Arc::clone(metrics), watch.clone())
            .map_err(EngineError::kafka("creating the consumer"))?;
        let repartition = source::Reported::Repartition;
        let shuffled = source::consumer(config, repartition, Arc::clone(metrics), watch.clone())
            .map_err(EngineError::kafka(
                "creating the repartition topics' consumer",
            ))?;
        // Gauges are registered last: a start that fails earlier leaves
        // nothing registered for the next attempt to collide with.
        let now = tokio::time::Instant::now();
        let dir = config.engine.queries_dir.clone();
        let gauge_limit = super::gauge_limit(config);
        let mut jobs: Vec<RunningJob> = jobs
            .into_iter()
            .map(|job| {
                let path = dir.join(format!("{}.sql", job.name));
                RunningJob::new(job, path, metrics, gauge_limit, now)
            })
            .collect::<Result<_, _>>()?;
        super::shuffling::route(config, &mut jobs, partitions, &mut shuffle_marks).await?;
        metrics.jobs_loaded.set(jobs.len() as i64);
        let live_times = event_time.partition_times();
        let (jobs, backfills) =
            super::backfill::resume(config, metrics, jobs, backfills, &live_times).await?;
        metrics
            .query_files_invalid
            .set(watcher.invalid_count() as i64);
        metrics
            .state_memory_limit
            .set(i64::try_from(config.state_memory_limit_bytes()).unwrap_or(i64::MAX));
        health.set_blocker(None);
        let mut engine = Engine {
            event_time,
            config: config.clone(),
            metrics: Arc::clone(metrics),
            lookups,
            jobs: super::job_set::JobSet::new(jobs, stopped),
            backfills: super::backfill::Backfills::new(backfills),
            watcher,
            sink,
            transactional_id,
            inputs: super::inputs::Inputs::new(
                consumer,
                shuffled,
                lookup,
                watch,
                Arc::clone(health),
                positions,
            ),
            changelog,
            epoch: super::epoch::Epoch::first(stale, pending_output),
            memory: MemoryGate::new(config.state_memory_limit_bytes()),
        };
        engine.follow_partitions().await?;
        Ok(engine)
    }
}
