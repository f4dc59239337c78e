//! Bounded window state: above `engine.state_memory_limit` the engine
//! pauses its event partitions, so no more state comes in, and resumes them
//! once state is back under 90 % of the limit. Windows keep closing in the
//! meantime (paused partitions go idle after `engine.idle_timeout_ms`, so
//! the watermark can pass them), and epochs keep committing.

use rdkafka::consumer::Consumer;

use super::Engine;

/// Resume below this share of the limit, so that the engine does not pause
/// and resume on every batch.
const RESUME_AT: f64 = 0.9;

/// Whether consumption is paused for memory, and the limit.
#[derive(Debug)]
pub(super) struct MemoryGate {
    limit: u64,
    paused_by: Option<String>,
}

impl MemoryGate {
    /// A gate for `limit` bytes of window state.
    pub(super) fn new(limit: u64) -> Self {
        Self {
            limit,
            paused_by: None,
        }
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

impl Engine {
    /// Measures window state and pauses or resumes consumption.
    pub(super) fn check_memory(&mut self) {
        let sizes: Vec<(&str, u64)> = self
            .jobs
            .iter()
            .filter_map(|j| {
                j.job
                    .windowed()
                    .map(|w| (j.job.name.as_str(), w.state_bytes() as u64))
            })
            .collect();
        let total: u64 = sizes.iter().map(|(_, b)| b).sum();
        self.metrics
            .state_memory
            .set(i64::try_from(total).unwrap_or(i64::MAX));
        let assignment = match self.consumer.assignment() {
            Ok(assignment) => assignment,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the assignment to pause or resume it");
                return;
            }
        };
        match self.memory.decide(total) {
            Some(true) => {
                let (job, bytes) = sizes
                    .iter()
                    .max_by_key(|(_, b)| *b)
                    .map_or(("", 0), |(j, b)| (*j, *b));
                tracing::warn!(
                    state_bytes = total,
                    limit = self.memory.limit,
                    largest_job = job,
                    largest_job_bytes = bytes,
                    "window state is over engine.state_memory_limit: consumption paused until windows close"
                );
                self.metrics
                    .consumption_paused
                    .with_label_values(&[job])
                    .set(1);
                self.memory.paused_by = Some(job.to_owned());
            }
            Some(false) => {
                tracing::info!(
                    state_bytes = total,
                    "window state is back under its limit: consumption resumed"
                );
                if let Err(e) = self.consumer.resume(&assignment) {
                    tracing::warn!(error = %e, "cannot resume consumption");
                }
                self.metrics.consumption_paused.reset();
                self.memory.paused_by = None;
            }
            None => {}
        }
        // Also pauses partitions assigned since the pause began.
        if self.memory.paused_by.is_some()
            && let Err(e) = self.consumer.pause(&assignment)
        {
            tracing::warn!(error = %e, "cannot pause consumption");
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
