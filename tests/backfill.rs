//! Backfills against the real broker: a query added after 100,000 events
//! with `@backfill earliest` publishes the final rows of the same query run
//! from the start, also when the engine is killed mid-backfill; and
//! `cxpulse backfill` rebuilds a running job's state from history.
//!
//! The events are in event-time order per partition and no out-of-orderness
//! is allowed, so which windows close is decided by the events alone.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::exactly_once::{RowId, assert_same_rows, final_rows, preload, renamed, wait_finished};
use common::process::{BIN, EngineProcess, engine_env};
use common::{TestBroker, create_source_topics, metric, test_config, unique_prefix};
use cxpulse::config::Config;
use cxpulse::tools::generate::Generator;
use serde_json::Value;

const START: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z
const DAY: i64 = 86_400_000;
const READY: Duration = Duration::from_secs(60);
const DRAIN: Duration = Duration::from_secs(30);
/// How long a state seen in the metrics may take to come.
const WAIT: Duration = Duration::from_secs(600);

/// Revenue per category and 6 hours, the job that runs from the start.
const REVENUE: &str = "-- @key category\nSELECT window_start, window_end, category, count(*) AS orders, sum(amount) AS revenue, count(DISTINCT customer_id) AS buyers\nFROM TUMBLE(transactions, ts, INTERVAL '6 hours')\nGROUP BY window_start, window_end, category\n";

/// The tests run one at a time: each runs a broker and engines of its own,
/// and the machine has two cores.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The final rows of the job run from the start, and those of the
/// backfilled job renamed as the first's.
fn live_and_backfilled(
    config: &Config,
) -> (BTreeMap<RowId, Vec<Value>>, BTreeMap<RowId, Vec<Value>>) {
    let live = final_rows(config, &["revenue".to_owned()]);
    let backfilled = renamed(
        final_rows(config, &["revenue_history".to_owned()]),
        "revenue_history",
        "revenue",
    );
    (live, backfilled)
}

/// Transactions among `records`: what a backfill of [`REVENUE`] reads.
fn transactions(records: &[cxpulse::tools::generate::Generated]) -> f64 {
    records
        .iter()
        .filter(|r| r.kind.name() == "transactions")
        .count() as f64
}

/// Preloaded history, the query directory of a running job, and how many
/// transactions the history holds.
async fn history(test: &str) -> (TestBroker, Config, tempfile::TempDir, f64) {
    let broker = TestBroker::start();
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("revenue.sql"), REVENUE).expect("write query");
    let mut config = test_config(&broker, &unique_prefix(test), dir.path());
    config.engine.max_out_of_orderness_ms = 0;
    config.engine.idle_timeout_ms = 3_600_000;
    create_source_topics(&config, 3).await;
    let records = Generator::new(5, 6_500, START).records(61);
    let events = records.iter().filter(|r| r.kind.is_stream()).count();
    assert!(events >= 100_000, "{events} events");
    preload(&config, &records).await;
    (broker, config, dir, transactions(&records))
}

fn add_backfilled_job(dir: &Path) {
    let sql = format!("-- @backfill earliest\n{REVENUE}");
    std::fs::write(dir.join("revenue_history.sql"), sql).expect("write query");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_added_with_backfill_earliest_publishes_the_rows_of_a_job_run_from_the_start() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let (_broker, config, dir, history_tx) = history("backfill-added").await;
    let mut engine = EngineProcess::start(&engine_env(&config, &[]));
    engine.wait_ready(READY);
    wait_finished(&config, &engine, Duration::from_secs(600));

    // Added after 100,000 events; more arrive while it reads history, so
    // it has to catch up with a moving live position.
    add_backfilled_job(dir.path());
    engine.wait_metrics("the backfill's start", WAIT, |m| {
        metric(m, "cxpulse_backfill_records_total{job=\"revenue_history\"}").is_some()
    });
    let later = Generator::new(6, 500, START + 61 * DAY).records(3);
    preload(&config, &later).await;
    engine.wait_metrics("the hand-over", WAIT, |m| {
        metric(m, "cxpulse_backfills_running") == Some(0.0)
    });
    // Events after the hand-over, a day later on every partition, close
    // the windows the hand-over fell in: a record lost or counted twice
    // there would show in them.
    let after = Generator::new(7, 500, START + 65 * DAY).records(1);
    preload(&config, &after).await;
    wait_finished(&config, &engine, Duration::from_secs(600));
    let body = engine.metrics();
    let read = metric(
        &body,
        "cxpulse_backfill_records_total{job=\"revenue_history\"}",
    )
    .unwrap_or(0.0);
    let (code, log) = engine.terminate(DRAIN);
    assert_eq!(code, Some(0), "{log}");
    assert!(
        log.contains("backfill caught up: the job runs live"),
        "{log}"
    );
    // The history's transactions, and those of the later events that the
    // live jobs had processed before the backfill caught up with them.
    let later_tx = transactions(&later);
    assert!(
        (history_tx..=history_tx + later_tx).contains(&read),
        "the backfill read {read} records; the history holds {history_tx} transactions, {later_tx} came later"
    );

    let (live, backfilled) = live_and_backfilled(&config);
    // Windows of the history and of the events that came during the
    // backfill, published once each.
    let last_window = |rows: &BTreeMap<RowId, Vec<Value>>| rows.keys().map(|k| k.3.clone()).max();
    assert!(live.len() > 900, "{} rows", live.len());
    assert!(
        last_window(&live) > Some("2026-03-06".to_owned()),
        "{:?}",
        last_window(&live)
    );
    assert_same_rows("backfilled", &live, &backfilled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_killed_midway_resumes_where_it_stood() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let (_broker, config, dir, history_tx) = history("backfill-killed").await;
    // Small backfill micro-batches, so that the kill finds it midway, and
    // epochs of 100 ms, so that its position is committed meanwhile.
    let env = engine_env(
        &config,
        &[
            ("CXPULSE__ENGINE__BACKFILL_BATCH_ROWS", "50"),
            ("CXPULSE__ENGINE__COMMIT_INTERVAL_MS", "100"),
        ],
    );
    let mut engine = EngineProcess::start(&env);
    engine.wait_ready(READY);
    wait_finished(&config, &engine, Duration::from_secs(600));
    add_backfilled_job(dir.path());
    let series = "cxpulse_backfill_records_total{job=\"revenue_history\"}";
    let clock = Instant::now();
    engine.wait_metrics("20,000 history records read", WAIT, |m| {
        metric(m, series).unwrap_or(0.0) >= 20_000.0
    });
    println!("20,000 read after {:?}", clock.elapsed());
    // An epoch commits the backfill's position at least once more.
    std::thread::sleep(Duration::from_millis(300));
    let left = metric(
        &engine.metrics(),
        "cxpulse_backfill_lag_records{job=\"revenue_history\"}",
    )
    .unwrap_or(0.0);
    engine.kill();
    println!(
        "killed with {left} records left after {:?}",
        clock.elapsed()
    );
    assert!(left > 0.0, "killed before the backfill ended");

    let mut engine = EngineProcess::start(&env);
    engine.wait_ready(READY);
    engine.wait_metrics("the hand-over", WAIT, |m| {
        metric(m, "cxpulse_backfills_running") == Some(0.0)
    });
    wait_finished(&config, &engine, Duration::from_secs(600));
    let resumed = metric(&engine.metrics(), series).unwrap_or(0.0);
    let (code, log) = engine.terminate(DRAIN);
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("resumed=true"), "{log}");
    assert!(
        resumed <= history_tx - 20_000.0,
        "the restart read {resumed} of {history_tx} records: it resumed, it did not start again"
    );
    let (live, backfilled) = live_and_backfilled(&config);
    assert_same_rows("killed mid-backfill", &live, &backfilled);
}

/// The engine's admin token in these tests.
const TOKEN: &str = "backfill-test-token-0123456789";

/// `cxpulse backfill` with `args` and the admin token `token`: exit code
/// and output.
fn backfill_command(args: &[&str], token: &str) -> (Option<i32>, String) {
    let out = Command::new(BIN)
        .arg("backfill")
        .args(args)
        .env("CXPULSE__HTTP__ADMIN_TOKEN", token)
        .output()
        .expect("run cxpulse backfill");
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cxpulse_backfill_rebuilds_a_running_job_from_history() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let (_broker, config, _dir, history_tx) = history("backfill-command").await;
    let mut engine = EngineProcess::start(&engine_env(
        &config,
        &[("CXPULSE__HTTP__ADMIN_TOKEN", TOKEN)],
    ));
    engine.wait_ready(READY);
    wait_finished(&config, &engine, Duration::from_secs(600));
    let before = final_rows(&config, &["revenue".to_owned()]);
    let url = format!("http://{}", engine.addr);

    // No token, a wrong one, a start in the future: refused, and nothing
    // happens to the job.
    let post = |authorization: Option<&str>, body: &str| {
        common::http_post(engine.addr, "/jobs/revenue/backfill", authorization, body)
    };
    let (status, answer) = post(None, "earliest");
    assert_eq!(status, 401, "{answer}");
    let (status, answer) = post(Some("Bearer not-the-token-0123456789"), "earliest");
    assert_eq!(status, 401, "{answer}");
    let (status, answer) = post(Some(&format!("Bearer {TOKEN}")), "2999-01-01T00:00:00Z");
    assert_eq!(status, 400, "{answer}");
    assert!(answer.contains("is in the future"), "{answer}");
    let (code, out) = backfill_command(&["revenue", "--from", "earliest", "--url", &url], "");
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("CXPULSE__HTTP__ADMIN_TOKEN"), "{out}");
    let (code, out) = backfill_command(
        &["revenue", "--from", "earliest", "--url", &url],
        "a-wrong-token-0123456789",
    );
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("401"), "{out}");

    let (code, out) = backfill_command(&["nosuchjob", "--from", "earliest", "--url", &url], TOKEN);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("404") && out.contains("no running job is named nosuchjob"),
        "{out}"
    );
    let (code, out) = backfill_command(&["revenue", "--from", "yesterday", "--url", &url], TOKEN);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("is not a start"), "{out}");
    assert_eq!(
        metric(&engine.metrics(), "cxpulse_backfills_running"),
        Some(0.0),
        "no refused request started anything"
    );

    let (code, out) = backfill_command(&["revenue", "--from", "earliest", "--url", &url], TOKEN);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("backfill of revenue started"), "{out}");
    engine.wait_metrics("the hand-over", WAIT, |m| {
        metric(m, "cxpulse_backfills_running") == Some(0.0)
            && metric(m, "cxpulse_backfill_records_total{job=\"revenue\"}").unwrap_or(0.0) > 0.0
    });
    wait_finished(&config, &engine, Duration::from_secs(600));
    let read = metric(
        &engine.metrics(),
        "cxpulse_backfill_records_total{job=\"revenue\"}",
    );
    let (code, log) = engine.terminate(DRAIN);
    assert_eq!(code, Some(0), "{log}");
    assert_eq!(read, Some(history_tx));

    // Every window was published again, with the same values.
    let after = final_rows(&config, &["revenue".to_owned()]);
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>()
    );
    let first: BTreeMap<RowId, Vec<Value>> = after
        .iter()
        .map(|(id, values)| {
            assert_eq!(values.len(), 2, "{id:?} published {} times", values.len());
            (id.clone(), vec![values[0].clone()])
        })
        .collect();
    let second: BTreeMap<RowId, Vec<Value>> = after
        .into_iter()
        .map(|(id, values)| (id, vec![values[1].clone()]))
        .collect();
    assert_same_rows("rebuilt", &first, &second);
}
