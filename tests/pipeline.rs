//! End to end against a real broker: sources → decode → `complaint_alerts`
//! → output topic, bad records → dead-letter topic, and the metrics.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

/// (source topic suffix, partition, key, payload, reason code, text the detail must contain)
type Bad = (
    &'static str,
    i32,
    Option<&'static str>,
    Option<&'static str>,
    &'static str,
    &'static str,
);

const BAD: &[Bad] = &[
    (
        "transactions",
        0,
        None,
        Some("{oops"),
        "invalid_json",
        "not valid JSON",
    ),
    ("transactions", 1, None, None, "invalid_json", "no value"),
    (
        "transactions",
        0,
        None,
        Some("[1,2,3]"),
        "not_object",
        "JSON object",
    ),
    (
        "transactions",
        1,
        None,
        Some(
            r#"{"event_id":"t-b4","customer_id":"c1","ts":"2026-03-01T10:00:00Z","category":"books"}"#,
        ),
        "missing_field",
        "`amount`",
    ),
    (
        "transactions",
        0,
        None,
        Some(
            r#"{"event_id":"t-b5","customer_id":"c1","ts":"2026-03-01T10:00:00Z","amount":"12","category":"books"}"#,
        ),
        "wrong_type",
        "field `amount` must be a number, got a string",
    ),
    (
        "transactions",
        1,
        None,
        Some(
            r#"{"event_id":"t-b6","customer_id":"c1","ts":"2026-03-01T10:00:00Z","amount":-5,"category":"books"}"#,
        ),
        "out_of_range",
        "field `amount` is -5",
    ),
    (
        "transactions",
        0,
        None,
        Some(
            r#"{"event_id":"t-b7","customer_id":"c1","ts":"yesterday","amount":5,"category":"books"}"#,
        ),
        "bad_timestamp",
        "field `ts`",
    ),
    (
        "feedback",
        0,
        None,
        Some(r#"{"event_id":"f-b1","customer_id":"c1","ts":1772359200000,"rating":6}"#),
        "out_of_range",
        "field `rating` is 6, must be between 1 and 5",
    ),
    (
        "feedback",
        1,
        None,
        Some(r#"{"event_id":"f-b2","customer_id":"c1","ts":1772359200000,"nps":11}"#),
        "out_of_range",
        "field `nps` is 11",
    ),
    (
        "feedback",
        0,
        None,
        Some(r#"{"event_id":"f-b3","customer_id":"c1","ts":1772359200000,"effort":0}"#),
        "out_of_range",
        "field `effort` is 0",
    ),
    (
        "feedback",
        1,
        None,
        Some(r#"{"event_id":"f-b4","customer_id":"c1","ts":1772359200000,"comment":"meh"}"#),
        "missing_field",
        "`rating`, `nps`, `effort`",
    ),
    (
        "complaints",
        0,
        None,
        Some(
            r#"{"event_id":"k-b1","customer_id":"c1","ts":1772359200000,"complaint_id":"kb1","status":"closed"}"#,
        ),
        "out_of_range",
        "field `status` is \"closed\"",
    ),
    (
        "complaints",
        1,
        None,
        Some(
            r#"{"event_id":"k-b2","customer_id":true,"ts":1772359200000,"complaint_id":"kb2","status":"opened"}"#,
        ),
        "wrong_type",
        "field `customer_id`",
    ),
    (
        "complaints",
        0,
        None,
        Some(
            r#"{"event_id":"k-b3","customer_id":"c1","ts":1.5,"complaint_id":"kb3","status":"opened"}"#,
        ),
        "wrong_type",
        "field `ts`",
    ),
    ("customers", 0, None, None, "missing_key", "no UTF-8 key"),
    (
        "customers",
        0,
        Some("c7"),
        Some(r#"{"customer_id":"c7","birth_year":"abc"}"#),
        "wrong_type",
        "field `birth_year`",
    ),
];

const CUSTOMERS: &[(&str, Option<&str>)] = &[
    (
        "c1",
        Some(
            r#"{"customer_id":"c1","birth_year":1980,"gender":"f","segment":"gold","region":"north"}"#,
        ),
    ),
    ("c2", Some(r#"{"customer_id":"c2","segment":"silver"}"#)),
    ("c3", Some(r#"{"customer_id":"c3","segment":"bronze"}"#)),
    ("c3", None),
    ("c2", Some(r#"{"customer_id":"c2","segment":"platinum"}"#)),
];

const TRANSACTIONS: &[(i32, &str)] = &[
    (
        0,
        r#"{"event_id":"t1","customer_id":"c1","ts":"2026-03-01T10:00:00Z","amount":20.5,"category":"books","items":2}"#,
    ),
    (
        1,
        r#"{"event_id":"t2","customer_id":"c2","ts":1772359260000,"amount":0,"category":"games","unknown":"ignored"}"#,
    ),
    (
        0,
        r#"{"event_id":"t3","customer_id":"c3","ts":"2026-03-01T11:00:00+01:00","amount":3.25,"category":"books","channel":"web"}"#,
    ),
];

const FEEDBACK: &[(i32, &str)] = &[
    (
        0,
        r#"{"event_id":"f1","customer_id":"c1","ts":"2026-03-01T10:05:00Z","rating":5,"nps":10,"channel":"app"}"#,
    ),
    (
        1,
        r#"{"event_id":"f2","customer_id":"c2","ts":"2026-03-01T10:06:00Z","effort":7}"#,
    ),
];

/// (partition, complaint_id, customer_id, ts, status, severity, category, channel)
type Complaint = (
    i32,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
);

const COMPLAINTS: &[Complaint] = &[
    (
        0,
        "k1",
        "c1",
        "2026-03-01T10:00:00Z",
        "opened",
        "high",
        "delivery",
        "app",
    ),
    (
        1,
        "k2",
        "c2",
        "2026-03-01T10:01:00Z",
        "opened",
        "low",
        "billing",
        "web",
    ),
    (
        0,
        "k3",
        "c3",
        "2026-03-01T10:02:00Z",
        "opened",
        "critical",
        "product",
        "phone",
    ),
    (
        1,
        "k4",
        "c2",
        "2026-03-01T10:03:00Z",
        "escalated",
        "low",
        "billing",
        "web",
    ),
    (
        0,
        "k5",
        "c1",
        "2026-03-01T10:04:00Z",
        "resolved",
        "medium",
        "delivery",
        "app",
    ),
    (
        1,
        "k6",
        "c9",
        "2026-03-01T10:05:00.250Z",
        "resolved",
        "high",
        "product",
        "email",
    ),
];

fn complaint_json(c: &Complaint) -> String {
    json!({"event_id": format!("e-{}", c.1), "customer_id": c.2, "ts": c.3, "complaint_id": c.1,
           "status": c.4, "severity": c.5, "category": c.6, "channel": c.7})
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_flow_to_outputs_dead_letters_and_metrics() {
    let broker = TestBroker::start();
    let prefix = unique_prefix("pipeline");
    let repo_queries = Path::new(env!("CARGO_MANIFEST_DIR")).join("queries");
    let config = test_config(&broker, &prefix, &repo_queries);
    create_source_topics(&config, 2).await;
    let topics = config.topics.clone();
    let topic = |suffix: &str| format!("{prefix}{suffix}");

    let engine = RunningEngine::start(config.clone()).await;
    let addr = engine.addr;
    assert_eq!(http_get(addr, "/healthz").0, 200);

    // Customers first: the lookup join sees profiles that arrived before the event.
    let producer = producer(broker.bootstrap());
    let customer_records: Vec<(i32, Option<&str>, Option<&str>)> =
        CUSTOMERS.iter().map(|(k, v)| (0, Some(*k), *v)).collect();
    produce(&producer, &topics.customers, &customer_records).await;
    wait_for_metric(
        addr,
        &format!(
            "cxpulse_records_consumed_total{{topic=\"{}\"}}",
            topics.customers
        ),
        5.0,
        Duration::from_secs(30),
    )
    .await;
    // The customers topic is read whole, outside the group: the group
    // holds the 3 event topics x 2 partitions.
    wait_for_metric(
        addr,
        "cxpulse_assigned_partitions",
        6.0,
        Duration::from_secs(30),
    )
    .await;
    let (ready, _) = http_get(addr, "/readyz");
    assert_eq!(
        ready, 200,
        "ready once state is restored and partitions are assigned"
    );

    let tx: Vec<(i32, Option<&str>, Option<&str>)> = TRANSACTIONS
        .iter()
        .map(|(p, v)| (*p, None, Some(*v)))
        .collect();
    produce(&producer, &topics.transactions, &tx).await;
    let fb: Vec<(i32, Option<&str>, Option<&str>)> =
        FEEDBACK.iter().map(|(p, v)| (*p, None, Some(*v))).collect();
    produce(&producer, &topics.feedback, &fb).await;
    let complaints: Vec<String> = COMPLAINTS.iter().map(complaint_json).collect();
    let cp: Vec<(i32, Option<&str>, Option<&str>)> = COMPLAINTS
        .iter()
        .zip(&complaints)
        .map(|(c, v)| (c.0, None, Some(v.as_str())))
        .collect();
    produce(&producer, &topics.complaints, &cp).await;
    for (suffix, partition, key, payload, _, _) in BAD {
        produce(&producer, &topic(suffix), &[(*partition, *key, *payload)]).await;
    }

    // Outputs of complaint_alerts, worked out by hand: severity high/critical or status escalated.
    let expected_alerts = [
        json!({"job":"complaint_alerts","complaint_id":"k1","customer_id":"c1","ts":"2026-03-01T10:00:00.000Z","status":"opened","severity":"high","category":"delivery","channel":"app","segment":"gold"}),
        json!({"job":"complaint_alerts","complaint_id":"k3","customer_id":"c3","ts":"2026-03-01T10:02:00.000Z","status":"opened","severity":"critical","category":"product","channel":"phone","segment":null}),
        json!({"job":"complaint_alerts","complaint_id":"k4","customer_id":"c2","ts":"2026-03-01T10:03:00.000Z","status":"escalated","severity":"low","category":"billing","channel":"web","segment":"platinum"}),
        json!({"job":"complaint_alerts","complaint_id":"k6","customer_id":"c9","ts":"2026-03-01T10:05:00.250Z","status":"resolved","severity":"high","category":"product","channel":"email","segment":null}),
    ];
    let alerts = read_topic(
        broker.bootstrap(),
        &topic("out.complaint_alerts"),
        4,
        Duration::from_secs(30),
    );
    let mut got: Vec<(String, Value)> = alerts
        .iter()
        .map(|r| {
            let mut v: Value =
                serde_json::from_str(r.value.as_deref().expect("value")).expect("json");
            let emitted = v
                .as_object_mut()
                .expect("object")
                .remove("emitted_at")
                .expect("emitted_at");
            assert!(
                chrono::DateTime::parse_from_rfc3339(emitted.as_str().expect("string")).is_ok()
            );
            (r.key.clone().expect("key"), v)
        })
        .collect();
    got.sort_by(|a, b| a.0.cmp(&b.0));
    let want: Vec<(String, Value)> = expected_alerts
        .iter()
        .map(|v| {
            (
                json!({"job": "complaint_alerts", "complaint_id": v["complaint_id"]}).to_string(),
                v.clone(),
            )
        })
        .collect();
    assert_eq!(got, want);

    // Dead letters: exactly the bad records, unchanged, with provenance and reason.
    let letters = read_topic(
        broker.bootstrap(),
        &topics.deadletter,
        BAD.len(),
        Duration::from_secs(30),
    );
    assert_eq!(
        letters.len(),
        BAD.len(),
        "every bad record and nothing else: {letters:#?}"
    );
    let mut seen: BTreeMap<(String, i32, Option<String>), Vec<&ReadRecord>> = BTreeMap::new();
    for letter in &letters {
        let h = &letter.headers;
        seen.entry((
            h["cxpulse.source.topic"].clone(),
            h["cxpulse.source.partition"].parse().expect("int"),
            letter.value.clone(),
        ))
        .or_default()
        .push(letter);
        assert!(h["cxpulse.source.offset"].parse::<i64>().is_ok());
    }
    for (suffix, partition, key, payload, reason, detail) in BAD {
        let found = seen
            .get(&(topic(suffix), *partition, payload.map(str::to_owned)))
            .unwrap_or_else(|| panic!("dead letter for {payload:?} on {suffix}"));
        assert!(
            found.iter().any(|l| l.headers["cxpulse.reason"] == *reason
                && l.headers["cxpulse.reason.detail"].contains(detail)
                && l.key.as_deref() == *key),
            "{payload:?}: want {reason} / {detail}, got {found:#?}"
        );
    }

    // Metrics: exact counts per topic, reason and job.
    let body = wait_for_metric(
        addr,
        &format!(
            "cxpulse_records_consumed_total{{topic=\"{}\"}}",
            topics.complaints
        ),
        9.0,
        Duration::from_secs(30),
    )
    .await;
    let count = |topic: &str| BAD.iter().filter(|b| b.0 == topic).count() as f64;
    for (t, good) in [
        ("transactions", 3.0),
        ("feedback", 2.0),
        ("complaints", 6.0),
        ("customers", 5.0),
    ] {
        assert_eq!(
            metric(
                &body,
                &format!("cxpulse_records_consumed_total{{topic=\"{}\"}}", topic(t))
            ),
            Some(good + count(t)),
            "{t}"
        );
    }
    let mut invalid: BTreeMap<(String, &str), f64> = BTreeMap::new();
    for (suffix, _, _, _, reason, _) in BAD {
        *invalid.entry((topic(suffix), reason)).or_default() += 1.0;
    }
    for ((t, reason), n) in &invalid {
        assert_eq!(
            metric(
                &body,
                &format!("cxpulse_records_invalid_total{{reason=\"{reason}\",topic=\"{t}\"}}")
            ),
            Some(*n),
            "{t} {reason}"
        );
    }
    assert_eq!(
        metric(
            &body,
            &format!(
                "cxpulse_records_invalid_total{{reason=\"not_object\",topic=\"{}\"}}",
                topics.feedback
            )
        ),
        Some(0.0)
    );
    assert_eq!(
        metric(
            &body,
            "cxpulse_output_records_total{job=\"complaint_alerts\"}"
        ),
        Some(4.0)
    );
    assert_eq!(
        metric(&body, "cxpulse_job_errors_total{job=\"complaint_alerts\"}"),
        Some(0.0)
    );
    let bundled = std::fs::read_dir(&repo_queries)
        .expect("queries")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "sql"))
        })
        .count();
    assert_eq!(
        metric(&body, "cxpulse_jobs_loaded"),
        Some(bundled as f64),
        "every bundled query is a job"
    );
    assert_eq!(metric(&body, "cxpulse_assigned_partitions"), Some(6.0));
    // A zero series per output, dead-letter and changelog topic, none above.
    let produce_errors: Vec<&str> = body
        .lines()
        .filter(|l| l.starts_with("cxpulse_produce_errors_total{"))
        .collect();
    assert!(produce_errors.len() > bundled, "{produce_errors:?}");
    assert!(
        produce_errors.iter().all(|l| l.ends_with(" 0")),
        "no produce errors: {produce_errors:?}"
    );
    let batches = metric(&body, "cxpulse_batch_duration_seconds_count").expect("histogram");
    assert!(
        (1.0..=41.0).contains(&batches),
        "between one batch and one per record: {batches}"
    );
    // librdkafka reports lag once a second; every partition is consumed to the end.
    let lag_series = format!(
        "cxpulse_consumer_lag_records{{partition=\"1\",topic=\"{}\"}}",
        topics.complaints
    );
    let body = wait_for_metric(addr, &lag_series, 0.0, Duration::from_secs(15)).await;
    promtool_check(&body);

    engine.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_micro_batch_closes_at_batch_max_rows_without_waiting_for_the_linger_time() {
    let broker = TestBroker::start();
    let prefix = unique_prefix("rows");
    let repo_queries = Path::new(env!("CARGO_MANIFEST_DIR")).join("queries");
    let mut config = test_config(&broker, &prefix, &repo_queries);
    config.engine.batch_max_rows = 3;
    config.engine.batch_linger_ms = 600_000;
    create_source_topics(&config, 1).await;

    let engine = RunningEngine::start(config.clone()).await;
    let addr = engine.addr;
    let producer = producer(broker.bootstrap());
    let complaints: Vec<String> = COMPLAINTS[..4].iter().map(complaint_json).collect();
    let records: Vec<(i32, Option<&str>, Option<&str>)> = complaints
        .iter()
        .map(|v| (0, None, Some(v.as_str())))
        .collect();
    produce(&producer, &config.topics.complaints, &records).await;

    // The first three complaints (k1, k2, k3) fill one batch; k1 and k3 are alerts.
    // k4 waits in the next batch, whose linger time is ten minutes.
    let body = wait_for_metric(
        addr,
        "cxpulse_output_records_total{job=\"complaint_alerts\"}",
        2.0,
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(
        metric(&body, "cxpulse_batch_duration_seconds_count"),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &body,
            &format!(
                "cxpulse_records_consumed_total{{topic=\"{}\"}}",
                config.topics.complaints
            )
        ),
        Some(3.0)
    );

    // Shutdown drains the open batch: k4 is published before the engine exits.
    engine.stop().await;
    let alerts = read_topic(
        broker.bootstrap(),
        &format!("{prefix}out.complaint_alerts"),
        3,
        Duration::from_secs(20),
    );
    let ids: Vec<String> = alerts
        .iter()
        .map(|r| serde_json::from_str::<Value>(r.value.as_deref().expect("value")).expect("json")["complaint_id"].to_string())
        .collect();
    assert_eq!(ids, vec!["\"k1\"", "\"k3\"", "\"k4\""]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_fails_on_a_batch_sends_its_events_to_the_dead_letter_topic() {
    let broker = TestBroker::start();
    let prefix = unique_prefix("jobfail");
    let queries = tempfile::tempdir().expect("tempdir");
    // Valid SQL that fails at run time on a category that is not a number.
    std::fs::write(
        queries.path().join("numeric.sql"),
        "SELECT event_id, CAST(category AS INT) AS code FROM transactions\n",
    )
    .expect("write");
    let config = test_config(&broker, &prefix, queries.path());
    create_source_topics(&config, 1).await;
    let engine = RunningEngine::start(config.clone()).await;
    let producer = producer(broker.bootstrap());
    let tx = r#"{"event_id":"x1","customer_id":"c","ts":1,"amount":1,"category":"books"}"#;
    produce(
        &producer,
        &config.topics.transactions,
        &[(0, None, Some(tx))],
    )
    .await;
    let letters = read_topic(
        broker.bootstrap(),
        &config.topics.deadletter,
        1,
        Duration::from_secs(20),
    );
    assert_eq!(letters.len(), 1);
    assert_eq!(
        letters[0].value.as_deref(),
        Some(tx),
        "the record, unchanged"
    );
    assert_eq!(letters[0].headers["cxpulse.reason"], "job_error");
    assert_eq!(letters[0].headers["cxpulse.job"], "numeric");
    assert!(
        letters[0].headers["cxpulse.reason.detail"].contains("books"),
        "{:?}",
        letters[0].headers
    );
    let body = wait_for_metric(
        engine.addr,
        "cxpulse_job_errors_total{job=\"numeric\"}",
        1.0,
        Duration::from_secs(10),
    )
    .await;
    let series = format!(
        "cxpulse_records_invalid_total{{reason=\"job_error\",topic=\"{}\"}}",
        config.topics.transactions
    );
    assert_eq!(metric(&body, &series), Some(1.0));
    engine.stop().await;
}
