//! Sources that are not among the defaults, declared in a configuration
//! file and run end to end against a real broker: a `clicks` stream joined
//! with a `campaigns` table (tombstones delete), dead letters from any
//! source, per-source metrics, a declared source that no job reads (still
//! consumed and validated) and a disabled one (not consumed).

mod common;

use std::time::Duration;

use common::*;
use cxpulse::admin::{TopicSpec, ensure_topics, source_topics};
use serde_json::Value;

/// The user's file: two new sources, one never read, one disabled.
fn sources_file(prefix: &str) -> String {
    format!(
        r#"
[[sources]]
name = "campaigns"
topic = "{prefix}campaigns"
kind = "table"
key = "campaign_id"
columns = [
  {{ name = "campaign_id", type = "id", required = true }},
  {{ name = "channel", type = "string", required = true }},
]

[[sources]]
name = "clicks"
topic = "{prefix}clicks"
kind = "stream"
event_time = "at"
max_out_of_orderness_ms = 0
columns = [
  {{ name = "click_id", type = "id", required = true }},
  {{ name = "at", type = "timestamp", required = true }},
  {{ name = "campaign_id", type = "id", required = true }},
  {{ name = "os", type = "string", path = "$.device.os" }},
]

[[sources]]
name = "orders"
topic = "{prefix}orders"
kind = "stream"
event_time = "placed_at"
columns = [
  {{ name = "order_id", type = "id", required = true }},
  {{ name = "placed_at", type = "timestamp", required = true }},
]

[[sources]]
name = "legacy"
topic = "{prefix}legacy"
kind = "stream"
event_time = "ts"
enabled = false
columns = [{{ name = "ts", type = "timestamp", required = true }}]
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_stream_joins_a_new_table_and_every_declared_source_is_consumed() {
    let broker = TestBroker::start();
    let prefix = unique_prefix("own");
    let dir = tempfile::tempdir().expect("tempdir");
    let queries = dir.path().join("queries");
    std::fs::create_dir(&queries).expect("mkdir");
    std::fs::write(
        queries.join("clicks_by_channel.sql"),
        "SELECT window_start, window_end, c.channel, count(*) AS clicks, count(k.os) AS with_os \
         FROM TUMBLE(clicks, at, INTERVAL '1 minute') k \
         JOIN campaigns c ON k.campaign_id = c.campaign_id \
         GROUP BY window_start, window_end, c.channel",
    )
    .expect("write query");
    let file = dir.path().join("mine.toml");
    std::fs::write(&file, sources_file(&prefix)).expect("write config");
    let config = test_config_from(Some(&file), broker.bootstrap(), &prefix, &queries);
    let mut topics = source_topics(&config, 1);
    topics.push(TopicSpec::new(format!("{prefix}legacy"), 1));
    topics.push(TopicSpec::new(config.topics.deadletter.as_str(), 1));
    ensure_topics(&config, &topics).await.expect("topics");

    // The table first: c3 is deleted by its tombstone before the engine starts.
    let kafka = producer(broker.bootstrap());
    let campaigns = format!("{prefix}campaigns");
    let campaign =
        |id: &str, channel: &str| format!(r#"{{"campaign_id":"{id}","channel":"{channel}"}}"#);
    let (c1, c2, c3) = (
        campaign("c1", "email"),
        campaign("c2", "social"),
        campaign("c3", "ads"),
    );
    produce(
        &kafka,
        &campaigns,
        &[
            (0, Some("c1"), Some(&c1)),
            (0, Some("c2"), Some(&c2)),
            (0, Some("c3"), Some(&c3)),
            (0, Some("c3"), None),
        ],
    )
    .await;
    let engine = RunningEngine::start(config.clone()).await;

    let click = |id: &str, at: &str, campaign: &str, os: &str| {
        format!(
            r#"{{"click_id":"{id}","at":"2026-03-01T{at}Z","campaign_id":"{campaign}","device":{{"os":"{os}"}}}}"#
        )
    };
    let clicks = [
        click("k1", "10:00:05", "c1", "ios"),
        click("k2", "10:00:10", "c1", "android"),
        click("k3", "10:00:20", "c2", "ios"),
        click("k4", "10:00:30", "c3", "ios"),
        r#"{"click_id":"k5","at":"2026-03-01T10:00:40Z"}"#.to_owned(),
        click("k6", "10:05:00", "c1", "ios"),
    ];
    let records: Vec<(i32, Option<&str>, Option<&str>)> =
        clicks.iter().map(|c| (0, None, Some(c.as_str()))).collect();
    produce(&kafka, &format!("{prefix}clicks"), &records).await;
    let good_order = r#"{"order_id":"o1","placed_at":"2026-03-01T10:00:00Z"}"#;
    let bad_order = r#"{"placed_at":"2026-03-01T10:00:00Z"}"#;
    produce(
        &kafka,
        &format!("{prefix}orders"),
        &[(0, None, Some(good_order)), (0, None, Some(bad_order))],
    )
    .await;
    produce(
        &kafka,
        &format!("{prefix}legacy"),
        &[(0, None, Some("not json"))],
    )
    .await;

    // Window 10:00: two email clicks (c1), one social (c2); c3 was deleted,
    // k5 has no campaign (a dead letter), k6 is in a later window.
    let out = format!("{}clicks_by_channel", config.topics.output_prefix);
    let rows = read_committed_until(broker.bootstrap(), &out, 2, Duration::from_secs(30)).await;
    let mut got: Vec<(String, i64, i64)> = rows
        .iter()
        .map(|r| {
            let row: Value =
                serde_json::from_str(r.value.as_deref().expect("value")).expect("json");
            assert_eq!(row["window_start"], "2026-03-01T10:00:00.000Z", "{row}");
            (
                row["channel"].as_str().expect("channel").to_owned(),
                row["clicks"].as_i64().expect("clicks"),
                row["with_os"].as_i64().expect("with_os"),
            )
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        [("email".to_owned(), 2, 2), ("social".to_owned(), 1, 1)]
    );

    // Dead letters from the read stream and from the unread one, none from
    // the disabled one.
    let letters = read_committed_until(
        broker.bootstrap(),
        &config.topics.deadletter,
        2,
        Duration::from_secs(30),
    )
    .await;
    let mut from: Vec<(String, String)> = letters
        .iter()
        .map(|l| {
            (
                l.headers["cxpulse.source.topic"].clone(),
                l.headers["cxpulse.reason"].clone(),
            )
        })
        .collect();
    from.sort();
    assert_eq!(
        from,
        [
            (format!("{prefix}clicks"), "missing_field".to_owned()),
            (format!("{prefix}orders"), "missing_field".to_owned()),
        ]
    );

    let (_, metrics) = http_get(engine.addr, "/metrics");
    let consumed = |topic: &str| {
        metric(
            &metrics,
            &format!("cxpulse_records_consumed_total{{topic=\"{prefix}{topic}\"}}"),
        )
    };
    assert_eq!(consumed("clicks"), Some(6.0), "{metrics}");
    assert_eq!(consumed("orders"), Some(2.0), "{metrics}");
    assert_eq!(consumed("campaigns"), Some(4.0), "{metrics}");
    assert_eq!(consumed("legacy"), None, "{metrics}");
    // The clicks watermark is its latest event time (no out-of-orderness).
    let watermark = chrono::DateTime::parse_from_rfc3339("2026-03-01T10:05:00Z")
        .expect("time")
        .timestamp() as f64;
    assert_eq!(
        metric(&metrics, "cxpulse_watermark_seconds{source=\"clicks\"}"),
        Some(watermark),
        "{metrics}"
    );
    engine.stop().await;
}
