//! The engine's jobs: those running live, and those stopped because they
//! panicked, whose state is kept (and checkpointed) while nothing runs
//! them. Jobs reading history belong to the backfills
//! ([`super::backfill::Backfills`]) until they catch up.

use std::path::{Path, PathBuf};

use super::jobs::RunningJob;
use super::restore::BackfillState;
use crate::job::Job;

/// A job stopped because it panicked.
pub(super) struct StoppedJob {
    /// The job, with its restored state.
    pub job: Job,
    /// Its query file.
    pub path: PathBuf,
    /// Where it stopped: the next offset per source partition, and the
    /// largest event time read there (what a backfill resumes from).
    pub resume: BackfillState,
}

/// The live jobs and the stopped ones.
pub(super) struct JobSet {
    live: Vec<RunningJob>,
    stopped: Vec<StoppedJob>,
}

impl JobSet {
    /// A set of `live` and `stopped` jobs.
    pub(super) fn new(live: Vec<RunningJob>, stopped: Vec<StoppedJob>) -> Self {
        Self { live, stopped }
    }

    /// The live jobs.
    pub(super) fn live(&self) -> &[RunningJob] {
        &self.live
    }

    /// The live jobs, for a step (which runs each on a task of its own and
    /// puts it back).
    pub(super) fn live_for_step(&mut self) -> &mut Vec<RunningJob> {
        &mut self.live
    }

    /// How many jobs run live.
    pub(super) fn live_count(&self) -> usize {
        self.live.len()
    }

    /// Runs `running` live.
    pub(super) fn add(&mut self, running: RunningJob) {
        self.live.push(running);
    }

    /// The live job named `name`.
    pub(super) fn named(&self, name: &str) -> Option<&RunningJob> {
        self.live.iter().find(|j| j.job.name == name)
    }

    /// Takes out the live job read from `path`.
    pub(super) fn take_at(&mut self, path: &Path) -> Option<RunningJob> {
        let i = self.live.iter().position(|j| j.path == path)?;
        Some(self.live.remove(i))
    }

    /// Takes out the live job `name` if it still runs the query with
    /// `fingerprint`.
    pub(super) fn take_if_unchanged(
        &mut self,
        name: &str,
        fingerprint: &str,
    ) -> Option<RunningJob> {
        let i = self
            .live
            .iter()
            .position(|j| j.job.name == name && j.job.fingerprint == fingerprint)?;
        Some(self.live.remove(i))
    }

    /// The stopped jobs.
    pub(super) fn stopped(&self) -> &[StoppedJob] {
        &self.stopped
    }

    /// The stopped job read from `path`.
    pub(super) fn stopped_at(&self, path: &Path) -> Option<&StoppedJob> {
        self.stopped.iter().find(|s| s.path == path)
    }

    /// Takes out the stopped job read from `path`.
    pub(super) fn take_stopped(&mut self, path: &Path) -> Option<StoppedJob> {
        let i = self.stopped.iter().position(|s| s.path == path)?;
        Some(self.stopped.remove(i))
    }

    /// Every job, live then stopped, to take its state changes.
    pub(super) fn jobs_mut(&mut self) -> impl Iterator<Item = &mut Job> {
        self.live
            .iter_mut()
            .map(|r| &mut r.job)
            .chain(self.stopped.iter_mut().map(|s| &mut s.job))
    }
}
