//! Watermarks: how far event time has progressed, per source.
//!
//! Each partition's watermark is the largest event time it has delivered
//! minus the allowed out-of-orderness. A source's watermark is the smallest
//! over its active partitions, so one slow partition holds it back; a
//! partition that delivered nothing for `idle_timeout`, while it had nothing
//! left to read, stops counting. When
//! every partition is idle, the source's watermark is the largest of theirs,
//! so the last windows still close at the end of a stream. Watermarks never
//! move backwards.
//!
//! The largest event time of every partition, assigned or not, is kept
//! (unassigned ones are "parked"), so that the changelog can record it and a
//! partition assigned again resumes where it was.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug, Clone, Copy)]
struct PartitionClock {
    max_event_time: Option<i64>,
    last_active: Instant,
}

/// The watermark of one source topic.
#[derive(Debug, Clone)]
pub struct SourceWatermark {
    out_of_orderness: i64,
    idle_timeout: Duration,
    partitions: BTreeMap<i32, PartitionClock>,
    /// Largest event time of partitions not assigned now.
    parked: BTreeMap<i32, i64>,
    current: Option<i64>,
    waiting: bool,
}

impl SourceWatermark {
    /// A source with no partitions yet.
    pub fn new(out_of_orderness_ms: i64, idle_timeout: Duration) -> Self {
        Self {
            out_of_orderness: out_of_orderness_ms,
            idle_timeout,
            partitions: BTreeMap::new(),
            parked: BTreeMap::new(),
            current: None,
            waiting: false,
        }
    }

    /// Sets the partitions assigned to this process. A new partition holds
    /// the watermark back until it delivers or goes idle; a revoked one no
    /// longer counts.
    pub fn assign(&mut self, partitions: &[i32], now: Instant) {
        let parked = &mut self.parked;
        self.partitions.retain(|p, clock| {
            let keep = partitions.contains(p);
            if let (false, Some(t)) = (keep, clock.max_event_time) {
                parked.insert(*p, t);
            }
            keep
        });
        for &p in partitions {
            let max_event_time = self.parked.remove(&p);
            self.partitions.entry(p).or_insert(PartitionClock {
                max_event_time,
                last_active: now,
            });
        }
    }

    /// Records that `partition` still has records to read: it is slow, not
    /// idle, so it keeps counting (if assigned).
    pub fn keep_active(&mut self, partition: i32, now: Instant) {
        if let Some(clock) = self.partitions.get_mut(&partition) {
            clock.last_active = now;
        }
    }

    /// Records that `partition` delivered events up to `max_event_time`.
    pub fn observe(&mut self, partition: i32, max_event_time: i64, now: Instant) {
        let parked = self.parked.remove(&partition);
        let clock = self.partitions.entry(partition).or_insert(PartitionClock {
            max_event_time: parked,
            last_active: now,
        });
        clock.max_event_time = Some(
            clock
                .max_event_time
                .map_or(max_event_time, |m| m.max(max_event_time)),
        );
        clock.last_active = now;
    }

    /// The watermark at `now`, or `None` while it is unknown (no partition
    /// has delivered, or an active one has not delivered yet).
    pub fn watermark(&mut self, now: Instant) -> Option<i64> {
        let mark = |c: &PartitionClock| {
            c.max_event_time
                .map(|t| t.saturating_sub(self.out_of_orderness))
        };
        let active: Vec<&PartitionClock> = self
            .partitions
            .values()
            .filter(|c| now.duration_since(c.last_active) < self.idle_timeout)
            .collect();
        self.waiting = active.iter().any(|c| c.max_event_time.is_none());
        let computed = if active.is_empty() {
            self.partitions.values().filter_map(mark).max()
        } else if active.iter().any(|c| c.max_event_time.is_none()) {
            None
        } else {
            active.iter().filter_map(|c| mark(c)).min()
        };
        self.current = match (self.current, computed) {
            (Some(old), Some(new)) => Some(old.max(new)),
            (old, new) => old.or(new),
        };
        self.current
    }

    /// How long a partition may be silent before it stops counting.
    pub fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }

    /// The last computed watermark.
    pub fn current(&self) -> Option<i64> {
        self.current
    }

    /// Assigned partitions ahead of the watermark: those that delivered
    /// events past it (all that delivered, while it is unknown). Pausing them
    /// lets the others catch up and the watermark move.
    pub fn ahead(&self) -> Vec<i32> {
        self.partitions
            .iter()
            .filter(|(_, c)| {
                c.max_event_time.is_some_and(|t| {
                    self.current
                        .is_none_or(|w| t.saturating_sub(self.out_of_orderness) > w)
                })
            })
            .map(|(p, _)| *p)
            .collect()
    }

    /// Each assigned partition's mark at `now`: its largest event time
    /// minus the allowed out-of-orderness (`None` until it delivers), and
    /// whether it is idle. What stage 1 of a shuffle tells stage 2.
    pub fn marks(&self, now: Instant) -> Vec<(i32, Option<i64>, bool)> {
        self.partitions
            .iter()
            .map(|(p, c)| {
                let mark = c
                    .max_event_time
                    .map(|t| t.saturating_sub(self.out_of_orderness));
                (
                    *p,
                    mark,
                    now.duration_since(c.last_active) >= self.idle_timeout,
                )
            })
            .collect()
    }

    /// The largest event time of every partition that has delivered,
    /// assigned or not.
    pub fn partition_times(&self) -> BTreeMap<i32, i64> {
        let mut times = self.parked.clone();
        for (p, clock) in &self.partitions {
            if let Some(t) = clock.max_event_time {
                times.insert(*p, t);
            }
        }
        times
    }

    /// Restores a partition's largest event time (it counts once assigned).
    pub fn restore_partition(&mut self, partition: i32, max_event_time: i64) {
        match self.partitions.get_mut(&partition) {
            Some(clock) => clock.max_event_time = Some(max_event_time),
            None => {
                self.parked.insert(partition, max_event_time);
            }
        }
    }

    /// Restores the watermark, which never moves back from here.
    pub fn restore_current(&mut self, watermark: i64) {
        self.current = Some(self.current.map_or(watermark, |c| c.max(watermark)));
    }

    /// Whether a job reading this source must wait: at the last
    /// computation an active partition had not delivered yet (its first
    /// events may be older than the watermark of any other source), or the
    /// source has no watermark and no partitions assigned yet (nothing is
    /// known of it, e.g. just after a restart). A source whose partitions
    /// are all idle without ever delivering does not hold jobs back.
    pub fn waiting(&self) -> bool {
        self.waiting || (self.current.is_none() && self.partitions.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDLE: Duration = Duration::from_secs(30);

    #[tokio::test(start_paused = true)]
    async fn the_slowest_active_partition_holds_the_watermark() {
        let mut w = SourceWatermark::new(5_000, IDLE);
        let t0 = Instant::now();
        w.assign(&[0, 1], t0);
        w.observe(0, 100_000, t0);
        // Partition 1 has delivered nothing and is not idle yet.
        assert_eq!(w.watermark(t0), None);
        assert!(w.waiting());
        w.observe(1, 60_000, t0);
        assert_eq!(w.watermark(t0), Some(55_000));
        assert!(!w.waiting());
        w.observe(1, 80_000, t0);
        assert_eq!(w.watermark(t0), Some(75_000));
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_partition_stops_holding_it_back() {
        let mut w = SourceWatermark::new(5_000, IDLE);
        let t0 = Instant::now();
        w.observe(0, 100_000, t0);
        w.observe(1, 20_000, t0);
        assert_eq!(w.watermark(t0), Some(15_000));
        tokio::time::advance(Duration::from_secs(20)).await;
        w.observe(0, 110_000, Instant::now());
        assert_eq!(w.watermark(Instant::now()), Some(15_000));
        // 30 s after its last event, partition 1 is idle.
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(w.watermark(Instant::now()), Some(105_000));
        // When it delivers again it counts again, but the watermark never goes back.
        w.observe(1, 30_000, Instant::now());
        assert_eq!(w.watermark(Instant::now()), Some(105_000));
        // Everything idle: the largest partition watermark.
        tokio::time::advance(IDLE).await;
        assert_eq!(w.watermark(Instant::now()), Some(105_000));
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_partition_with_records_left_to_read_is_not_idle() {
        let mut w = SourceWatermark::new(0, IDLE);
        let t0 = Instant::now();
        w.assign(&[0, 1], t0);
        w.observe(0, 100_000, t0);
        w.observe(1, 20_000, t0);
        // Partition 1's next records wait behind partition 0's for a minute.
        for _ in 0..6 {
            tokio::time::advance(Duration::from_secs(10)).await;
            w.observe(0, 100_000, Instant::now());
            w.keep_active(1, Instant::now());
            assert_eq!(w.watermark(Instant::now()), Some(20_000));
        }
        // Caught up and silent: idle once the timeout has passed.
        tokio::time::advance(IDLE).await;
        w.observe(0, 100_000, Instant::now());
        assert_eq!(w.watermark(Instant::now()), Some(100_000));
        // An unassigned partition is not brought back.
        w.assign(&[0], Instant::now());
        w.keep_active(1, Instant::now());
        assert_eq!(w.partition_times()[&1], 20_000);
        assert_eq!(w.watermark(Instant::now()), Some(100_000));
    }

    #[tokio::test(start_paused = true)]
    async fn an_assigned_silent_partition_goes_idle() {
        let mut w = SourceWatermark::new(0, IDLE);
        let t0 = Instant::now();
        w.assign(&[0, 1], t0);
        w.observe(0, 1_000, t0);
        assert_eq!(w.watermark(t0), None);
        assert!(w.waiting());
        tokio::time::advance(IDLE).await;
        w.observe(0, 2_000, Instant::now());
        assert_eq!(w.watermark(Instant::now()), Some(2_000));
        assert!(
            !w.waiting(),
            "a silent partition stops being waited for once idle"
        );
        // A revoked partition no longer counts.
        w.assign(&[0], Instant::now());
        assert_eq!(w.partitions.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn partitions_past_the_watermark_are_ahead() {
        let mut w = SourceWatermark::new(1_000, IDLE);
        let t0 = Instant::now();
        w.assign(&[0, 1, 2], t0);
        w.observe(0, 50_000, t0);
        w.observe(1, 9_000, t0);
        // Partition 2 has not delivered: the watermark is unknown, and every
        // partition that delivered is ahead of it.
        assert_eq!(w.watermark(t0), None);
        assert_eq!(w.ahead(), [0, 1]);
        w.observe(2, 10_000, t0);
        assert_eq!(w.watermark(t0), Some(8_000));
        assert_eq!(w.ahead(), [0, 2]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_source_with_nothing_known_waits() {
        let mut w = SourceWatermark::new(0, IDLE);
        assert!(w.waiting(), "no partitions assigned, no watermark");
        w.restore_partition(0, 10);
        assert!(w.waiting(), "a parked partition is not assigned yet");
        assert_eq!(w.watermark(Instant::now()), None);
        w.assign(&[0], Instant::now());
        assert_eq!(w.watermark(Instant::now()), Some(10));
        assert!(!w.waiting());
    }

    #[tokio::test(start_paused = true)]
    async fn restored_partitions_resume_where_they_were_once_assigned() {
        let mut w = SourceWatermark::new(1_000, IDLE);
        w.restore_partition(0, 50_000);
        w.restore_partition(1, 20_000);
        w.restore_current(30_000);
        assert_eq!(
            w.partition_times(),
            BTreeMap::from([(0, 50_000), (1, 20_000)])
        );
        let t0 = Instant::now();
        w.assign(&[0, 1], t0);
        // Both have delivered before the restart: nothing to wait for, and
        // the restored watermark does not move back to 19 000.
        assert_eq!(w.watermark(t0), Some(30_000));
        assert!(!w.waiting());
        w.observe(1, 60_000, t0);
        assert_eq!(w.watermark(t0), Some(49_000));
        // Revoked partitions keep their time for the changelog.
        w.assign(&[1], t0);
        assert!(!w.waiting(), "a source with a watermark never waits again");
        assert_eq!(
            w.partition_times(),
            BTreeMap::from([(0, 50_000), (1, 60_000)])
        );
    }
}
