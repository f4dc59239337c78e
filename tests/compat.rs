//! State written by an earlier release is restored by this one: the
//! changelog of `tests/fixtures/changelog-v1` (an open hour, three open
//! sessions, one under a long key, a kept complaint and the watermarks,
//! written by the release of 2026-12-07) goes into a new cluster's
//! changelog, and the engine goes on from it as if it had never stopped.
//! A second restart then shows that what the first rewrote under today's
//! keys restores once, with nothing stale left behind.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use common::exactly_once::wait_finished;
use common::process::{EngineProcess, engine_env};
use common::*;
use cxpulse::admin::{TopicSpec, ensure_topics};
use cxpulse::config::Config;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use serde_json::{Value, json};

const T0: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z
const MIN: i64 = 60_000;
const READY: Duration = Duration::from_secs(60);
const FINISH: Duration = Duration::from_secs(180);

fn fixture() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/changelog-v1")
}

fn at(ms: i64) -> String {
    cxpulse::sink::format_timestamp_millis(ms)
}

fn tx(id: &str, customer: &str, category: &str, ts: i64, amount: f64) -> String {
    json!({"event_id": id, "customer_id": customer, "ts": ts, "amount": amount, "category": category})
        .to_string()
}

/// Writes the fixture's records, in order, into `topic`.
async fn write_fixture(producer: &FutureProducer, topic: &str) -> usize {
    let text = std::fs::read_to_string(fixture().join("records.ndjson")).expect("fixture");
    let mut written = 0;
    for line in text.lines().filter(|l| !l.is_empty()) {
        let record: Value = serde_json::from_str(line).expect("fixture line");
        let key = record["key"].as_str().expect("key").as_bytes().to_vec();
        let value = record["value"].as_str().map(|v| {
            base64::engine::general_purpose::STANDARD
                .decode(v)
                .expect("base64")
        });
        let partition = i32::try_from(record["partition"].as_i64().expect("partition"))
            .expect("a partition number");
        let mut out = FutureRecord::<[u8], [u8]>::to(topic)
            .partition(partition)
            .key(&key);
        if let Some(value) = &value {
            out = out.payload(value);
        }
        producer
            .send(out, Timeout::After(Duration::from_secs(10)))
            .await
            .unwrap_or_else(|(e, _)| panic!("writing the fixture: {e}"));
        written += 1;
    }
    written
}

/// Final rows of `job`, each as the chosen fields' text.
fn finals(config: &Config, job: &str, fields: &[&str]) -> Vec<Vec<String>> {
    let topic = format!("{}{job}", config.topics.output_prefix);
    let mut rows: Vec<Vec<String>> =
        read_topic_with(&config.kafka.brokers, &topic, "read_committed", FINISH)
            .into_iter()
            .filter_map(|r| {
                let row: Value =
                    serde_json::from_str(r.value.as_deref().unwrap_or("null")).expect("row");
                (row.get("final").is_none() || row["final"] == json!(true)).then(|| {
                    fields
                        .iter()
                        .map(|f| match &row[*f] {
                            Value::String(s) => s.clone(),
                            other => other.to_string(),
                        })
                        .collect()
                })
            })
            .collect();
    rows.sort();
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changelog_written_by_the_previous_release_is_restored_whole() {
    let broker = TestBroker::start();
    let prefix = unique_prefix("compat");
    let mut config = test_config(&broker, &prefix, &fixture().join("queries"));
    config.engine.max_out_of_orderness_ms = 0;
    config.engine.idle_timeout_ms = 1_500;
    config.topics.changelog = format!("{prefix}changelog");
    create_source_topics(&config, 1).await;
    ensure_topics(
        &config,
        &[TopicSpec::new(config.topics.changelog.as_str(), 1)
            .with_config("cleanup.policy", "compact")],
    )
    .await
    .expect("changelog topic");
    let kafka = producer(broker.bootstrap());
    assert_eq!(write_fixture(&kafka, &config.topics.changelog).await, 14);
    let env = engine_env(
        &config,
        &[(
            "CXPULSE__TOPICS__CHANGELOG",
            config.topics.changelog.as_str(),
        )],
    );

    let long = format!("c{}", "x".repeat(250));
    let mut engine = EngineProcess::start(&env);
    engine.wait_ready(READY);
    let a3 = tx("a3", "c1", "a", T0 + 45 * MIN, 16.0);
    let closer = tx("z1", "c9", "z", T0 + 3 * 60 * MIN, 1.0);
    produce(
        &kafka,
        &config.topics.transactions,
        &[
            (0, None, Some(a3.as_str())),
            (0, None, Some(closer.as_str())),
        ],
    )
    .await;
    let resolved = json!({"event_id": "k2", "customer_id": "c1", "ts": T0 + 50 * MIN, "complaint_id": "k1", "status": "resolved"}).to_string();
    produce(
        &kafka,
        &config.topics.complaints,
        &[(0, Some("k1"), Some(resolved.as_str()))],
    )
    .await;
    wait_finished(&config, &engine, FINISH);
    let (code, log) = engine.terminate(Duration::from_secs(30));
    assert_eq!(code, Some(0), "{log}");

    // The hour kept a1, a2, l1 (a: 1 + 2 + 8) and b1 (b: 4), and took a3.
    assert_eq!(
        finals(
            &config,
            "per_hour",
            &["window_start", "category", "n", "revenue"]
        ),
        [
            vec![at(T0), "a".to_owned(), "4".to_owned(), "27.0".to_owned()],
            vec![at(T0), "b".to_owned(), "1".to_owned(), "4.0".to_owned()],
        ]
    );
    // c1's session [00:10, 00:50) took a3 and ends 30 minutes after it.
    let sessions = |config: &Config| {
        finals(
            config,
            "visits",
            &["customer_id", "window_start", "window_end", "n", "spent"],
        )
    };
    let expected = vec![
        vec![
            "c1".to_owned(),
            at(T0 + 10 * MIN),
            at(T0 + 75 * MIN),
            "3".to_owned(),
            "19.0".to_owned(),
        ],
        vec![
            "c2".to_owned(),
            at(T0 + 30 * MIN),
            at(T0 + 60 * MIN),
            "1".to_owned(),
            "4.0".to_owned(),
        ],
        vec![
            long.clone(),
            at(T0 + 40 * MIN),
            at(T0 + 70 * MIN),
            "1".to_owned(),
            "8.0".to_owned(),
        ],
    ];
    let mut sorted = expected.clone();
    sorted.sort();
    assert_eq!(sessions(&config), sorted);
    // The kept complaint remembers when it was opened.
    assert_eq!(
        finals(
            &config,
            "complaint_updates",
            &["event_id", "status", "opened_ts"]
        ),
        [vec![
            "k2".to_owned(),
            "resolved".to_owned(),
            at(T0 + 15 * MIN)
        ]]
    );

    // Restarted from the rewritten changelog: z1's session closes, and no
    // session of the earlier records comes back.
    let mut engine = EngineProcess::start(&env);
    engine.wait_ready(READY);
    let later = tx("z2", "c8", "z", T0 + 6 * 60 * MIN, 1.0);
    produce(
        &kafka,
        &config.topics.transactions,
        &[(0, None, Some(later.as_str()))],
    )
    .await;
    wait_finished(&config, &engine, FINISH);
    let (code, log) = engine.terminate(Duration::from_secs(30));
    assert_eq!(code, Some(0), "{log}");
    let mut with_z1 = expected;
    with_z1.push(vec![
        "c9".to_owned(),
        at(T0 + 180 * MIN),
        at(T0 + 210 * MIN),
        "1".to_owned(),
        "1.0".to_owned(),
    ]);
    with_z1.sort();
    assert_eq!(sessions(&config), with_z1);
    let customers: BTreeSet<String> = sessions(&config)
        .into_iter()
        .map(|r| r[0].clone())
        .collect();
    assert_eq!(customers.len(), 4, "each session once");
}
