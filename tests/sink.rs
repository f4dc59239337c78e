//! The transactional sink against the real broker: committed epochs are
//! visible to read_committed readers, aborted ones only to read_uncommitted
//! readers; a newer instance fences an older one; undeliverable records are
//! reported and counted, never ignored.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{TestBroker, read_topic_with, unique_prefix};
use cxpulse::admin::{TopicSpec, ensure_topics};
use cxpulse::brokers::BrokerWatch;
use cxpulse::config::Config;
use cxpulse::http::Health;
use cxpulse::metrics::Metrics;
use cxpulse::sink::transaction::TxnFailure;
use cxpulse::sink::{OutRecord, Sink};
use rdkafka::TopicPartitionList;
use rdkafka::consumer::{BaseConsumer, Consumer};

fn watch() -> BrokerWatch {
    BrokerWatch::new(Arc::new(Health::default()))
}

fn record(topic: &str, value: &str) -> OutRecord {
    OutRecord {
        topic: topic.to_owned(),
        partition: None,
        key: Some(value.as_bytes().to_vec()),
        payload: Some(value.as_bytes().to_vec()),
        headers: Vec::new(),
    }
}

/// A consumer of the test's group, for its group metadata (offsets are
/// committed in the group's name).
fn group_member(config: &Config) -> BaseConsumer {
    rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &config.kafka.brokers)
        .set("group.id", &config.kafka.group_id)
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_epochs_are_read_committed_and_aborted_ones_are_not() {
    let broker = TestBroker::start();
    let prefix = unique_prefix("sink");
    let mut config = Config::load(None).expect("default config");
    config.kafka.brokers = broker.bootstrap().to_owned();
    config.kafka.group_id = format!("{prefix}group");
    let topic = format!("{prefix}out");
    ensure_topics(&config, &[TopicSpec::new(&topic, 1)])
        .await
        .expect("topic");
    let metrics = Arc::new(Metrics::new().expect("metrics"));
    let member = group_member(&config);

    let sink = Sink::new(&config, "sink-test", Arc::clone(&metrics), watch()).expect("producer");
    sink.init().await.expect("init");
    sink.begin().await.expect("begin");
    let positions = sink
        .send_all(vec![record(&topic, "a"), record(&topic, "b")])
        .await
        .expect("delivered");
    assert_eq!(positions, [(0, 0), (0, 1)]);
    let group = member.group_metadata().expect("group metadata");
    sink.commit(TopicPartitionList::new(), group)
        .await
        .expect("commit");
    sink.begin().await.expect("begin");
    sink.send_all(vec![record(&topic, "aborted")])
        .await
        .expect("delivered");
    sink.abort().await.expect("abort");

    // A newer instance with the same id fences the older one.
    sink.begin().await.expect("begin");
    sink.send_all(vec![record(&topic, "fenced")])
        .await
        .expect("delivered");
    let newer = Sink::new(&config, "sink-test", Arc::clone(&metrics), watch()).expect("producer");
    newer.init().await.expect("init");
    let group = member.group_metadata().expect("group metadata");
    let failure = sink
        .commit(TopicPartitionList::new(), group)
        .await
        .expect_err("fenced");
    assert!(matches!(failure, TxnFailure::Fenced(_)), "{failure:?}");
    assert!(failure.is_fatal());

    let values = |isolation: &str| -> Vec<String> {
        read_topic_with(
            broker.bootstrap(),
            &topic,
            isolation,
            Duration::from_secs(10),
        )
        .into_iter()
        .filter_map(|r| r.value)
        .collect()
    };
    assert_eq!(values("read_committed"), ["a", "b"]);
    assert_eq!(values("read_uncommitted"), ["a", "b", "aborted", "fenced"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undeliverable_record_is_reported_and_counted() {
    let broker = TestBroker::start();
    let prefix = unique_prefix("sink-fail");
    let mut config = Config::load(None).expect("default config");
    config.kafka.brokers = broker.bootstrap().to_owned();
    let topic = format!("{prefix}out");
    ensure_topics(&config, &[TopicSpec::new(&topic, 1)])
        .await
        .expect("topic");
    let metrics = Arc::new(Metrics::new().expect("metrics"));
    let sink = Sink::new(
        &config,
        &format!("{prefix}tx"),
        Arc::clone(&metrics),
        watch(),
    )
    .expect("producer");
    sink.init().await.expect("init");
    sink.begin().await.expect("begin");
    // Larger than the producer's message.max.bytes (1 MB by default).
    let huge = "x".repeat(2_000_000);
    let err = sink
        .send_all(vec![record(&topic, "ok"), record(&topic, &huge)])
        .await
        .expect_err("too large");
    assert_eq!((err.count, err.topic.as_str()), (1, topic.as_str()));
    assert!(
        err.to_string()
            .starts_with(&format!("1 record(s) to topic {topic} were not delivered")),
        "{err}"
    );
    assert_eq!(metrics.produce_errors.with_label_values(&[&topic]).get(), 1);
    sink.abort().await.expect("abort");
}
