//! Event time across sources: one [`SourceWatermark`] per event source, fed
//! by each micro-batch and by the consumer's partition assignment.

use std::collections::BTreeMap;
use std::time::Duration;

use arrow::compute::max;
use tokio::time::Instant;

use crate::config::{Config, TopicsConfig};
use crate::job::windowed::event_times;
use crate::metrics::Metrics;
use crate::schema::Source;
use crate::source::SourceBatch;
use crate::watermark::SourceWatermark;

/// The watermark of a source whose input has ended: twice the largest
/// event time accepted, past any window's end and lateness.
const END_OF_INPUT: i64 = 2 * crate::decode::MAX_EPOCH_MILLIS;

/// Watermarks of the event sources.
#[derive(Debug)]
pub struct EventTime {
    topics: TopicsConfig,
    sources: BTreeMap<Source, SourceWatermark>,
    /// Whether the watermarks are the engine's, exported as metrics (a
    /// backfill's own are not).
    exported: bool,
}

impl EventTime {
    /// Empty watermarks with each stream's out-of-orderness and idle
    /// timeout: its own where declared, else the engine's.
    pub fn new(config: &Config) -> Self {
        let sources = config
            .declared
            .streams()
            .map(|source| {
                let (lag, idle) = source.event_time_settings();
                let idle = idle.unwrap_or(config.engine.idle_timeout_ms);
                let idle = Duration::from_millis(u64::try_from(idle).unwrap_or(0));
                let lag = lag.unwrap_or(config.engine.max_out_of_orderness_ms);
                (source, SourceWatermark::new(lag, idle))
            })
            .collect();
        Self {
            topics: config.topics.clone(),
            sources,
            exported: true,
        }
    }

    /// Watermarks like [`Self::new`]'s that are not exported as metrics: a
    /// backfill's, over history.
    pub fn unexported(config: &Config) -> Self {
        Self {
            exported: false,
            ..Self::new(config)
        }
    }

    /// Sets the assigned partitions from `(topic, partition)` pairs.
    pub fn assign(&mut self, assigned: &[(String, i32)], now: Instant) {
        for (kind, watermark) in &mut self.sources {
            let topic = self.topics.source_topic(*kind);
            let partitions: Vec<i32> = assigned
                .iter()
                .filter(|(t, _)| t == topic)
                .map(|(_, p)| *p)
                .collect();
            tracing::trace!(source = kind.name(), ?partitions, "assigned");
            watermark.assign(&partitions, now);
        }
    }

    /// Keeps the `(topic, partition)`s that still have records to read from
    /// going idle.
    pub fn keep_active(&mut self, behind: &[(String, i32)], now: Instant) {
        for (kind, watermark) in &mut self.sources {
            let topic = self.topics.source_topic(*kind);
            for (_, p) in behind.iter().filter(|(t, _)| t == topic) {
                watermark.keep_active(*p, now);
            }
        }
    }

    /// Advances the partitions that delivered events in a micro-batch.
    pub fn observe(&mut self, events: &BTreeMap<Source, Vec<SourceBatch>>, now: Instant) {
        for (kind, batches) in events {
            let Some(watermark) = self.sources.get_mut(kind) else {
                continue;
            };
            for batch in batches {
                let latest = event_times(&batch.rows, kind.time_or_key())
                    .ok()
                    .and_then(|t| max(&t));
                if let Some(latest) = latest {
                    watermark.observe(batch.partition, latest, now);
                }
            }
        }
    }

    /// Recomputes every source's watermark at `now` (idle partitions drop
    /// out) and publishes them as metrics.
    pub fn refresh(&mut self, now: Instant, metrics: &Metrics) {
        let wall = chrono::Utc::now().timestamp_millis();
        for (kind, watermark) in &mut self.sources {
            let before = watermark.current();
            if let Some(mark) = watermark.watermark(now)
                && self.exported
            {
                let source = kind.name();
                if before != Some(mark) {
                    tracing::debug!(source, watermark = mark, partitions = ?watermark.partition_times(), waiting = watermark.waiting(), "watermark advanced");
                }
                metrics
                    .watermark
                    .with_label_values(&[source])
                    .set(mark as f64 / 1000.0);
                metrics
                    .watermark_delay
                    .with_label_values(&[source])
                    .set((wall - mark) as f64 / 1000.0);
            }
        }
    }

    /// The longest idle timeout of any source.
    pub fn longest_idle_timeout(&self) -> Duration {
        self.sources
            .values()
            .map(SourceWatermark::idle_timeout)
            .max()
            .unwrap_or_default()
    }

    /// The input has ended (a bounded run): every source's watermark jumps
    /// past every window, so they all close.
    pub fn end_of_input(&mut self) {
        for watermark in self.sources.values_mut() {
            watermark.restore_current(END_OF_INPUT);
        }
    }

    /// The largest event time of every source partition that has delivered.
    pub fn partition_times(&self) -> BTreeMap<(Source, i32), i64> {
        self.sources
            .iter()
            .flat_map(|(kind, w)| {
                w.partition_times()
                    .into_iter()
                    .map(move |(p, t)| ((*kind, p), t))
            })
            .collect()
    }

    /// The marks of `source`'s assigned partitions at `now` (see
    /// [`SourceWatermark::marks`]).
    pub fn marks(&self, source: Source, now: Instant) -> Vec<(i32, Option<i64>, bool)> {
        self.sources
            .get(&source)
            .map(|w| w.marks(now))
            .unwrap_or_default()
    }

    /// Assigned (source, partition)s ahead of their source's watermark.
    pub fn ahead(&self) -> Vec<(Source, i32)> {
        self.sources
            .iter()
            .flat_map(|(kind, w)| w.ahead().into_iter().map(move |p| (*kind, p)))
            .collect()
    }

    /// The topic a source is read from.
    pub fn topic(&self, kind: Source) -> &str {
        self.topics.source_topic(kind)
    }

    /// Every source's watermark, where known.
    pub fn source_watermarks(&self) -> BTreeMap<Source, i64> {
        self.sources
            .iter()
            .filter_map(|(kind, w)| w.current().map(|c| (*kind, c)))
            .collect()
    }

    /// Restores a source partition's largest event time.
    pub fn restore_partition(&mut self, source: Source, partition: i32, max_event_time: i64) {
        if let Some(w) = self.sources.get_mut(&source) {
            w.restore_partition(partition, max_event_time);
        }
    }

    /// Restores a source's watermark.
    pub fn restore_source(&mut self, source: Source, watermark: i64) {
        if let Some(w) = self.sources.get_mut(&source) {
            w.restore_current(watermark);
        }
    }

    /// The watermark of a job reading `sources`: the slowest of them, or
    /// `None` while one of them waits for the first events of an active
    /// partition (they may be older than the other sources' watermarks). A
    /// source whose partitions are all idle without ever delivering does not
    /// hold the job back.
    pub fn of_sources(&self, sources: &[Source]) -> Option<i64> {
        let watermarks = sources.iter().filter_map(|s| self.sources.get(s));
        if watermarks.clone().any(SourceWatermark::waiting) {
            return None;
        }
        watermarks.filter_map(SourceWatermark::current).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_source_waiting_for_its_first_events_holds_its_jobs_back() {
        let config = Config::load(None).expect("default config");
        let metrics = Metrics::new().expect("metrics");
        let lag = config.engine.max_out_of_orderness_ms;
        let mut event_time = EventTime::new(&config);
        let t0 = Instant::now();
        event_time.assign(
            &[
                (config.topics.transactions.clone(), 0),
                (config.topics.complaints.clone(), 0),
            ],
            t0,
        );
        let deliver = |event_time: &mut EventTime, ts: i64, now: Instant| {
            event_time
                .sources
                .get_mut(&crate::config::default_source("transactions"))
                .expect("transactions")
                .observe(0, ts, now);
            event_time.refresh(now, &metrics);
        };
        deliver(&mut event_time, 7_200_000, t0);
        let both = [
            crate::config::default_source("transactions"),
            crate::config::default_source("complaints"),
        ];
        assert_eq!(
            event_time.of_sources(&[crate::config::default_source("transactions")]),
            Some(7_200_000 - lag)
        );
        assert_eq!(
            event_time.of_sources(&both),
            None,
            "complaints not yet read"
        );
        // Once the complaints partition is idle without delivering, it no
        // longer holds the job back.
        let idle = u64::try_from(config.engine.idle_timeout_ms).expect("positive");
        tokio::time::advance(Duration::from_millis(idle)).await;
        deliver(&mut event_time, 7_300_000, Instant::now());
        assert_eq!(event_time.of_sources(&both), Some(7_300_000 - lag));
    }

    #[tokio::test(start_paused = true)]
    async fn after_a_restore_a_source_without_a_watermark_holds_its_jobs_back() {
        let config = Config::load(None).expect("default config");
        let metrics = Metrics::new().expect("metrics");
        let mut event_time = EventTime::new(&config);
        // Complaints had a watermark before the restart, transactions none.
        event_time.restore_source(crate::config::default_source("complaints"), 9_000_000);
        event_time.restore_partition(crate::config::default_source("complaints"), 0, 9_000_000);
        let both = [
            crate::config::default_source("transactions"),
            crate::config::default_source("complaints"),
        ];
        // Before the group assigns partitions, timer ticks refresh with none.
        event_time.assign(&[], Instant::now());
        event_time.refresh(Instant::now(), &metrics);
        assert_eq!(
            event_time.of_sources(&[crate::config::default_source("complaints")]),
            Some(9_000_000)
        );
        assert_eq!(
            event_time.of_sources(&both),
            None,
            "nothing is known of transactions yet"
        );
    }
}
