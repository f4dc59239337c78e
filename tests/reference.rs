//! The bundled metric jobs against an independent reference: a month of
//! generated events for 2,000 customers goes through the real broker and the
//! engine, and every final row read back must match what plain Rust
//! iterators compute from the same events (exact for counts, 1e-9 relative
//! for ratios). No DataFusion, no SQL on the reference side.
//!
//! Covered so far: `need_by_category` and `satisfaction_hourly`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use common::{
    RunningEngine, TestBroker, create_source_topics, producer, test_config, unique_prefix,
    wait_for_metric,
};
use cxpulse::generate::{Generated, Generator};
use cxpulse::schema::SourceKind;
use rdkafka::producer::FutureRecord;
use serde_json::Value;

const START: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z
const HOUR: i64 = 3_600_000;

fn hour_of(ts: i64) -> i64 {
    ts.div_euclid(HOUR) * HOUR
}

fn iso(ms: i64) -> String {
    cxpulse::sink::format_timestamp_millis(ms)
}

/// Field `name` of every generated event of `kind`, parsed.
fn events(records: &[Generated], kind: SourceKind) -> Vec<(i64, Value)> {
    records
        .iter()
        .filter(|r| r.kind == kind)
        .map(|r| (r.ts, serde_json::from_str(&r.value).expect("json")))
        .collect()
}

fn assert_close(what: &str, actual: &Value, expected: Option<f64>) {
    match (actual.as_f64(), expected) {
        (None, None) => {}
        (Some(a), Some(e)) if (a - e).abs() <= 1e-9 * e.abs().max(1e-12) => {}
        _ => panic!("{what}: engine {actual}, reference {expected:?}"),
    }
}

/// need_by_category: per hour and category.
fn need_by_category(records: &[Generated]) -> BTreeMap<(String, String), [f64; 6]> {
    let mut groups: BTreeMap<(i64, String), (u64, BTreeSet<String>, f64)> = BTreeMap::new();
    for (ts, tx) in events(records, SourceKind::Transactions) {
        let g = groups
            .entry((
                hour_of(ts),
                tx["category"].as_str().unwrap_or_default().to_owned(),
            ))
            .or_default();
        g.0 += 1;
        g.1.insert(tx["customer_id"].as_str().unwrap_or_default().to_owned());
        g.2 += tx["amount"].as_f64().unwrap_or_default();
    }
    let mut per_hour: BTreeMap<i64, (u64, f64)> = BTreeMap::new();
    for ((hour, _), (orders, _, revenue)) in &groups {
        let t = per_hour.entry(*hour).or_default();
        t.0 += orders;
        t.1 += revenue;
    }
    groups
        .into_iter()
        .map(|((hour, category), (orders, customers, revenue))| {
            let (all_orders, all_revenue) = per_hour[&hour];
            (
                (iso(hour), category),
                [
                    orders as f64,
                    customers.len() as f64,
                    revenue,
                    revenue / orders as f64,
                    orders as f64 / all_orders as f64,
                    revenue / all_revenue,
                ],
            )
        })
        .collect()
}

/// satisfaction_hourly: per hour, channel and topic.
fn satisfaction_hourly(
    records: &[Generated],
) -> BTreeMap<(String, String, String), [Option<f64>; 5]> {
    let mut groups: BTreeMap<(i64, String, String), Vec<Value>> = BTreeMap::new();
    for (ts, fb) in events(records, SourceKind::Feedback) {
        let key = (
            hour_of(ts),
            fb["channel"].as_str().unwrap_or_default().to_owned(),
            fb["topic"].as_str().unwrap_or_default().to_owned(),
        );
        groups.entry(key).or_default().push(fb);
    }
    groups
        .into_iter()
        .map(|((hour, channel, topic), answers)| {
            let values = |field: &str| -> Vec<f64> {
                answers.iter().filter_map(|a| a[field].as_f64()).collect()
            };
            let mean = |v: &[f64]| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
            let ratings = values("rating");
            let nps = values("nps");
            let share = |v: &[f64], keep: &dyn Fn(f64) -> bool| {
                (!v.is_empty())
                    .then(|| 100.0 * v.iter().filter(|x| keep(**x)).count() as f64 / v.len() as f64)
            };
            let promoters = nps.iter().filter(|x| **x >= 9.0).count() as f64;
            let detractors = nps.iter().filter(|x| **x <= 6.0).count() as f64;
            (
                (iso(hour), channel, topic),
                [
                    Some(answers.len() as f64),
                    mean(&ratings),
                    share(&ratings, &|r| r >= 4.0),
                    (!nps.is_empty()).then(|| 100.0 * (promoters - detractors) / nps.len() as f64),
                    mean(&values("effort")),
                ],
            )
        })
        .collect()
}

/// Reads `topic` from the start until it holds `expected` final rows (early
/// rows are skipped), then 2 s more to catch any extra row; 120 s at most.
fn final_rows(bootstrap: &str, topic: &str, expected: usize) -> Vec<Value> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message;
    use rdkafka::{ClientConfig, Offset, TopicPartitionList};
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("reference-{topic}"))
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .expect("tpl");
    consumer.assign(&tpl).expect("assign");
    let started = std::time::Instant::now();
    let mut rows = Vec::new();
    let mut complete_at: Option<std::time::Instant> = None;
    while started.elapsed() < Duration::from_secs(120) {
        if complete_at.is_some_and(|at| at.elapsed() > Duration::from_secs(2)) {
            break;
        }
        if let Some(message) = consumer.poll(Duration::from_millis(100)) {
            let message = message.expect("read");
            let row: Value =
                serde_json::from_slice(message.payload().unwrap_or_default()).expect("json");
            if row["final"] == Value::Bool(true) {
                rows.push(row);
                if rows.len() >= expected && complete_at.is_none() {
                    complete_at = Some(std::time::Instant::now());
                }
            }
        }
    }
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hourly_need_and_satisfaction_match_the_reference() {
    let records = Generator::new(2026, 2_000, START, 30).records();
    let broker = TestBroker::start();
    let prefix = unique_prefix("reference");
    let queries = tempfile::tempdir().expect("tempdir");
    for job in ["need_by_category", "satisfaction_hourly"] {
        std::fs::copy(
            Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("queries/{job}.sql")),
            queries.path().join(format!("{job}.sql")),
        )
        .expect("copy query");
    }
    let mut config = test_config(&broker, &prefix, queries.path());
    config.engine.max_out_of_orderness_ms = 0;
    config.engine.idle_timeout_ms = 1_000;
    config.engine.batch_max_rows = 5_000;
    create_source_topics(&config, 1).await;
    let engine = RunningEngine::start(config.clone()).await;
    wait_for_metric(
        engine.addr,
        "cxpulse_assigned_partitions",
        4.0,
        Duration::from_secs(30),
    )
    .await;

    // Everything is queued at once, in order, and then acknowledged.
    let kafka = producer(broker.bootstrap());
    let mut acks = Vec::with_capacity(records.len());
    for record in &records {
        let future = kafka
            .send_result(
                FutureRecord::to(config.topics.source_topic(record.kind))
                    .partition(0)
                    .key(&record.key)
                    .payload(&record.value),
            )
            .map_err(|(e, _)| e)
            .expect("queue record");
        acks.push(future);
    }
    for ack in futures::future::join_all(acks).await {
        ack.expect("delivery").expect("acknowledged");
    }

    // Windows close once the watermark (the latest event time, with no
    // out-of-orderness allowed) reaches their end: the last hour stays open.
    let closed = |kind: SourceKind| {
        let last = records
            .iter()
            .filter(|r| r.kind == kind)
            .map(|r| r.ts)
            .max()
            .unwrap_or(0);
        move |window_start: &str| {
            cxpulse::decode::parse_rfc3339_millis(window_start).unwrap_or(i64::MAX) + HOUR <= last
        }
    };
    let (tx_closed, fb_closed) = (
        closed(SourceKind::Transactions),
        closed(SourceKind::Feedback),
    );
    let mut need = need_by_category(&records);
    need.retain(|(start, _), _| tx_closed(start));
    let mut satisfaction = satisfaction_hourly(&records);
    satisfaction.retain(|(start, _, _), _| fb_closed(start));
    let finals = |job: &str, expected: usize| -> Vec<Value> {
        tokio::task::block_in_place(|| {
            final_rows(
                broker.bootstrap(),
                &format!("{}{job}", config.topics.output_prefix),
                expected,
            )
        })
    };
    // Early rows may come too; read until at least every final row could be there.
    let rows = finals("need_by_category", need.len());
    let got: BTreeSet<(String, String)> = rows
        .iter()
        .map(|r| {
            (
                r["window_start"].as_str().unwrap_or_default().to_owned(),
                r["category"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let want: BTreeSet<(String, String)> = need.keys().cloned().collect();
    let missing: Vec<_> = want.difference(&got).take(5).collect();
    let extra: Vec<_> = got.difference(&want).take(5).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "one final row per hour and category: {} missing, e.g. {missing:?}; {} extra, e.g. {extra:?}",
        want.difference(&got).count(),
        got.difference(&want).count()
    );
    assert_eq!(rows.len(), need.len(), "no duplicate final rows");
    for row in &rows {
        let key = (
            row["window_start"].as_str().unwrap_or_default().to_owned(),
            row["category"].as_str().unwrap_or_default().to_owned(),
        );
        let want = need[&key];
        assert_eq!(row["orders"].as_f64(), Some(want[0]), "{row}");
        assert_eq!(row["customers"].as_f64(), Some(want[1]), "{row}");
        for (field, value) in ["revenue", "avg_basket", "order_share", "revenue_share"]
            .iter()
            .zip(&want[2..])
        {
            assert_close(&format!("{key:?} {field}"), &row[*field], Some(*value));
        }
    }

    let rows = finals("satisfaction_hourly", satisfaction.len());
    assert_eq!(
        rows.len(),
        satisfaction.len(),
        "one final row per hour, channel and topic"
    );
    for row in &rows {
        let key = (
            row["window_start"].as_str().unwrap_or_default().to_owned(),
            row["channel"].as_str().unwrap_or_default().to_owned(),
            row["topic"].as_str().unwrap_or_default().to_owned(),
        );
        let want = satisfaction
            .get(&key)
            .unwrap_or_else(|| panic!("unexpected row {row}"));
        for (field, value) in ["responses", "csat", "csat_pct", "nps", "ces"]
            .iter()
            .zip(want)
        {
            assert_close(&format!("{key:?} {field}"), &row[*field], *value);
        }
    }
    engine.stop().await;
}
