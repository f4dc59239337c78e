//! Sources declared in config, end to end against a real broker: a column
//! added to a default source in `[[sources]]` is decoded, checked and
//! queryable, and a value that fails its check is a dead letter.

mod common;

use std::time::Duration;

use common::*;
use cxpulse::config::sources::ColumnEntry;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_column_added_to_transactions_in_config_reaches_the_query_and_is_checked() {
    let broker = TestBroker::start();
    let prefix = unique_prefix("declared");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("by_store.sql"),
        "-- @key event_id\nSELECT event_id, store_id, amount FROM transactions\n",
    )
    .expect("write query");
    let mut config = test_config(&broker, &prefix, dir.path());
    let transactions = config
        .sources
        .iter_mut()
        .find(|s| s.name == "transactions")
        .expect("declared by default");
    transactions.columns.push(ColumnEntry {
        name: "store_id".to_owned(),
        ty: "string".to_owned(),
        required: false,
        path: Some("$.store.id".to_owned()),
        values: None,
        min: None,
        max: None,
        regex: Some("^S[0-9]+$".to_owned()),
        lowercase: false,
    });
    create_source_topics(&config, 1).await;
    let engine = RunningEngine::start(config.clone()).await;

    let tx = |id: &str, store: &str| {
        format!(
            r#"{{"event_id":"{id}","customer_id":"c1","ts":"2026-03-01T10:00:00Z","amount":5,"category":"books","store":{{"id":"{store}","city":"Oslo"}}}}"#
        )
    };
    let (good, bad) = (tx("t1", "S12"), tx("t2", "X1"));
    produce(
        &producer(broker.bootstrap()),
        &config.topics.transactions,
        &[(0, None, Some(&good)), (0, None, Some(&bad))],
    )
    .await;
    let bootstrap = broker.bootstrap();
    let read = |topic: String| async move {
        read_committed_until(bootstrap, &topic, 1, Duration::from_secs(30)).await
    };
    let rows = read(format!("{}by_store", config.topics.output_prefix)).await;
    let row: Value =
        serde_json::from_str(rows[0].value.as_deref().expect("value")).expect("json row");
    assert_eq!(
        (&row["event_id"], &row["store_id"], &row["amount"]),
        (&Value::from("t1"), &Value::from("S12"), &Value::from(5.0))
    );
    let letters = read(config.topics.deadletter.clone()).await;
    assert_eq!(letters.len(), 1, "{letters:#?}");
    assert_eq!(letters[0].value.as_deref(), Some(bad.as_str()));
    let detail = letters[0]
        .headers
        .values()
        .find(|v| v.contains("store_id"))
        .cloned()
        .unwrap_or_default();
    assert!(
        detail.contains("does not match ^S[0-9]+$"),
        "{:#?}",
        letters[0].headers
    );
    engine.stop().await;
}
