//! Latency of early results. Transactions are produced at a steady rate,
//! each with its event time set to the moment it is produced. One job
//! counts them per one-minute window and publishes an early result every
//! second (`@emit every 1s`) with `last_ts`, the window's latest event time
//! so far; the engine commits every second. A `read_committed` reader notes
//! when each result becomes visible. An event's latency is the time from
//! its production until the first visible result of its window whose
//! `last_ts` has reached it: that result counts it.
//!
//! With `--backfill N`, N feedback answers of the past 30 days are on their
//! topic first (the measured job does not read them); once the engine has
//! read them, a second job over them (`HISTORY`, with `@backfill
//! earliest`) is added, so that its backfill runs while the latency is
//! measured: the latency it costs the live job, and how fast the backfill
//! reads meanwhile.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cxpulse::config::Config;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use serde_json::{Value, json};

use crate::measure::{EngineRun, RECEIVE_MAX};

/// The measured job.
const JOB: &str = "-- Early counts every second, with the latest event time counted.\n-- @emit every 1s\nSELECT window_start, window_end, count(*) AS orders, max(ts) AS last_ts\nFROM TUMBLE(transactions, ts, INTERVAL '1 minute')\nGROUP BY window_start, window_end\n";
const WINDOW_MS: i64 = 60_000;
/// The job added with a backfill: answers, CSAT and customers per channel
/// and hour.
const HISTORY: &str = "-- @backfill earliest\n-- @key channel\nSELECT window_start, window_end, channel, count(*) AS answers, avg(rating) AS csat, count(DISTINCT customer_id) AS customers\nFROM TUMBLE(feedback, ts, INTERVAL '1 hour')\nGROUP BY window_start, window_end, channel\n";
const CHANNELS: [&str; 4] = ["web", "app", "email", "store"];
/// Events are sent in bursts this often.
const TICK: Duration = Duration::from_millis(10);

/// Produces `rate` events/s for `seconds` into a running engine of
/// `instances` instances (the job shuffles on several) and reports the
/// latency percentiles; with `history` > 0 (one instance), while a job
/// added with `@backfill earliest` reads that many past transactions.
pub async fn run(bootstrap: &str, rate: u64, seconds: u64, history: u64, instances: i32) -> Value {
    assert!(
        history == 0 || instances == 1,
        "--backfill runs on one instance: a job that shuffles cannot be backfilled on several yet"
    );
    let mut config = Config::load(None).expect("the default configuration");
    config.kafka.brokers = bootstrap.to_owned();
    cxpulse::admin::ensure_topics(&config, &cxpulse::admin::source_topics(&config, 3))
        .await
        .expect("topics");
    let queries = tempfile::tempdir().expect("tempdir");
    std::fs::write(queries.path().join("latency.sql"), JOB).expect("write the job");
    let output = format!("{}latency", config.topics.output_prefix);
    let topics = config.topics.of(config.declared.streams());
    let topic = config
        .topics
        .source_topic(config.declared.named("transactions").expect("declared"));
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "2")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .expect("producer");
    let feedback = config
        .topics
        .source_topic(config.declared.named("feedback").expect("declared"));
    if history > 0 {
        preload_history(&producer, feedback, history).await;
    }
    let mut engines = EngineRun {
        config: None,
        env: vec![
            (
                "CXPULSE__ENGINE__QUERIES_DIR".to_owned(),
                queries.path().display().to_string(),
            ),
            (
                "CXPULSE__ENGINE__COMMIT_INTERVAL_MS".to_owned(),
                "1000".to_owned(),
            ),
        ],
        group: if history > 0 {
            "bench-latency-backfill".to_owned()
        } else {
            "bench-latency".to_owned()
        },
        topics: &topics,
        partitions: 3,
        events: 0,
        profile: None,
        instances,
    }
    .spawn_all(bootstrap);
    for engine in &mut engines {
        engine.wait_ready();
    }
    let engine = &engines[0];
    let backfill = (history > 0).then(|| {
        // The live job reads the history first; then the backfilled job
        // is added (SIGHUP reloads the queries).
        let consumed = || {
            crate::measure::metric(engine.port, "cxpulse_records_consumed_total")
                .iter()
                .filter(|(labels, _)| labels.contains(feedback))
                .map(|(_, v)| *v)
                .sum::<f64>()
        };
        while consumed() < history as f64 {
            std::thread::sleep(Duration::from_millis(200));
        }
        std::fs::write(queries.path().join("history.sql"), HISTORY).expect("write the job");
        let _ = std::process::Command::new("kill")
            .args(["-HUP", &engine.child.id().to_string()])
            .status();
        watch_backfill(engine.port)
    });

    // The reader: (window start, last_ts, visible at), as rows arrive.
    let seen: Arc<Mutex<Vec<(i64, i64, i64)>>> = Arc::default();
    let reading = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let reader = {
        let (seen, reading) = (Arc::clone(&seen), Arc::clone(&reading));
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", "bench-latency-reader")
            .set("isolation.level", "read_committed")
            .set("auto.offset.reset", "earliest")
            .set("fetch.wait.max.ms", "10")
            .set("receive.message.max.bytes", RECEIVE_MAX)
            .create()
            .expect("reader");
        consumer.subscribe(&[&output]).expect("subscribe");
        std::thread::spawn(move || {
            while reading.load(std::sync::atomic::Ordering::Relaxed) {
                let Some(Ok(message)) = consumer.poll(Duration::from_millis(5)) else {
                    continue;
                };
                let at = chrono::Utc::now().timestamp_millis();
                let Some(row) = message
                    .payload()
                    .and_then(|p| serde_json::from_slice::<Value>(p).ok())
                else {
                    continue;
                };
                let time = |field: &str| {
                    row[field]
                        .as_str()
                        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                        .map(|t| t.timestamp_millis())
                };
                if let (Some(start), Some(last)) = (time("window_start"), time("last_ts")) {
                    seen.lock().expect("seen").push((start, last, at));
                }
            }
        })
    };

    let per_tick = (rate as f64 * TICK.as_secs_f64()).round() as u64;
    let mut produced: BTreeMap<i64, u64> = BTreeMap::new();
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let began = Instant::now();
    let mut sent = 0u64;
    while began.elapsed() < Duration::from_secs(seconds) {
        ticker.tick().await;
        for _ in 0..per_tick {
            let ts = chrono::Utc::now().timestamp_millis();
            let customer = format!("c-{}", sent % 10_000);
            let payload = format!(
                r#"{{"event_id":"l-{sent}","customer_id":"{customer}","ts":{ts},"amount":1.0,"category":"books"}}"#
            );
            let record = FutureRecord::to(topic).key(&customer).payload(&payload);
            if producer.send_result(record).is_ok() {
                *produced.entry(ts).or_default() += 1;
                sent += 1;
            }
        }
    }
    let sending = began.elapsed().as_secs_f64();
    let _ = producer.flush(Duration::from_secs(30));
    // Results of the last second become visible within a few more.
    tokio::time::sleep(Duration::from_secs(5)).await;
    reading.store(false, std::sync::atomic::Ordering::Relaxed);
    reader.join().expect("reader");
    let backfill = backfill.map(|watch| watch.join().expect("backfill watch"));
    for engine in engines {
        engine.stop();
    }

    let seen = std::mem::take(&mut *seen.lock().expect("seen"));
    let (latencies, missed) = latencies(&produced, seen);
    let total: u64 = latencies.iter().map(|(_, n)| n).sum();
    // The latency within which a share `q` of the events were counted.
    let weighted = |q: f64| {
        let target = (total as f64 * q).ceil() as u64;
        let mut acc = 0;
        for (ms, n) in &latencies {
            acc += n;
            if acc >= target {
                return *ms as f64 / 1000.0;
            }
        }
        f64::NAN
    };
    let (p50, p99, max) = (weighted(0.5), weighted(0.99), weighted(1.0));
    println!(
        "latency: {sent} events at {:.0} events/s for {sending:.0} s; produce → committed early result: p50 {p50:.3} s, p99 {p99:.3} s, max {max:.3} s; {missed} events never seen in a result",
        sent as f64 / sending
    );
    let backfill = backfill.map(|(read, seconds)| {
        match seconds {
            Some(s) => println!(
                "backfill alongside: {read:.0} records of {history} history answers read in {s:.1} s ({:.0} records/s), then live",
                read / s
            ),
            None => println!(
                "backfill alongside: {read:.0} records of {history} read; not caught up when the run ended"
            ),
        }
        json!({"history": history, "read": read, "seconds": seconds})
    });
    json!({
        "backfill": backfill,
        "target_rate": rate,
        "events": sent,
        "achieved_rate": sent as f64 / sending,
        "p50_seconds": p50,
        "p99_seconds": p99,
        "max_seconds": max,
        "events_not_seen": missed,
        "emit_every": "1s",
        "commit_interval_ms": 1000,
    })
}

/// `history` past feedback answers (30 days back from now, in time
/// order), on the partitions by customer.
async fn preload_history(producer: &FutureProducer, topic: &str, history: u64) {
    let now = chrono::Utc::now().timestamp_millis();
    let span = 30 * 86_400_000_i64;
    for chunk in (0..history).collect::<Vec<_>>().chunks(100_000) {
        let acks: Vec<_> = chunk
            .iter()
            .map(|&i| {
                let ts = now - span + (i as i64 * span) / history as i64;
                let customer = format!("h-{}", i % 50_000);
                let channel = CHANNELS[(i % 4) as usize];
                let payload = format!(
                    r#"{{"event_id":"h-{i}","customer_id":"{customer}","ts":{ts},"rating":{},"channel":"{channel}"}}"#,
                    1 + i % 5
                );
                producer
                    .send_result(FutureRecord::to(topic).key(&customer).payload(&payload))
                    .map_err(|(e, _)| e)
                    .expect("queue a record")
            })
            .collect();
        for ack in futures::future::join_all(acks).await {
            ack.expect("delivery")
                .map_err(|(e, _)| e)
                .expect("acknowledged");
        }
    }
}

/// Watches the backfill on the engine at `port` until it has caught up (or
/// 10 minutes): the records it read, and how long from its start until it
/// went live (`None` if it did not).
fn watch_backfill(port: u16) -> std::thread::JoinHandle<(f64, Option<f64>)> {
    std::thread::spawn(move || {
        let value = |name: &str| crate::measure::metric(port, name).first().map(|(_, v)| *v);
        let began = Instant::now();
        let mut started = None;
        while began.elapsed() < Duration::from_secs(600) {
            let running = value("cxpulse_backfills_running").unwrap_or(0.0);
            let read = value("cxpulse_backfill_records_total").unwrap_or(0.0);
            match (started, running > 0.0) {
                (None, true) => started = Some(Instant::now()),
                (Some(at), false) => {
                    return (read, Some(Instant::elapsed(&at).as_secs_f64()));
                }
                _ => {}
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        (value("cxpulse_backfill_records_total").unwrap_or(0.0), None)
    })
}

/// Each event's latency in ms, as (latency, events) sorted by latency, and
/// the events no visible result counted. `produced`: events per event time;
/// `seen`: (window start, last_ts, visible at) per result row.
fn latencies(
    produced: &BTreeMap<i64, u64>,
    mut seen: Vec<(i64, i64, i64)>,
) -> (Vec<(i64, u64)>, u64) {
    seen.sort_by_key(|&(_, _, at)| at);
    // Per window: the moments its counted-through time moved on.
    let mut reached: BTreeMap<i64, Vec<(i64, i64)>> = BTreeMap::new();
    for (start, last, at) in seen {
        let steps = reached.entry(start).or_default();
        if steps.last().is_none_or(|&(through, _)| last > through) {
            steps.push((last, at));
        }
    }
    let mut histogram: BTreeMap<i64, u64> = BTreeMap::new();
    let mut missed = 0;
    for (&ts, &n) in produced {
        let start = ts.div_euclid(WINDOW_MS) * WINDOW_MS;
        let steps = reached.get(&start).map(Vec::as_slice).unwrap_or_default();
        // The first step whose counted-through time reaches ts.
        let first = steps.partition_point(|&(through, _)| through < ts);
        match steps.get(first) {
            Some(&(_, at)) => *histogram.entry(at - ts).or_default() += n,
            None => missed += n,
        }
    }
    (histogram.into_iter().collect(), missed)
}
