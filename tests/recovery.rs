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
    assert_same_rows, copy_bundled, final_rows, preload, uncommitted, wait_all_committed,
};
use common::process::{EngineProcess, engine_env};
use common::{
    TestBroker, create_source_topics, metric, read_topic_with, test_config, unique_prefix,
};
use cxpulse::config::Config;
use cxpulse::generate::Generator;
use rand::{Rng, SeedableRng};

const START: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z
const READY: Duration = Duration::from_secs(60);
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

/// `base` with its own consumer group, instance and output topics.
fn run_config(base: &Config, run: &str) -> Config {
    let mut config = base.clone();
    config.kafka.group_id = format!("{}-{run}", base.kafka.group_id);
    config.kafka.instance_id = format!("{run}-0");
    config.topics.output_prefix = format!("{}{run}.", base.topics.output_prefix);
    config.topics.deadletter = format!("{}.{run}", base.topics.deadletter);
    config
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
    let mut engine = EngineProcess::start(&engine_env(config, &[]));
    engine.wait_ready(READY);
    wait_all_committed(config, Duration::from_secs(600), || engine.log_text());
    let (code, log) = engine.terminate(DRAIN);
    assert_eq!(code, Some(0), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_three_random_moments_changes_no_final_row() {
    let broker = TestBroker::start();
    let prefix = unique_prefix("sigkill");
    let dir = tempfile::tempdir().expect("tempdir");
    let jobs = queries(dir.path());
    let mut base = test_config(&broker, &prefix, dir.path());
    base.engine.max_out_of_orderness_ms = 0;
    base.engine.idle_timeout_ms = 3_600_000;
    base.engine.batch_linger_ms = 200;
    create_source_topics(&base, 3).await;
    let records = Generator::new(14, 2_000, START).records(30);
    let events = records.iter().filter(|r| r.kind.is_stream()).count();
    assert!(events >= 1, "{events} events");
    preload(&base, &records).await;

    let clock = std::time::Instant::now();
    let uninterrupted = run_config(&base, "whole");
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
    let killed = run_config(&base, "killed");
    let env = engine_env(&killed, &[]);
    let mut restored_records = 0.0;
    for kill in 1..=3 {
        let mut engine = EngineProcess::start(&env);
        engine.wait_ready(READY);
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
    wait_all_committed(&killed, Duration::from_secs(600), || last.log_text());
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
    for job in &jobs {
        assert!(
            want.keys().any(|(j, ..)| j == job),
            "{job} published final rows"
        );
    }
}
