//! Epochs: everything produced between two commits (job rows, dead
//! letters, changelog records) and the consumer offsets of the events it
//! came from are committed in one Kafka transaction, or not at all.
//!
//! Records are handed to the producer as they are made and the engine reads
//! on; their acknowledgements are awaited once, just before the commit.
//! Metrics that count outputs are updated when their epoch commits, so an
//! aborted epoch, replayed after a restore, is not counted twice.

use std::collections::BTreeMap;

use super::jobs::JobOutput;
use crate::decode::RejectKind;
use crate::sink::{InFlight, OutRecord};

/// What a committed epoch counted.
#[derive(Debug, Default)]
pub(super) struct Counted {
    /// Dead letters per (topic, reason).
    pub invalid: BTreeMap<(String, RejectKind), u64>,
    /// Rows published per job.
    pub rows: BTreeMap<String, u64>,
}

/// The open transaction and what its commit will count.
#[derive(Debug, Default)]
pub(super) struct Epoch {
    /// Epochs committed before this one in the process.
    number: u64,
    open: bool,
    /// Next offset per event (topic, partition) consumed in the epoch.
    offsets: BTreeMap<(String, i32), i64>,
    /// Dead letters per (topic, reason).
    invalid: BTreeMap<(String, RejectKind), u64>,
    /// Rows published per job.
    rows: BTreeMap<String, u64>,
    /// Everything sent in the epoch whose acknowledgement is still to be
    /// awaited (before the commit).
    in_flight: InFlight,
    /// Changelog records to send with the next commit, made outside the
    /// jobs (a removed job's tombstones, where a backfill stood).
    deferred_state: Vec<OutRecord>,
    /// Outputs for the first epoch, made while the engine started (dead
    /// letters of the table sources' first read, jobs stopped in this
    /// process).
    first_output: JobOutput,
}

impl Epoch {
    /// The first epoch: it will send `state` to the changelog and publish
    /// `output`.
    pub(super) fn first(state: Vec<OutRecord>, output: JobOutput) -> Self {
        Self {
            deferred_state: state,
            first_output: output,
            ..Self::default()
        }
    }

    /// Outputs made while the engine started, to publish first.
    pub(super) fn take_first_output(&mut self) -> JobOutput {
        std::mem::take(&mut self.first_output)
    }

    /// Changelog records to send with the next commit.
    pub(super) fn defer_state(&mut self, records: impl IntoIterator<Item = OutRecord>) {
        self.deferred_state.extend(records);
    }

    /// Takes the changelog records deferred to this commit.
    pub(super) fn take_deferred_state(&mut self) -> Vec<OutRecord> {
        std::mem::take(&mut self.deferred_state)
    }

    /// This epoch's number in the process (the first is 1).
    pub(super) fn number(&self) -> u64 {
        self.number + 1
    }

    /// Whether its transaction is open.
    pub(super) fn is_open(&self) -> bool {
        self.open
    }

    /// Its transaction was opened.
    pub(super) fn opened(&mut self) {
        self.open = true;
    }

    /// Whether it sent nothing and consumed nothing: there is nothing to
    /// commit.
    pub(super) fn is_empty(&self) -> bool {
        !self.open && self.offsets.is_empty()
    }

    /// The next offset per event (topic, partition) consumed in it.
    pub(super) fn offsets(&self) -> &BTreeMap<(String, i32), i64> {
        &self.offsets
    }

    /// What was sent in it and is still to be acknowledged.
    pub(super) fn in_flight(&mut self) -> &mut InFlight {
        &mut self.in_flight
    }

    /// Takes what was sent, to await its acknowledgements.
    pub(super) fn take_in_flight(&mut self) -> InFlight {
        std::mem::take(&mut self.in_flight)
    }

    /// Counts a dead letter of `topic` for `kind`.
    pub(super) fn count_invalid(&mut self, topic: &str, kind: RejectKind) {
        *self.invalid.entry((topic.to_owned(), kind)).or_default() += 1;
    }

    /// Counts `n` rows published by `job`.
    pub(super) fn count_rows(&mut self, job: String, n: u64) {
        *self.rows.entry(job).or_default() += n;
    }

    /// Takes back one row of `job` (it became a dead letter).
    pub(super) fn uncount_row(&mut self, job: &str) {
        if let Some(n) = self.rows.get_mut(job) {
            *n = n.saturating_sub(1);
        }
    }

    /// Ends the epoch (it committed): what it counted, and the next epoch.
    pub(super) fn finish(&mut self) -> Counted {
        let next = Epoch {
            number: self.number + 1,
            deferred_state: std::mem::take(&mut self.deferred_state),
            first_output: std::mem::take(&mut self.first_output),
            ..Epoch::default()
        };
        let done = std::mem::replace(self, next);
        Counted {
            invalid: done.invalid,
            rows: done.rows,
        }
    }

    /// Adds the positions reached by a micro-batch.
    pub(super) fn advance(&mut self, next_offsets: BTreeMap<(String, i32), i64>) {
        for (tp, next) in next_offsets {
            let at = self.offsets.entry(tp).or_insert(next);
            *at = (*at).max(next);
        }
    }
}
