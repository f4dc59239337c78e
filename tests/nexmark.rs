//! Nexmark on cxpulse, checked end to end against a real broker: over
//! 12,000 events of the standard generator, each query of
//! `benches/nexmark/queries` publishes exactly what DataFusion computes in
//! batch mode over the same events, from the standard query text with the
//! windows worked out by hand; each query of `benches/nexmark/gaps` (they
//! need stream-stream joins) is refused with a reason.

mod common;
#[path = "../benches/nexmark/events.rs"]
mod events;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arrow::record_batch::RecordBatch;
use common::*;
use cxpulse::admin::{TopicSpec, ensure_topics, source_topics};
use cxpulse::decode::{BatchBuilder, parse_record};
use cxpulse::job::Job;
use cxpulse::lookup::Lookups;
use cxpulse::query::QueryFile;
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use rdkafka::producer::FutureRecord;
use serde_json::Value;

/// Generated events, at 200 per second of event time: a minute of auctions.
const EVENTS: usize = 12_000;
const RATE: usize = 200;
/// The bidder of the bid sent after the generated events (it closes their
/// windows; its own never close).
const LAST_BIDDER: i64 = -1;

/// Each runnable query and the same query for DataFusion in batch mode:
/// the standard text, with HOP windows and sessions computed by hand.
const BATCH: &[(&str, &str)] = &[
    ("q0", "SELECT auction, bidder, price, date_time, extra FROM bid"),
    (
        "q1",
        "SELECT auction, bidder, 0.908 * price AS price, date_time, extra FROM bid",
    ),
    ("q2", "SELECT auction, price FROM bid WHERE auction % 123 = 0"),
    (
        "q5",
        "WITH hop AS (
           SELECT b.auction, (CAST(b.date_time AS BIGINT) / 2000 - k.i) * 2000 AS starttime
           FROM bid b CROSS JOIN (VALUES (0), (1), (2), (3), (4)) AS k(i)
         ), AuctionBids AS (
           SELECT auction, count(*) AS num, starttime FROM hop GROUP BY auction, starttime
         ), MaxBids AS (
           SELECT max(num) AS maxn, starttime FROM AuctionBids GROUP BY starttime
         )
         SELECT A.starttime AS window_start, A.starttime + 10000 AS window_end, A.auction, A.num
         FROM AuctionBids A JOIN MaxBids M ON A.starttime = M.starttime AND A.num >= M.maxn",
    ),
    (
        "q11",
        "WITH times AS (
           SELECT bidder, CAST(date_time AS BIGINT) AS t FROM bid
         ), marked AS (
           SELECT bidder, t,
                  CASE WHEN t - lag(t) OVER (PARTITION BY bidder ORDER BY t) < 10000
                       THEN 0 ELSE 1 END AS starts
           FROM times
         ), numbered AS (
           SELECT bidder, t,
                  sum(starts) OVER (PARTITION BY bidder ORDER BY t ROWS UNBOUNDED PRECEDING) AS session
           FROM marked
         )
         SELECT min(t) AS window_start, max(t) + 10000 AS window_end, bidder, count(*) AS bid_count
         FROM numbered GROUP BY bidder, session",
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nexmark_queries_publish_what_datafusion_computes_in_batch_mode() {
    let broker = TestBroker::start();
    let prefix = unique_prefix("nexmark");
    let nexmark = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/nexmark");
    let mut config = test_config_from(
        Some(&nexmark.join("config.toml")),
        broker.bootstrap(),
        &prefix,
        &nexmark.join("queries"),
    );
    for source in config.sources.iter_mut().filter(|s| s.enabled) {
        source.topic = format!("{prefix}{}", source.name);
        config
            .topics
            .declared
            .insert(source.name.clone(), source.topic.clone());
    }
    let mut topics = source_topics(&config, 1);
    topics.push(TopicSpec::new(config.topics.deadletter.as_str(), 1));
    ensure_topics(&config, &topics).await.expect("topics");

    let records: Vec<events::Record> = events::generate(EVENTS, RATE).collect();
    let last = records.iter().map(|r| r.date_time).max().expect("events");
    let mut sent = records.clone();
    sent.push(bid_at(1, LAST_BIDDER, last + 3_600_000));
    let kafka = producer(broker.bootstrap());
    let acks: Vec<_> = sent
        .iter()
        .map(|r| {
            let topic = format!("{prefix}{}", r.source);
            let kafka = kafka.clone();
            let payload = r.payload.clone();
            async move {
                kafka
                    .send(
                        FutureRecord::<(), String>::to(&topic).payload(&payload),
                        Duration::from_secs(30),
                    )
                    .await
                    .map_err(|(e, _)| e)
                    .expect("acknowledged")
            }
        })
        .collect();
    futures::future::join_all(acks).await;

    let ctx = batch_context(&records, config.declared).await;
    let engine = RunningEngine::start(config.clone()).await;
    for (query, sql) in BATCH {
        let expected = rows_of(&ctx.sql(sql).await.expect(sql).collect().await.expect(sql));
        assert!(!expected.is_empty(), "{query}: no rows to compare");
        let topic = format!("{}{query}", config.topics.output_prefix);
        // The last bid adds one row to q0 and q1.
        let published = read_committed_until(
            broker.bootstrap(),
            &topic,
            expected.len(),
            Duration::from_secs(60),
        )
        .await;
        let mut got: Vec<String> = published
            .into_iter()
            .map(|r| {
                serde_json::from_str::<serde_json::Map<String, Value>>(
                    r.value.as_deref().unwrap_or("{}"),
                )
                .expect("row")
            })
            .filter(|row| row.get("bidder") != Some(&Value::from(LAST_BIDDER)))
            .map(|mut row| {
                row.remove("job");
                row.remove("emitted_at");
                row.remove("final");
                canonical(row)
            })
            .collect();
        got.sort();
        assert_eq!(got.len(), expected.len(), "{query}: rows published");
        if let Some(i) = (0..got.len()).find(|&i| got[i] != expected[i]) {
            panic!(
                "{query}: first difference at row {i}:\n  cxpulse:   {}\n  DataFusion: {}",
                got[i], expected[i]
            );
        }
    }
    engine.stop().await;

    for entry in std::fs::read_dir(nexmark.join("gaps")).expect("gaps") {
        let path = entry.expect("entry").path();
        let text = std::fs::read_to_string(&path).expect("read");
        let query = QueryFile::parse(&path, text).expect("parses");
        let refused = Job::plan(query, &Lookups::new(config.declared), "")
            .await
            .expect_err("a gap is refused");
        assert!(
            refused.message.contains("joining two event streams")
                || refused.message.contains("reads each event source once")
                || refused.message.contains("one window")
                || refused.message.contains("never finishes"),
            "{}: {refused}",
            path.display()
        );
    }
}

/// A bid by `bidder` on `auction` at `date_time`, outside the generated
/// events: sent last, it moves the watermark past every generated window.
fn bid_at(auction: i64, bidder: i64, date_time: i64) -> events::Record {
    let payload = serde_json::json!({
        "auction": auction, "bidder": bidder, "price": 1, "channel": "end",
        "url": "end", "date_time": date_time, "extra": "",
    });
    events::Record {
        source: "bid",
        payload: payload.to_string(),
        date_time,
    }
}

/// DataFusion over the generated events, decoded as the engine decodes them.
async fn batch_context(
    records: &[events::Record],
    sources: cxpulse::schema::Sources,
) -> SessionContext {
    let ctx = SessionContext::new();
    for name in ["person", "auction", "bid"] {
        let source = sources.named(name).expect("declared");
        let mut builder = BatchBuilder::new(source);
        for record in records.iter().filter(|r| r.source == name) {
            builder.append(&parse_record(source, record.payload.as_bytes()).expect("valid"));
        }
        let batch = builder.finish().expect("batch");
        let table = MemTable::try_new(source.schema(), vec![vec![batch]]).expect("table");
        ctx.register_table(name, Arc::new(table)).expect("register");
    }
    ctx
}

/// Result rows as sorted canonical JSON texts.
fn rows_of(batches: &[RecordBatch]) -> Vec<String> {
    let mut writer = arrow::json::ArrayWriter::new(Vec::new());
    for batch in batches {
        writer.write(batch).expect("json");
    }
    writer.finish().expect("json");
    let bytes = writer.into_inner();
    let rows: Vec<serde_json::Map<String, Value>> = if bytes.is_empty() {
        Vec::new()
    } else {
        serde_json::from_slice(&bytes).expect("json rows")
    };
    let mut rows: Vec<String> = rows.into_iter().map(canonical).collect();
    rows.sort();
    rows
}

/// A row with times as epoch milliseconds and keys in order, as text.
fn canonical(row: serde_json::Map<String, Value>) -> String {
    let row: BTreeMap<String, Value> = row
        .into_iter()
        .map(|(k, v)| {
            let v = match v.as_str().and_then(epoch_ms) {
                Some(ms) => Value::from(ms),
                None => v,
            };
            (k, v)
        })
        .collect();
    serde_json::to_string(&row).expect("json")
}

/// Epoch milliseconds of an RFC 3339 time, or of a time without zone (UTC).
fn epoch_ms(text: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.timestamp_millis())
        .ok()
        .or_else(|| {
            chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
                .ok()
                .map(|t| t.and_utc().timestamp_millis())
        })
}
