//! Latency of early results. Transactions are produced at a steady rate,
//! each with its event time set to the moment it is produced. One job
//! counts them per one-minute window and publishes an early result every
//! second (`@emit every 1s`) with `last_ts`, the window's latest event time
//! so far; the engine commits every second. A `read_committed` reader notes
//! when each result becomes visible. An event's latency is the time from
//! its production until the first visible result of its window whose
//! `last_ts` has reached it: that result counts it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cxpulse::config::Config;
use cxpulse::schema::Source;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use serde_json::{Value, json};

use crate::measure::{EngineRun, RECEIVE_MAX};

/// The measured job.
const JOB: &str = "-- Early counts every second, with the latest event time counted.\n-- @emit every 1s\nSELECT window_start, window_end, count(*) AS orders, max(ts) AS last_ts\nFROM TUMBLE(transactions, ts, INTERVAL '1 minute')\nGROUP BY window_start, window_end\n";
const WINDOW_MS: i64 = 60_000;
/// Events are sent in bursts this often.
const TICK: Duration = Duration::from_millis(10);

/// Produces `rate` events/s for `seconds` into a running engine and
/// reports the latency percentiles.
pub async fn run(bootstrap: &str, rate: u64, seconds: u64) -> Value {
    let mut config = Config::load(None).expect("the default configuration");
    config.kafka.brokers = bootstrap.to_owned();
    cxpulse::schema::declare(&config.sources).expect("the default sources");
    cxpulse::admin::ensure_topics(&config, &cxpulse::admin::source_topics(&config, 3))
        .await
        .expect("topics");
    let queries = tempfile::tempdir().expect("tempdir");
    std::fs::write(queries.path().join("latency.sql"), JOB).expect("write the job");
    let output = format!("{}latency", config.topics.output_prefix);
    let topics = config.topics.of(Source::streams());
    let mut engine = EngineRun {
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
        group: "bench-latency".to_owned(),
        topics: &topics,
        partitions: 3,
        events: 0,
        profile: None,
    }
    .spawn(bootstrap);
    engine.wait_ready();

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

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "2")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .expect("producer");
    let per_tick = (rate as f64 * TICK.as_secs_f64()).round() as u64;
    let topic = config
        .topics
        .source_topic(Source::named("transactions").expect("declared"));
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
    engine.stop();

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
    json!({
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
