//! Bounded window state: above `engine.state_memory_limit` the engine
//! pauses the event partitions that are ahead of their source's watermark
//! (they add state for windows that cannot close yet), so that the others
//! catch up, the watermark moves and windows close and free state; with no
//! partition behind (one partition, say), it pauses them all. It resumes
//! them once state is back under 90 % of the limit. Epochs keep committing
//! meanwhile, and paused partitions go idle after `engine.idle_timeout_ms`
//! like any silent partition.

use std::collections::BTreeSet;

use rdkafka::consumer::Consumer;
use rdkafka::{Offset, TopicPartitionList};

use super::Engine;

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
                crate::schema::Source::streams()
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
            .stopped
            .iter()
            .filter_map(|s| window_bytes(&s.job))
            .map(|(_, b)| b)
            .sum();
        self.metrics
            .state_memory
            .set(i64::try_from(total + stopped).unwrap_or(i64::MAX));
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
                    .map_or(("", 0), |(j, b)| (j.as_str(), *b));
                tracing::warn!(
                    state_bytes = total,
                    limit = self.memory.limit,
                    largest_job = job,
                    largest_job_bytes = bytes,
                    "window state and kept tables are over engine.state_memory_limit: consumption paused until windows close"
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
                self.metrics.consumption_paused.reset();
                self.memory.paused_by = None;
            }
            None => {}
        }
        let target: BTreeSet<(String, i32)> = if self.memory.paused_by.is_none() {
            BTreeSet::new()
        } else {
            let ahead: BTreeSet<(String, i32)> = self
                .event_time
                .ahead()
                .into_iter()
                .map(|(kind, p)| (self.event_time.topic(kind).to_owned(), p))
                .collect();
            if ahead.is_empty() {
                assignment
                    .elements()
                    .iter()
                    .map(|e| (e.topic().to_owned(), e.partition()))
                    .collect()
            } else {
                ahead
            }
        };
        let list = |parts: Vec<&(String, i32)>| {
            let mut tpl = TopicPartitionList::new();
            for (topic, p) in parts {
                let _ = tpl.add_partition_offset(topic, *p, Offset::Invalid);
            }
            tpl
        };
        let resume = list(self.memory.paused.difference(&target).collect());
        let pause = list(target.difference(&self.memory.paused).collect());
        if resume.count() > 0
            && let Err(e) = self.consumer.resume(&resume)
        {
            tracing::warn!(error = %e, "cannot resume consumption");
        }
        if pause.count() > 0 {
            tracing::debug!(
                partitions = pause.count(),
                "pausing partitions ahead of the watermark"
            );
            if let Err(e) = self.consumer.pause(&pause) {
                tracing::warn!(error = %e, "cannot pause consumption");
            }
        }
        self.memory.paused = target;
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
