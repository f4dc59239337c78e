//! Bounded window state: above `engine.state_memory_limit` the engine
//! pauses the event partitions that are ahead of their source's watermark
//! (they add state for windows that cannot close yet), so that the others
//! catch up, the watermark moves and windows close and free state; with no
//! partition behind (one partition, say), it pauses them all. It resumes
//! them once state is back under 90 % of the limit. Epochs keep committing
//! meanwhile, and paused partitions go idle after `engine.idle_timeout_ms`
//! like any silent partition.

use std::collections::BTreeSet;

use crate::metrics::Metrics;

/// A topic and partition.
type TopicPartition = (String, i32);

/// Resume below this share of the limit, so that the engine does not pause
/// and resume on every batch.
const RESUME_AT: f64 = 0.9;

/// Whether consumption is paused for memory, and the limit.
#[derive(Debug)]
pub(super) struct MemoryGate {
    limit: u64,
    paused_by: Option<String>,
    /// Partitions paused now.
    paused: BTreeSet<(String, i32)>,
}

impl MemoryGate {
    /// A gate for `limit` bytes of window state.
    pub(super) fn new(limit: u64) -> Self {
        Self {
            limit,
            paused_by: None,
            paused: BTreeSet::new(),
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
