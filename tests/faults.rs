//! Bad input and bad operations against the real broker: no record stalls
//! or poisons the engine, no result is lost silently, and the operator
//! cannot break the guarantees by mistake.
//!
//! Each test runs its own broker and engine, one test at a time. Events are
//! in event-time order on their partition and no out-of-orderness is
//! allowed, so which windows close is decided by the events alone; the
//! expected rows are worked out by hand, or from the generated events by
//! the test itself.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::exactly_once::{uncommitted, wait_all_committed, wait_finished};
use common::process::{BIN, EngineProcess, engine_env};
use common::{
    ReadRecord, TestBroker, create_source_topics, metric, read_topic_with, test_config,
    unique_prefix,
};
use cxpulse::admin::{TopicSpec, ensure_topics};
use cxpulse::config::Config;
use rand::{Rng, SeedableRng};
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{Value, json};

const T0: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z
const MINUTE: i64 = 60_000;
const HOUR: i64 = 3_600_000;
const READY: Duration = Duration::from_secs(60);
const DRAIN: Duration = Duration::from_secs(30);
const FINISH: Duration = Duration::from_secs(300);

/// Count and revenue per category and hour.
const PER_HOUR: &str = "-- @key category\nSELECT window_start, window_end, category, count(*) AS n, sum(amount) AS revenue\nFROM TUMBLE(transactions, ts, INTERVAL '1 hour')\nGROUP BY window_start, window_end, category\n";

/// The tests run one at a time: each runs a broker and engines of its own,
/// and the machine has two cores.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A broker, a configuration over a queries directory holding `jobs`, and
/// the source topics (one partition each, so that order is produce order).
async fn setup(test: &str, jobs: &[(&str, &str)]) -> (TestBroker, Config, tempfile::TempDir) {
    let broker = TestBroker::start();
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, sql) in jobs {
        std::fs::write(dir.path().join(format!("{name}.sql")), sql).expect("write query");
    }
    let mut config = test_config(&broker, &unique_prefix(test), dir.path());
    config.engine.max_out_of_orderness_ms = 0;
    config.engine.idle_timeout_ms = 1_500;
    config.engine.reload_interval_ms = 500;
    create_source_topics(&config, 1).await;
    (broker, config, dir)
}

fn kafka(config: &Config) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", &config.kafka.brokers)
        .set("message.timeout.ms", "30000")
        .set("message.max.bytes", "5000000")
        .set("linger.ms", "5")
        .create()
        .expect("producer")
}

/// Produces `values` to partition 0 of `topic` in order; returns their
/// offsets.
async fn send(producer: &FutureProducer, topic: &str, values: &[Vec<u8>]) -> Vec<i64> {
    let mut offsets = Vec::with_capacity(values.len());
    for chunk in values.chunks(5_000) {
        let sends = chunk.iter().map(|value| {
            producer.send(
                FutureRecord::<(), [u8]>::to(topic)
                    .partition(0)
                    .payload(value.as_slice()),
                Duration::from_secs(30),
            )
        });
        for sent in futures::future::join_all(sends).await {
            let delivery = sent.unwrap_or_else(|(e, _)| panic!("produce to {topic}: {e}"));
            offsets.push(delivery.offset);
        }
    }
    offsets
}

/// A transaction as JSON.
fn tx(id: &str, ts: i64, amount: f64, category: &str) -> Vec<u8> {
    json!({"event_id": id, "customer_id": "c1", "ts": ts, "amount": amount, "category": category})
        .to_string()
        .into_bytes()
}

/// `n` transactions of `category`, one a second from `from`.
fn txs(prefix: &str, n: usize, from: i64, category: &str) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            tx(
                &format!("{prefix}{i}"),
                from + i as i64 * 1_000,
                1.0,
                category,
            )
        })
        .collect()
}

/// Every record of `topic` a read_committed reader sees.
fn read_all(config: &Config, topic: &str) -> Vec<ReadRecord> {
    read_topic_with(
        &config.kafka.brokers,
        topic,
        "read_committed",
        Duration::from_secs(60),
    )
}

/// The final rows of `job`, by (window start, category): (count, revenue),
/// each row's number of copies checked to be one.
fn per_hour_rows(config: &Config, job: &str) -> BTreeMap<(String, String), (i64, f64)> {
    let topic = format!("{}{job}", config.topics.output_prefix);
    let mut rows = BTreeMap::new();
    for record in read_all(config, &topic) {
        let row: Value =
            serde_json::from_str(record.value.as_deref().unwrap_or("null")).expect("a JSON row");
        if row["final"] != Value::Bool(true) {
            continue;
        }
        let id = (
            row["window_start"].as_str().unwrap_or_default().to_owned(),
            row["category"].as_str().unwrap_or_default().to_owned(),
        );
        let value = (
            row["n"].as_i64().unwrap_or(-1),
            row["revenue"].as_f64().unwrap_or(f64::NAN),
        );
        assert!(
            rows.insert(id.clone(), value).is_none(),
            "{id:?} published twice"
        );
    }
    rows
}

fn at(ms: i64) -> String {
    cxpulse::sink::format_timestamp_millis(ms)
}

fn header<'a>(record: &'a ReadRecord, name: &str) -> &'a str {
    record.headers.get(name).map_or("", String::as_str)
}

/// The engine must not have restored after a failure, nor aborted an epoch.
fn assert_no_restart(engine: &EngineProcess) {
    let metrics = engine.metrics();
    assert_eq!(
        metric(&metrics, "cxpulse_restores_total{reason=\"recovery\"}"),
        Some(0.0),
        "{metrics}\n{}",
        engine.log_text()
    );
    assert_eq!(
        metric(&metrics, "cxpulse_transactions_total{outcome=\"aborted\"}"),
        Some(0.0),
        "{}",
        engine.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_bad_record_and_a_record_over_the_size_limit_are_dead_letters_and_the_rest_is_published()
 {
    let _serial = ONE_AT_A_TIME.lock().await;
    let broker = TestBroker::start();
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("per_hour.sql"), PER_HOUR).expect("query");
    let mut config = test_config(&broker, &unique_prefix("faults-big"), dir.path());
    config.engine.max_out_of_orderness_ms = 0;
    config.engine.idle_timeout_ms = 1_500;
    // The transactions topic takes records of 2 MB, as some clusters do.
    ensure_topics(
        &config,
        &[TopicSpec::new(&config.topics.transactions, 1)
            .with_config("max.message.bytes", "3000000")],
    )
    .await
    .expect("topic");
    create_source_topics(&config, 1).await;
    let producer = kafka(&config);

    // A 700 KB transaction whose ts is a 690 KB string, and a 2 MB one.
    let bad_ts = format!(
        r#"{{"event_id":"big","customer_id":"c1","ts":"{}","amount":1,"category":"a"}}"#,
        "9".repeat(690_000)
    );
    let huge = format!(
        r#"{{"event_id":"huge","customer_id":"c1","ts":{},"amount":1,"category":"a","pad":"{}"}}"#,
        T0 + 30 * MINUTE,
        "x".repeat(2_000_000)
    );
    let mut values = txs("a", 10, T0, "a");
    values.push(bad_ts.clone().into_bytes());
    values.extend(txs("b", 10, T0 + 20 * MINUTE, "a"));
    values.push(huge.clone().into_bytes());
    values.extend(txs("c", 10, T0 + 40 * MINUTE, "a"));
    values.push(tx("late-closer", T0 + 3 * HOUR, 1.0, "z"));
    let offsets = send(&producer, &config.topics.transactions, &values).await;

    let mut engine = EngineProcess::start(&engine_env(&config, &[]));
    engine.wait_ready(READY);
    wait_finished(&config, &engine, FINISH);
    assert_no_restart(&engine);
    let metrics = engine.metrics();
    let invalid = |reason: &str| {
        metric(
            &metrics,
            &format!(
                "cxpulse_records_invalid_total{{reason=\"{reason}\",topic=\"{}\"}}",
                config.topics.transactions
            ),
        )
    };
    assert_eq!(invalid("bad_timestamp"), Some(1.0));
    assert_eq!(invalid("too_large"), Some(1.0));
    let (code, log) = engine.terminate(DRAIN);
    assert_eq!(code, Some(0), "{log}");

    let rows = per_hour_rows(&config, "per_hour");
    assert_eq!(
        rows.get(&(at(T0), "a".to_owned())),
        Some(&(30, 30.0)),
        "every good event of the hour, once: {rows:?}"
    );
    let letters = read_all(&config, &config.topics.deadletter);
    assert_eq!(letters.len(), 2, "{letters:?}");
    let limit = 1_048_588;
    for letter in &letters {
        let size = letter.value.as_ref().map_or(0, String::len)
            + letter
                .headers
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>();
        assert!(size < limit, "a dead letter fits its topic: {size}");
    }
    let big = &letters[0];
    assert_eq!(header(big, "cxpulse.reason"), "bad_timestamp");
    assert_eq!(
        header(big, "cxpulse.source.offset"),
        offsets[10].to_string()
    );
    assert_eq!(
        big.value.as_deref(),
        Some(bad_ts.as_str()),
        "kept whole: it fits"
    );
    let detail = header(big, "cxpulse.reason.detail");
    assert!(detail.len() < 200, "the reason quotes a prefix: {detail}");
    assert!(detail.contains("(690000 bytes)"), "{detail}");
    let cut = &letters[1];
    assert_eq!(header(cut, "cxpulse.reason"), "too_large");
    assert_eq!(
        header(cut, "cxpulse.source.offset"),
        offsets[21].to_string()
    );
    assert_eq!(header(cut, "cxpulse.truncated"), "payload");
    assert_eq!(
        header(cut, "cxpulse.original.bytes"),
        huge.len().to_string()
    );
    let kept = cut.value.as_deref().unwrap_or_default();
    assert!(
        huge.starts_with(kept) && kept.len() < 1_000_000,
        "{}",
        kept.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_from_year_9999_never_moves_the_watermark() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let (_broker, config, _dir) = setup("faults-future", &[("per_hour", PER_HOUR)]).await;
    let producer = kafka(&config);
    let topic = config.topics.transactions.clone();
    let mut engine = EngineProcess::start(&engine_env(&config, &[]));
    engine.wait_ready(READY);

    send(&producer, &topic, &txs("a", 2_000, T0, "a")).await;
    let future = send(
        &producer,
        &topic,
        &[tx("y9999", 253_402_214_400_000, 1.0, "a")],
    )
    .await;
    wait_all_committed(&config, FINISH, || engine.log_text());
    // A quiet spell: the partition goes idle, as with the bug the watermark
    // then jumped to year 9999.
    std::thread::sleep(Duration::from_millis(3 * 1_500));
    send(&producer, &topic, &txs("b", 2_000, T0 + HOUR, "a")).await;
    // An event past the last window's end closes it.
    send(&producer, &topic, &[tx("closer", T0 + 3 * HOUR, 1.0, "z")]).await;
    wait_finished(&config, &engine, FINISH);
    let metrics = engine.metrics();
    let watermark = metric(
        &metrics,
        "cxpulse_watermark_seconds{source=\"transactions\"}",
    )
    .expect("a watermark");
    assert!(
        watermark == (T0 + 3 * HOUR) as f64 / 1000.0,
        "the watermark is the last on-time event's time, not year 9999: {watermark}"
    );
    assert_no_restart(&engine);
    let (code, log) = engine.terminate(DRAIN);
    assert_eq!(code, Some(0), "{log}");

    let rows = per_hour_rows(&config, "per_hour");
    assert_eq!(
        rows,
        BTreeMap::from([
            ((at(T0), "a".to_owned()), (2_000, 2_000.0)),
            ((at(T0 + HOUR), "a".to_owned()), (2_000, 2_000.0)),
        ])
    );
    let letters = read_all(&config, &config.topics.deadletter);
    let reasons: Vec<(&str, String)> = letters
        .iter()
        .map(|l| {
            (
                header(l, "cxpulse.reason"),
                header(l, "cxpulse.source.offset").to_owned(),
            )
        })
        .collect();
    assert_eq!(reasons, [("future", future[0].to_string())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cxpulse_reset_event_time_repairs_a_watermark_poisoned_with_the_check_off() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let (_broker, config, _dir) = setup("faults-repair", &[("per_hour", PER_HOUR)]).await;
    let producer = kafka(&config);
    let topic = config.topics.transactions.clone();
    // With the check off, as before it existed.
    let unchecked = engine_env(&config, &[("CXPULSE__ENGINE__MAX_FUTURE_MS", "0")]);
    let mut engine = EngineProcess::start(&unchecked);
    engine.wait_ready(READY);
    send(&producer, &topic, &txs("a", 100, T0, "a")).await;
    send(
        &producer,
        &topic,
        &[tx("y9999", 253_402_214_400_000, 1.0, "a")],
    )
    .await;
    wait_finished(&config, &engine, FINISH);
    send(&producer, &topic, &txs("b", 100, T0 + HOUR, "a")).await;
    wait_finished(&config, &engine, FINISH);
    let late = |engine: &EngineProcess| {
        metric(
            &engine.metrics(),
            "cxpulse_late_records_total{job=\"per_hour\",source=\"transactions\"}",
        )
    };
    assert_eq!(
        late(&engine),
        Some(100.0),
        "poisoned: every later event is late"
    );
    let (code, log) = engine.terminate(DRAIN);
    assert_eq!(code, Some(0), "{log}");

    let out = Command::new(BIN)
        .args(["reset", "--event-time", "--source", "transactions"])
        .envs(unchecked.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .expect("cxpulse reset");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("reset event time of transactions"), "{said}");

    let mut engine = EngineProcess::start(&engine_env(&config, &[]));
    engine.wait_ready(READY);
    send(&producer, &topic, &txs("c", 100, T0 + 2 * HOUR, "a")).await;
    send(&producer, &topic, &[tx("closer", T0 + 4 * HOUR, 1.0, "z")]).await;
    wait_finished(&config, &engine, FINISH);
    assert_eq!(late(&engine), Some(0.0), "on-time events count again");
    let (code, log) = engine.terminate(DRAIN);
    assert_eq!(code, Some(0), "{log}");
    let rows = per_hour_rows(&config, "per_hour");
    assert_eq!(
        rows.get(&(at(T0 + 2 * HOUR), "a".to_owned())),
        Some(&(100, 100.0)),
        "{rows:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_whose_sql_fails_is_a_dead_letter_and_the_other_windows_and_groups_are_published()
{
    let _serial = ONE_AT_A_TIME.lock().await;
    let ratio = "-- @key category\nSELECT window_start, window_end, category, count(*) AS n, 100 / (count(*) - 2) AS ratio\nFROM TUMBLE(transactions, ts, INTERVAL '1 hour')\nGROUP BY window_start, window_end, category\n";
    let (_broker, config, _dir) = setup("faults-divide", &[("ratio", ratio)]).await;
    let producer = kafka(&config);
    let mut values = Vec::new();
    // Hour 0: a twice (100 / 0), b three times. Hour 1: a once, b four times.
    values.extend(txs("a0-", 2, T0, "a"));
    values.extend(txs("b0-", 3, T0 + 10 * MINUTE, "b"));
    values.extend(txs("a1-", 1, T0 + HOUR, "a"));
    values.extend(txs("b1-", 4, T0 + HOUR + MINUTE, "b"));
    values.push(tx("closer", T0 + 3 * HOUR, 1.0, "z"));
    send(&producer, &config.topics.transactions, &values).await;
    let mut engine = EngineProcess::start(&engine_env(&config, &[]));
    engine.wait_ready(READY);
    wait_finished(&config, &engine, FINISH);
    assert_eq!(
        metric(&engine.metrics(), "cxpulse_job_errors_total{job=\"ratio\"}"),
        Some(1.0)
    );
    assert_no_restart(&engine);
    let (code, log) = engine.terminate(DRAIN);
    assert_eq!(code, Some(0), "{log}");

    let topic = format!("{}ratio", config.topics.output_prefix);
    let mut rows: Vec<(String, String, i64, i64)> = read_all(&config, &topic)
        .into_iter()
        .map(|r| {
            let row: Value =
                serde_json::from_str(r.value.as_deref().unwrap_or("null")).expect("row");
            (
                row["window_start"].as_str().unwrap_or_default().to_owned(),
                row["category"].as_str().unwrap_or_default().to_owned(),
                row["n"].as_i64().unwrap_or(-1),
                row["ratio"].as_i64().unwrap_or(i64::MIN),
            )
        })
        .collect();
    rows.sort();
    assert_eq!(
        rows,
        [
            (at(T0), "b".to_owned(), 3, 100),
            (at(T0 + HOUR), "a".to_owned(), 1, -100),
            (at(T0 + HOUR), "b".to_owned(), 4, 50),
        ]
    );
    let letters = read_all(&config, &config.topics.deadletter);
    assert_eq!(letters.len(), 1, "{letters:?}");
    let failed = &letters[0];
    assert_eq!(header(failed, "cxpulse.reason"), "job_error");
    assert_eq!(header(failed, "cxpulse.job"), "ratio");
    assert_eq!(header(failed, "cxpulse.window.start"), at(T0));
    assert_eq!(header(failed, "cxpulse.window.end"), at(T0 + HOUR));
    let detail = header(failed, "cxpulse.reason.detail");
    assert!(
        detail.contains("category=a") && detail.to_lowercase().contains("divide by zero"),
        "{detail}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_results_that_fail_on_an_open_window_are_one_dead_letter_until_it_closes() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let ratio = "-- @key category\n-- @emit every 1s\nSELECT window_start, window_end, category, count(*) AS n, 100 / (count(*) - 2) AS ratio\nFROM TUMBLE(transactions, ts, INTERVAL '1 hour')\nGROUP BY window_start, window_end, category\n";
    let (_broker, config, _dir) = setup("faults-early", &[("ratio", ratio)]).await;
    let producer = kafka(&config);
    let mut engine = EngineProcess::start(&engine_env(&config, &[]));
    engine.wait_ready(READY);
    // The hour stays open: a twice (100 / 0), b three times.
    let mut values = txs("a0-", 2, T0, "a");
    values.extend(txs("b0-", 3, T0 + 10 * MINUTE, "b"));
    send(&producer, &config.topics.transactions, &values).await;
    let errors = "cxpulse_job_errors_total{job=\"ratio\"}";
    let started = Instant::now();
    while metric(&engine.metrics(), errors).unwrap_or(0.0) < 3.0 {
        assert!(started.elapsed() < FINISH, "{}", engine.log_text());
        std::thread::sleep(Duration::from_millis(250));
    }
    wait_all_committed(&config, FINISH, || engine.log_text());
    let letters = read_all(&config, &config.topics.deadletter);
    assert_eq!(
        letters.len(),
        1,
        "three failed early runs, one dead letter: {letters:?}"
    );
    assert!(
        header(&letters[0], "cxpulse.reason.detail").contains("early results"),
        "{letters:?}"
    );
    send(
        &producer,
        &config.topics.transactions,
        &[tx("closer", T0 + 3 * HOUR, 1.0, "z")],
    )
    .await;
    wait_finished(&config, &engine, FINISH);
    assert_no_restart(&engine);
    let (code, log) = engine.terminate(DRAIN);
    assert_eq!(code, Some(0), "{log}");
    let letters = read_all(&config, &config.topics.deadletter);
    assert_eq!(
        letters.len(),
        2,
        "and one when the window closed: {letters:?}"
    );
    let last = header(&letters[1], "cxpulse.reason.detail");
    assert!(
        last.contains("category=a") && last.contains("dropped with the window"),
        "{last}"
    );
    let topic = format!("{}ratio", config.topics.output_prefix);
    let finals: Vec<(String, i64, i64)> = read_all(&config, &topic)
        .into_iter()
        .filter_map(|r| {
            let row: Value =
                serde_json::from_str(r.value.as_deref().unwrap_or("null")).expect("row");
            (row["final"] == json!(true)).then(|| {
                (
                    row["category"].as_str().unwrap_or_default().to_owned(),
                    row["n"].as_i64().unwrap_or(-1),
                    row["ratio"].as_i64().unwrap_or(i64::MIN),
                )
            })
        })
        .collect();
    assert_eq!(finals, [("b".to_owned(), 3, 100)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_panics_is_stopped_the_others_go_on_and_a_fixed_query_resumes_it() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let fragile = "-- @key event_id\nSELECT event_id, cxpulse_test_panic(category) AS category FROM transactions\n";
    let (_broker, config, dir) = setup(
        "faults-panic",
        &[("fragile", fragile), ("steady", PER_HOUR)],
    )
    .await;
    let producer = kafka(&config);
    let topic = config.topics.transactions.clone();
    let mut engine = EngineProcess::start(&engine_env(&config, &[("CXPULSE_TEST_FUNCTIONS", "1")]));
    engine.wait_ready(READY);
    send(&producer, &topic, &txs("a", 500, T0, "a")).await;
    wait_all_committed(&config, FINISH, || engine.log_text());
    // An edit that does not plan keeps the running job; the restart that
    // the panic causes runs it still, with its open window.
    std::fs::write(dir.path().join("steady.sql"), "SELECT nonsense FROM\n").expect("edit");
    engine.wait_for_metrics(&[("cxpulse_query_files_invalid", 1.0)], FINISH);
    send(&producer, &topic, &[tx("boom", T0 + 600_000, 1.0, "panic")]).await;
    send(&producer, &topic, &txs("b", 500, T0 + 700_000, "a")).await;
    send(&producer, &topic, &[tx("closer", T0 + 3 * HOUR, 1.0, "z")]).await;
    wait_finished(&config, &engine, FINISH);
    engine.wait_for_metrics(
        &[
            ("cxpulse_job_stopped{job=\"fragile\"}", 1.0),
            ("cxpulse_query_files_invalid", 1.0),
        ],
        FINISH,
    );
    let log = engine.log_text();
    assert!(log.contains("a job panicked: it is stopped"), "{log}");
    assert!(
        log.contains("the job runs the query it ran before the restart"),
        "{log}"
    );

    let ids = |config: &Config| -> Vec<String> {
        let topic = format!("{}fragile", config.topics.output_prefix);
        let mut ids: Vec<String> = read_all(config, &topic)
            .into_iter()
            .map(|r| {
                let row: Value =
                    serde_json::from_str(r.value.as_deref().unwrap_or("null")).expect("row");
                row["event_id"].as_str().unwrap_or_default().to_owned()
            })
            .collect();
        ids.sort();
        ids
    };
    let before: BTreeSet<String> = ids(&config).into_iter().collect();
    let first: BTreeSet<String> = (0..500).map(|i| format!("a{i}")).collect();
    assert_eq!(
        before, first,
        "the job published until it panicked, then stopped"
    );
    let steady = per_hour_rows(&config, "steady");
    assert_eq!(
        steady.get(&(at(T0), "a".to_owned())),
        Some(&(1_000, 1_000.0)),
        "{steady:?}"
    );
    assert_eq!(steady.get(&(at(T0), "panic".to_owned())), Some(&(1, 1.0)));
    let letters = read_all(&config, &config.topics.deadletter);
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(header(&letters[0], "cxpulse.job"), "fragile");
    assert_eq!(header(&letters[0], "cxpulse.reason"), "job_error");
    assert!(
        header(&letters[0], "cxpulse.reason.detail").contains("panicked"),
        "{letters:?}"
    );

    // The query fixed: the job resumes where it stopped and misses nothing.
    std::fs::write(
        dir.path().join("fragile.sql"),
        "-- @key event_id\nSELECT event_id, category FROM transactions\n",
    )
    .expect("fix the query");
    engine.wait_for_metrics(&[("cxpulse_backfills_running", 0.0)], FINISH);
    let started = Instant::now();
    while ids(&config).len() < 1_002 {
        assert!(started.elapsed() < FINISH, "{}", engine.log_text());
        std::thread::sleep(Duration::from_millis(250));
    }
    let (code, log) = engine.terminate(DRAIN);
    assert_eq!(code, Some(0), "{log}");
    let after = ids(&config);
    let mut all: Vec<String> = (0..500)
        .flat_map(|i| [format!("a{i}"), format!("b{i}")])
        .chain(["boom".to_owned(), "closer".to_owned()])
        .collect();
    all.sort();
    assert_eq!(after, all, "every event once, the panicking one included");
}

/// `cxpulse check` over a queries directory holding `jobs`, with `env`:
/// exit code and output.
fn check(jobs: &[(&str, &str)], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, sql) in jobs {
        std::fs::write(dir.path().join(format!("{name}.sql")), sql).expect("write query");
    }
    let out = Command::new(BIN)
        .arg("check")
        .env("CXPULSE__ENGINE__QUERIES_DIR", dir.path())
        .envs(env.iter().copied())
        .output()
        .expect("cxpulse check");
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn an_output_topic_that_would_break_the_pipeline_is_refused_at_its_line() {
    let select = "SELECT event_id FROM transactions\n";
    let (code, out) = check(
        &[(
            "loop",
            &format!("-- a feedback loop\n-- @output cx.transactions\n{select}"),
        )],
        &[],
    );
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(
            "loop.sql:2: the output topic cx.transactions is the topic of source transactions"
        ),
        "{out}"
    );
    for (topic, why) in [
        ("cx.deadletter", "is the dead-letter topic"),
        ("cxpulse-changelog", "is a state changelog topic"),
        ("__consumer_offsets", "is one of Kafka's internal topics"),
    ] {
        let (code, out) = check(&[("bad", &format!("-- @output {topic}\n{select}"))], &[]);
        assert_eq!(code, Some(1), "{out}");
        assert!(
            out.contains(&format!("bad.sql:1: the output topic {topic} {why}")),
            "{out}"
        );
    }
    // Two jobs, one topic: only when both say so.
    let (code, out) = check(
        &[
            ("one", &format!("-- @output cx.metrics.shared\n{select}")),
            (
                "two",
                &format!("-- @output cx.metrics.shared SHARED\n{select}"),
            ),
        ],
        &[],
    );
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("two jobs write to one topic only when both say so"),
        "{out}"
    );
    let (code, out) = check(
        &[
            (
                "one",
                &format!("-- @output cx.metrics.shared SHARED\n{select}"),
            ),
            (
                "two",
                &format!("-- @output cx.metrics.shared SHARED\n{select}"),
            ),
        ],
        &[],
    );
    assert_eq!(code, Some(0), "{out}");
}

#[test]
fn overriding_what_exactly_once_depends_on_is_refused() {
    let select = [("plain", "SELECT event_id FROM transactions\n")];
    let (code, out) = check(
        &select,
        &[("CXPULSE__KAFKA__PROPERTIES__ENABLE_AUTO_COMMIT", "true")],
    );
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("env CXPULSE__KAFKA__PROPERTIES__ENABLE_AUTO_COMMIT: `kafka.properties.enable.auto.commit`: cannot be set"),
        "{out}"
    );
    // The engine refuses to start with it as well.
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("plain.sql"), select[0].1).expect("query");
    let out = Command::new(BIN)
        .arg("run")
        .env("CXPULSE__ENGINE__QUERIES_DIR", dir.path())
        .env(
            "CXPULSE__KAFKA__PROPERTIES__ISOLATION_LEVEL",
            "read_uncommitted",
        )
        .env("CXPULSE__HTTP__LISTEN", "127.0.0.1:0")
        .output()
        .expect("cxpulse run");
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("kafka.properties.isolation.level"), "{said}");
}

/// Writes `files` the way the kubelet writes a ConfigMap volume (see
/// `engine::reload`'s unit test): a timestamped folder, `..data` linked to
/// it and swapped at once, each file a link through `..data`.
fn configmap_version(dir: &Path, version: &str, files: &[(&str, &str)]) {
    let folder = dir.join(version);
    std::fs::create_dir(&folder).expect("mkdir");
    for (name, text) in files {
        std::fs::write(folder.join(name), text).expect("write");
        let link = dir.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(Path::new("..data").join(name), &link).expect("link");
        }
    }
    let tmp = dir.join("..data_tmp");
    std::os::unix::fs::symlink(version, &tmp).expect("link");
    std::fs::rename(&tmp, dir.join("..data")).expect("swap");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_file_missing_for_one_look_keeps_its_job_and_its_open_window() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let (_broker, mut config, dir) = setup("faults-configmap", &[]).await;
    let queries = dir.path().join("mounted");
    std::fs::create_dir(&queries).expect("mkdir");
    configmap_version(&queries, "..v1", &[("per_hour.sql", PER_HOUR)]);
    config.engine.queries_dir = queries.clone();
    config.engine.reload_interval_ms = 3_000;
    let producer = kafka(&config);
    let mut engine = EngineProcess::start(&engine_env(&config, &[]));
    engine.wait_ready(READY);
    send(
        &producer,
        &config.topics.transactions,
        &txs("a", 100, T0, "a"),
    )
    .await;
    wait_all_committed(&config, FINISH, || engine.log_text());

    // The swap to a version without the file, and back: one look sees it
    // absent (the kubelet swaps `..data` while its links point nowhere).
    configmap_version(&queries, "..v2", &[]);
    let started = Instant::now();
    while !engine.log_text().contains("a query file is absent") {
        assert!(started.elapsed() < FINISH, "{}", engine.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    configmap_version(&queries, "..v3", &[("per_hour.sql", PER_HOUR)]);
    std::thread::sleep(Duration::from_millis(7_000));
    send(
        &producer,
        &config.topics.transactions,
        &txs("b", 100, T0 + 30 * MINUTE, "a"),
    )
    .await;
    send(
        &producer,
        &config.topics.transactions,
        &[tx("closer", T0 + 3 * HOUR, 1.0, "z")],
    )
    .await;
    wait_finished(&config, &engine, FINISH);
    let (code, log) = engine.terminate(DRAIN);
    assert_eq!(code, Some(0), "{log}");
    assert!(!log.contains("query file removed"), "{log}");
    let rows = per_hour_rows(&config, "per_hour");
    assert_eq!(
        rows.get(&(at(T0), "a".to_owned())),
        Some(&(200, 200.0)),
        "the window kept the events from before the swap: {rows:?}"
    );
}

/// Produces `n` events made by `event(i)` to partition 0 of `topic`, fast.
async fn flood(config: &Config, topic: &str, n: usize, event: impl Fn(usize) -> String) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &config.kafka.brokers)
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .set("message.timeout.ms", "60000")
        .create()
        .expect("producer");
    for chunk in (0..n).collect::<Vec<_>>().chunks(50_000) {
        let values: Vec<String> = chunk.iter().map(|i| event(*i)).collect();
        let sends = values.iter().map(|value| {
            producer
                .send_result(
                    FutureRecord::<(), str>::to(topic)
                        .partition(0)
                        .payload(value),
                )
                .map_err(|(e, _)| e)
                .expect("queue")
        });
        for ack in futures::future::join_all(sends.collect::<Vec<_>>()).await {
            ack.expect("delivery").expect("acknowledged");
        }
    }
}

/// Runs an engine with a state limit of `limit` over a million events
/// made by `event`, until consumption pauses for state; asserts that the
/// state it holds stays within the limit (plus the micro-batches already
/// decoded when it paused) while it holds what fits.
async fn a_million(
    test: &str,
    job: (&str, &str),
    topic: fn(&Config) -> String,
    event: fn(usize) -> String,
) {
    const LIMIT: u64 = 32 << 20;
    let (_broker, mut config, _dir) = setup(test, &[job]).await;
    config.engine.batch_max_rows = 2_000;
    config.engine.idle_timeout_ms = 3_600_000;
    config.engine.state_memory_limit = LIMIT.to_string();
    let topic = topic(&config);
    flood(&config, &topic, 1_000_000, event).await;
    let mut engine = EngineProcess::start(&engine_env(
        &config,
        &[(
            "CXPULSE__KAFKA__PROPERTIES__RECEIVE_MESSAGE_MAX_BYTES",
            "2000000000",
        )],
    ));
    engine.wait_ready(READY);
    let started = Instant::now();
    let mut peak = 0.0f64;
    let mut paused_at = None;
    loop {
        let metrics = engine.metrics();
        let held = metric(&metrics, "cxpulse_state_memory_bytes").unwrap_or(0.0);
        peak = peak.max(held);
        let is_paused = metrics
            .lines()
            .any(|l| l.starts_with("cxpulse_consumption_paused{") && l.ends_with(" 1"));
        if is_paused && paused_at.is_none() {
            paused_at = Some(Instant::now());
        }
        // Watch it for a while once paused: it must stay paused and bounded.
        if paused_at.is_some_and(|at| at.elapsed() > Duration::from_secs(5)) {
            assert!(is_paused, "consumption resumed: {metrics}");
            break;
        }
        assert!(
            started.elapsed() < FINISH,
            "never paused; state {held}:\n{}",
            engine.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let left = uncommitted(&config);
    let (code, log) = engine.terminate(DRAIN);
    assert_eq!(code, Some(0), "{log}");
    // The micro-batches decoded before the pause still run: up to the
    // decoding threads' queues of 2,000-record batches.
    let bound = LIMIT as f64 + 16.0 * f64::from(1 << 20);
    println!(
        "{test}: state peaked at {:.1} MiB for a limit of {} MiB; {left} of the million left unread",
        peak / f64::from(1 << 20),
        LIMIT >> 20
    );
    assert!(peak <= bound, "state peaked at {peak} bytes, bound {bound}");
    assert!(peak > 0.8 * LIMIT as f64, "it held what fits: {peak}");
    assert!(left > 0, "it stopped short of the million: {left} left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_distinct_open_sessions_stay_within_the_state_limit() {
    let _serial = ONE_AT_A_TIME.lock().await;
    a_million(
        "faults-sessions",
        (
            "visits",
            "SELECT window_start, window_end, customer_id, count(*) AS n FROM SESSION(transactions, ts, INTERVAL '1 day', customer_id) GROUP BY window_start, window_end, customer_id\n",
        ),
        |c| c.topics.transactions.clone(),
        |i| {
            format!(
                r#"{{"event_id":"e{i}","customer_id":"c{i}","ts":{},"amount":1,"category":"a"}}"#,
                T0 + i as i64
            )
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_table_of_a_million_keys_stays_within_the_state_limit() {
    let _serial = ONE_AT_A_TIME.lock().await;
    a_million(
        "faults-kept",
        (
            "open_complaints",
            "SELECT window_start, window_end, count(*) AS n FROM TUMBLE(complaints, ts, INTERVAL '1 day') c JOIN complaint_status s ON s.complaint_id = c.complaint_id GROUP BY window_start, window_end\n",
        ),
        |c| c.topics.complaints.clone(),
        |i| {
            format!(
                r#"{{"event_id":"e{i}","customer_id":"c{i}","ts":{},"complaint_id":"k{i}","status":"opened"}}"#,
                T0 + i as i64
            )
        },
    )
    .await;
}

/// A record to produce: its partition, value, and the reason of its dead
/// letter if it is a bad one.
type ToSend = (i32, Option<Vec<u8>>, Option<&'static str>);

/// One bad record: what it is, and the reason its dead letter must give.
struct Bad {
    payload: Option<Vec<u8>>,
    reason: &'static str,
}

/// Ten kinds of bad record and more, each with its reason.
fn bad_records(rng: &mut impl Rng) -> Vec<Bad> {
    let good_ts = T0 + 5 * HOUR;
    let with = |fields: &str| {
        format!(
            r#"{{"event_id":"bad","customer_id":"c","ts":{good_ts},"amount":1,"category":"x"{fields}}}"#
        )
    };
    let mut nested = String::new();
    for _ in 0..1_000 {
        nested.push('[');
    }
    for _ in 0..1_000 {
        nested.push(']');
    }
    let blob = format!(
        r#"{{"event_id":"blob","customer_id":"c","ts":{good_ts},"amount":"{}","category":"x"}}"#,
        "7".repeat(1_040_000)
    );
    let mut control = vec![0u8, 1, 2, 27, 127];
    control.extend(rng.random::<[u8; 16]>());
    vec![
        Bad {
            payload: Some(br#"{"event_id":"cut","customer_id":"#.to_vec()),
            reason: "invalid_json",
        },
        Bad {
            payload: Some(control),
            reason: "invalid_json",
        },
        Bad {
            payload: Some(blob.into_bytes()),
            reason: "wrong_type",
        },
        Bad {
            payload: Some(
                with("")
                    .replace(&good_ts.to_string(), "\"9999-12-31T00:00:00Z\"")
                    .into_bytes(),
            ),
            reason: "future",
        },
        Bad {
            payload: Some(
                with("")
                    .replace(r#""amount":1"#, r#""amount":"12""#)
                    .into_bytes(),
            ),
            reason: "wrong_type",
        },
        Bad {
            payload: Some(
                with("")
                    .replace(r#""amount":1"#, r#""amount":-5"#)
                    .into_bytes(),
            ),
            reason: "out_of_range",
        },
        // Deep nesting where a value is read (an ignored field may nest
        // as deep as it likes: it is skipped without recursion).
        Bad {
            payload: Some(
                with("")
                    .replace(r#""amount":1"#, &format!(r#""amount":{nested}"#))
                    .into_bytes(),
            ),
            reason: "invalid_json",
        },
        Bad {
            payload: Some(b"null".to_vec()),
            reason: "not_object",
        },
        Bad {
            payload: Some(Vec::new()),
            reason: "invalid_json",
        },
        Bad {
            payload: None,
            reason: "invalid_json",
        },
        Bad {
            payload: Some(br#"{"event_id":"m"}"#.to_vec()),
            reason: "missing_field",
        },
        Bad {
            payload: Some(
                with("")
                    .replace(&good_ts.to_string(), "\"yesterday\"")
                    .into_bytes(),
            ),
            reason: "bad_timestamp",
        },
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mixed_run_with_bad_records_and_two_kills_publishes_the_good_results_exactly_once() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let broker = TestBroker::start();
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("per_hour.sql"), PER_HOUR).expect("query");
    let mut config = test_config(&broker, &unique_prefix("faults-mixed"), dir.path());
    config.engine.max_out_of_orderness_ms = 0;
    config.engine.idle_timeout_ms = 3_600_000;
    config.engine.batch_linger_ms = 200;
    create_source_topics(&config, 3).await;

    // The good events, each to the partition of its customer, in order.
    let generated = cxpulse::tools::generate::Generator::new(24, 6_500, T0).records(61);
    let good = generated.iter().filter(|r| r.kind.is_stream()).count();
    assert!(good >= 100_000, "{good} good events");
    let partition_of = |key: &str| (twox_hash::XxHash64::oneshot(7, key.as_bytes()) % 3) as i32;
    let seed: u64 = rand::random();
    println!("bad records placed from seed {seed}");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut by_topic: BTreeMap<String, Vec<ToSend>> = BTreeMap::new();
    for record in &generated {
        by_topic
            .entry(config.topics.source_topic(record.kind).to_owned())
            .or_default()
            .push((
                partition_of(&record.key),
                Some(record.value.clone().into_bytes()),
                None,
            ));
    }
    // Bad transactions anywhere among the good ones, two of each kind.
    let transactions = by_topic
        .get_mut(&config.topics.transactions)
        .expect("transactions");
    for _ in 0..2 {
        for bad in bad_records(&mut rng) {
            let at = rng.random_range(0..transactions.len());
            let partition = rng.random_range(0..3);
            transactions.insert(at, (partition, bad.payload, Some(bad.reason)));
        }
    }
    let producer = kafka(&config);
    let mut expected_letters: BTreeMap<(i32, i64), &'static str> = BTreeMap::new();
    for (topic, records) in &by_topic {
        for chunk in records.chunks(10_000) {
            let sends = chunk.iter().map(|(partition, payload, _)| {
                let mut record = FutureRecord::<(), [u8]>::to(topic).partition(*partition);
                if let Some(p) = payload {
                    record = record.payload(p.as_slice());
                }
                producer.send(record, Duration::from_secs(30))
            });
            for (sent, (partition, _, reason)) in futures::future::join_all(sends)
                .await
                .into_iter()
                .zip(chunk)
            {
                let delivery = sent.unwrap_or_else(|(e, _)| panic!("produce: {e}"));
                let (p, offset) = (delivery.partition, delivery.offset);
                assert_eq!(p, *partition);
                if let Some(reason) = reason {
                    expected_letters.insert((p, offset), reason);
                }
            }
        }
    }

    // Two kills at random moments, then a run to the end.
    let env = engine_env(&config, &[]);
    for kill in 1..=2 {
        let mut engine = EngineProcess::start(&env);
        engine.wait_ready(READY);
        let left = uncommitted(&config);
        let target = left - (left as f64 * rng.random_range(0.2..0.6)) as i64;
        while uncommitted(&config) > target {
            std::thread::sleep(Duration::from_millis(20));
        }
        println!(
            "kill {kill}: {} of {left} events left",
            uncommitted(&config)
        );
        engine.kill();
    }
    let mut engine = EngineProcess::start(&env);
    engine.wait_ready(READY);
    wait_finished(&config, &engine, FINISH);
    // Far-past transactions once windows have closed: late, one dead letter
    // each (one windowed job).
    let far_past: Vec<Vec<u8>> = (0..3)
        .map(|i| tx(&format!("old{i}"), 946_684_800_000 + i, 1.0, "x"))
        .collect();
    for (p, value) in far_past.iter().enumerate() {
        let delivery = producer
            .send(
                FutureRecord::<(), [u8]>::to(&config.topics.transactions)
                    .partition(p as i32)
                    .payload(value.as_slice()),
                Duration::from_secs(30),
            )
            .await
            .unwrap_or_else(|(e, _)| panic!("produce: {e}"));
        expected_letters.insert((delivery.partition, delivery.offset), "late");
    }
    wait_finished(&config, &engine, FINISH);
    let (code, log) = engine.terminate(DRAIN);
    assert_eq!(code, Some(0), "{log}");

    // The good transactions' windows that the final watermark closed, as
    // the test computes them from the generated events.
    let mut max_ts = [i64::MIN; 3];
    let mut expected: BTreeMap<(String, String), (i64, f64)> = BTreeMap::new();
    let transactions_source = cxpulse::config::default_sources()
        .named("transactions")
        .expect("declared");
    let good_tx: Vec<(i32, i64, String, f64)> = generated
        .iter()
        .filter(|r| r.kind == transactions_source)
        .map(|r| {
            let v: Value = serde_json::from_str(&r.value).expect("json");
            (
                partition_of(&r.key),
                r.ts,
                v["category"].as_str().unwrap_or_default().to_owned(),
                v["amount"].as_f64().unwrap_or(f64::NAN),
            )
        })
        .collect();
    for (p, ts, _, _) in &good_tx {
        max_ts[*p as usize] = max_ts[*p as usize].max(*ts);
    }
    let watermark = *max_ts.iter().min().expect("three partitions");
    for (_, ts, category, amount) in &good_tx {
        let start = ts - ts.rem_euclid(HOUR);
        if start + HOUR <= watermark {
            let at = expected
                .entry((at(start), category.clone()))
                .or_insert((0, 0.0));
            at.0 += 1;
            at.1 += amount;
        }
    }
    let got = per_hour_rows(&config, "per_hour");
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>(),
        "the windows the watermark closed, each once"
    );
    for (id, (n, revenue)) in &expected {
        let (got_n, got_revenue) = got[id];
        assert_eq!(got_n, *n, "{id:?}");
        assert!(
            (got_revenue - revenue).abs() <= 1e-6 * revenue.abs().max(1.0),
            "{id:?}: {got_revenue} vs {revenue}"
        );
    }

    // Each bad record is one dead letter, with its reason.
    let letters = read_all(&config, &config.topics.deadletter);
    let mut got_letters: BTreeMap<(i32, i64), String> = BTreeMap::new();
    for letter in &letters {
        assert_eq!(
            header(letter, "cxpulse.source.topic"),
            config.topics.transactions,
            "{letter:?}"
        );
        let at = (
            header(letter, "cxpulse.source.partition")
                .parse()
                .expect("partition"),
            header(letter, "cxpulse.source.offset")
                .parse()
                .expect("offset"),
        );
        let reason = header(letter, "cxpulse.reason").to_owned();
        assert!(
            got_letters.insert(at, reason).is_none(),
            "{at:?} dead-lettered twice"
        );
    }
    let expected_letters: BTreeMap<(i32, i64), String> = expected_letters
        .into_iter()
        .map(|(at, reason)| (at, reason.to_owned()))
        .collect();
    assert_eq!(got_letters, expected_letters);
    let truncated = letters
        .iter()
        .filter(|l| header(l, "cxpulse.truncated") == "payload")
        .count();
    assert_eq!(truncated, 2, "the two near-limit blobs were cut to fit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_over_its_memory_pool_fails_like_any_job_and_the_others_go_on() {
    let _serial = ONE_AT_A_TIME.lock().await;
    // Distinct customers per hour: the final aggregate's set of customers
    // grows past a 1 MiB pool; the row count per hour stays small.
    let distinct = "SELECT window_start, window_end, count(DISTINCT customer_id) AS customers\nFROM TUMBLE(transactions, ts, INTERVAL '1 hour')\nGROUP BY window_start, window_end\n";
    let (_broker, config, _dir) = setup(
        "faults-pool",
        &[("distinct", distinct), ("per_hour", PER_HOUR)],
    )
    .await;
    let producer = kafka(&config);
    let values: Vec<Vec<u8>> = (0..60_000)
        .map(|i| {
            json!({"event_id": format!("e{i}"), "customer_id": format!("customer-{i:08}-with-a-long-id"),
                   "ts": T0 + i as i64 * 50, "amount": 1.0, "category": "a"})
            .to_string()
            .into_bytes()
        })
        .chain([tx("closer", T0 + 3 * HOUR, 1.0, "z")])
        .collect();
    send(&producer, &config.topics.transactions, &values).await;
    let mut engine = EngineProcess::start(&engine_env(
        &config,
        &[("CXPULSE__ENGINE__JOB_MEMORY_LIMIT", "1MiB")],
    ));
    engine.wait_ready(READY);
    wait_finished(&config, &engine, FINISH);
    let errors = metric(
        &engine.metrics(),
        "cxpulse_job_errors_total{job=\"distinct\"}",
    )
    .unwrap_or(0.0);
    assert!(errors >= 1.0, "{}", engine.log_text());
    assert_no_restart(&engine);
    let (code, log) = engine.terminate(DRAIN);
    assert_eq!(code, Some(0), "{log}");
    let rows = per_hour_rows(&config, "per_hour");
    assert_eq!(
        rows.get(&(at(T0), "a".to_owned())),
        Some(&(60_000, 60_000.0)),
        "the other job counted every event"
    );
    let letters = read_all(&config, &config.topics.deadletter);
    assert!(!letters.is_empty());
    for letter in &letters {
        assert_eq!(header(letter, "cxpulse.job"), "distinct", "{letter:?}");
        assert_eq!(header(letter, "cxpulse.reason"), "job_error");
        let detail = header(letter, "cxpulse.reason.detail");
        assert!(detail.contains("esources exhausted"), "{detail}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_last_epoch_that_does_not_commit_at_shutdown_exits_1() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let (_broker, config, _dir) = setup("faults-drain", &[("per_hour", PER_HOUR)]).await;
    let producer = kafka(&config);
    let mut engine = EngineProcess::start(&engine_env(
        &config,
        &[("CXPULSE__ENGINE__SHUTDOWN_DRAIN_MS", "1")],
    ));
    engine.wait_ready(READY);
    // Stopped while it reads: its open epoch cannot commit within 1 ms.
    let topic = config.topics.transactions.clone();
    let sending = tokio::spawn(async move {
        send(&producer, &topic, &txs("a", 20_000, T0, "a")).await;
    });
    std::thread::sleep(Duration::from_millis(500));
    let (code, log) = engine.terminate(DRAIN);
    sending.await.expect("sent");
    assert_eq!(code, Some(1), "{log}");
    assert!(
        log.contains("drain time elapsed; the last epoch is aborted"),
        "{log}"
    );
}
