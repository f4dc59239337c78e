//! Following the table sources (by default `cx.customers`) while the engine
//! runs: what arrived is applied like any micro-batch, and a reader that
//! keeps failing is said, not hidden. After [`STALE_AFTER`] of failures the
//! engine is not ready (`/readyz` says why) and
//! `cxpulse_table_read_errors_total` counts every failure; the tables are
//! stale meanwhile, so lookups may miss new rows.

use std::time::{Duration, Instant};

/// How long reads of the table sources may keep failing before the engine
/// says it is not ready.
pub const STALE_AFTER: Duration = Duration::from_secs(30);

/// Since when the table sources' reader has been failing, if it is.
#[derive(Debug, Default)]
pub(super) struct TableReads {
    failing_since: Option<Instant>,
    /// When the reader last read without error.
    last_ok: Option<Instant>,
    reported: bool,
}

impl TableReads {
    /// A read without error at `now`; `true` if the failure had been
    /// reported (the engine is ready again).
    pub(super) fn succeeded(&mut self, now: Instant) -> bool {
        let was_reported = self.reported;
        *self = TableReads {
            last_ok: Some(now),
            ..TableReads::default()
        };
        was_reported
    }

    /// A failed read at `now`: how long reads have failed, once they have
    /// failed for [`STALE_AFTER`] (once per spell of failures).
    pub(super) fn failed(&mut self, now: Instant) -> Option<Duration> {
        let since = *self.failing_since.get_or_insert(now);
        let failing = now.duration_since(since);
        if failing < STALE_AFTER || self.reported {
            return None;
        }
        self.reported = true;
        Some(failing)
    }

    /// How long ago the reader last read without error.
    pub(super) fn age(&self, now: Instant) -> Option<Duration> {
        self.last_ok.map(|ok| now.duration_since(ok))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_reported_once_after_thirty_seconds_and_cleared_by_a_read() {
        let start = Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        let mut reads = TableReads::default();
        assert!(!reads.succeeded(at(0)));
        assert_eq!(reads.failed(at(1)), None);
        assert_eq!(reads.failed(at(30)), None, "29 s of failures");
        assert_eq!(reads.failed(at(31)), Some(Duration::from_secs(30)));
        assert_eq!(reads.failed(at(40)), None, "reported once");
        assert_eq!(reads.age(at(40)), Some(Duration::from_secs(40)));
        assert!(reads.succeeded(at(41)), "ready again");
        assert_eq!(reads.age(at(42)), Some(Duration::from_secs(1)));
        assert_eq!(reads.failed(at(43)), None, "a new spell starts at 43 s");
        assert_eq!(reads.failed(at(72)), None);
        assert_eq!(reads.failed(at(73)), Some(Duration::from_secs(30)));
    }
}
