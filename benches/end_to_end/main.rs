//! End to end, side by side, in one run: the raw consume ceiling, the
//! engine with every bundled job, the engine with one trivial stateless
//! job, and DataFusion in batch mode over the same events read from files;
//! then the Nexmark queries the same way; and, on request, the latency of
//! early results at a steady rate (`latency`).
//!
//! `cargo bench --bench end_to_end [-- --events N] [--customers C]
//! [--workloads cx,nexmark,latency] [--nexmark-events M] [--queries q5,q11]
//! [--rate R] [--seconds S] [--backfill N] [--instances N] [--cases pack,rfm]
//! [--json PATH] [--perf DIR]` (defaults: 5,000,000
//! events of 100,000 generated customers, then 5,000,000 Nexmark events,
//! every query; the latency workload, only when named, produces 100,000
//! events/s for 60 s, with `--backfill N` while a job added with
//! `@backfill earliest` reads N past transactions; figures written
//! to `target/end_to_end.json`; `--perf` records each engine run with
//! `perf record -g` into DIR/<group>.perf.data). With `--instances N`
//! above 1, the customer-analytics jobs and each Nexmark query run again
//! on N instances (`scale.rs`; `--cases` keeps the customer-analytics cases
//! whose names contain one of its words), and the latency job runs on N
//! instances.
//!
//! Each workload starts a noida-db broker of its own on 127.0.0.1
//! (installed by `scripts/broker.sh install`) and preloads its events into
//! 3-partition topics. The engine is this build's `cxpulse` binary
//! (`cxpulse run`, each run a fresh consumer group), measured from its
//! first consumed event until its group has committed the end of every
//! source partition and no window has closed for five seconds (the end is
//! the last closing); its CPU time and peak RSS come from `/proc`. noida-db
//! ignores `fetch.max.bytes` and answers a fetch with a partition's whole
//! backlog, so every client here raises `receive.message.max.bytes`
//! (`kafka.properties` for the engine), as a deployment on noida-db must.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../support/cpu.rs"]
mod cpu;
mod cx;
#[path = "../nexmark/events.rs"]
mod events;
mod latency;
mod measure;
mod nexmark;
#[path = "../support/preload.rs"]
mod preload;
mod scale;

use std::path::{Path, PathBuf};

use cxpulse::config::Config;
use cxpulse::tools::local_broker::LocalBroker;
use serde_json::{Value, json};

use measure::{EngineRun, Measured};

/// Partitions of each source topic.
const PARTITIONS: i32 = 3;

/// The trivial stateless job of run (c).
const TRIVIAL: &str = "-- Reads every transaction and publishes nothing: the engine's own cost.\nSELECT event_id FROM transactions WHERE amount < 0\n";

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let number = |flag: &str, default: u64| {
        value(flag).map_or(default, |n| {
            n.parse().unwrap_or_else(|_| panic!("{flag} N"))
        })
    };
    let events = number("--events", 5_000_000);
    let customers = number("--customers", 100_000) as usize;
    let nexmark_events = number("--nexmark-events", events);
    let instances = number("--instances", 1) as i32;
    let workloads = value("--workloads").unwrap_or_else(|| "cx,nexmark".to_owned());
    let queries: Option<Vec<String>> =
        value("--queries").map(|q| q.split(',').map(str::to_owned).collect());
    let cases: Vec<String> = value("--cases")
        .map(|c| c.split(',').map(str::to_owned).collect())
        .unwrap_or_default();
    let profiles = value("--perf").map(PathBuf::from);
    let json_path = value("--json").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("target/end_to_end.json"),
        PathBuf::from,
    );

    let mut report = json!({
        "date": chrono::Utc::now().to_rfc3339(),
        "cpus": std::thread::available_parallelism().map_or(0, usize::from),
    });
    if workloads.split(',').any(|w| w == "cx") {
        let scale = (instances, cases.as_slice());
        report["cx"] = customer_analytics(events, customers, profiles.as_deref(), scale).await;
    }
    if workloads.split(',').any(|w| w == "latency") {
        let broker = LocalBroker::start().expect("noida-db (scripts/broker.sh install)");
        report["latency"] = latency::run(
            &broker.bootstrap(),
            number("--rate", 100_000),
            number("--seconds", 60),
            number("--backfill", 0),
            instances,
        )
        .await;
    }
    if workloads.split(',').any(|w| w == "nexmark") {
        let broker = LocalBroker::start().expect("noida-db (scripts/broker.sh install)");
        report["nexmark"] = nexmark::run(
            &broker.bootstrap(),
            nexmark_events,
            queries.as_deref(),
            profiles.as_deref(),
            instances,
        )
        .await;
    }
    std::fs::write(
        &json_path,
        serde_json::to_string_pretty(&report).expect("json"),
    )
    .expect("write the figures");
    println!("\nfigures written to {}", json_path.display());
}

/// Runs (a) to (d) on the customer-analytics workload.
async fn customer_analytics(
    events: u64,
    customers: usize,
    profiles: Option<&Path>,
    (instances, cases): (i32, &[String]),
) -> Value {
    let broker = LocalBroker::start().expect("noida-db (scripts/broker.sh install)");
    let mut config = Config::load(None).expect("the default configuration");
    config.kafka.brokers = broker.bootstrap();
    cxpulse::admin::ensure_topics(&config, &cxpulse::admin::source_topics(&config, PARTITIONS))
        .await
        .expect("topics");
    let topics = config.topics.of(config.declared.streams());
    let files = tempfile::tempdir().expect("tempdir");
    let began = std::time::Instant::now();
    let (bytes, days) = cx::preload(&config, customers, events, files.path()).await;
    println!(
        "customer analytics: preloaded {events} events of {customers} customers over {days:.1} simulated days ({:.0} MiB of JSON) in {:.0} s",
        bytes as f64 / 1_048_576.0,
        began.elapsed().as_secs_f64()
    );

    let (ceiling, read) = measure::ceiling(&broker.bootstrap(), &topics, PARTITIONS, events);
    println!(
        "(a) raw consume ceiling: {:.0} events/s ({:.0} MiB/s)",
        ceiling.rate(),
        read as f64 / ceiling.seconds / 1_048_576.0
    );
    let trivial_dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(trivial_dir.path().join("trivial.sql"), TRIVIAL).expect("write");
    let bundled = Path::new(env!("CARGO_MANIFEST_DIR")).join("queries");
    let engine = |dir: &Path, group: &str| {
        EngineRun {
            config: None,
            env: vec![(
                "CXPULSE__ENGINE__QUERIES_DIR".to_owned(),
                dir.display().to_string(),
            )],
            group: group.to_owned(),
            topics: &topics,
            partitions: PARTITIONS,
            events,
            profile: profiles.map(|dir| dir.join(format!("{group}.perf.data"))),
            instances: 1,
        }
        .measure(&broker.bootstrap())
    };
    let trivial = engine(trivial_dir.path(), "bench-trivial");
    println!(
        "(c) one trivial stateless job: {:.0} events/s",
        trivial.rate()
    );
    let all = engine(&bundled, "bench-all");
    println!("(b) every bundled job: {:.0} events/s", all.rate());
    let batch = cx::batch(&config, files.path(), &bundled, events).await;
    println!(
        "(d) DataFusion in batch mode: {:.0} events/s\n",
        batch.rate()
    );

    println!("{}", measure::TABLE_HEADER);
    let runs: [(&str, &Measured); 4] = [
        ("(a) raw consume ceiling", &ceiling),
        ("(b) every bundled job", &all),
        ("(c) one trivial stateless job", &trivial),
        ("(d) DataFusion batch, same jobs, from files", &batch),
    ];
    for (name, run) in runs {
        let versus = (!std::ptr::eq(run, &ceiling)).then_some(&ceiling);
        println!("{}", run.row(name, versus));
    }
    println!("\n| job | rows published by (b) | rows computed by (d) |\n|---|---|---|");
    for (job, n) in &batch.rows {
        println!(
            "| {job} | {} | {n} |",
            all.rows.get(job).copied().unwrap_or(0)
        );
    }
    let mut figures = json!({
        "events": events,
        "customers": customers,
        "simulated_days": days,
        "json_bytes": bytes,
        "ceiling": ceiling.json(None),
        "all_jobs": all.json(Some(&ceiling)),
        "trivial_job": trivial.json(Some(&ceiling)),
        "batch": batch.json(Some(&ceiling)),
    });
    if instances > 1 {
        figures["instances"] = scale::customer_analytics(
            &broker.bootstrap(),
            &topics,
            PARTITIONS,
            events,
            (instances, cases),
            profiles,
        );
    }
    figures
}
