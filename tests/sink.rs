//! Delivery failures are retried, counted and reported, never ignored.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cxpulse::config::Config;
use cxpulse::metrics::Metrics;
use cxpulse::sink::{OutRecord, Sink};

#[tokio::test]
async fn undeliverable_records_are_retried_then_reported() {
    // Nothing listens on port 1: every attempt times out.
    let mut config = Config::load(None).expect("default config");
    config.kafka.brokers = "127.0.0.1:1".to_owned();
    config.kafka.message_timeout_ms = 300;
    config.kafka.produce_retries = 2;
    let metrics = Arc::new(Metrics::new().expect("metrics"));
    let sink = Sink::new(&config, Arc::clone(&metrics)).expect("producer");
    let record = |n: u8| OutRecord {
        topic: "cx.metrics.nowhere".to_owned(),
        key: Some(vec![n]),
        payload: Some(b"{}".to_vec()),
        headers: Vec::new(),
    };
    let started = Instant::now();
    let err = sink
        .send_all(vec![record(1), record(2)])
        .await
        .expect_err("cannot deliver");
    assert_eq!(
        (err.count, err.attempts, err.topic.as_str()),
        (2, 3, "cx.metrics.nowhere")
    );
    assert!(
        err.to_string().starts_with(
            "2 record(s) to topic cx.metrics.nowhere were not delivered after 3 attempts"
        ),
        "{err}"
    );
    assert_eq!(
        metrics
            .produce_errors
            .with_label_values(&["cx.metrics.nowhere"])
            .get(),
        6,
        "2 records x 3 attempts"
    );
    assert!(started.elapsed() < Duration::from_secs(20));
}
