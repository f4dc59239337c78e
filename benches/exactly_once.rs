//! What exactly-once costs: throughput and produce-to-committed-result
//! latency at commit intervals of 100 ms and 1 s, against the same engine
//! committing only once, at the end of the run (no transaction, changelog
//! write or checkpoint while it runs).
//!
//! Run with `cargo bench --bench exactly_once`. It starts a noida-db
//! broker of its own on 127.0.0.1 (installed by `scripts/broker.sh
//! install`) and runs the engine in process, with the bundled jobs.
//!
//! * Throughput: 200,000+ generated events (61 days of 11,500 customers)
//!   preloaded into 3-partition topics; each run is a fresh consumer group
//!   reading them all; events per second from the first event consumed to
//!   the last; three rounds, the settings interleaved, and the median. The
//!   engine and the broker share 2 cores, so wall-clock rates swing with
//!   whatever else the machine does; the CPU seconds the engine (this
//!   process) and the broker spent per event are reported beside them,
//!   and "events per engine CPU second" is the rate a dedicated core
//!   would reach.
//! * Latency: transactions produced at a steady rate, each carrying its
//!   send time in `event_id`, through the bundled jobs plus a job
//!   publishing every `event_id`; a `read_committed` reader measures when
//!   each becomes visible. The end-only run has nothing committed until the
//!   end, so its row shows when results become *visible* to a
//!   `read_uncommitted` reader instead.
//! * Restart: `cxpulse run` (this build's binary) is killed with SIGKILL
//!   while idle and started again; the time from the new process's start to
//!   the committed result of an event produced at that moment. It owns its
//!   partitions statically (`cluster.index`, read with `assign()`), so it
//!   reads them again at once: no group rebalance, no session timeout.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cxpulse::config::Config;
use cxpulse::metrics::Metrics;
use cxpulse::tools::local_broker::LocalBroker;
use futures::StreamExt;
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};

/// 2026-01-01T00:00:00Z: the generated events' start.
const START: i64 = 1_767_225_600_000;
/// Paced transactions per second in the latency runs.
const RATE: u64 = 1_000;
/// Length of a latency run's produce phase.
const PACED_FOR: Duration = Duration::from_secs(20);
/// Latency samples of the first seconds are left out (group join, warm-up).
const WARM_UP: Duration = Duration::from_secs(3);
/// Throughput runs of each setting.
const ROUNDS: usize = 3;
/// How long a restarted engine is given to publish a committed result.
const RESTART_WAIT: Duration = Duration::from_secs(300);
/// Commit interval of the run without checkpoints: longer than any run.
const END_ONLY: i64 = 300_000;

const PROBE: &str = "-- Every transaction's event_id, as soon as it is processed.\nSELECT event_id FROM transactions\n";

/// The throughput and latency table.
async fn throughput_and_latency(base: &Config, broker_pid: u32) {
    let throughput_config = with_topics(base, "tp");
    cxpulse::admin::ensure_topics(
        &throughput_config,
        &cxpulse::admin::source_topics(&throughput_config, 3),
    )
    .await
    .expect("topics");
    let records = cxpulse::tools::generate::Generator::new(14, 11_500, START).records(61);
    let events = records.iter().filter(|r| r.kind.is_stream()).count() as u64;
    preload(&throughput_config, &records).await;
    println!("preloaded {events} events ({} records)", records.len());

    let settings = [("end only", END_ONLY), ("1 s", 1_000), ("100 ms", 100)];
    // Rounds interleave the settings, so that drift on a shared machine
    // touches each of them alike; the median run is compared.
    let mut runs: Vec<Vec<Run>> = vec![Vec::new(); settings.len()];
    for round in 0..ROUNDS {
        for (i, (_, interval)) in settings.iter().enumerate() {
            let mut config = throughput_config.clone();
            config.kafka.group_id = format!("tp-{interval}-{round}");
            config.topics.output_prefix = format!("tp.out.{interval}.{round}.");
            config.engine.commit_interval_ms = *interval;
            runs[i].push(throughput(config, events, broker_pid).await);
        }
    }
    let median = |runs: &[Run], of: fn(&Run) -> f64| {
        let mut values: Vec<f64> = runs.iter().map(of).collect();
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    let base_rate = median(&runs[0], |r| r.rate);
    let base_cpu_rate = median(&runs[0], Run::per_engine_cpu_second);
    println!(
        "| commit interval | runs (events/s) | median | vs end only | events per engine CPU s (median) | vs end only | engine / broker CPU µs per event (median) | transactions | changelog written |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for (i, (label, _)) in settings.iter().enumerate() {
        let each: Vec<String> = runs[i].iter().map(|r| format!("{:.0}", r.rate)).collect();
        let rate = median(&runs[i], |r| r.rate);
        let cpu_rate = median(&runs[i], Run::per_engine_cpu_second);
        println!(
            "| {label} | {} | {rate:.0} | {:.0} % | {cpu_rate:.0} | {:.0} % | {:.0} / {:.0} | {:.0} | {:.1} MiB |",
            each.join(", "),
            100.0 * rate / base_rate,
            100.0 * cpu_rate / base_cpu_rate,
            median(&runs[i], |r| r.engine_cpu / r.events * 1e6),
            median(&runs[i], |r| r.broker_cpu / r.events * 1e6),
            median(&runs[i], |r| r.commits),
            median(&runs[i], |r| r.changelog_bytes) / 1_048_576.0
        );
    }

    println!();
    println!("| commit interval | latency p50 | p99 | max | seen by |");
    println!("|---|---|---|---|---|");
    for (label, interval) in settings {
        let mut config = with_topics(base, &format!("lat{interval}"));
        config.kafka.group_id = format!("lat-{interval}");
        config.engine.commit_interval_ms = interval;
        cxpulse::admin::ensure_topics(&config, &cxpulse::admin::source_topics(&config, 3))
            .await
            .expect("topics");
        let isolation = if interval == END_ONLY {
            "read_uncommitted"
        } else {
            "read_committed"
        };
        let mut latencies = latency(config, isolation).await;
        latencies.sort_unstable();
        let at = |q: f64| {
            let i = ((latencies.len() as f64 - 1.0) * q).round() as usize;
            latencies
                .get(i)
                .map_or("-".to_owned(), |d| format!("{} ms", d.as_millis()))
        };
        println!(
            "| {label} | {} | {} | {} | {isolation} ({} samples) |",
            at(0.5),
            at(0.99),
            at(1.0),
            latencies.len()
        );
    }
}

/// `cargo bench --bench exactly_once [-- restart | throughput]`:
/// everything, or only the restart measurement, or only the throughput and
/// latency tables.
#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let only = |part: &str| std::env::args().any(|a| a == part);
    let (only_restart, only_throughput) = (only("restart"), only("throughput"));
    let broker = LocalBroker::start().expect("noida-db (scripts/broker.sh install)");
    let queries = tempfile::tempdir().expect("tempdir");
    cxpulse::tools::bundled::write_queries(queries.path()).expect("queries");
    std::fs::write(queries.path().join("latency_probe.sql"), PROBE).expect("probe");
    let mut base = Config::load(None).expect("default config");
    base.kafka.brokers = broker.bootstrap();
    base.engine.queries_dir = queries.path().to_path_buf();
    base.http.listen = "127.0.0.1:0".to_owned();

    if !only_restart {
        throughput_and_latency(&base, broker.pid()).await;
    }
    if only_throughput {
        return;
    }

    let config = with_topics(&base, "rs");
    cxpulse::admin::ensure_topics(&config, &cxpulse::admin::source_topics(&config, 3))
        .await
        .expect("topics");
    println!();
    println!("| restarted as | restart to first committed result |");
    println!("|---|---|");
    for (label, seconds) in restarts(&config).await {
        match seconds {
            Some(seconds) => println!("| {label} | {seconds:.2} s |"),
            None => println!(
                "| {label} | none within {} s: the group still waits for the dead member |",
                RESTART_WAIT.as_secs()
            ),
        }
    }
}

/// `cxpulse run` with `config` (in environment variables).
fn spawn_engine(config: &Config) -> std::process::Child {
    let t = &config.topics;
    std::process::Command::new(env!("CARGO_BIN_EXE_cxpulse"))
        .arg("run")
        .env("CXPULSE__KAFKA__BROKERS", &config.kafka.brokers)
        .env("CXPULSE__KAFKA__GROUP_ID", &config.kafka.group_id)
        .env("CXPULSE__TOPICS__TRANSACTIONS", &t.transactions)
        .env("CXPULSE__TOPICS__FEEDBACK", &t.feedback)
        .env("CXPULSE__TOPICS__COMPLAINTS", &t.complaints)
        .env("CXPULSE__TOPICS__CUSTOMERS", &t.customers)
        .env("CXPULSE__TOPICS__DEADLETTER", &t.deadletter)
        .env("CXPULSE__TOPICS__OUTPUT_PREFIX", &t.output_prefix)
        .env("CXPULSE__ENGINE__QUERIES_DIR", &config.engine.queries_dir)
        .env("CXPULSE__HTTP__LISTEN", "127.0.0.1:0")
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("spawn cxpulse run")
}

/// Kills an idle engine and starts it again: seconds from the start to the
/// committed result of an event produced at that moment.
async fn restarts(config: &Config) -> Vec<(&'static str, Option<f64>)> {
    let reader: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &config.kafka.brokers)
        .set("group.id", "restart-reader")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .create()
        .expect("reader");
    let kafka = producer(config);
    let send = |id: String| {
        let payload = format!(
            r#"{{"event_id":"{id}","customer_id":"c1","ts":"2026-03-01T10:00:00Z","amount":1.0,"category":"books"}}"#
        );
        let kafka = kafka.clone();
        let topic = config.topics.transactions.clone();
        async move {
            kafka
                .send(
                    FutureRecord::<(), String>::to(&topic).payload(&payload),
                    Duration::from_secs(30),
                )
                .await
                .map_err(|(e, _)| e)
                .expect("acknowledged");
        }
    };
    let probe = format!("{}latency_probe", config.topics.output_prefix);
    let mut engine = spawn_engine(config);
    send("warm".to_owned()).await;
    wait_for_topic(config, &probe).await;
    reader.subscribe(&[&probe]).expect("subscribe");
    let mut stream = reader.stream();
    let mut until_seen = async |id: &str| {
        while let Some(Ok(message)) = stream.next().await {
            let row: serde_json::Value =
                serde_json::from_slice(message.payload().unwrap_or_default()).expect("json row");
            if row["event_id"] == id {
                return;
            }
        }
    };
    until_seen("warm").await;
    let mut results = Vec::new();
    for (label, instance) in [("restarted under its index (static ownership)", "0")] {
        // Idle: the last epoch has committed.
        tokio::time::sleep(Duration::from_secs(3)).await;
        engine.kill().expect("SIGKILL");
        engine.wait().expect("reaped");
        let restarted = Instant::now();
        engine = spawn_engine(config);
        let id = format!("after-restart-{instance}");
        send(id.clone()).await;
        let seen = tokio::time::timeout(RESTART_WAIT, until_seen(&id)).await;
        results.push((label, seen.ok().map(|()| restarted.elapsed().as_secs_f64())));
    }
    engine.kill().expect("SIGKILL");
    engine.wait().expect("reaped");
    results
}

/// `base` with source topics named after `prefix`.
fn with_topics(base: &Config, prefix: &str) -> Config {
    let mut config = base.clone();
    config.topics.transactions = format!("{prefix}.transactions");
    config.topics.feedback = format!("{prefix}.feedback");
    config.topics.complaints = format!("{prefix}.complaints");
    config.topics.customers = format!("{prefix}.customers");
    config.topics.deadletter = format!("{prefix}.deadletter");
    config.topics.output_prefix = format!("{prefix}.out.");
    config
}

fn producer(config: &Config) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", &config.kafka.brokers)
        .set("linger.ms", "5")
        .create()
        .expect("producer")
}

async fn preload(config: &Config, records: &[cxpulse::tools::generate::Generated]) {
    let kafka = producer(config);
    for chunk in records.chunks(20_000) {
        support::preload::send_generated(&kafka, &config.topics, chunk).await;
    }
}

/// Waits until `topic` exists (the engine creates its output topics).
async fn wait_for_topic(config: &Config, topic: &str) {
    while cxpulse::admin::partition_counts(config, &[topic.to_owned()])
        .await
        .expect("metadata")
        .is_empty()
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sum of a counter over its label values.
fn total(metrics: &Metrics, name: &str) -> f64 {
    metrics
        .gather()
        .iter()
        .filter(|f| f.name() == name)
        .flat_map(|f| f.get_metric().iter().map(|m| m.get_counter().get_value()))
        .sum()
}

/// One throughput run.
#[derive(Debug, Clone)]
struct Run {
    events: f64,
    /// Events per second, from the first consumed to the last.
    rate: f64,
    /// Transactions committed.
    commits: f64,
    /// Changelog bytes written, the final commit's included.
    changelog_bytes: f64,
    /// CPU seconds of this process (the engine) and of the broker between
    /// the first event consumed and the last.
    engine_cpu: f64,
    broker_cpu: f64,
}

impl Run {
    fn per_engine_cpu_second(&self) -> f64 {
        self.events / self.engine_cpu
    }
}

/// Runs the engine over every preloaded event.
async fn throughput(config: Config, events: u64, broker_pid: u32) -> Run {
    let broker = broker_pid.to_string();
    let (metrics, stop, engine) = support::start_in_process(&config);
    let t = &config.topics;
    let consumed = || {
        [&t.transactions, &t.feedback, &t.complaints]
            .iter()
            .map(|topic| metrics.records_consumed.with_label_values(&[topic]).get())
            .sum::<u64>()
    };
    let mut first = None;
    let deadline = Instant::now() + Duration::from_secs(1_800);
    while consumed() < events {
        if first.is_none() && consumed() > 0 {
            first = Some((
                Instant::now(),
                support::cpu::cpu_seconds("self"),
                support::cpu::cpu_seconds(&broker),
            ));
        }
        assert!(Instant::now() < deadline, "the run did not finish");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (began, engine_cpu, broker_cpu) = first.unwrap_or((
        Instant::now(),
        support::cpu::cpu_seconds("self"),
        support::cpu::cpu_seconds(&broker),
    ));
    let elapsed = began.elapsed();
    let engine_cpu = support::cpu::cpu_seconds("self") - engine_cpu;
    let broker_cpu = support::cpu::cpu_seconds(&broker) - broker_cpu;
    let commits = total(&metrics, "cxpulse_transactions_total");
    let _ = stop.send(());
    engine
        .await
        .expect("join")
        .expect("the engine stops cleanly");
    Run {
        events: events as f64,
        rate: events as f64 / elapsed.as_secs_f64(),
        commits,
        changelog_bytes: total(&metrics, "cxpulse_changelog_bytes_total"),
        engine_cpu,
        broker_cpu,
    }
}

/// Produces paced transactions while the engine runs; the latency of each
/// from its send to its row becoming visible to an `isolation` reader.
async fn latency(config: Config, isolation: &str) -> Vec<Duration> {
    let (_, stop, engine) = support::start_in_process(&config);
    let reader: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &config.kafka.brokers)
        .set("group.id", format!("{}-reader", config.kafka.group_id))
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", isolation)
        .set("fetch.wait.max.ms", "10")
        .create()
        .expect("reader");
    let probe = format!("{}latency_probe", config.topics.output_prefix);
    wait_for_topic(&config, &probe).await;
    reader.subscribe(&[&probe]).expect("subscribe");
    let seen = Arc::new(std::sync::Mutex::new(Vec::<(u64, u64)>::new()));
    let into = Arc::clone(&seen);
    let reading = tokio::spawn(async move {
        let mut stream = reader.stream();
        while let Some(Ok(message)) = stream.next().await {
            let arrived = now_micros();
            let row: serde_json::Value =
                serde_json::from_slice(message.payload().unwrap_or_default()).expect("json row");
            let sent: u64 = row["event_id"]
                .as_str()
                .and_then(|id| id.strip_prefix("p-"))
                .and_then(|micros| micros.parse().ok())
                .expect("probe id");
            into.lock()
                .expect("samples")
                .push((sent, arrived.saturating_sub(sent)));
        }
    });

    let kafka = producer(&config);
    let began = Instant::now();
    let warm_up_end = now_micros() + WARM_UP.as_micros() as u64;
    let mut ticker = tokio::time::interval(Duration::from_micros(1_000_000 / RATE));
    let mut sent = 0u64;
    let mut acks = Vec::new();
    while began.elapsed() < PACED_FOR {
        ticker.tick().await;
        let micros = now_micros();
        let ts = chrono::DateTime::from_timestamp_micros(micros as i64)
            .expect("now")
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let payload = format!(
            r#"{{"event_id":"p-{micros}","customer_id":"c{}","ts":"{ts}","amount":12.5,"category":"books"}}"#,
            sent % 500
        );
        let key = format!("c{}", sent % 500);
        acks.push(
            kafka
                .send_result(
                    FutureRecord::to(&config.topics.transactions)
                        .key(&key)
                        .payload(&payload),
                )
                .map_err(|(e, _)| e)
                .expect("queued"),
        );
        sent += 1;
    }
    for ack in futures::future::join_all(acks).await {
        ack.expect("delivery")
            .map_err(|(e, _)| e)
            .expect("acknowledged");
    }
    // Give the last records time to be committed, then stop (the end-only
    // run commits them at its drain).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let _ = stop.send(());
    engine
        .await
        .expect("join")
        .expect("the engine stops cleanly");
    // The reader has seen every probe, or nothing more came for 5 s.
    let mut last = (0, Instant::now());
    loop {
        let n = seen.lock().expect("samples").len();
        if n as u64 >= sent || last.1.elapsed() > Duration::from_secs(5) {
            break;
        }
        if n != last.0 {
            last = (n, Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    reading.abort();
    let seen = std::mem::take(&mut *seen.lock().expect("samples"));
    seen.into_iter()
        .filter(|(sent, _)| *sent >= warm_up_end)
        .map(|(_, micros)| Duration::from_micros(micros))
        .collect()
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}
