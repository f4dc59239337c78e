//! Publishing a simulation to Kafka in compressed real time: the load
//! generator behind `cxpulse generate` and `cxpulse demo`.
//!
//! Each event is sent when its simulated time comes, with simulated time
//! running `speed` times faster than the wall clock. The population is sized
//! so that, at that speed, the customers produce about `rate` events per
//! second.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use rdkafka::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use tokio::sync::watch;
use tokio::time::Instant;

use super::{DAY, Generator, Simulation};
use crate::config::Config;
use crate::schema::Source;

/// Simulated days used to measure how many events one customer produces.
const CALIBRATION_DAYS: u32 = 28;
/// Customers used for that measurement.
const CALIBRATION_CUSTOMERS: usize = 1_000;

/// Counts shared between the publisher and whoever shows its progress.
#[derive(Debug, Default)]
pub struct Progress {
    sent: [AtomicU64; 4],
    delivered: AtomicU64,
    failed: AtomicU64,
    simulated_ms: AtomicI64,
}

impl Progress {
    /// Records queued for `kind` so far.
    pub fn sent(&self, kind: Source) -> u64 {
        self.sent[kind_index(kind)].load(Ordering::Relaxed)
    }

    /// Records queued so far, all sources.
    pub fn sent_total(&self) -> u64 {
        self.sent.iter().map(|n| n.load(Ordering::Relaxed)).sum()
    }

    /// Records the broker acknowledged.
    pub fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }

    /// Records the broker did not accept.
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    /// Event time of the latest record sent (ms since the epoch), 0 before the first.
    pub fn simulated_ms(&self) -> i64 {
        self.simulated_ms.load(Ordering::Relaxed)
    }
}

fn kind_index(kind: Source) -> usize {
    super::CX_SOURCES
        .iter()
        .position(|name| *name == kind.name())
        .unwrap_or_default()
}

/// Counts deliveries into a [`Progress`].
struct DeliveryCounter(Arc<Progress>);

impl ClientContext for DeliveryCounter {}

impl ProducerContext for DeliveryCounter {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let counter = if result.is_ok() {
            &self.0.delivered
        } else {
            &self.0.failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Customers needed to produce about `rate` events per second when simulated
/// time runs `speed` times faster than the wall clock (measured on a sample
/// of the same seed's simulation).
pub fn customers_for_rate(seed: u64, start_ms: i64, rate: f64, speed: f64) -> usize {
    let sample = Generator::new(seed, CALIBRATION_CUSTOMERS, start_ms).records(CALIBRATION_DAYS);
    let events = sample
        .iter()
        .filter(|r| r.kind != crate::tools::generate::cx("customers"))
        .count();
    let per_customer_ms =
        events as f64 / (CALIBRATION_CUSTOMERS as f64 * f64::from(CALIBRATION_DAYS) * DAY as f64);
    let per_customer_second = per_customer_ms * 1000.0 * speed;
    ((rate / per_customer_second).round() as usize).clamp(1, 10_000_000)
}

/// Sends `simulation` to the configured source topics (`topics.*`), each
/// record when its simulated time comes: `speed` simulated milliseconds per
/// wall-clock millisecond, counted from `start_ms`. Stops when `stop` turns
/// true or the simulation ends, then waits up to 10 s for the broker to
/// acknowledge what was sent.
pub async fn publish(
    config: &Config,
    simulation: Simulation,
    start_ms: i64,
    speed: f64,
    progress: Arc<Progress>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), KafkaError> {
    let mut client = config.client_config();
    client.set("linger.ms", "20");
    let producer: ThreadedProducer<DeliveryCounter> =
        client.create_with_context(DeliveryCounter(Arc::clone(&progress)))?;
    let started = Instant::now();
    for record in simulation {
        if *stop.borrow() {
            break;
        }
        let offset_ms = (record.ts - start_ms).max(0) as f64 / speed;
        let due = started + Duration::from_secs_f64(offset_ms / 1000.0);
        if due > Instant::now() {
            tokio::select! {
                () = tokio::time::sleep_until(due) => {}
                _ = stop.changed() => break,
            }
        }
        let topic = config.topics.source_topic(record.kind);
        let mut message = BaseRecord::to(topic)
            .key(record.key.as_str())
            .payload(record.value.as_str());
        loop {
            match producer.send(message) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    message = back;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err((e, _)) => return Err(e),
            }
        }
        progress.sent[kind_index(record.kind)].fetch_add(1, Ordering::Relaxed);
        if record.kind != crate::tools::generate::cx("customers") {
            progress
                .simulated_ms
                .fetch_max(record.ts, Ordering::Relaxed);
        }
    }
    tokio::task::spawn_blocking(move || producer.flush(Duration::from_secs(10)))
        .await
        .map_err(|_| KafkaError::Canceled)?
}

#[cfg(test)]
mod tests {
    use super::*;

    const START: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

    #[test]
    fn the_population_scales_with_the_rate_and_against_the_speed() {
        let base = customers_for_rate(1, START, 100.0, 3_600.0);
        // Twice the rate needs twice the customers; twice the speed, half.
        let double_rate = customers_for_rate(1, START, 200.0, 3_600.0);
        let double_speed = customers_for_rate(1, START, 100.0, 7_200.0);
        assert!(base > 10, "{base}");
        assert!(
            double_rate.abs_diff(2 * base) <= 1,
            "{double_rate} vs {base}"
        );
        assert!(
            double_speed.abs_diff(base / 2) <= 1,
            "{double_speed} vs {base}"
        );
        // And those customers do produce the rate: events of the first 28
        // simulated days, per simulated second, times the speed.
        let records = Generator::new(1, base, START).records(CALIBRATION_DAYS);
        let events = records
            .iter()
            .filter(|r| r.kind != crate::tools::generate::cx("customers"))
            .count() as f64;
        let per_wall_second = events / (f64::from(CALIBRATION_DAYS) * 86_400.0) * 3_600.0;
        assert!(
            (per_wall_second - 100.0).abs() < 15.0,
            "{per_wall_second} events per second"
        );
    }
}
