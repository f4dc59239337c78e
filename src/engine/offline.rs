//! Jobs run on files with no broker, for `cxpulse test`: the engine's own
//! steps ([`Core`]) on a test case's records, on a clock of the run's own.
//!
//! Table-source records are applied first, in one micro-batch. Stream
//! records then arrive one per micro-batch, in the order given, one
//! millisecond apart, so the watermarks move (and events turn late)
//! exactly as the order says. At the end every partition goes idle, then
//! the input ends: the watermarks jump past every window, so every window
//! closes. Early results (`@emit every`) are not emitted: their timing
//! depends on the wall clock.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::event_time::EventTime;
use super::jobs::{JobOutput, RunningJob};
use super::step::Core;
use super::{EngineError, gauge_limit};
use crate::config::Config;
use crate::job::Job;
use crate::lookup::Lookups;
use crate::metrics::Metrics;
use crate::sink::{DeadLetter, JobFailure, OutRecord};
use crate::source::{Admission, Batcher, Consumed};

/// What the jobs published and rejected over a whole offline run.
#[derive(Debug, Default)]
pub struct OfflineOutput {
    /// Result records, in the order they were published.
    pub records: Vec<OutRecord>,
    /// Records rejected by the decoder or by a job.
    pub dead_letters: Vec<DeadLetter>,
    /// Failures of jobs that hold no record (windows that did not fire).
    pub failures: Vec<JobFailure>,
}

impl OfflineOutput {
    fn add(&mut self, output: JobOutput) {
        self.records.extend(output.records);
        self.dead_letters.extend(output.dead_letters);
        self.failures.extend(output.failures);
    }
}

/// Runs `jobs` (planned over `lookups`) on `tables` (table-source records)
/// then `events` (stream records, in arrival order).
pub async fn run_offline(
    config: &Config,
    lookups: &Lookups,
    jobs: Vec<(Job, PathBuf)>,
    tables: Vec<Consumed>,
    events: Vec<Consumed>,
) -> Result<OfflineOutput, EngineError> {
    let metrics = Arc::new(Metrics::new()?);
    let start = Instant::now();
    let mut jobs = jobs
        .into_iter()
        .map(|(job, path)| {
            let mut running = RunningJob::new(job, path, &metrics, gauge_limit(config), start)?;
            running.stop_early_results();
            Ok(running)
        })
        .collect::<Result<Vec<_>, prometheus::Error>>()?;
    let mut event_time = EventTime::new(config);
    let idle = event_time.longest_idle_timeout();
    let partition_of =
        |c: &Consumed| (config.topics.source_topic(c.source).to_owned(), c.partition);
    // Records still to come per partition: such a partition is slow, not
    // idle, however long the run.
    let mut ahead: BTreeMap<(String, i32), usize> = BTreeMap::new();
    for c in &events {
        *ahead.entry(partition_of(c)).or_default() += 1;
    }
    // Partitions that will deliver are assigned when the run starts; the
    // other sources' partition 0 has been silent for an idle timeout, so
    // that a source without records holds no job back.
    let silent: Vec<(String, i32)> = config
        .declared
        .streams()
        .map(|s| (config.topics.source_topic(s).to_owned(), 0))
        .filter(|at| !ahead.contains_key(at))
        .collect();
    event_time.assign(&silent, start);
    let mut now = start + idle + Duration::from_secs(1);
    let assigned: Vec<(String, i32)> = silent.into_iter().chain(ahead.keys().cloned()).collect();
    event_time.assign(&assigned, now);
    let mut core = Core {
        jobs: &mut jobs,
        lookups,
        event_time: &mut event_time,
        metrics: &metrics,
        history: false,
    };
    let mut out = OfflineOutput::default();
    let mut batcher = Batcher::new(
        config.topics.clone(),
        config.declared,
        Admission::new(config).without_wall_clock(),
    );
    for record in tables {
        batcher.add(record);
    }
    let first = batcher.take()?;
    out.dead_letters.extend(first.dead_letters);
    out.dead_letters.extend(crate::source::apply_table_changes(
        core.lookups,
        first.table_changes,
    ));
    for record in events {
        if let Some(n) = ahead.get_mut(&partition_of(&record)) {
            *n -= 1;
        }
        ahead.retain(|_, n| *n > 0);
        let waiting: Vec<(String, i32)> = ahead.keys().cloned().collect();
        core.event_time.keep_active(&waiting, now);
        batcher.add(record);
        let batch = batcher.take()?;
        out.dead_letters.extend(batch.dead_letters);
        out.add(
            core.micro_batch(batch.events, batch.table_changes, now)
                .await?,
        );
        // Close every due window now, however long it takes (a micro-batch
        // stops closing after its wall-clock budget), so that the next
        // record meets the same closed windows on any machine.
        fire_all(&mut core, now, &mut out).await?;
        now += Duration::from_millis(1);
    }
    // Every partition goes idle, then the input ends.
    now += idle + Duration::from_secs(1);
    fire_all(&mut core, now, &mut out).await?;
    core.event_time.end_of_input();
    fire_all(&mut core, now, &mut out).await?;
    Ok(out)
}

/// Ticks until a tick closes no more windows (a tick stops closing after
/// its firing budget; the engine's next tick would go on).
async fn fire_all(
    core: &mut Core<'_>,
    now: Instant,
    out: &mut OfflineOutput,
) -> Result<(), EngineError> {
    let closed = |core: &Core<'_>| -> u64 {
        core.jobs
            .iter()
            .filter_map(|j| j.job.windowed())
            .map(|w| w.windows_closed())
            .sum()
    };
    loop {
        let before = closed(core);
        out.add(core.tick(now).await?);
        if closed(core) == before {
            return Ok(());
        }
    }
}
