//! Why the engine could not start or had to stop, and whether retrying
//! can help.

use rdkafka::error::KafkaError;

use crate::query::QueryError;
use crate::sink::SinkError;
use crate::sink::transaction::TxnFailure;
use crate::state::reader::ReadError;

/// Why the engine could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Query files that do not plan.
    #[error("{} query file(s) are invalid:\n{}", .0.len(), .0.iter().map(|e| format!("  {e}")).collect::<Vec<_>>().join("\n"))]
    Queries(Vec<QueryError>),
    /// A Kafka client could not be created or used.
    #[error("Kafka {context}: {source}")]
    Kafka {
        /// What the engine was doing.
        context: &'static str,
        /// The client error.
        source: KafkaError,
    },
    /// The HTTP listener could not be bound or served.
    #[error("HTTP listener on {addr}: {source}")]
    Http {
        /// The configured address.
        addr: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Records of the epoch were not delivered; it is aborted.
    #[error(transparent)]
    Sink(Box<SinkError>),
    /// A transactional call failed.
    #[error("transaction: {0}")]
    Transaction(#[from] TxnFailure),
    /// The changelog could not be read back.
    #[error("{0}{hint}", hint = reset_hint(.0))]
    Restore(#[from] ReadError),
    /// Every broker connection was lost: the cluster may have lost recent
    /// writes, so in-memory state is not trusted.
    #[error("every Kafka broker connection was lost")]
    BrokersLost,
    /// Metrics could not be registered (a bug).
    #[error("metrics registry: {0}")]
    Metrics(#[from] prometheus::Error),
    /// A micro-batch could not be assembled (a bug).
    #[error("assembling a micro-batch: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// The configuration's `[[sources]]` cannot be used.
    #[error("[[sources]]: {0}")]
    Sources(#[from] crate::config::DeclareError),
    /// A state value could not be encoded (a bug).
    #[error("encoding state for the changelog: {0}")]
    State(#[from] crate::state::record::FormatError),
    /// A job's work panicked (a bug, on some input): the epoch is aborted,
    /// and the engine restarts without the job, whose state is kept.
    #[error("{0}")]
    JobPanicked(super::jobs::JobPanic),
    /// The decoding thread could not be started.
    #[error("starting the decoding thread: {source}")]
    Thread {
        /// The I/O error.
        source: std::io::Error,
    },
    /// The SIGHUP handler could not be installed.
    #[error("installing the SIGHUP handler: {source}")]
    Signal {
        /// The I/O error.
        source: std::io::Error,
    },
    /// The queries or topics cannot run on the configured instances, or a
    /// newer deployment owns this instance's partitions.
    #[error("cluster: {0}")]
    Cluster(String),
    /// A previous owner of this instance's partitions committed to the
    /// changelog after the restore had read it; it is fenced now, and the
    /// restore starts again.
    #[error(
        "a previous owner of this instance's partitions committed {records} changelog records while they were restored; it is fenced now, so the restore starts again"
    )]
    Overtaken {
        /// Changelog records it committed after the restore.
        records: u64,
    },
    /// The last epoch did not commit at shutdown (it is replayed at the
    /// next start): the stop was not clean.
    #[error("stopping: {0}")]
    Drain(String),
}

impl From<SinkError> for EngineError {
    /// A record refused because this instance was fenced (or the cluster
    /// refuses transactions) is that transaction failure, which stops the
    /// engine; any other is an aborted epoch.
    fn from(error: SinkError) -> Self {
        match TxnFailure::of(error.cause.clone()) {
            failure if failure.is_fatal() => EngineError::Transaction(failure),
            _ => EngineError::Sink(Box::new(error)),
        }
    }
}

/// What to do about a corrupt changelog.
fn reset_hint(error: &ReadError) -> &'static str {
    match error {
        ReadError::Corrupt { .. } => {
            "; `cxpulse reset JOB` removes the state of the job it belongs to (README: Resetting state)"
        }
        _ => "",
    }
}

impl EngineError {
    /// Whether the engine must stop: retrying cannot help.
    pub fn is_fatal(&self) -> bool {
        match self {
            EngineError::Kafka { source, .. } => matches!(source, KafkaError::ClientCreation(_)),
            EngineError::Transaction(failure) => failure.is_fatal(),
            EngineError::Restore(e) => matches!(e, ReadError::Corrupt { .. }),
            EngineError::Sink(_)
            | EngineError::BrokersLost
            | EngineError::JobPanicked(_)
            | EngineError::Overtaken { .. } => false,
            EngineError::Queries(_)
            | EngineError::Http { .. }
            | EngineError::Metrics(_)
            | EngineError::Arrow(_)
            | EngineError::State(_)
            | EngineError::Sources(_)
            | EngineError::Signal { .. }
            | EngineError::Thread { .. }
            | EngineError::Cluster(_)
            | EngineError::Drain(_) => true,
        }
    }

    /// The error of a Kafka client call, doing `context`.
    pub(super) fn kafka(context: &'static str) -> impl FnOnce(KafkaError) -> EngineError {
        move |source| EngineError::Kafka { context, source }
    }
}
