//! Noticing that the Kafka cluster went away, or that this instance was
//! fenced. When every broker connection of the engine's consumer or
//! producer is down, `/readyz` turns false at once, and the engine restores
//! its state from the changelog before going on (a restarted cluster may
//! have lost its last writes, and with them the epochs the engine has in
//! memory). When the producer is fenced, or every broker is lost, sends and
//! transactional calls stop waiting at once (and, once lost, the producer
//! drops what it still holds: see `Sink`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Notify;

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

use crate::health::Health;

/// Shared by the clients of one engine start.
#[derive(Debug, Clone)]
pub struct BrokerWatch {
    lost: Arc<AtomicBool>,
    lost_now: Arc<Notify>,
    health: Arc<Health>,
    fenced: Arc<Mutex<Option<KafkaError>>>,
    fenced_now: Arc<Notify>,
}

impl BrokerWatch {
    /// A watch reporting to `health`.
    pub fn new(health: Arc<Health>) -> Self {
        Self {
            lost: Arc::new(AtomicBool::new(false)),
            lost_now: Arc::new(Notify::new()),
            health,
            fenced: Arc::new(Mutex::new(None)),
            fenced_now: Arc::new(Notify::new()),
        }
    }

    /// The error that fenced this instance, if one did.
    pub fn fenced(&self) -> Option<KafkaError> {
        self.fenced
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Resolves once this instance is fenced (at once if it already is).
    pub async fn until_fenced(&self) -> KafkaError {
        loop {
            let notified = self.fenced_now.notified();
            if let Some(error) = self.fenced() {
                return error;
            }
            notified.await;
        }
    }

    /// Whether every broker connection was lost since the watch began.
    pub fn lost(&self) -> bool {
        self.lost.load(Ordering::Relaxed)
    }

    /// Resolves once every broker connection was lost (at once if it was).
    pub async fn until_lost(&self) {
        loop {
            let notified = self.lost_now.notified();
            if self.lost() {
                return;
            }
            notified.await;
        }
    }

    /// A client error: logged; every broker down marks the engine not ready.
    pub fn on_error(&self, error: &KafkaError, reason: &str) {
        match error.rdkafka_error_code() {
            Some(RDKafkaErrorCode::PartitionEOF) => {}
            Some(RDKafkaErrorCode::Fenced | RDKafkaErrorCode::FencedInstanceId) => {
                tracing::error!(error = %error, reason, "this instance was fenced");
                self.fenced
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .get_or_insert(error.clone());
                self.fenced_now.notify_waiters();
            }
            Some(RDKafkaErrorCode::AllBrokersDown) => {
                if !self.lost.swap(true, Ordering::Relaxed) {
                    tracing::warn!(reason, "every Kafka broker is unreachable");
                    self.health
                        .set_blocker(Some("every Kafka broker is unreachable".to_owned()));
                    self.lost_now.notify_waiters();
                }
            }
            _ => tracing::warn!(error = %error, reason, "Kafka client error"),
        }
    }
}

/// librdkafka's log lines, through tracing.
pub fn log(level: RDKafkaLogLevel, facility: &str, message: &str) {
    match level {
        RDKafkaLogLevel::Emerg
        | RDKafkaLogLevel::Alert
        | RDKafkaLogLevel::Critical
        | RDKafkaLogLevel::Error => tracing::error!(facility, "librdkafka: {message}"),
        RDKafkaLogLevel::Warning => tracing::warn!(facility, "librdkafka: {message}"),
        _ => tracing::debug!(facility, "librdkafka: {message}"),
    }
}

/// The producer's context: its errors go to the watch.
pub struct ProducerWatch(pub BrokerWatch);

impl ClientContext for ProducerWatch {
    fn error(&self, error: KafkaError, reason: &str) {
        self.0.on_error(&error, reason);
    }

    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        log(level, facility, message);
    }
}

/// The context of consumers that read to the end of their partitions (the
/// changelog restore, the lookup tables): reaching an end is not an error.
pub struct ReadToEndContext;

impl ClientContext for ReadToEndContext {
    fn error(&self, error: KafkaError, reason: &str) {
        let end = matches!(error, KafkaError::PartitionEOF(_))
            || error.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::PartitionEOF);
        if !end {
            tracing::warn!(error = %error, reason, "Kafka client error");
        }
    }

    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        log(level, facility, message);
    }
}

impl ConsumerContext for ReadToEndContext {}
