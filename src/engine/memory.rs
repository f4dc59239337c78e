//! Bounded window state: above `engine.state_memory_limit` the engine
//! pauses the event partitions that are ahead of their source's watermark
//! (they add state for windows that cannot close yet), so that the others
//! catch up, the watermark moves and windows close and free state; with no
//! partition behind (one partition, say), it pauses them all. It resumes
//! them once state is back under 90 % of the limit. Epochs keep committing
//! meanwhile, and paused partitions go idle after `engine.idle_timeout_ms`
//! like any silent partition (unless records are held for them: see below).
//!
//! A pause reaches the consumer at once, but records of a paused partition
//! may already be on their way (read, decoding, decoded). The gate holds
//! them back, undecided, until the partition resumes: they then run before
//! anything read after them. Their offsets are not committed meanwhile, so
//! a restart reads them again. Without the hold, state went on growing for
//! several micro-batches after the pause (over twice the limit in tests).

use std::collections::{BTreeMap, BTreeSet};

use super::inputs::TopicPartition;
use crate::metrics::Metrics;
use crate::source::MicroBatch;

/// Resume below this share of the limit, so that the engine does not pause
/// and resume on every batch.
const RESUME_AT: f64 = 0.9;

/// Whether consumption is paused for memory, and the limit.
#[derive(Debug)]
pub(super) struct MemoryGate {
    limit: u64,
    paused_by: Option<String>,
    /// Partitions paused now.
    paused: BTreeSet<TopicPartition>,
    /// Parts of micro-batches read for paused partitions, oldest first
    /// (a partition stays assigned while the engine runs: ownership is
    /// static).
    held: BTreeMap<TopicPartition, Vec<MicroBatch>>,
}

impl MemoryGate {
    /// A gate for `limit` bytes of window state.
    pub(super) fn new(limit: u64) -> Self {
        Self {
            limit,
            paused_by: None,
            paused: BTreeSet::new(),
            held: BTreeMap::new(),
        }
    }

    /// Pauses or resumes for `total` bytes of state (`sizes`: by job, for
    /// the message), saying so in the log and the metrics.
    pub(super) fn update(&mut self, total: u64, sizes: &[(String, u64)], metrics: &Metrics) {
        match self.decide(total) {
            Some(true) => {
                let (job, bytes) = sizes
                    .iter()
                    .max_by_key(|(_, b)| *b)
                    .map_or(("", 0), |(j, b)| (j.as_str(), *b));
                tracing::warn!(
                    state_bytes = total,
                    limit = self.limit,
                    largest_job = job,
                    largest_job_bytes = bytes,
                    "window state and kept tables are over engine.state_memory_limit: consumption paused until windows close"
                );
                metrics.consumption_paused.with_label_values(&[job]).set(1);
                self.paused_by = Some(job.to_owned());
            }
            Some(false) => {
                tracing::info!(
                    state_bytes = total,
                    "window state is back under its limit: consumption resumed"
                );
                metrics.consumption_paused.reset();
                self.paused_by = None;
            }
            None => {}
        }
    }

    /// Whether consumption is paused for memory.
    pub(super) fn is_paused(&self) -> bool {
        self.paused_by.is_some()
    }

    /// Makes `target` the paused partitions; returns those to resume and
    /// those to pause.
    pub(super) fn repause(
        &mut self,
        target: BTreeSet<(String, i32)>,
    ) -> (Vec<TopicPartition>, Vec<TopicPartition>) {
        let resume = self.paused.difference(&target).cloned().collect();
        let pause = target.difference(&self.paused).cloned().collect();
        self.paused = target;
        (resume, pause)
    }

    /// Takes the parts of `batch` read for paused partitions out of it and
    /// holds them until their partitions resume.
    pub(super) fn hold(&mut self, batch: &mut MicroBatch) {
        if self.paused.is_empty() {
            return;
        }
        for (at, part) in batch.split_off(&self.paused) {
            self.held.entry(at).or_default().push(part);
        }
    }

    /// The held parts of partitions no longer paused, oldest first: they
    /// run before anything read after them.
    pub(super) fn take_released(&mut self) -> Vec<MicroBatch> {
        let released: Vec<TopicPartition> = self
            .held
            .keys()
            .filter(|at| !self.paused.contains(*at))
            .cloned()
            .collect();
        released
            .iter()
            .filter_map(|at| self.held.remove(at))
            .flatten()
            .collect()
    }

    /// Partitions with held records: not idle, whatever their backlog.
    pub(super) fn held_partitions(&self) -> impl Iterator<Item = &TopicPartition> {
        self.held.keys()
    }

    /// What to do at `total` bytes of state: `Some(true)` pause, `Some(false)`
    /// resume, `None` nothing changes.
    fn decide(&self, total: u64) -> Option<bool> {
        match self.paused_by {
            None if total > self.limit => Some(true),
            Some(_) if (total as f64) <= self.limit as f64 * RESUME_AT => Some(false),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A micro-batch carrying only `(topic, partition)`'s next offset.
    fn offset_only(topic: &str, partition: i32, next: i64) -> MicroBatch {
        MicroBatch {
            next_offsets: BTreeMap::from([((topic.to_owned(), partition), next)]),
            ..MicroBatch::default()
        }
    }

    #[test]
    fn holds_what_paused_partitions_read_and_releases_it_in_order_on_resume() {
        let mut gate = MemoryGate::new(1_000);
        let (a, b) = (("t".to_owned(), 0), ("t".to_owned(), 1));
        gate.repause(BTreeSet::from([a.clone()]));
        for next in [5, 9] {
            let mut batch = offset_only("t", 0, next);
            batch.absorb(offset_only("t", 1, next));
            gate.hold(&mut batch);
            assert_eq!(batch.next_offsets, BTreeMap::from([(b.clone(), next)]));
        }
        assert!(gate.take_released().is_empty(), "still paused");
        assert_eq!(gate.held_partitions().collect::<Vec<_>>(), vec![&a]);

        gate.repause(BTreeSet::new());
        let released: Vec<i64> = gate
            .take_released()
            .iter()
            .map(|m| m.next_offsets[&a])
            .collect();
        assert_eq!(released, vec![5, 9], "oldest first");
        assert!(gate.take_released().is_empty());
    }

    #[test]
    fn pauses_over_the_limit_and_resumes_under_ninety_percent() {
        let mut gate = MemoryGate::new(1_000);
        assert_eq!(gate.decide(1_000), None);
        assert_eq!(gate.decide(1_001), Some(true));
        gate.paused_by = Some("job".into());
        assert_eq!(gate.decide(950), None, "still above 90 %");
        assert_eq!(gate.decide(900), Some(false));
    }
}
