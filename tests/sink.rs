//! The transactional sink against the real broker: committed epochs are
//! visible to read_committed readers, aborted ones only to read_uncommitted
//! readers; a newer instance fences an older one; undeliverable records are
//! reported and counted, never ignored; a producer that lost every broker
//! sends nothing more, so nothing of its epoch hides a later commit.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{TestBroker, read_topic_with, unique_prefix};
use cxpulse::admin::{TopicSpec, ensure_topics};
use cxpulse::brokers::BrokerWatch;
use cxpulse::config::Config;
use cxpulse::health::Health;
use cxpulse::metrics::Metrics;
use cxpulse::sink::transaction::TxnFailure;
use cxpulse::sink::{OutRecord, Sink};
use cxpulse::tools::local_broker::LocalBroker;
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
        job: None,
    }
}

fn new_sink(config: &Config, transactional_id: &str, metrics: &Arc<Metrics>) -> Sink {
    Sink::new(
        config,
        transactional_id,
        cxpulse::sink::Limits::default(),
        Arc::clone(metrics),
        watch(),
    )
    .expect("producer")
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

    let sink = new_sink(&config, "sink-test", &metrics);
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
    let newer = new_sink(&config, "sink-test", &metrics);
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
async fn a_record_its_topic_cannot_take_is_handed_back_and_the_transaction_goes_on() {
    let broker = TestBroker::start();
    let prefix = unique_prefix("sink-fail");
    let mut config = Config::load(None).expect("default config");
    config.kafka.brokers = broker.bootstrap().to_owned();
    config.kafka.group_id = format!("{prefix}group");
    let topic = format!("{prefix}out");
    let small = format!("{prefix}small");
    let compacted = format!("{prefix}compacted");
    ensure_topics(
        &config,
        &[
            TopicSpec::new(&topic, 1),
            TopicSpec::new(&small, 1).with_config("max.message.bytes", "10000"),
            TopicSpec::new(&compacted, 1).with_config("cleanup.policy", "compact"),
        ],
    )
    .await
    .expect("topics");
    let limits =
        cxpulse::admin::topic_limits(&config, &[topic.clone(), small.clone(), compacted.clone()])
            .await
            .expect("describe");
    assert_eq!(limits[&small].max_message_bytes, 10_000, "{limits:?}");
    assert!(limits[&compacted].compacted, "{limits:?}");
    let metrics = Arc::new(Metrics::new().expect("metrics"));
    let member = group_member(&config);
    let sink = Sink::new(
        &config,
        &format!("{prefix}tx"),
        cxpulse::sink::Limits::new(limits, &Default::default()),
        Arc::clone(&metrics),
        watch(),
    )
    .expect("producer");
    sink.init().await.expect("init");
    sink.begin().await.expect("begin");
    // Over the default topic's 1 MiB; over the small topic's 10,000 bytes;
    // without a key for the compacted topic.
    let huge = "x".repeat(2_000_000);
    let mut keyless = record(&compacted, "no key");
    keyless.key = None;
    let mut in_flight = cxpulse::sink::InFlight::default();
    let refused = sink
        .enqueue(
            vec![
                record(&topic, "ok"),
                record(&topic, &huge),
                record(&small, &"y".repeat(20_000)),
                record(&small, "fits"),
                keyless,
                record(&compacted, "keyed"),
            ],
            &mut in_flight,
        )
        .await
        .expect("enqueued");
    let refused: Vec<(String, usize)> = refused
        .iter()
        .map(|r| {
            (
                r.record.topic.clone(),
                r.record.payload.as_ref().map_or(0, Vec::len),
            )
        })
        .collect();
    assert_eq!(
        refused,
        [
            (topic.clone(), 2_000_000),
            (small.clone(), 20_000),
            (compacted.clone(), 6)
        ]
    );
    assert_eq!(metrics.produce_errors.with_label_values(&[&topic]).get(), 1);
    sink.delivered(in_flight).await.expect("the rest delivered");
    let group = member.group_metadata().expect("group metadata");
    sink.commit(TopicPartitionList::new(), group)
        .await
        .expect("the transaction commits without the refused records");
    let read = |t: &str| -> Vec<String> {
        read_topic_with(
            broker.bootstrap(),
            t,
            "read_committed",
            Duration::from_secs(10),
        )
        .into_iter()
        .filter_map(|r| r.value)
        .collect()
    };
    assert_eq!(read(&topic), ["ok"]);
    assert_eq!(read(&small), ["fits"]);
    assert_eq!(read(&compacted), ["keyed"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_that_lost_every_broker_sends_nothing_more() {
    // Its own broker: this test stops it.
    let mut broker = LocalBroker::start().unwrap_or_else(|e| panic!("{e}"));
    let mut config = Config::load(None).expect("default config");
    config.kafka.brokers = broker.bootstrap();
    config.kafka.group_id = "lost".to_owned();
    let topic = "lost.out";
    ensure_topics(&config, &[TopicSpec::new(topic, 1)])
        .await
        .expect("topic");
    let metrics = Arc::new(Metrics::new().expect("metrics"));
    let member = group_member(&config);
    let group = || member.group_metadata().expect("group metadata");

    let watch = watch();
    let old = Sink::new(
        &config,
        "lost-tx",
        cxpulse::sink::Limits::default(),
        Arc::clone(&metrics),
        watch.clone(),
    )
    .expect("producer");
    old.init().await.expect("init");
    old.begin().await.expect("begin");
    old.send_all(vec![record(topic, "before")])
        .await
        .expect("delivered");
    old.commit(TopicPartitionList::new(), group())
        .await
        .expect("commit");
    old.begin().await.expect("begin");
    old.send_all(vec![record(topic, "open")])
        .await
        .expect("delivered");
    broker.stop(Duration::from_secs(10));
    // Given up as soon as the loss is noticed (it may be before or after
    // the record is queued), rather than delivered when the broker is back.
    let lost = tokio::time::timeout(
        Duration::from_secs(5),
        old.send_all(vec![record(topic, "while down")]),
    )
    .await
    .expect("no wait for the broker")
    .expect_err("not delivered");
    assert_eq!(lost.count, 1);
    assert!(watch.lost());
    broker.restart().expect("restart");
    // The old producer lives on for a while after the broker is back (as
    // one held by a transactional call does).
    tokio::time::sleep(Duration::from_secs(4)).await;
    drop(old);

    let new = new_sink(&config, "lost-tx", &metrics);
    new.init().await.expect("init");
    new.begin().await.expect("begin");
    new.send_all(vec![record(topic, "after")])
        .await
        .expect("delivered");
    new.commit(TopicPartitionList::new(), group())
        .await
        .expect("commit");
    let committed: Vec<String> = read_topic_with(
        &broker.bootstrap(),
        topic,
        "read_committed",
        Duration::from_secs(10),
    )
    .into_iter()
    .filter_map(|r| r.value)
    .collect();
    assert_eq!(committed, ["before", "after"]);
}
