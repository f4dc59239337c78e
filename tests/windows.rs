//! Golden tests of windowed jobs through a real broker: each case in
//! `tests/golden/` is a query, input steps and hand-computed expected rows
//! (see `tests/golden/README.md`).

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{
    RunningEngine, TestBroker, consumer_from_beginning, create_source_topics, http_get, metric,
    produce, producer, promtool_check, read_topic, test_config, unique_prefix, wait_for_metric,
};
use rdkafka::consumer::BaseConsumer;
use rdkafka::message::Message;

use serde_json::Value;

/// One output record: its key and its value without `emitted_at`.
#[derive(Debug, Clone)]
struct Row {
    key: String,
    value: Value,
}

impl Row {
    fn is_final(&self) -> bool {
        self.value["final"] == Value::Bool(true)
    }
}

/// Follows a topic from the beginning, keeping everything read so far.
struct Tail {
    consumer: BaseConsumer,
    rows: Vec<Row>,
}

impl Tail {
    fn new(bootstrap: &str, topic: &str) -> Tail {
        let consumer = consumer_from_beginning(bootstrap, topic);
        Tail {
            consumer,
            rows: Vec::new(),
        }
    }

    /// Reads until `done(rows)` holds, or panics after 30 s.
    fn until(&mut self, what: &str, done: impl Fn(&[Row]) -> bool) {
        let started = Instant::now();
        while !done(&self.rows) {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "timed out waiting for {what}; rows so far:\n{:#?}",
                self.rows
            );
            if let Some(message) = self.consumer.poll(Duration::from_millis(100)) {
                let message = message.expect("read output");
                let mut value: Value =
                    serde_json::from_slice(message.payload().unwrap_or_default())
                        .expect("json row");
                if let Some(object) = value.as_object_mut() {
                    object.remove("emitted_at");
                }
                let key = String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned();
                self.rows.push(Row { key, value });
            }
        }
    }

    fn finals(&self) -> Vec<Row> {
        self.rows.iter().filter(|r| r.is_final()).cloned().collect()
    }

    fn distinct_early(&self) -> BTreeSet<String> {
        self.rows
            .iter()
            .filter(|r| !r.is_final())
            .map(|r| r.value.to_string())
            .collect()
    }
}

fn json_lines(path: &Path) -> Vec<Value> {
    match std::fs::read_to_string(path) {
        Ok(text) => text
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .map(|l| {
                serde_json::from_str(l).unwrap_or_else(|e| panic!("{}: {e}: {l}", path.display()))
            })
            .collect(),
        Err(_) => Vec::new(),
    }
}

fn sorted(values: impl IntoIterator<Item = Value>) -> Vec<String> {
    let mut v: Vec<String> = values.into_iter().map(|v| v.to_string()).collect();
    v.sort();
    v
}

async fn run_case(case: &str) {
    let dir: PathBuf = [env!("CARGO_MANIFEST_DIR"), "tests", "golden", case]
        .iter()
        .collect();
    let job = std::fs::read_dir(&dir)
        .expect("case dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "sql"))
        .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .expect("one query file");
    let broker = TestBroker::start();
    let prefix = unique_prefix(case);
    let mut config = test_config(&broker, &prefix, &dir);
    config.engine.max_out_of_orderness_ms = 60_000;
    config.engine.idle_timeout_ms = 1_000;
    create_source_topics(&config, 2).await;
    let engine = RunningEngine::start(config.clone()).await;
    wait_for_metric(
        engine.addr,
        "cxpulse_assigned_partitions",
        6.0,
        Duration::from_secs(30),
    )
    .await;

    let output = format!("{}{job}", config.topics.output_prefix);
    let mut tail = Tail::new(broker.bootstrap(), &output);
    let kafka = producer(broker.bootstrap());
    for step in json_lines(&dir.join("input.jsonl")) {
        if let Some(n) = step.get("wait_final").and_then(Value::as_u64) {
            tokio::task::block_in_place(|| {
                tail.until(&format!("{n} final rows"), |rows| {
                    rows.iter().filter(|r| r.is_final()).count() >= n as usize
                })
            });
        } else if let Some(n) = step.get("wait_early").and_then(Value::as_u64) {
            let wanted = sorted(json_lines(&dir.join("expected_early.jsonl")));
            tokio::task::block_in_place(|| {
                tail.until(&format!("{n} expected early rows"), |rows| {
                    let early: BTreeSet<String> = rows
                        .iter()
                        .filter(|r| !r.is_final())
                        .map(|r| r.value.to_string())
                        .collect();
                    wanted.iter().filter(|w| early.contains(*w)).count() >= n as usize
                })
            });
        } else if let Some(ms) = step.get("sleep_ms").and_then(Value::as_u64) {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        } else {
            let partition = step["p"].as_i64().expect("p") as i32;
            let event = step["event"].to_string();
            produce(
                &kafka,
                &config.topics.transactions,
                &[(partition, None, Some(&event))],
            )
            .await;
        }
    }
    // Anything more that would come (a wrong extra window) comes now.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    tokio::task::block_in_place(|| tail.until("the rest", |_| true));

    let finals = tail.finals();
    assert_eq!(
        sorted(finals.iter().map(|r| r.value.clone())),
        sorted(json_lines(&dir.join("expected_final.jsonl"))),
        "final rows of {case}"
    );
    // Keys: the job, the window and the @key columns; one final row per key.
    let keys: BTreeSet<&str> = finals.iter().map(|r| r.key.as_str()).collect();
    assert_eq!(keys.len(), finals.len(), "final keys are unique: {keys:#?}");
    for row in &finals {
        let key: Value = serde_json::from_str(&row.key).expect("json key");
        assert_eq!(key["job"], Value::String(job.clone()));
        assert_eq!(key["window_start"], row.value["window_start"]);
        assert_eq!(key["window_end"], row.value["window_end"]);
    }
    // Early rows carry the key of their window's final row and come before it.
    let early = tail.distinct_early();
    for wanted in json_lines(&dir.join("expected_early.jsonl")) {
        assert!(
            early.contains(&wanted.to_string()),
            "missing early row {wanted}"
        );
    }
    for (i, row) in tail.rows.iter().enumerate().filter(|(_, r)| !r.is_final()) {
        if let Some(j) = tail
            .rows
            .iter()
            .position(|f| f.is_final() && f.key == row.key)
        {
            assert!(i < j, "early row {} after its final row", row.value);
        }
    }

    let late: Vec<String> = std::fs::read_to_string(dir.join("expected_late.txt"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect();
    let letters = tokio::task::block_in_place(|| {
        read_topic(
            broker.bootstrap(),
            &config.topics.deadletter,
            late.len(),
            Duration::from_secs(10),
        )
    });
    let got: Vec<String> = letters
        .iter()
        .map(|r| {
            assert_eq!(r.headers["cxpulse.reason"], "late", "{r:?}");
            assert_eq!(r.headers["cxpulse.job"], job);
            let event: Value =
                serde_json::from_str(r.value.as_deref().unwrap_or("null")).expect("json");
            event["event_id"].as_str().unwrap_or_default().to_owned()
        })
        .collect();
    assert_eq!(got, late, "late events of {case}");
    let (_, body) = http_get(engine.addr, "/metrics");
    let series = format!("cxpulse_late_records_total{{job=\"{job}\",source=\"transactions\"}}");
    assert_eq!(metric(&body, &series), Some(late.len() as f64), "{series}");
    let series = format!("cxpulse_windows_fired_total{{job=\"{job}\"}}");
    assert!(metric(&body, &series).is_some_and(|n| n >= 1.0), "{series}");
    let expected_metrics =
        std::fs::read_to_string(dir.join("expected_metrics.txt")).unwrap_or_default();
    for line in expected_metrics
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        assert!(
            body.lines().any(|l| l == line),
            "missing `{line}` in\n{body}"
        );
    }
    promtool_check(&body);
    engine.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tumble_out_of_order_late_and_idle_partition() {
    run_case("tumble").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_early_then_final_and_partly_late_events() {
    run_case("hop").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_merges_across_partitions_and_late_events() {
    run_case("session").await;
}

/// A transaction of amount 1 at `ts`.
fn amount_one(id: &str, ts: &str) -> String {
    format!(r#"{{"event_id":"{id}","customer_id":"c","ts":"{ts}","amount":1,"category":"x"}}"#)
}

/// Waits for the first row of the `per_minute` job (transactions per
/// minute) and checks it counts one event in 00:00-00:01.
fn assert_first_minute_counted_once(bootstrap: &str, config: &cxpulse::config::Config) {
    let mut tail = Tail::new(
        bootstrap,
        &format!("{}per_minute", config.topics.output_prefix),
    );
    tokio::task::block_in_place(|| tail.until("the first window", |rows| !rows.is_empty()));
    assert_eq!(
        tail.rows[0].value.to_string(),
        r#"{"job":"per_minute","window_start":"2026-01-01T00:00:00.000Z","window_end":"2026-01-01T00:01:00.000Z","n":1,"final":true}"#
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_file_added_while_running_starts_its_job() {
    let broker = TestBroker::start();
    let prefix = unique_prefix("added");
    let queries = tempfile::tempdir().expect("tempdir");
    let mut config = test_config(&broker, &prefix, queries.path());
    config.engine.max_out_of_orderness_ms = 0;
    config.engine.reload_interval_ms = 200;
    create_source_topics(&config, 1).await;
    let engine = RunningEngine::start(config.clone()).await;
    wait_for_metric(
        engine.addr,
        "cxpulse_jobs_loaded",
        0.0,
        Duration::from_secs(10),
    )
    .await;

    // As a ConfigMap update would: the file appears while the engine runs.
    std::fs::write(
        queries.path().join("per_minute.sql"),
        "SELECT window_start, window_end, count(*) AS n\n\
         FROM TUMBLE(transactions, ts, INTERVAL '1 minute')\n\
         GROUP BY window_start, window_end\n",
    )
    .expect("write");
    wait_for_metric(
        engine.addr,
        "cxpulse_jobs_loaded",
        1.0,
        Duration::from_secs(10),
    )
    .await;
    let kafka = producer(broker.bootstrap());
    let (a, b) = (
        amount_one("a", "2026-01-01T00:00:10Z"),
        amount_one("b", "2026-01-01T00:01:00Z"),
    );
    produce(
        &kafka,
        &config.topics.transactions,
        &[(0, None, Some(&a)), (0, None, Some(&b))],
    )
    .await;
    assert_first_minute_counted_once(broker.bootstrap(), &config);
    engine.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_view_edit_that_leaves_the_plan_unchanged_keeps_the_jobs_state() {
    let broker = TestBroker::start();
    let prefix = unique_prefix("viewedit");
    let queries = tempfile::tempdir().expect("tempdir");
    let view = queries.path().join("views/big_tx.sql");
    std::fs::create_dir(queries.path().join("views")).expect("mkdir");
    std::fs::write(
        &view,
        "CREATE VIEW big_tx AS SELECT * FROM transactions WHERE amount >= 1\n",
    )
    .expect("write view");
    std::fs::write(
        queries.path().join("per_minute.sql"),
        "SELECT window_start, window_end, count(*) AS n\n\
         FROM TUMBLE(big_tx, ts, INTERVAL '1 minute')\n\
         GROUP BY window_start, window_end\n",
    )
    .expect("write query");
    let mut config = test_config(&broker, &prefix, queries.path());
    config.engine.max_out_of_orderness_ms = 0;
    config.engine.reload_interval_ms = 200;
    create_source_topics(&config, 1).await;
    let engine = RunningEngine::start(config.clone()).await;
    let kafka = producer(broker.bootstrap());
    let a = amount_one("a", "2026-01-01T00:00:10Z");
    produce(&kafka, &config.topics.transactions, &[(0, None, Some(&a))]).await;
    wait_for_metric(
        engine.addr,
        &format!(
            "cxpulse_records_consumed_total{{topic=\"{}\"}}",
            config.topics.transactions
        ),
        1.0,
        Duration::from_secs(20),
    )
    .await;

    // A comment added to the view: the job's plan is the same, so the job
    // keeps running with `a` in its open window. Restarted with empty
    // state, it would have forgotten `a`, and the window would publish
    // nothing when `b` closes it.
    std::fs::write(
        &view,
        "-- Transactions of at least 1.\nCREATE VIEW big_tx AS SELECT * FROM transactions WHERE amount >= 1\n",
    )
    .expect("edit view");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let b = amount_one("b", "2026-01-01T00:01:00Z");
    produce(&kafka, &config.topics.transactions, &[(0, None, Some(&b))]).await;
    assert_first_minute_counted_once(broker.bootstrap(), &config);
    engine.stop().await;
}
