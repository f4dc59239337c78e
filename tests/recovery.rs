//! Fault tests against the real broker: whatever happens to the engine or
//! the broker, a read_committed reader gets the final rows of an
//! uninterrupted run, each exactly once.
//!
//! Every run reads the same preloaded events (partitions in event-time
//! order, no out-of-orderness allowed, partitions never idle during a run),
//! so which windows close is decided by the events alone: an uninterrupted
//! run and an interrupted one must publish the same final rows.

mod common;

use std::path::Path;
use std::time::Duration;

use common::exactly_once::{
    Tail, assert_same_rows, copy_bundled, final_rows, final_rows_of, preload, run_config,
    uncommitted, wait_all_committed, wait_finished,
};
use common::process::{EngineProcess, engine_env};
use common::{
    TestBroker, create_source_topics, http_get, metric, produce, producer, read_topic_with,
    test_config, test_config_for, unique_prefix,
};
use cxpulse::config::Config;
use cxpulse::tools::generate::Generator;
use rand::{Rng, SeedableRng};

const START: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z
const READY: Duration = Duration::from_secs(60);
/// A window-state limit the bundled pack passes over 2,000 customers.
const STATE_LIMIT: &str = "5MiB";

/// The tests run one at a time: each runs brokers and engines of its own,
/// and the machine has two cores.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
const DRAIN: Duration = Duration::from_secs(30);

/// TUMBLE, HOP and SESSION jobs of the test's own, beside the bundled pack.
const JOBS: &[(&str, &str)] = &[
    (
        "tumble_revenue",
        "-- @key category\nSELECT window_start, window_end, category, count(*) AS orders, sum(amount) AS revenue, count(DISTINCT customer_id) AS buyers\nFROM TUMBLE(transactions, ts, INTERVAL '6 hours')\nGROUP BY window_start, window_end, category\n",
    ),
    (
        "hop_feedback",
        "-- @key channel\n-- @emit every 1s\nSELECT window_start, window_end, channel, count(*) AS answers, avg(rating) AS csat, max(nps) AS best_nps\nFROM HOP(feedback, ts, INTERVAL '1 day', INTERVAL '3 days')\nGROUP BY window_start, window_end, channel\n",
    ),
    (
        "session_buyers",
        "-- @key customer_id\nSELECT window_start, window_end, customer_id, count(*) AS orders, sum(amount) AS spent\nFROM SESSION(transactions, ts, INTERVAL '3 days', customer_id)\nGROUP BY window_start, window_end, customer_id\n",
    ),
];

/// A queries directory with the bundled pack and [`JOBS`]; the job names.
fn queries(dir: &Path) -> Vec<String> {
    let mut jobs = copy_bundled(dir);
    for (name, sql) in JOBS {
        std::fs::write(dir.join(format!("{name}.sql")), sql).expect("write query");
        jobs.push((*name).to_owned());
    }
    jobs
}

/// Every dead letter of `config`'s run, as (reason, job, source offset).
fn dead_letters(config: &Config) -> Vec<(String, String, String)> {
    read_topic_with(
        &config.kafka.brokers,
        &config.topics.deadletter,
        "read_committed",
        Duration::from_secs(60),
    )
    .into_iter()
    .map(|r| {
        let h = |name: &str| r.headers.get(name).cloned().unwrap_or_default();
        (
            h("cxpulse.reason"),
            h("cxpulse.reason.detail"),
            format!(
                "{}/{}@{}",
                h("cxpulse.source.topic"),
                h("cxpulse.source.partition"),
                h("cxpulse.source.offset")
            ),
        )
    })
    .collect()
}

/// Runs an engine on `config` until every event is committed, then stops it
/// with SIGTERM (which must exit 0).
fn run_to_the_end(config: &Config) {
    let clock = std::time::Instant::now();
    let mut engine = EngineProcess::start(&engine_env(config, &[]));
    engine.wait_ready(READY);
    let ready = clock.elapsed();
    wait_finished(config, &engine, Duration::from_secs(600));
    let finished = clock.elapsed();
    let (code, log) = engine.terminate(DRAIN);
    assert_eq!(code, Some(0), "{log}");
    println!(
        "run to the end: ready after {ready:?}, finished after {finished:?}, stopped after {:?}",
        clock.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_three_random_moments_changes_no_final_row() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let broker = TestBroker::start();
    let prefix = unique_prefix("sigkill");
    let dir = tempfile::tempdir().expect("tempdir");
    let jobs = queries(dir.path());
    let mut base = test_config(&broker, &prefix, dir.path());
    base.engine.max_out_of_orderness_ms = 0;
    base.engine.idle_timeout_ms = 3_600_000;
    base.engine.batch_linger_ms = 200;
    create_source_topics(&base, 3).await;
    let records = Generator::new(14, 11_500, START).records(61);
    let events = records.iter().filter(|r| r.kind.is_stream()).count();
    assert!(events >= 200_000, "{events} events");
    preload(&base, &records).await;

    let clock = std::time::Instant::now();
    let uninterrupted = run_config(&base, "whole", 0, 1);
    run_to_the_end(&uninterrupted);
    println!("uninterrupted run: {:?}", clock.elapsed());
    let want = final_rows(&uninterrupted, &jobs);
    println!("{} final rows read: {:?}", want.len(), clock.elapsed());
    let letters = dead_letters(&uninterrupted);
    println!(
        "uninterrupted dead letters: {} e.g. {:?}",
        letters.len(),
        &letters[..letters.len().min(5)]
    );

    let seed: u64 = rand::random();
    println!("kill moments from seed {seed}");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let killed = run_config(&base, "killed", 0, 1);
    let env = engine_env(&killed, &[]);
    let mut restored_records = 0.0;
    let mut tail = None;
    for kill in 1..=3 {
        let mut engine = EngineProcess::start(&env);
        engine.wait_ready(READY);
        // A dashboard follows the outputs live across the kills.
        tail.get_or_insert_with(|| Tail::follow(&killed, &jobs));
        restored_records += metric(&engine.metrics(), "cxpulse_restore_records").unwrap_or(0.0);
        let left = uncommitted(&killed);
        // Somewhere in the remaining work: after 10 % to 60 % of it.
        let target = left - (left as f64 * rng.random_range(0.1..0.6)) as i64;
        while uncommitted(&killed) > target {
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::sleep(Duration::from_millis(rng.random_range(0..1_000)));
        println!("kill {kill}: {} events left", uncommitted(&killed));
        engine.kill();
    }
    let mut last = EngineProcess::start(&env);
    last.wait_ready(READY);
    restored_records += metric(&last.metrics(), "cxpulse_restore_records").unwrap_or(0.0);
    wait_finished(&killed, &last, Duration::from_secs(600));
    let (code, log) = last.terminate(DRAIN);
    assert_eq!(code, Some(0), "{log}");
    assert!(
        restored_records > 0.0,
        "the restarts restored state from the changelog"
    );

    let letters = dead_letters(&killed);
    println!(
        "killed dead letters: {} e.g. {:?}",
        letters.len(),
        &letters[..letters.len().min(5)]
    );
    let got = final_rows(&killed, &jobs);
    assert_same_rows("killed 3 times", &want, &got);
    let followed = final_rows_of(tail.expect("followed").stop());
    assert_same_rows("followed live while killed 3 times", &want, &followed);
    for job in &jobs {
        assert!(
            want.keys().any(|(j, ..)| j == job),
            "{job} published final rows"
        );
    }
}

/// Preloaded events and their uninterrupted run, for the tests that
/// interrupt a second run in other ways.
struct Baseline {
    broker: cxpulse::tools::local_broker::LocalBroker,
    base: Config,
    jobs: Vec<String>,
    want: std::collections::BTreeMap<common::exactly_once::RowId, Vec<serde_json::Value>>,
    _queries: tempfile::TempDir,
}

async fn baseline(test: &str) -> Baseline {
    let broker = cxpulse::tools::local_broker::LocalBroker::start().expect("broker");
    let prefix = unique_prefix(test);
    let dir = tempfile::tempdir().expect("tempdir");
    let jobs = queries(dir.path());
    let mut base = test_config_for(&broker.bootstrap(), &prefix, dir.path());
    base.engine.max_out_of_orderness_ms = 0;
    base.engine.idle_timeout_ms = 3_600_000;
    create_source_topics(&base, 3).await;
    preload(&base, &Generator::new(21, 2_000, START).records(30)).await;
    let whole = run_config(&base, "whole", 0, 1);
    run_to_the_end(&whole);
    let want = final_rows(&whole, &jobs);
    assert!(!want.is_empty());
    Baseline {
        broker,
        base,
        jobs,
        want,
        _queries: dir,
    }
}

/// Resident memory of process `pid`, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_stopped_and_restarted_mid_run_changes_no_final_row() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let mut b = baseline("broker-crash").await;
    let run = run_config(&b.base, "bounced", 0, 1);
    let mut engine = EngineProcess::start(&engine_env(&run, &[]));
    engine.wait_ready(READY);
    let total = uncommitted(&run);
    while uncommitted(&run) > total / 2 {
        std::thread::sleep(Duration::from_millis(50));
    }
    // noida-db loses acknowledged writes when it is killed (SIGKILL), and
    // the writes it acknowledges while it shuts down (SIGTERM); no client
    // can be exact over that (see LocalBroker::kill and ::stop). So the
    // engine is frozen, mid-transaction, while the broker shuts down, and
    // thaws to find it gone.
    engine.signal("STOP");
    b.broker.stop(Duration::from_secs(10));
    engine.signal("CONT");
    // While the broker is down the engine stays up, says why it is not
    // ready, and retries.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(http_get(engine.addr, "/healthz").0, 200);
    let (code, why) = http_get(engine.addr, "/readyz");
    assert_eq!(code, 503, "{why}");
    b.broker.restart().expect("broker restart");
    wait_finished(&run, &engine, Duration::from_secs(300));
    let (code, log) = engine.terminate(DRAIN);
    assert_eq!(code, Some(0), "{log}");
    assert!(
        log.contains("in-memory state is dropped and restored from the changelog"),
        "the engine restored its state after losing the broker:\n{log}"
    );
    assert_same_rows("broker restarted", &b.want, &final_rows(&run, &b.jobs));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_stays_bounded_while_outputs_cannot_be_delivered() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let b = baseline("stalled").await;
    let mut run = run_config(&b.base, "stalled", 0, 1);
    // A stalled broker fails a send after 3 s.
    run.kafka.message_timeout_ms = 3_000;
    let mut engine = EngineProcess::start(&engine_env(
        &run,
        &[("CXPULSE__KAFKA__MESSAGE_TIMEOUT_MS", "3000")],
    ));
    engine.wait_ready(READY);
    let total = uncommitted(&run);
    while uncommitted(&run) > total * 2 / 3 {
        std::thread::sleep(Duration::from_millis(50));
    }
    let broker = b.broker.pid().to_string();
    let signal = |name: &str| {
        let status = std::process::Command::new("kill")
            .args([name, &broker])
            .status()
            .expect("kill");
        assert!(status.success());
    };
    // 20 s of a broker that accepts connections and answers nothing: the
    // engine holds what it had when the broker stopped (its last batch's
    // outputs in the producer's queue) and no more.
    signal("-STOP");
    let mut samples = Vec::new();
    let mut not_ready = false;
    for _ in 0..80 {
        std::thread::sleep(Duration::from_millis(250));
        samples.push(rss(engine.pid()));
        not_ready |= http_get(engine.addr, "/readyz").0 == 503;
        assert_eq!(http_get(engine.addr, "/healthz").0, 200);
    }
    signal("-CONT");
    let (first, second) = samples.split_at(samples.len() / 2);
    let peak = |s: &[u64]| s.iter().copied().max().unwrap_or(0);
    println!(
        "RSS during the stall: peak {} MiB in the first 10 s, {} MiB in the last 10 s",
        peak(first) >> 20,
        peak(second) >> 20
    );
    assert!(
        peak(second) <= peak(first) + (16 << 20),
        "memory kept growing while nothing could be delivered: {} MiB then {} MiB",
        peak(first) >> 20,
        peak(second) >> 20
    );
    assert!(
        peak(&samples) < 1 << 30,
        "under 1 GiB: {} MiB",
        peak(&samples) >> 20
    );
    assert!(not_ready, "/readyz said 503 while the broker was stalled");
    wait_finished(&run, &engine, Duration::from_secs(300));
    let (code, log) = engine.terminate(DRAIN);
    assert_eq!(code, Some(0), "{log}");
    assert_same_rows("broker stalled", &b.want, &final_rows(&run, &b.jobs));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_over_its_limit_pauses_the_partitions_ahead_and_changes_no_result() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let b = baseline("state-limit").await;
    let mut run = run_config(&b.base, "limited", 0, 1);
    run.engine.state_memory_limit = STATE_LIMIT.to_owned();
    run.engine.batch_max_rows = 1_000;
    // Short epochs, so that a pause of a few hundred milliseconds sees some.
    run.engine.commit_interval_ms = 100;
    let mut engine = EngineProcess::start(&engine_env(&run, &[]));
    engine.wait_ready(READY);
    let limit = STATE_LIMIT
        .parse::<bytesize::ByteSize>()
        .expect("size")
        .as_u64() as f64;
    let (mut peak, mut paused_commits, mut committed_at_pause) = (0.0f64, 0.0, None);
    let started = std::time::Instant::now();
    while uncommitted(&run) > 0 {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "{}",
            engine.log_text()
        );
        let body = engine.metrics();
        let state = metric(&body, "cxpulse_state_memory_bytes").unwrap_or(0.0);
        let committed =
            metric(&body, "cxpulse_transactions_total{outcome=\"committed\"}").unwrap_or(0.0);
        peak = peak.max(state);
        if body.contains("cxpulse_consumption_paused{") {
            let at = *committed_at_pause.get_or_insert(committed);
            paused_commits = f64::max(paused_commits, committed - at);
        } else {
            committed_at_pause = None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    wait_finished(&run, &engine, Duration::from_secs(300));
    let (code, log) = engine.terminate(DRAIN);
    assert_eq!(code, Some(0), "{log}");
    assert!(
        log.contains(
            "window state and kept tables are over engine.state_memory_limit: consumption paused"
        ) && log.contains("largest_job="),
        "paused, naming the largest job:\n{log}"
    );
    println!(
        "state peak {:.0} KiB, limit {:.0} KiB; {paused_commits} commits while paused",
        peak / 1024.0,
        limit / 1024.0
    );
    assert!(paused_commits >= 1.0, "epochs committed while paused");
    // A micro-batch (1,000 events) may take it over before the pause, and
    // the first micro-batch of each partition not read yet still runs (its
    // source's watermark waits for it); what paused partitions had already
    // read is held: peaks of 7,100 to 11,100 KiB were seen.
    assert!(peak < limit * 2.5, "state peaked at {peak} bytes");
    assert_same_rows("state limited", &b.want, &final_rows(&run, &b.jobs));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_instance_with_the_same_id_fences_the_first() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let b = baseline("fence").await;
    let run = run_config(&b.base, "twins", 0, 1);
    let env = engine_env(&run, &[]);
    let mut first = EngineProcess::start(&env);
    first.wait_ready(READY);
    let total = uncommitted(&run);
    while uncommitted(&run) > total * 2 / 3 {
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut second = EngineProcess::start(&env);
    let status = first.wait_exit(Duration::from_secs(60));
    let log = first.log_text();
    let status = status.unwrap_or_else(|| {
        panic!(
            "the fenced instance did not stop:\n{log}\n--- the second instance:\n{}",
            second.log_text()
        )
    });
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.contains("fenced"),
        "the log says why it stopped:\n{log}"
    );
    second.wait_ready(READY);
    wait_finished(&run, &second, Duration::from_secs(300));
    let (code, log) = second.terminate(DRAIN);
    assert_eq!(code, Some(0), "{log}");
    assert_same_rows("fenced", &b.want, &final_rows(&run, &b.jobs));
}

/// A TUMBLE job of orders and revenue per category, with `extra` columns.
fn category_totals(interval: &str, extra: &str) -> String {
    format!(
        "-- @key category\nSELECT window_start, window_end, category, count(*) AS orders, sum(amount) AS revenue{extra}\nFROM TUMBLE(transactions, ts, INTERVAL '{interval}')\nGROUP BY window_start, window_end, category\n"
    )
}

/// Sends book orders of customer c1, as (event id, time, amount), to
/// partition 0 of the transactions topic.
async fn send_orders(
    kafka: &rdkafka::producer::FutureProducer,
    config: &Config,
    orders: &[(&str, &str, f64)],
) {
    let payloads: Vec<String> = orders
        .iter()
        .map(|(id, ts, amount)| {
            format!(
                r#"{{"event_id":"{id}","customer_id":"c1","ts":"{ts}","amount":{amount},"category":"books"}}"#
            )
        })
        .collect();
    let records: Vec<(i32, Option<&str>, Option<&str>)> = payloads
        .iter()
        .map(|p| (0, None, Some(p.as_str())))
        .collect();
    produce(kafka, &config.topics.transactions, &records).await;
}

/// One query in a directory of its own.
fn one_query(name: &str, sql: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join(format!("{name}.sql")), sql).expect("write query");
    dir
}

/// The final rows of job `job`, without `job`, `final` and `emitted_at`.
fn rows_of(config: &Config, job: &str) -> Vec<serde_json::Value> {
    let mut rows: Vec<serde_json::Value> = final_rows(config, &[job.to_owned()])
        .into_values()
        .flatten()
        .map(|mut v| {
            if let Some(row) = v.as_object_mut() {
                row.remove("job");
                row.remove("final");
            }
            v
        })
        .collect();
    rows.sort_by_key(|v| v.to_string());
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_commits_the_last_epoch_and_a_window_keeps_its_events_across_the_restart() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let broker = TestBroker::start();
    let prefix = unique_prefix("drain");
    let dir = one_query("hourly", &category_totals("1 hour", ""));
    let mut config = test_config(&broker, &prefix, dir.path());
    config.engine.max_out_of_orderness_ms = 0;
    config.engine.idle_timeout_ms = 3_600_000;
    // No epoch commits on its own during the test: only the drain does.
    config.engine.commit_interval_ms = 300_000;
    create_source_topics(&config, 1).await;
    let env = engine_env(&config, &[]);
    let kafka = producer(broker.bootstrap());

    let mut first = EngineProcess::start(&env);
    first.wait_ready(READY);
    send_orders(
        &kafka,
        &config,
        &[
            ("t1", "2026-03-01T10:05:00Z", 2.5),
            ("t2", "2026-03-01T10:10:00Z", 4.0),
        ],
    )
    .await;
    let consumed = format!(
        "cxpulse_records_consumed_total{{topic=\"{}\"}}",
        config.topics.transactions
    );
    first.wait_for_metrics(&[(consumed.as_str(), 2.0)], READY);
    assert_eq!(
        uncommitted(&config),
        2,
        "nothing committed before the drain"
    );
    let stopping = std::time::Instant::now();
    let (code, log) = first.terminate(DRAIN);
    assert_eq!(code, Some(0), "{log}");
    assert!(
        stopping.elapsed() < Duration::from_millis(10_000),
        "within shutdown_drain_ms: {:?}",
        stopping.elapsed()
    );
    assert_eq!(
        uncommitted(&config),
        0,
        "the drain committed the last epoch"
    );

    let mut second = EngineProcess::start(&env);
    second.wait_ready(READY);
    assert!(
        metric(&second.metrics(), "cxpulse_restore_records").unwrap_or(0.0) > 0.0,
        "the window's state came back from the changelog"
    );
    send_orders(
        &kafka,
        &config,
        &[
            ("t3", "2026-03-01T10:20:00Z", 1.5),
            ("t4", "2026-03-01T11:30:00Z", 9.0),
        ],
    )
    .await;
    second.wait_for_metrics(&[(consumed.as_str(), 2.0)], READY);
    let (code, log) = second.terminate(DRAIN);
    assert_eq!(code, Some(0), "{log}");
    // t1 + t2 (before the restart) + t3; t4 only closes the window.
    assert_eq!(
        rows_of(&config, "hourly"),
        [serde_json::json!({
            "window_start": "2026-03-01T10:00:00.000Z",
            "window_end": "2026-03-01T11:00:00.000Z",
            "category": "books",
            "orders": 3,
            "revenue": 8.0
        })]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn customers_and_complaint_tables_are_intact_after_a_kill() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let broker = TestBroker::start();
    let prefix = unique_prefix("tables");
    let dir = one_query(
        "resolutions",
        "SELECT c.complaint_id, c.status, s.opened_ts, u.segment\nFROM complaints c\nLEFT JOIN complaint_status s ON c.complaint_id = s.complaint_id\nLEFT JOIN customers u ON c.customer_id = u.customer_id\n",
    );
    let config = test_config(&broker, &prefix, dir.path());
    create_source_topics(&config, 1).await;
    let env = engine_env(&config, &[]);
    let kafka = producer(broker.bootstrap());
    let complaint = |id: &str, customer: &str, ts: &str, status: &str| {
        format!(
            r#"{{"event_id":"{id}-{status}","customer_id":"{customer}","ts":"{ts}","complaint_id":"{id}","status":"{status}"}}"#
        )
    };
    produce(
        &kafka,
        &config.topics.customers,
        &[
            (
                0,
                Some("c1"),
                Some(r#"{"customer_id":"c1","segment":"gold"}"#),
            ),
            (
                0,
                Some("c2"),
                Some(r#"{"customer_id":"c2","segment":"silver"}"#),
            ),
            (0, Some("c2"), None),
        ],
    )
    .await;
    let mut first = EngineProcess::start(&env);
    first.wait_ready(READY);
    produce(
        &kafka,
        &config.topics.complaints,
        &[(
            0,
            None,
            Some(&complaint("k1", "c1", "2026-03-01T10:00:00Z", "opened")),
        )],
    )
    .await;
    wait_all_committed(&config, READY, || first.log_text());
    first.kill();

    let mut second = EngineProcess::start(&env);
    second.wait_ready(READY);
    produce(
        &kafka,
        &config.topics.complaints,
        &[
            (
                0,
                None,
                Some(&complaint("k1", "c1", "2026-03-01T12:00:00Z", "resolved")),
            ),
            (
                0,
                None,
                Some(&complaint("k2", "c2", "2026-03-01T12:30:00Z", "opened")),
            ),
        ],
    )
    .await;
    wait_all_committed(&config, READY, || second.log_text());
    let (code, log) = second.terminate(DRAIN);
    assert_eq!(code, Some(0), "{log}");
    // k1's opening (before the kill) is still known; c1's profile too, and
    // c2's deletion.
    let rows: Vec<serde_json::Value> = rows_of(&config, "resolutions")
        .into_iter()
        .map(|mut v| {
            if let Some(row) = v.as_object_mut() {
                row.remove("emitted_at");
            }
            v
        })
        .collect();
    assert_eq!(
        rows,
        [
            serde_json::json!({"complaint_id":"k1","status":"opened","opened_ts":"2026-03-01T10:00:00.000Z","segment":"gold"}),
            serde_json::json!({"complaint_id":"k1","status":"resolved","opened_ts":"2026-03-01T10:00:00.000Z","segment":"gold"}),
            serde_json::json!({"complaint_id":"k2","status":"opened","opened_ts":"2026-03-01T12:30:00.000Z","segment":null}),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_broker_is_retried_with_backoff_until_it_comes() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let port = common::process::free_port();
    let bootstrap = format!("127.0.0.1:{port}");
    let prefix = unique_prefix("unreachable");
    let dir = one_query("plain", "SELECT event_id FROM transactions\n");
    let config = test_config_for(&bootstrap, &prefix, dir.path());
    let mut engine = EngineProcess::start(&engine_env(&config, &[]));
    engine.wait_listening(READY);
    // Attempts at 0, 0.25, 0.75, 1.75 and 3.75 s, each waiting up to 10 s
    // for the broker's metadata: at least two failed attempts in 25 s.
    let started = std::time::Instant::now();
    while engine
        .log_text()
        .matches("Kafka failed under the engine")
        .count()
        < 2
    {
        assert!(
            started.elapsed() < Duration::from_secs(40),
            "no retries logged:\n{}",
            engine.log_text()
        );
        assert_eq!(
            http_get(engine.addr, "/healthz").0,
            200,
            "alive while it retries"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(engine.wait_exit(Duration::ZERO).is_none(), "no crash");
    let (code, why) = http_get(engine.addr, "/readyz");
    assert_eq!(code, 503);
    assert!(why.contains("recovering (attempt"), "{why}");
    let log = engine.log_text();
    assert!(
        log.contains("attempt=1") && log.contains("attempt=2"),
        "{log}"
    );
    assert!(
        log.contains("retry_in_ms=250") && log.contains("retry_in_ms=500"),
        "{log}"
    );

    let _broker = cxpulse::tools::local_broker::LocalBroker::start_on(port).expect("broker");
    create_source_topics(&config, 1).await;
    engine.wait_ready(Duration::from_secs(60));
    let (code, log) = engine.terminate(DRAIN);
    assert_eq!(code, Some(0), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_without_transactions_is_refused_with_a_message() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let old = common::old_broker::OldBroker::start();
    let prefix = unique_prefix("old");
    let dir = one_query("plain", "SELECT event_id FROM transactions\n");
    let config = test_config_for(&old.bootstrap(), &prefix, dir.path());
    let mut engine = EngineProcess::start(&engine_env(&config, &[]));
    let status = engine
        .wait_exit(Duration::from_secs(60))
        .unwrap_or_else(|| panic!("still running:\n{}", engine.log_text()));
    let log = engine.log_text();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.contains("the Kafka cluster refuses transactions"),
        "says why:\n{log}"
    );
}

/// The live changelog keys of job `job`, with their query fingerprints.
async fn state_of(config: &Config, job: &str) -> Vec<(String, cxpulse::state::key::StateKey)> {
    let topic = config.changelog_topic();
    let partitions = cxpulse::admin::partition_counts(config, std::slice::from_ref(&topic))
        .await
        .expect("metadata")
        .get(&topic)
        .copied()
        .expect("the changelog topic exists");
    let job = job.to_owned();
    let client = config.client_config();
    let group = config.kafka.group_id.clone();
    tokio::task::spawn_blocking(move || {
        let all: Vec<i32> = (0..partitions).collect();
        cxpulse::state::reader::live_keys(&client, &group, &topic, &all, |key| {
            key.job().is_some_and(|(name, _)| name == job)
        })
        .expect("changelog read")
        .into_iter()
        .filter(|(_, part)| *part == 0)
        .filter_map(|(key, _)| Some((key.job()?.1.to_owned(), key)))
        .collect()
    })
    .await
    .expect("join")
}

/// `cxpulse reset JOB` with the engine's environment: exit code, output.
fn reset(env: &[(String, String)], job: &str) -> (Option<i32>, String) {
    let output = std::process::Command::new(common::process::BIN)
        .args(["reset", job])
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run cxpulse reset");
    (
        output.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_removed_and_reset_jobs_start_empty_and_their_old_state_is_removed() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let broker = TestBroker::start();
    let prefix = unique_prefix("forget");
    let dir = one_query("hourly", &category_totals("1 hour", ""));
    let daily = category_totals("1 day", "");
    for job in ["daily", "gone", "dropped"] {
        std::fs::write(dir.path().join(format!("{job}.sql")), &daily).expect("write");
    }
    let mut config = test_config(&broker, &prefix, dir.path());
    config.engine.max_out_of_orderness_ms = 0;
    config.engine.idle_timeout_ms = 3_600_000;
    create_source_topics(&config, 1).await;
    let env = engine_env(&config, &[]);
    let kafka = producer(broker.bootstrap());

    // Run 1: two events in windows that stay open.
    let mut first = EngineProcess::start(&env);
    first.wait_ready(READY);
    send_orders(
        &kafka,
        &config,
        &[
            ("t1", "2026-03-01T10:05:00Z", 2.5),
            ("t2", "2026-03-01T10:10:00Z", 4.0),
        ],
    )
    .await;
    wait_all_committed(&config, READY, || first.log_text());
    let (code, log) = first.terminate(DRAIN);
    assert_eq!(code, Some(0), "{log}");
    let old_hourly: std::collections::BTreeSet<String> = state_of(&config, "hourly")
        .await
        .into_iter()
        .map(|(fingerprint, _)| fingerprint)
        .collect();
    assert_eq!(old_hourly.len(), 1, "one version of hourly has state");
    for job in ["daily", "gone", "dropped"] {
        assert!(!state_of(&config, job).await.is_empty(), "{job} has state");
    }

    // Between the runs: hourly changes, gone is removed, daily is reset.
    std::fs::write(
        dir.path().join("hourly.sql"),
        category_totals("1 hour", ", max(amount) AS top"),
    )
    .expect("write");
    std::fs::remove_file(dir.path().join("gone.sql")).expect("remove");
    let (code, output) = reset(&env, "daily");
    assert_eq!(code, Some(0), "{output}");
    assert!(output.contains("reset daily:"), "{output}");
    assert!(state_of(&config, "daily").await.is_empty());
    let (code, output) = reset(&env, "nosuchjob");
    assert_eq!(code, Some(1), "{output}");
    assert!(
        output.contains("no state stored for job nosuchjob")
            && output.contains("dropped")
            && output.contains("hourly"),
        "names the jobs with state: {output}"
    );

    // Run 2: a third event in the same windows, then one that closes them;
    // dropped.sql is removed while it runs.
    let mut second = EngineProcess::start(&env);
    second.wait_ready(READY);
    let log = second.log_text();
    assert!(
        log.contains("the job's query changed since its state was saved"),
        "{log}"
    );
    send_orders(
        &kafka,
        &config,
        &[
            ("t3", "2026-03-01T10:20:00Z", 1.5),
            ("t4", "2026-03-02T00:30:00Z", 9.0),
        ],
    )
    .await;
    wait_all_committed(&config, READY, || second.log_text());
    std::fs::remove_file(dir.path().join("dropped.sql")).expect("remove");
    second.wait_for_metrics(&[("cxpulse_jobs_loaded", 2.0)], READY);
    // The tombstones go out with the next epoch.
    let stopping = second.terminate(DRAIN);
    assert_eq!(stopping.0, Some(0), "{}", stopping.1);

    // Only t3 counts in the changed and the reset job: they started empty.
    assert_eq!(
        rows_of(&config, "hourly"),
        [serde_json::json!({
            "window_start": "2026-03-01T10:00:00.000Z",
            "window_end": "2026-03-01T11:00:00.000Z",
            "category": "books",
            "orders": 1,
            "revenue": 1.5,
            "top": 1.5
        })]
    );
    assert_eq!(
        rows_of(&config, "daily"),
        [serde_json::json!({
            "window_start": "2026-03-01T00:00:00.000Z",
            "window_end": "2026-03-02T00:00:00.000Z",
            "category": "books",
            "orders": 1,
            "revenue": 1.5
        })]
    );
    let hourly_now = state_of(&config, "hourly").await;
    assert!(
        hourly_now.iter().all(|(f, _)| !old_hourly.contains(f)),
        "the old version's state is gone: {hourly_now:?}"
    );
    assert!(!hourly_now.is_empty(), "the new version has state");
    assert_eq!(state_of(&config, "gone").await, []);
    assert_eq!(state_of(&config, "dropped").await, []);
}
