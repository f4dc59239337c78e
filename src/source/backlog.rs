//! Which source partitions still have records to read, from librdkafka's
//! statistics (every second). A partition with records waiting is slow, not
//! idle: its silence must not let the watermark pass it (a broker that
//! answers a fetch with a whole partition's backlog, or one busy partition
//! ahead in the consumer's queue, can keep another one's records waiting for
//! longer than the idle timeout).

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

use rdkafka::statistics::Partition;

/// Records left to read per assigned (topic, partition), as last reported.
#[derive(Debug, Default)]
pub struct Backlog {
    pending: Mutex<BTreeMap<(String, i32), i64>>,
}

impl Backlog {
    /// Records the statistics of one partition; returns its records left to
    /// read, if known.
    pub fn update(&self, topic: &str, partition: i32, stats: &Partition) -> Option<i64> {
        let left = pending(stats)?;
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert((topic.to_owned(), partition), left);
        Some(left)
    }

    /// Forgets every partition (the assignment changed).
    pub fn clear(&self) {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// The partitions with records left to read.
    pub fn behind(&self) -> Vec<(String, i32)> {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|(_, left)| **left > 0)
            .map(|(tp, _)| tp.clone())
            .collect()
    }
}

/// Records of a partition not yet passed to the engine: from its position
/// (before its first record, the committed offset or else the log start) to
/// its last stable offset (the end a `read_committed` reader reaches), or the
/// high watermark where that is unknown. librdkafka moves the position past
/// transaction markers and aborted records too, so a caught-up partition
/// has none left.
fn pending(p: &Partition) -> Option<i64> {
    let end = if p.ls_offset >= 0 {
        p.ls_offset
    } else {
        p.hi_offset
    };
    let position = [p.app_offset, p.committed_offset, p.lo_offset]
        .into_iter()
        .find(|o| *o >= 0)?;
    (end >= 0).then(|| (end - position).max(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Statistics of partition 0 with the given offsets (-1001: unknown).
    fn partition(app: i64, committed: i64, lo: i64, hi: i64, ls: i64) -> Partition {
        Partition {
            app_offset: app,
            committed_offset: committed,
            lo_offset: lo,
            hi_offset: hi,
            ls_offset: ls,
            ..Partition::default()
        }
    }

    #[test]
    fn records_left_count_from_the_position_to_the_last_stable_offset() {
        // Consumed up to 40 of 100; 90 is the last stable offset.
        assert_eq!(pending(&partition(40, 10, 0, 100, 90)), Some(50));
        // Nothing consumed yet: from the committed offset, else the start.
        assert_eq!(pending(&partition(-1001, 10, 0, 100, 90)), Some(80));
        assert_eq!(pending(&partition(-1001, -1001, 5, 100, -1001)), Some(95));
        // Caught up (a transaction marker at 99 is passed too).
        assert_eq!(pending(&partition(100, 10, 0, 100, 100)), Some(0));
        // Nothing known of the partition yet.
        assert_eq!(pending(&partition(-1001, -1001, -1001, -1001, -1001)), None);
    }

    #[test]
    fn only_partitions_with_records_left_are_behind() {
        let backlog = Backlog::default();
        assert_eq!(
            backlog.update("t", 0, &partition(40, 10, 0, 100, 100)),
            Some(60)
        );
        assert_eq!(
            backlog.update("t", 1, &partition(100, 10, 0, 100, 100)),
            Some(0)
        );
        assert_eq!(backlog.behind(), [("t".to_owned(), 0)]);
        backlog.clear();
        assert!(backlog.behind().is_empty());
    }
}
