//! Requests to the running engine from outside its loop (the HTTP
//! endpoint), and its answers.

use tokio::sync::oneshot;

use crate::query::BackfillFrom;

/// A `cxpulse backfill JOB --from TIME` request, from `POST
/// /jobs/{job}/backfill`.
#[derive(Debug)]
pub struct BackfillRequest {
    /// The running job to backfill.
    pub job: String,
    /// Where its history starts.
    pub from: BackfillFrom,
    /// The answer: what started, or why not.
    pub reply: oneshot::Sender<Result<String, Refusal>>,
}

/// Why a backfill request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No running job has that name.
    #[error("{0}")]
    UnknownJob(String),
    /// The job cannot be backfilled now or at all.
    #[error("{0}")]
    Conflict(String),
}
