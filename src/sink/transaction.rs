//! The transaction around each epoch: start, offsets, commit, abort.
//!
//! librdkafka's transactional calls block, so each runs on tokio's blocking
//! pool. Their failures are sorted into what the engine must do about them
//! ([`TxnFailure`]).

use std::time::Duration;

use rdkafka::TopicPartitionList;
use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, Producer};
use rdkafka::types::RDKafkaErrorCode;

use super::Sink;
use crate::brokers::ProducerWatch;

/// How long one transactional call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// What a failed transactional call means for the engine.
#[derive(Debug, thiserror::Error)]
pub enum TxnFailure {
    /// A newer instance with the same `transactional.id` took over: this
    /// one must stop.
    #[error(
        "fenced: a newer cxpulse instance took over this one's partitions (a restart of the \
         same kafka.group_id and cluster.index, a rescale, or a reset); this one \
         stops: {0}"
    )]
    Fenced(KafkaError),
    /// The broker cannot run transactions, or refuses this client them.
    #[error(
        "the Kafka cluster refuses transactions ({0}); cxpulse needs a broker with \
         transaction support (Kafka 2.5 or later, or a compatible broker) and the right \
         to use its transactional.id"
    )]
    Unsupported(KafkaError),
    /// The epoch cannot commit; abort it and start again from the last
    /// committed one (a timeout, an unreachable broker, a failed record).
    #[error("{0}")]
    Abortable(KafkaError),
}

impl TxnFailure {
    /// Sorts a Kafka error from a transactional call or a delivery.
    pub fn of(error: KafkaError) -> Self {
        match error.rdkafka_error_code() {
            Some(
                RDKafkaErrorCode::Fenced
                | RDKafkaErrorCode::ProducerFenced
                | RDKafkaErrorCode::InvalidProducerEpoch
                | RDKafkaErrorCode::TransactionCoordinatorFenced
                | RDKafkaErrorCode::FencedInstanceId,
            ) => TxnFailure::Fenced(error),
            Some(
                RDKafkaErrorCode::UnsupportedFeature
                | RDKafkaErrorCode::UnsupportedVersion
                | RDKafkaErrorCode::UnsupportedForMessageFormat
                | RDKafkaErrorCode::InvalidTransactionTimeout
                | RDKafkaErrorCode::TransactionalIdAuthorizationFailed
                | RDKafkaErrorCode::ClusterAuthorizationFailed,
            ) => TxnFailure::Unsupported(error),
            _ => TxnFailure::Abortable(error),
        }
    }

    /// Whether the engine must stop rather than restore and go on.
    pub fn is_fatal(&self) -> bool {
        !matches!(self, TxnFailure::Abortable(_))
    }
}

/// Fails with [`TxnFailure::Unsupported`] if the cluster refuses this
/// client transactions: it registers `probe`, a transactional id that
/// never writes.
pub async fn check_supported(
    client: &rdkafka::ClientConfig,
    probe: &str,
) -> Result<(), TxnFailure> {
    match fence(client, probe).await.map_err(TxnFailure::of) {
        Err(unsupported @ TxnFailure::Unsupported(_)) => Err(unsupported),
        _ => Ok(()),
    }
}

/// Fences `transactional_id`, an id no instance uses any more: its open
/// transaction, if any, is aborted, so that it holds no topic back, and a
/// process still using it is refused from now on.
pub async fn fence(
    client: &rdkafka::ClientConfig,
    transactional_id: &str,
) -> Result<(), KafkaError> {
    let producer: rdkafka::producer::BaseProducer = client
        .clone()
        .set("transactional.id", transactional_id)
        .create()?;
    tokio::task::spawn_blocking(move || producer.init_transactions(CALL_TIMEOUT))
        .await
        .unwrap_or(Err(KafkaError::Canceled))
}

/// Fences each of `transactional_ids` once ([`fence`]), in order; returns
/// those fenced.
pub async fn fence_all(
    client: &rdkafka::ClientConfig,
    transactional_ids: Vec<String>,
) -> Result<Vec<String>, KafkaError> {
    let mut fenced: Vec<String> = Vec::new();
    for id in transactional_ids {
        if !fenced.contains(&id) {
            fence(client, &id).await?;
            fenced.push(id);
        }
    }
    Ok(fenced)
}

impl Sink {
    /// The fencing that made the producer fail for good, if that is what
    /// happened: its delivery reports then only say "fatal", and may come
    /// before the error callback that marks the instance fenced.
    pub fn fenced_by_fatal_error(&self) -> Option<KafkaError> {
        use rdkafka::producer::Producer;
        let (code, _) = self.producer.client().fatal_error()?;
        let error = KafkaError::MessageProduction(code);
        matches!(TxnFailure::of(error.clone()), TxnFailure::Fenced(_)).then_some(error)
    }

    /// Registers the transactional id with the broker: fences any earlier
    /// instance with the same id and aborts its open transaction.
    pub async fn init(&self) -> Result<(), TxnFailure> {
        self.blocking(|p| p.init_transactions(CALL_TIMEOUT)).await
    }

    /// Opens a transaction.
    pub async fn begin(&self) -> Result<(), TxnFailure> {
        self.blocking(|p| p.begin_transaction()).await
    }

    /// Adds the consumer offsets to the open transaction and commits it.
    pub async fn commit(
        &self,
        offsets: TopicPartitionList,
        group: ConsumerGroupMetadata,
    ) -> Result<(), TxnFailure> {
        self.blocking(move |p| {
            if offsets.count() > 0 {
                p.send_offsets_to_transaction(&offsets, &group, CALL_TIMEOUT)?;
            }
            p.commit_transaction(CALL_TIMEOUT)
        })
        .await
    }

    /// Commits the open transaction, which holds records and no offsets.
    pub async fn commit_records(&self) -> Result<(), TxnFailure> {
        self.blocking(|p| p.commit_transaction(CALL_TIMEOUT)).await
    }

    /// Aborts the open transaction: nothing sent in it becomes visible to
    /// read_committed readers.
    pub async fn abort(&self) -> Result<(), TxnFailure> {
        self.blocking(|p| p.abort_transaction(CALL_TIMEOUT)).await
    }

    async fn blocking(
        &self,
        call: impl FnOnce(&FutureProducer<ProducerWatch>) -> Result<(), KafkaError> + Send + 'static,
    ) -> Result<(), TxnFailure> {
        if self.watch.lost() {
            return Err(TxnFailure::Abortable(super::brokers_lost()));
        }
        let producer = self.producer.clone();
        let finished = tokio::select! {
            finished = tokio::task::spawn_blocking(move || call(&producer)) => finished,
            () = self.watch.until_lost() => {
                // The call goes on, holding the producer, until the broker
                // is back or it times out; with nothing left to send.
                self.discard_queued();
                return Err(TxnFailure::Abortable(super::brokers_lost()));
            }
        };
        match finished {
            Ok(result) => result.map_err(TxnFailure::of),
            Err(join) => Err(TxnFailure::Abortable(KafkaError::Canceled)).inspect_err(|_| {
                tracing::error!(error = %join, "a transactional call did not finish");
            }),
        }
    }
}
