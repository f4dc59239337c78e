//! Several `cxpulse run` processes over the same topics (issue 27): a
//! read_committed reader must see the final rows of a single-instance run,
//! each exactly once.
//!
//! The first test reproduces the failure the issue opens with: three
//! instances in one consumer group share the partitions, and each publishes
//! its own partial aggregates under the same keys. It is ignored until
//! static ownership and the shuffle exist (run it with `--ignored`).

mod common;

use std::path::Path;
use std::time::Duration;

use common::exactly_once::{assert_same_rows, final_rows, preload, run_config, wait_finished};
use common::process::{EngineProcess, engine_env};
use common::{create_source_topics, test_config_for, unique_prefix};
use cxpulse::config::Config;
use cxpulse::tools::generate::Generator;

const START: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z
const READY: Duration = Duration::from_secs(60);
const DRAIN: Duration = Duration::from_secs(30);
/// Partitions of every source topic: two per instance.
const PARTITIONS: i32 = 6;

/// A job grouped by a column that is not the partition key.
const BY_CATEGORY: (&str, &str) = (
    "revenue_by_category",
    "-- @key category\nSELECT window_start, window_end, category, count(*) AS orders, sum(amount) AS revenue\nFROM TUMBLE(transactions, ts, INTERVAL '6 hours')\nGROUP BY window_start, window_end, category\n",
);

/// Runs `configs` (one process each) until every event is committed and
/// their windows are closed, then stops them with SIGTERM.
fn run_to_the_end(configs: &[Config]) {
    let mut engines: Vec<EngineProcess> = configs
        .iter()
        .map(|c| EngineProcess::start(&engine_env(c, &[])))
        .collect();
    for engine in &mut engines {
        engine.wait_ready(READY);
    }
    for engine in &engines {
        wait_finished(&configs[0], engine, Duration::from_secs(600));
    }
    for engine in engines {
        let (code, log) = engine.terminate(DRAIN);
        assert_eq!(code, Some(0), "{log}");
    }
}

fn write_queries(dir: &Path) -> Vec<String> {
    let (name, sql) = BY_CATEGORY;
    std::fs::write(dir.join(format!("{name}.sql")), sql).expect("write query");
    vec![name.to_owned()]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "issue 27: fails until instances own partitions statically and shuffle partials"]
async fn three_instances_in_one_group_publish_the_rows_of_one_instance() {
    let broker = cxpulse::tools::local_broker::LocalBroker::start().expect("broker");
    let prefix = unique_prefix("scale-out");
    let dir = tempfile::tempdir().expect("tempdir");
    let jobs = write_queries(dir.path());
    let mut base = test_config_for(&broker.bootstrap(), &prefix, dir.path());
    base.engine.max_out_of_orderness_ms = 0;
    base.engine.idle_timeout_ms = 3_600_000;
    create_source_topics(&base, PARTITIONS).await;
    preload(&base, &Generator::new(27, 2_000, START).records(30)).await;

    let single = run_config(&base, "single", 0);
    run_to_the_end(std::slice::from_ref(&single));
    let want = final_rows(&single, &jobs);
    assert!(!want.is_empty());

    let three: Vec<Config> = (0..3).map(|i| run_config(&base, "three", i)).collect();
    run_to_the_end(&three);
    assert_same_rows("three instances", &want, &final_rows(&three[0], &jobs));
}
