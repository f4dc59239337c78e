//! Several `cxpulse run` processes over the same topics (issue 27): a
//! read_committed reader must see the final rows of a single-instance run,
//! each exactly once.
//!
//! Instance i of N owns the partitions p with p mod N = i (static
//! ownership, `cluster.instances` and `cluster.index`). Jobs grouped by the
//! sources' partition key (TUMBLE, HOP and SESSION) run on each instance's
//! own partitions; jobs
//! grouped by another column (the failure issue 27 opens with: each
//! instance published its own partial counts) shuffle their partial
//! aggregates through a repartition topic, and the job reading the
//! complaints' kept tables fires with a copy of them that came through its
//! shuffle. All run through a kill, two rescales and a zombie.

mod common;

use std::time::Duration;

use common::exactly_once::{
    Tail, assert_same_rows, event_topics, final_rows, final_rows_of, preload, renamed,
    repartition_read, run_config, uncommitted, wait_all_committed, wait_finished,
};
use common::process::{EngineProcess, engine_env};
use common::{
    create_source_topics, metric, produce, producer, read_topic_with, test_config_for,
    unique_prefix,
};
use cxpulse::config::Config;
use cxpulse::tools::generate::Generator;
use cxpulse::tools::local_broker::LocalBroker;

const START: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z
const READY: Duration = Duration::from_secs(60);
const DRAIN: Duration = Duration::from_secs(30);
/// How long a state seen in the metrics may take to come.
const WAIT: Duration = Duration::from_secs(600);
/// Partitions of every source topic: two per instance.
const PARTITIONS: i32 = 6;

/// Jobs grouped by a column that is not the partition key: they shuffle.
const BY_CATEGORY: [(&str, &str); 2] = [
    (
        "revenue_by_category",
        "-- @key category\nSELECT window_start, window_end, category, count(*) AS orders, sum(amount) AS revenue\nFROM TUMBLE(transactions, ts, INTERVAL '6 hours')\nGROUP BY window_start, window_end, category\n",
    ),
    (
        "buyers_by_category_two_days",
        "-- @key category\nSELECT window_start, window_end, category, count(DISTINCT customer_id) AS buyers, avg(amount) AS mean\nFROM HOP(transactions, ts, INTERVAL '1 day', INTERVAL '2 days')\nGROUP BY window_start, window_end, category\n",
    ),
];

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

/// The base configuration of a test on `broker` reading the query files in
/// `dir` (events in order per partition, no idle partitions), with its
/// source topics created, `PARTITIONS` each.
async fn base_config(broker: &LocalBroker, test: &str, dir: &std::path::Path) -> Config {
    let mut base = test_config_for(&broker.bootstrap(), &unique_prefix(test), dir);
    base.engine.max_out_of_orderness_ms = 0;
    base.engine.idle_timeout_ms = 3_600_000;
    create_source_topics(&base, PARTITIONS).await;
    base
}

/// Writes `jobs` (name, SQL) as query files in `dir`; returns their names.
fn write_jobs<'a>(
    dir: &std::path::Path,
    jobs: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Vec<String> {
    jobs.into_iter()
        .map(|(name, sql)| {
            std::fs::write(dir.join(format!("{name}.sql")), sql).expect("write query");
            name.to_owned()
        })
        .collect()
}

/// Jobs grouped by the partition key of `transactions` (`customer_id`):
/// each instance computes its own partitions' windows completely, sessions
/// too (their state follows the partitions they came from).
const BY_CUSTOMER: [(&str, &str); 3] = [
    (
        "orders_per_customer_day",
        "-- @key customer_id\nSELECT window_start, window_end, customer_id, count(*) AS orders, sum(amount) AS spent\nFROM TUMBLE(transactions, ts, INTERVAL '1 day')\nGROUP BY window_start, window_end, customer_id\n",
    ),
    (
        "orders_per_customer_two_days",
        "-- @key customer_id\nSELECT window_start, window_end, customer_id, count(*) AS orders, max(amount) AS largest\nFROM HOP(transactions, ts, INTERVAL '1 day', INTERVAL '2 days')\nGROUP BY window_start, window_end, customer_id\n",
    ),
    (
        "customer_sessions",
        "-- @key customer_id\nSELECT window_start, window_end, customer_id, count(*) AS orders, sum(amount) AS spent\nFROM SESSION(transactions, ts, INTERVAL '1 day', customer_id)\nGROUP BY window_start, window_end, customer_id\n",
    ),
];

/// The bundled job reading the complaints' kept tables: it fires with a
/// copy of them that comes through its shuffle, which moves with its
/// repartition partition's changelog when instances are rescaled.
const KEPT_TABLE_READER: (&str, &str) = (
    "complaints_hourly",
    include_str!("../queries/complaints_hourly.sql"),
);

/// Instance `index` of `instances` of `run`, of deployment `generation`.
fn deployed(base: &Config, run: &str, index: i64, instances: i64, generation: i64) -> Config {
    let mut config = run_config(base, run, index, instances);
    config.cluster.generation = generation;
    config
}

/// Starts instances `0..n` of `n` of `run`, of deployment `generation`,
/// and waits until each is ready.
fn start_all(base: &Config, run: &str, n: i64, generation: i64) -> Vec<EngineProcess> {
    let mut engines: Vec<EngineProcess> = (0..n)
        .map(|i| EngineProcess::start(&engine_env(&deployed(base, run, i, n, generation), &[])))
        .collect();
    for engine in &mut engines {
        engine.wait_ready(READY);
    }
    engines
}

/// Stops every engine with SIGTERM; each must exit 0.
fn stop_all(engines: Vec<EngineProcess>) {
    for engine in engines {
        let (code, log) = engine.terminate(DRAIN);
        assert_eq!(code, Some(0), "{log}");
    }
}

/// One record per partition of `transactions`, `payload` of its number.
async fn send_to_each_partition(base: &Config, payload: impl Fn(i32) -> String) {
    let payloads: Vec<String> = (0..PARTITIONS).map(payload).collect();
    let records: Vec<(i32, Option<&str>, Option<&str>)> = payloads
        .iter()
        .enumerate()
        .map(|(p, v)| (p as i32, None, Some(v.as_str())))
        .collect();
    produce(
        &producer(&base.kafka.brokers),
        &base.topics.transactions,
        &records,
    )
    .await;
}

/// Invalid records for every partition of `transactions`, tagged `tag`:
/// each must reach the dead-letter topic once.
async fn send_invalid(base: &Config, tag: &str) {
    send_to_each_partition(base, |p| format!("{{not json {tag}-{p}")).await;
}

/// One order per partition of `transactions` far after the others, so that
/// every window of the generated events closes on every instance.
async fn send_closing_orders(base: &Config) {
    let at = "2026-03-01T00:00:00Z";
    send_to_each_partition(base, |p| {
        format!(
            r#"{{"event_id":"closing-{p}","customer_id":"closing-{p}","ts":"{at}","amount":1.0,"category":"books"}}"#
        )
    })
    .await;
}

/// With `engines` instances 0..4 of deployment 3 of `run`: a second process
/// started as instance 2 fences the first, which stops at its next commit
/// (the closing orders give it one) with exit code 1 and a log that says
/// so; the second takes its place.
async fn fence_instance_2_of_4(base: &Config, run: &str, engines: &mut Vec<EngineProcess>) {
    let mut zombie = engines.remove(2);
    let mut twin = EngineProcess::start(&engine_env(&deployed(base, run, 2, 4, 3), &[]));
    twin.wait_ready(READY);
    send_closing_orders(base).await;
    let status = zombie.wait_exit(Duration::from_secs(60));
    let log = zombie.log_text();
    let status = status.unwrap_or_else(|| panic!("the fenced instance did not stop:\n{log}"));
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.contains("fenced"),
        "the log says why it stopped:\n{log}"
    );
    engines.insert(2, twin);
}

/// Every job in `jobs` has final rows in `want`.
fn assert_every_job_published(
    want: &std::collections::BTreeMap<common::exactly_once::RowId, Vec<serde_json::Value>>,
    jobs: &[String],
) {
    for job in jobs {
        assert!(
            want.keys().any(|(j, ..)| j == job),
            "{job} published final rows"
        );
    }
}

/// The dead letters of `config`'s run, by source position, with how often
/// each was sent.
fn dead_letters(config: &Config) -> std::collections::BTreeMap<String, usize> {
    let mut seen = std::collections::BTreeMap::new();
    for r in read_topic_with(
        &config.kafka.brokers,
        &config.topics.deadletter,
        "read_committed",
        Duration::from_secs(60),
    ) {
        let h = |name: &str| r.headers.get(name).cloned().unwrap_or_default();
        let at = format!(
            "{} {}/{}@{}",
            h("cxpulse.reason"),
            h("cxpulse.source.topic"),
            h("cxpulse.source.partition"),
            h("cxpulse.source.offset")
        );
        *seen.entry(at).or_insert(0) += 1;
    }
    seen
}

/// How many event partitions an instance reads, as its metrics say.
fn assigned(engine: &EngineProcess) -> f64 {
    common::metric(&engine.metrics(), "cxpulse_assigned_partitions").unwrap_or(-1.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_killed_rescaled_and_fenced_publish_the_rows_of_one_instance() {
    let broker = LocalBroker::start().expect("broker");
    let dir = tempfile::tempdir().expect("tempdir");
    let jobs = write_jobs(
        dir.path(),
        BY_CUSTOMER
            .into_iter()
            .chain(BY_CATEGORY)
            .chain([KEPT_TABLE_READER]),
    );
    let base = base_config(&broker, "scale-keyed", dir.path()).await;
    let events = Generator::new(27, 20_000, START).records(30);
    assert!(events.len() >= 200_000, "{} events", events.len());
    let chunks: Vec<&[cxpulse::tools::generate::Generated]> =
        events.chunks(events.len().div_ceil(4)).collect();
    let run = "scaled";
    let group = run_config(&base, run, 0, 1);

    // Three instances; one is killed midway through the second part and
    // restarted under its index.
    preload(&base, chunks[0]).await;
    send_invalid(&base, "a").await;
    let mut engines = start_all(&base, run, 3, 1);
    for engine in &engines {
        assert_eq!(
            assigned(engine),
            6.0,
            "two partitions of each of three streams"
        );
    }
    wait_all_committed(&group, Duration::from_secs(300), || engines[1].log_text());
    // The work and the state are shared: each instance read at least a
    // fifth of the events and holds 20–45 % of the partition-key job's
    // window state, as its own metrics say.
    let read: Vec<f64> = engines
        .iter()
        .map(|e| {
            let body = e.metrics();
            event_topics(&base)
                .iter()
                .filter_map(|t| {
                    common::metric(
                        &body,
                        &format!("cxpulse_records_consumed_total{{topic=\"{t}\"}}"),
                    )
                })
                .sum()
        })
        .collect();
    let held: Vec<f64> = engines
        .iter()
        .map(|e| {
            common::metric(
                &e.metrics(),
                "cxpulse_window_state_bytes{job=\"orders_per_customer_two_days\"}",
            )
            .unwrap_or(0.0)
        })
        .collect();
    println!("events read per instance {read:?}, window state bytes {held:?}");
    let share = |v: &[f64], i: usize| v[i] / v.iter().sum::<f64>();
    for i in 0..3 {
        assert!(share(&read, i) >= 0.2, "instance {i} read {read:?}");
        assert!(
            (0.2..=0.45).contains(&share(&held, i)),
            "instance {i} holds {held:?}"
        );
    }
    preload(&base, chunks[1]).await;
    send_invalid(&base, "b").await;
    let total = uncommitted(&group);
    while uncommitted(&group) > total / 2 {
        std::thread::sleep(Duration::from_millis(20));
    }
    engines.remove(1).kill();
    let restarted = std::time::Instant::now();
    let mut again = EngineProcess::start(&engine_env(&deployed(&base, run, 1, 3, 1), &[]));
    again.wait_ready(READY);
    let ready_after = restarted.elapsed();
    wait_all_committed(&group, Duration::from_secs(300), || again.log_text());
    println!(
        "killed instance: ready {ready_after:?} after its restart, every event committed after {:?}",
        restarted.elapsed()
    );
    engines.insert(1, again);

    // Scaled down to two instances, with the third part arriving.
    preload(&base, chunks[2]).await;
    send_invalid(&base, "c").await;
    let step = std::time::Instant::now();
    stop_all(engines);
    let engines = start_all(&base, run, 2, 2);
    println!(
        "scale 3 → 2: every partition read again after {:?}",
        step.elapsed()
    );
    // An instance of the old count started again (as a pod during a
    // rolling update) finds its partitions owned by the newer deployment.
    let mut leftover = EngineProcess::start(&engine_env(&deployed(&base, run, 1, 3, 1), &[]));
    let status = leftover.wait_exit(Duration::from_secs(60));
    let log = leftover.log_text();
    assert_eq!(status.and_then(|s| s.code()), Some(1), "{log}");
    assert!(
        log.contains("a newer deployment runs, so this one stops"),
        "{log}"
    );
    for engine in &engines {
        assert_eq!(
            assigned(engine),
            9.0,
            "three partitions of each of three streams"
        );
    }
    wait_all_committed(&group, Duration::from_secs(300), || engines[0].log_text());

    // Scaled up to four, with the fourth part; then a second process
    // started as instance 2 fences the first.
    preload(&base, chunks[3]).await;
    send_invalid(&base, "d").await;
    let step = std::time::Instant::now();
    stop_all(engines);
    let mut engines = start_all(&base, run, 4, 3);
    println!(
        "scale 2 → 4: every partition read again after {:?}",
        step.elapsed()
    );
    let owned: Vec<f64> = engines.iter().map(assigned).collect();
    assert_eq!(owned, vec![6.0, 6.0, 3.0, 3.0], "p mod 4 over 6 partitions");
    fence_instance_2_of_4(&base, run, &mut engines).await;
    for engine in &engines {
        wait_finished(&group, engine, Duration::from_secs(300));
    }
    stop_all(engines);

    let single = run_config(&base, "single", 0, 1);
    run_to_the_end(std::slice::from_ref(&single));
    let want = final_rows(&single, &jobs);
    assert!(want.len() > 10_000, "{} reference rows", want.len());
    assert_every_job_published(&want, &jobs);
    let still_open =
        |((job, ..), values): (&common::exactly_once::RowId, &Vec<serde_json::Value>)| {
            job == KEPT_TABLE_READER.0 && values[0]["still_open"].as_i64() > Some(0)
        };
    assert!(
        want.iter().any(still_open),
        "complaints open at some window end: the whole history table counts"
    );
    let (want_dead, got_dead) = (dead_letters(&single), dead_letters(&group));
    assert_eq!(want_dead.len(), 4 * PARTITIONS as usize, "{want_dead:?}");
    assert_eq!(
        got_dead, want_dead,
        "each invalid record dead-lettered once"
    );
    assert_same_rows(
        "killed, rescaled and fenced",
        &want,
        &final_rows(&group, &jobs),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_instance_of_jobs_that_shuffle_publishes_the_rows_of_an_uninterrupted_run() {
    let broker = LocalBroker::start().expect("broker");
    let dir = tempfile::tempdir().expect("tempdir");
    let jobs = write_jobs(dir.path(), BY_CATEGORY);
    let base = base_config(&broker, "scale-restart", dir.path()).await;
    let events = Generator::new(28, 3_000, START).records(20);
    let (first, second) = events.split_at(events.len() / 2);
    preload(&base, first).await;
    // Two instances; the second is killed three times while it works.
    let killed = run_config(&base, "killed", 0, 2);
    let second_instance = run_config(&base, "killed", 1, 2);
    let mut steady = EngineProcess::start(&engine_env(&killed, &[]));
    steady.wait_ready(READY);
    // A dashboard follows the outputs live across the kills.
    let tail = Tail::follow(&killed, &jobs);
    let parts: Vec<&[cxpulse::tools::generate::Generated]> =
        second.chunks(second.len().div_ceil(3)).collect();
    for part in parts {
        let mut engine = EngineProcess::start(&engine_env(&second_instance, &[]));
        engine.wait_ready(READY);
        preload(&base, part).await;
        let total = uncommitted(&killed);
        while uncommitted(&killed) > total / 2 {
            std::thread::sleep(Duration::from_millis(10));
        }
        engine.kill();
    }
    let mut engine = EngineProcess::start(&engine_env(&second_instance, &[]));
    engine.wait_ready(READY);
    send_closing_orders(&base).await;
    for e in [&steady, &engine] {
        wait_finished(&killed, e, Duration::from_secs(120));
    }
    stop_all(vec![steady, engine]);

    let whole = run_config(&base, "whole", 0, 1);
    run_to_the_end(std::slice::from_ref(&whole));
    assert_eq!(
        dead_letters(&killed),
        dead_letters(&whole),
        "no event judged late"
    );
    let (want, got) = (final_rows(&whole, &jobs), final_rows(&killed, &jobs));
    assert_same_rows("killed", &want, &got);
    let followed = final_rows_of(tail.stop());
    assert_same_rows("followed live while killed", &want, &followed);
}

/// The whole bundled pack through the faults of the first test (a kill, 3
/// → 2, 2 → 4, a zombie) publishes the rows of one uninterrupted instance,
/// as read after the run and as followed live: the jobs grouped by the
/// customer run where the events are read, the others (nested aggregates,
/// windows over several sources, a view) shuffle, and `complaints_hourly`
/// fires with a copy of the kept tables that came through its shuffle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bundled_jobs_killed_rescaled_and_fenced_publish_the_rows_of_one_instance() {
    let broker = LocalBroker::start().expect("broker");
    let dir = tempfile::tempdir().expect("tempdir");
    let jobs = common::exactly_once::copy_bundled(dir.path());
    let base = base_config(&broker, "scale-pack", dir.path()).await;
    let events = Generator::new(35, 4_000, START).records(30);
    preload(&base, &events).await;
    let run = "pack";
    let group = run_config(&base, run, 0, 1);
    let total = uncommitted(&group);
    let consumed_to = |share: i64| {
        while uncommitted(&group) > total * share / 4 {
            std::thread::sleep(Duration::from_millis(10));
        }
    };

    let mut engines = start_all(&base, run, 3, 1);
    let tail = Tail::follow(&group, &jobs);
    consumed_to(3);
    engines.remove(1).kill();
    let mut again = EngineProcess::start(&engine_env(&deployed(&base, run, 1, 3, 1), &[]));
    again.wait_ready(READY);
    engines.insert(1, again);
    consumed_to(2);
    stop_all(engines);
    let engines = start_all(&base, run, 2, 2);
    consumed_to(1);
    stop_all(engines);
    let mut engines = start_all(&base, run, 4, 3);
    fence_instance_2_of_4(&base, run, &mut engines).await;
    for engine in &engines {
        wait_finished(&group, engine, Duration::from_secs(600));
    }
    stop_all(engines);

    let whole = run_config(&base, "whole", 0, 1);
    run_to_the_end(std::slice::from_ref(&whole));
    let want = final_rows(&whole, &jobs);
    assert_every_job_published(&want, &jobs);
    assert_eq!(dead_letters(&group), dead_letters(&whole));
    assert_same_rows(
        "3 instances, one killed, then 2, then 4 and a zombie",
        &want,
        &final_rows(&group, &jobs),
    );
    let followed = final_rows_of(tail.stop());
    assert_same_rows("followed live", &want, &followed);
}

/// Backfills that two instances had finished and the third had not when
/// the deployment was scaled from 3 instances to 2 go on on the new
/// owners: the finished partitions from where the live stream stood, the
/// others from where their backfill stood. One job is grouped by the
/// partition key, the other shuffles (its history's partials and marks go
/// through its repartition topic, and stage 2 waits for the slowest
/// partition's history). Each backfilled job then publishes the rows of
/// the same query run live from the start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfills_finished_on_some_instances_only_go_on_after_a_rescale() {
    let broker = LocalBroker::start().expect("broker");
    let dir = tempfile::tempdir().expect("tempdir");
    let live = [BY_CUSTOMER[0], BY_CATEGORY[0]];
    write_jobs(dir.path(), live);
    let base = base_config(&broker, "scale-backfill", dir.path()).await;
    preload(&base, &Generator::new(41, 3_000, START).records(20)).await;
    let run = "backfill";
    let group = run_config(&base, run, 0, 1);
    // Instance 2 backfills a few records per step, so that the others
    // catch up long before it.
    let slow = [
        ("CXPULSE__ENGINE__BACKFILL_BATCH_ROWS", "5"),
        ("CXPULSE__ENGINE__COMMIT_INTERVAL_MS", "100"),
    ];
    let mut engines: Vec<EngineProcess> = (0..3)
        .map(|i| {
            let extra: &[(&str, &str)] = if i == 2 { &slow } else { &[] };
            EngineProcess::start(&engine_env(&deployed(&base, run, i, 3, 1), extra))
        })
        .collect();
    for engine in &mut engines {
        engine.wait_ready(READY);
    }
    for engine in &engines {
        wait_finished(&group, engine, Duration::from_secs(600));
    }

    let history = |job: &str| format!("{job}_history");
    for (job, sql) in live {
        let path = dir.path().join(format!("{}.sql", history(job)));
        std::fs::write(path, format!("-- @backfill earliest\n{sql}")).expect("write query");
    }
    let series = |name: &str, job: &str| format!("{name}{{job=\"{}\"}}", history(job));
    let read = |m: &str, job: &str| metric(m, &series("cxpulse_backfill_records_total", job));
    for engine in &engines[..2] {
        engine.wait_metrics("the hand-overs of instances 0 and 1", WAIT, |m| {
            live.iter().all(|(job, _)| read(m, job).is_some())
                && metric(m, "cxpulse_backfills_running") == Some(0.0)
        });
    }
    // An epoch commits instance 2's positions at least once more.
    std::thread::sleep(Duration::from_millis(300));
    let body = engines[2].metrics();
    let left: Vec<f64> = live
        .iter()
        .map(|(job, _)| metric(&body, &series("cxpulse_backfill_lag_records", job)).unwrap_or(0.0))
        .collect();
    assert!(
        left.iter().all(|l| *l > 0.0),
        "instance 2 caught up before the rescale: {left:?} left"
    );
    stop_all(engines);
    println!("rescaled to 2 instances with {left:?} records left to backfill on instance 2");

    let engines = start_all(&base, run, 2, 2);
    for engine in &engines {
        engine.wait_metrics("the hand-overs after the rescale", WAIT, |m| {
            metric(m, "cxpulse_backfills_running") == Some(0.0)
        });
    }
    for ((job, _), left) in live.iter().zip(&left) {
        let resumed: f64 = engines
            .iter()
            .map(|e| read(&e.metrics(), job).unwrap_or(0.0))
            .sum();
        assert!(
            resumed <= *left,
            "{job}: the new owners read {resumed} history records; {left} were left: they went on, they did not start again"
        );
    }
    // A day of events later on every partition closes the windows the
    // hand-overs fell in.
    preload(
        &base,
        &Generator::new(42, 3_000, START + 21 * 86_400_000).records(1),
    )
    .await;
    for engine in &engines {
        wait_finished(&group, engine, Duration::from_secs(600));
    }
    for engine in engines {
        let (code, log) = engine.terminate(DRAIN);
        assert_eq!(code, Some(0), "{log}");
        assert!(log.contains("resumed=true"), "{log}");
    }

    for (job, _) in live {
        let want = final_rows(&group, &[job.to_owned()]);
        let got = renamed(final_rows(&group, &[history(job)]), &history(job), job);
        assert!(want.len() > 20, "{job}: {} rows", want.len());
        assert_same_rows(&format!("{job} backfilled across a rescale"), &want, &got);
    }
}

/// A job that shuffles, changed while instances run (each reloads its
/// query file at its own moment; here instance 0 long before instance 1),
/// is rebuilt from history (`@backfill`) with the rows of the same query
/// run from the start: the new version writes to a repartition topic of
/// its own, so instance 1's earlier version does not take in (and pass
/// over) instance 0's new partials before its own reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_shuffles_changed_on_one_instance_then_the_other_is_rebuilt_exactly() {
    let broker = LocalBroker::start().expect("broker");
    let (reference, sql) = BY_CATEGORY[0];
    let changed = "changed";
    let dirs: Vec<tempfile::TempDir> = (0..2)
        .map(|_| tempfile::tempdir().expect("tempdir"))
        .collect();
    for dir in &dirs {
        write_jobs(dir.path(), [(reference, sql), (changed, sql)]);
    }
    let base = base_config(&broker, "scale-changed", dirs[0].path()).await;
    preload(&base, &Generator::new(43, 3_000, START).records(20)).await;
    let run = "changed";
    let group = run_config(&base, run, 0, 1);
    let instance = |i: usize| {
        let mut config = deployed(&base, run, i as i64, 2, 1);
        config.engine.queries_dir = dirs[i].path().to_owned();
        config
    };
    let mut engines: Vec<EngineProcess> = (0..2)
        .map(|i| EngineProcess::start(&engine_env(&instance(i), &[])))
        .collect();
    for engine in &mut engines {
        engine.wait_ready(READY);
    }
    for engine in &engines {
        wait_finished(&group, engine, Duration::from_secs(600));
    }

    let rebuilt = format!("-- @backfill earliest\n{sql}");
    let backfilled = |m: &str| {
        metric(m, "cxpulse_backfill_records_total{job=\"changed\"}").is_some()
            && metric(m, "cxpulse_backfills_running") == Some(0.0)
    };
    // Each instance reads what the repartition topics hold: with one topic
    // for both versions, instance 1's earlier version would take in
    // instance 0's new partials (committed within a commit interval of the
    // hand-over, seen in the lag within a statistics interval) and its new
    // version would never see them.
    for (dir, engine) in dirs.iter().zip(&engines) {
        std::fs::write(dir.path().join("changed.sql"), &rebuilt).expect("write query");
        engine.wait_metrics("the rebuild's hand-over", WAIT, backfilled);
        std::thread::sleep(Duration::from_millis(2_500));
        for engine in &engines {
            engine.wait_metrics("the repartition records read", WAIT, repartition_read);
        }
    }
    // A day of events later on every partition closes the last windows.
    preload(
        &base,
        &Generator::new(44, 3_000, START + 21 * 86_400_000).records(1),
    )
    .await;
    for engine in &engines {
        wait_finished(&group, engine, Duration::from_secs(600));
    }
    stop_all(engines);

    // The earlier version published the windows closed before the change,
    // the rebuilt one every window: its values are the last.
    let want = final_rows(&group, &[reference.to_owned()]);
    let got = renamed(
        final_rows(&group, &[changed.to_owned()]),
        changed,
        reference,
    )
    .into_iter()
    .map(|(id, mut values)| {
        assert!(values.len() <= 2, "{id:?} published {} times", values.len());
        (id, values.split_off(values.len() - 1))
    })
    .collect();
    assert!(want.len() > 20, "{} rows", want.len());
    assert_same_rows("rebuilt after a change", &want, &got);
}

/// A job that shuffles and panics on one instance is stopped there only
/// (the other goes on running it); its query file fixed (with `@backfill`),
/// it starts again on both as a changed job does, through its new
/// repartition topic, and publishes the rows of the same query run from the
/// start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_shuffles_stopped_by_a_panic_on_one_instance_is_rebuilt_shuffled_when_fixed() {
    let broker = LocalBroker::start().expect("broker");
    let dir = tempfile::tempdir().expect("tempdir");
    let (reference, sql) = BY_CATEGORY[0];
    let fragile = sql
        .replace(
            "SELECT window_start, window_end, category,",
            "SELECT window_start, window_end, cxpulse_test_panic(category) AS category,",
        )
        .replace(
            "GROUP BY window_start, window_end, category",
            "GROUP BY window_start, window_end, cxpulse_test_panic(category)",
        );
    assert_ne!(fragile, sql);
    write_jobs(
        dir.path(),
        [(reference, sql), ("fragile", fragile.as_str())],
    );
    let base = base_config(&broker, "scale-panic", dir.path()).await;
    preload(&base, &Generator::new(45, 2_000, START).records(10)).await;
    let run = "panic";
    let group = run_config(&base, run, 0, 1);
    let test_functions = [("CXPULSE_TEST_FUNCTIONS", "1")];
    let mut engines: Vec<EngineProcess> = (0..2)
        .map(|i| EngineProcess::start(&engine_env(&deployed(&base, run, i, 2, 1), &test_functions)))
        .collect();
    for engine in &mut engines {
        engine.wait_ready(READY);
    }
    for engine in &engines {
        wait_finished(&group, engine, Duration::from_secs(600));
    }

    // An order of category `panic` in partition 0, which instance 0 reads.
    let boom = r#"{"event_id":"boom","customer_id":"boom","ts":"2026-01-12T00:00:00Z","amount":1.0,"category":"panic"}"#;
    produce(
        &producer(&base.kafka.brokers),
        &base.topics.transactions,
        &[(0, None, Some(boom))],
    )
    .await;
    let stopped = "cxpulse_job_stopped{job=\"fragile\"}";
    engines[0].wait_metrics("the job stopped on instance 0", WAIT, |m| {
        metric(m, stopped) == Some(1.0)
    });
    assert_eq!(metric(&engines[1].metrics(), stopped), None);

    std::fs::write(
        dir.path().join("fragile.sql"),
        format!("-- @backfill earliest\n{sql}"),
    )
    .expect("fix the query");
    for engine in &engines {
        engine.wait_metrics("the rebuild's hand-over", WAIT, |m| {
            metric(m, "cxpulse_backfill_records_total{job=\"fragile\"}").is_some()
                && metric(m, "cxpulse_backfills_running") == Some(0.0)
                && metric(m, stopped).is_none()
        });
    }
    send_closing_orders(&base).await;
    for engine in &engines {
        wait_finished(&group, engine, Duration::from_secs(600));
    }
    stop_all(engines);

    // Before the fix, the job published the windows that closed; the
    // rebuilt one publishes every window: its values are the last.
    let want = final_rows(&group, &[reference.to_owned()]);
    let got = renamed(
        final_rows(&group, &["fragile".to_owned()]),
        "fragile",
        reference,
    )
    .into_iter()
    .map(|(id, mut values)| (id, values.split_off(values.len() - 1)))
    .collect();
    assert!(want.len() > 20, "{} rows", want.len());
    assert_same_rows("rebuilt after a panic", &want, &got);
}
