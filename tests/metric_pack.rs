//! The bundled metric jobs of `queries/`, each on a tiny input whose output
//! was worked out by hand (in the comments). No broker: the jobs are planned
//! from their files and driven through the library, as the engine does.

use std::collections::BTreeMap;
use std::path::Path;

use cxpulse::decode::{BatchBuilder, parse_record};
use cxpulse::job::Job;
use cxpulse::lookup::{Lookups, RowChange, owned_cells};
use cxpulse::query::QueryFile;
use cxpulse::schema::Source;
use cxpulse::sink::RowEncoder;
use serde_json::{Value, json};

/// Plans `queries/<name>.sql` over a customers table holding `profiles`.
async fn bundled(name: &str, profiles: &[Value]) -> Job {
    bundled_with(
        name,
        profiles,
        &Lookups::new(cxpulse::config::default_sources()),
    )
    .await
}

/// As [`bundled`], over the given lookup tables.
async fn bundled_with(name: &str, profiles: &[Value], lookups: &Lookups) -> Job {
    let customers = lookups
        .table(
            cxpulse::config::default_sources()
                .named("customers")
                .expect("declared"),
        )
        .expect("a table");
    for profile in profiles {
        let text = profile.to_string();
        let cells = parse_record(
            cxpulse::config::default_sources()
                .named("customers")
                .expect("declared"),
            text.as_bytes(),
        )
        .expect("profile");
        customers
            .lock()
            .expect("lock")
            .apply([RowChange::Upsert(owned_cells(cells))]);
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("queries/{name}.sql"));
    let views = cxpulse::query::views::views_dir(path.parent().expect("queries folder"));
    let query = QueryFile::read(&path, &views).expect("query file");
    Job::plan(query, lookups, "cx.metrics.")
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// A firing deadline no test reaches: every due window closes.
fn unhurried() -> std::time::Instant {
    std::time::Instant::now() + std::time::Duration::from_secs(3_600)
}

/// Decodes `events` of `kind` into one batch.
fn batch_of(kind: Source, events: &[Value]) -> arrow::array::RecordBatch {
    let mut builder = BatchBuilder::new(kind);
    for event in events {
        let text = event.to_string();
        builder.append(&parse_record(kind, text.as_bytes()).expect("valid event"));
    }
    builder.finish().expect("batch")
}

/// Feeds `events` (one partition) to a windowed job.
async fn feed(job: &mut Job, kind: Source, events: &[Value]) {
    let batch = batch_of(kind, events);
    let windowed = job.windowed_mut().expect("windowed job");
    windowed
        .accumulate(kind, 0, batch)
        .await
        .expect("accumulate");
}

/// The job's rows as published (JSON values without `emitted_at`), sorted.
fn published(job: &Job, batches: &[arrow::array::RecordBatch]) -> Vec<Value> {
    let encoder = RowEncoder {
        job: job.name.clone(),
        topic: job.output_topic.clone(),
        key_columns: job.record_key_columns(),
    };
    let mut rows: Vec<Value> = encoder
        .encode(batches, 0)
        .expect("encode")
        .into_iter()
        .map(|r| {
            let mut v: Value =
                serde_json::from_slice(&r.payload.unwrap_or_default()).expect("json");
            v.as_object_mut().map(|o| o.remove("emitted_at"));
            v
        })
        .collect();
    rows.sort_by_key(|v| v.to_string());
    rows
}

fn sorted(mut rows: Vec<Value>) -> Vec<Value> {
    rows.sort_by_key(|v| v.to_string());
    rows
}

fn ms(rfc3339: &str) -> i64 {
    cxpulse::decode::parse_rfc3339_millis(rfc3339).expect("timestamp")
}

fn tx(customer: &str, ts: &str, amount: f64, category: &str) -> Value {
    json!({"event_id": format!("{customer}-{ts}"), "customer_id": customer, "ts": ts, "amount": amount, "category": category})
}

#[tokio::test]
async fn need_by_category_per_hour_with_shares_early_then_final() {
    let mut job = bundled("need_by_category", &[]).await;
    feed(
        &mut job,
        cxpulse::config::default_sources()
            .named("transactions")
            .expect("declared"),
        &[
            tx("a", "2026-01-01T10:05:00Z", 10.0, "books"),
            tx("b", "2026-01-01T10:10:00Z", 30.0, "books"),
            tx("a", "2026-01-01T10:20:00Z", 20.0, "toys"),
            tx("a", "2026-01-01T10:50:00Z", 20.0, "books"),
            tx("c", "2026-01-01T11:05:00Z", 20.0, "toys"),
        ],
    )
    .await;
    // [10:00, 11:00): books 3 orders by {a, b}, 10 + 30 + 20 = 60, basket 20,
    // 3 of 4 orders, 60 of 80 revenue; toys 1 order, 20, a quarter of each.
    let window =
        |category: &str, orders: i64, customers: i64, revenue: f64, share: f64, is_final: bool| {
            json!({"job": "need_by_category", "window_start": "2026-01-01T10:00:00.000Z",
               "window_end": "2026-01-01T11:00:00.000Z", "category": category, "orders": orders,
               "customers": customers, "revenue": revenue, "avg_basket": revenue / orders as f64,
               "order_share": share, "revenue_share": share, "final": is_final})
        };
    let windowed = job.windowed_mut().expect("windowed");
    let early = windowed.early().await.into_result().expect("early");
    let late_window = json!({"job": "need_by_category", "window_start": "2026-01-01T11:00:00.000Z",
        "window_end": "2026-01-01T12:00:00.000Z", "category": "toys", "orders": 1, "customers": 1,
        "revenue": 20.0, "avg_basket": 20.0, "order_share": 1.0, "revenue_share": 1.0, "final": false});
    assert_eq!(
        published(&job, &early),
        sorted(vec![
            window("books", 3, 2, 60.0, 0.75, false),
            window("toys", 1, 1, 20.0, 0.25, false),
            late_window
        ])
    );
    let windowed = job.windowed_mut().expect("windowed");
    let fired = windowed
        .fire(ms("2026-01-01T11:00:00Z"), unhurried())
        .await
        .into_result()
        .expect("fire");
    assert_eq!(
        published(&job, &fired),
        sorted(vec![
            window("books", 3, 2, 60.0, 0.75, true),
            window("toys", 1, 1, 20.0, 0.25, true)
        ])
    );
}

#[tokio::test]
async fn satisfaction_hourly_csat_nps_and_ces() {
    let mut job = bundled("satisfaction_hourly", &[]).await;
    let fb = |id: &str, channel: &str, topic: &str, extra: Value| {
        let mut v = json!({"event_id": id, "customer_id": "c", "ts": "2026-01-01T10:30:00Z",
                           "channel": channel, "topic": topic});
        if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
            o.extend(e.clone());
        }
        v
    };
    feed(
        &mut job,
        cxpulse::config::default_sources()
            .named("feedback")
            .expect("declared"),
        &[
            fb(
                "f1",
                "web",
                "delivery",
                json!({"rating": 5, "nps": 10, "effort": 2}),
            ),
            fb("f2", "web", "delivery", json!({"rating": 4, "nps": 6})),
            fb("f3", "web", "delivery", json!({"rating": 2, "effort": 4})),
            fb("f4", "web", "delivery", json!({"nps": 9})),
            fb("f5", "app", "price", json!({"rating": 3})),
        ],
    )
    .await;
    let windowed = job.windowed_mut().expect("windowed");
    let fired = windowed
        .fire(ms("2026-01-01T11:00:00Z"), unhurried())
        .await
        .into_result()
        .expect("fire");
    // web/delivery: 4 responses; CSAT (5 + 4 + 2) / 3; 2 of 3 ratings are 4-5;
    // NPS: promoters 10, 9, detractor 6, of 3 answers → 100 · (2 - 1) / 3; CES (2 + 4) / 2.
    // app/price: one rating of 3: CSAT % 0, no NPS or CES answers → null.
    let row = |channel: &str,
               topic: &str,
               responses: i64,
               csat: f64,
               pct: f64,
               nps: Value,
               ces: Value| {
        json!({"job": "satisfaction_hourly", "window_start": "2026-01-01T10:00:00.000Z",
               "window_end": "2026-01-01T11:00:00.000Z", "channel": channel, "topic": topic,
               "responses": responses, "csat": csat, "csat_pct": pct, "nps": nps, "ces": ces, "final": true})
    };
    assert_eq!(
        published(&job, &fired),
        sorted(vec![
            row(
                "web",
                "delivery",
                4,
                11.0 / 3.0,
                100.0 * 2.0 / 3.0,
                json!(100.0 / 3.0),
                json!(3.0)
            ),
            row("app", "price", 1, 3.0, 0.0, Value::Null, Value::Null),
        ])
    );
}

#[tokio::test]
async fn need_by_segment_uses_age_as_of_the_window_end_and_shares_within_the_segment() {
    let profiles = [
        json!({"customer_id": "a", "birth_year": 1990, "gender": "f"}),
        json!({"customer_id": "b", "birth_year": 2000, "gender": "m"}),
    ];
    let mut job = bundled("need_by_segment", &profiles).await;
    feed(
        &mut job,
        cxpulse::config::default_sources()
            .named("transactions")
            .expect("declared"),
        &[
            tx("a", "2026-01-01T09:00:00Z", 10.0, "books"),
            tx("a", "2026-01-01T12:00:00Z", 30.0, "toys"),
            tx("b", "2026-01-01T13:00:00Z", 5.0, "books"),
            tx("c", "2026-01-01T14:00:00Z", 1.0, "books"),
        ],
    )
    .await;
    let windowed = job.windowed_mut().expect("windowed");
    let fired = windowed
        .fire(ms("2026-01-02T00:00:00Z"), unhurried())
        .await
        .into_result()
        .expect("fire");
    // Ages at the window end (2026): a 36 → 35-44, b 26 → 25-34, c has no profile.
    // Segment 35-44/f: books 10 and toys 30 → each half the orders, 1/4 and 3/4 of revenue.
    let row = |category: &str,
               band: &str,
               gender: &str,
               revenue: f64,
               order_share: f64,
               revenue_share: f64| {
        json!({"job": "need_by_segment", "window_start": "2026-01-01T00:00:00.000Z",
               "window_end": "2026-01-02T00:00:00.000Z", "category": category, "age_band": band,
               "gender": gender, "orders": 1, "revenue": revenue, "order_share": order_share,
               "revenue_share": revenue_share, "final": true})
    };
    assert_eq!(
        published(&job, &fired),
        sorted(vec![
            row("books", "35-44", "f", 10.0, 0.5, 0.25),
            row("toys", "35-44", "f", 30.0, 0.5, 0.75),
            row("books", "25-34", "m", 5.0, 1.0, 1.0),
            row("books", "unknown", "unknown", 1.0, 1.0, 1.0),
        ])
    );
}

/// The published row of `rows` whose `field` equals `value`.
fn row_where<'a>(rows: &'a [Value], pairs: &[(&str, Value)]) -> &'a Value {
    rows.iter()
        .find(|r| pairs.iter().all(|(k, v)| r[*k] == *v))
        .unwrap_or_else(|| panic!("no row with {pairs:?} in {rows:#?}"))
}

fn close(actual: &Value, expected: f64) -> bool {
    actual
        .as_f64()
        .is_some_and(|a| (a - expected).abs() <= 1e-9 * expected.abs().max(1.0))
}

#[tokio::test]
async fn need_trend_slope_of_daily_orders_and_week_over_week_change() {
    let mut job = bundled("need_trend", &[]).await;
    let mut events = Vec::new();
    for (day, n) in [("16", 2), ("18", 2), ("23", 3), ("27", 3)] {
        for i in 0..n {
            events.push(tx(
                &format!("c{i}"),
                &format!("2026-01-{day}T1{i}:00:00Z"),
                1.0,
                "books",
            ));
        }
    }
    feed(
        &mut job,
        cxpulse::config::default_sources()
            .named("transactions")
            .expect("declared"),
        &events,
    )
    .await;
    let windowed = job.windowed_mut().expect("windowed");
    let fired = windowed
        .fire(ms("2026-01-29T00:00:00Z"), unhurried())
        .await
        .into_result()
        .expect("fire");
    let rows = published(&job, &fired);
    let row = row_where(&rows, &[("window_end", json!("2026-01-29T00:00:00.000Z"))]);
    // Window [01-01, 01-29). Daily orders: 16th 2, 18th 2, 23rd 3, 27th 3.
    // Days from the 16th: x = 0, 2, 7, 11 (mean 5), y = 2, 2, 3, 3 (mean 2.5):
    // slope = Σ(dx·dy) / Σ(dx²) = 8 / 74. Last 7 days (from the 22nd): 6; the 7
    // before (15th to 21st): 4; change 6 / 4 - 1 = 0.5.
    assert_eq!(row["window_start"], json!("2026-01-01T00:00:00.000Z"));
    assert_eq!(row["orders"], json!(10.0));
    assert!(close(&row["daily_orders_slope"], 8.0 / 74.0), "{row}");
    assert_eq!(
        (&row["last_7d"], &row["prior_7d"]),
        (&json!(6.0), &json!(4.0))
    );
    assert!(close(&row["change_7d"], 0.5), "{row}");
    // The window ending on the 17th saw only the 16th: no slope, no prior week.
    let first = row_where(&rows, &[("window_end", json!("2026-01-17T00:00:00.000Z"))]);
    assert_eq!(
        (
            &first["orders"],
            &first["daily_orders_slope"],
            &first["change_7d"]
        ),
        (&json!(2.0), &Value::Null, &Value::Null)
    );
    // Every daily window from [12-20, 01-17) to [01-01, 01-29) that holds an order fired once.
    assert_eq!(rows.len(), 13);
}

/// The correlation tests' customers: p0..p14 are women born 1996 (30 in
/// 2026), p15..p29 men born 1986 (40).
fn cohorts() -> Vec<Value> {
    (0..30)
        .map(|i| {
            let (year, gender) = if i < 15 { (1996, "f") } else { (1986, "m") };
            json!({"customer_id": format!("p{i}"), "birth_year": year, "gender": gender})
        })
        .collect()
}

#[tokio::test]
async fn need_correlation_needs_30_pairs() {
    // 15 women aged 30 spend 10 on 3 items; 15 men aged 40 spend 20 on 4 items:
    // age and amount, age and items move together (r = 1); being a woman goes
    // with spending less (r = -1). z has no profile and is left out of the pairs.
    let profiles = cohorts();
    let mut events = Vec::new();
    for i in 0..30 {
        let (amount, items) = if i < 15 { (10.0, 3) } else { (20.0, 4) };
        let id = format!("p{i}");
        let mut event = tx(&id, "2026-01-05T12:00:00Z", amount, "books");
        event["items"] = json!(items);
        events.push(event);
    }
    events.push(tx("z", "2026-01-05T13:00:00Z", 99.0, "books"));
    events.push(tx("p0", "2026-01-05T14:00:00Z", 1.0, "toys"));
    events.push(tx("p20", "2026-01-05T15:00:00Z", 2.0, "toys"));
    let mut job = bundled("need_correlation", &profiles).await;
    feed(
        &mut job,
        cxpulse::config::default_sources()
            .named("transactions")
            .expect("declared"),
        &events,
    )
    .await;
    let windowed = job.windowed_mut().expect("windowed");
    let fired = windowed
        .fire(ms("2026-01-06T00:00:00Z"), unhurried())
        .await
        .into_result()
        .expect("fire");
    let rows = published(&job, &fired);
    let books = row_where(&rows, &[("category", json!("books"))]);
    assert_eq!(books["age_pairs"], json!(30));
    assert!(close(&books["corr_age_amount"], 1.0), "{books}");
    assert!(close(&books["corr_age_items"], 1.0), "{books}");
    assert!(close(&books["corr_female_amount"], -1.0), "{books}");
    let toys = row_where(&rows, &[("category", json!("toys"))]);
    assert_eq!(
        (
            &toys["age_pairs"],
            &toys["corr_age_amount"],
            &toys["corr_female_amount"]
        ),
        (&json!(2), &Value::Null, &Value::Null),
        "two pairs are not enough"
    );
}

/// [`cohorts`] with genders written as CRM exports write them.
fn crm_coded_cohorts() -> Vec<Value> {
    const WOMEN: [&str; 4] = ["F", "Female", "w", " WOMAN "];
    const MEN: [&str; 3] = ["M", "male", "Man"];
    cohorts()
        .into_iter()
        .enumerate()
        .map(|(i, mut profile)| {
            profile["gender"] = json!(if i < 15 { WOMEN[i % 4] } else { MEN[i % 3] });
            profile
        })
        .collect()
}

#[tokio::test]
async fn need_correlation_reads_genders_as_crms_code_them_and_counts_the_rest() {
    // The cohorts of need_correlation_needs_30_pairs, coded F / Female / w /
    // WOMAN and M / male / Man; q1 is "femme" (no known coding) and q2 "X"
    // (neither female nor male): both are left out of the gender pairs, and
    // q1's two transactions are counted as uncoded.
    let mut profiles = crm_coded_cohorts();
    profiles.push(json!({"customer_id": "q1", "birth_year": 1990, "gender": "femme"}));
    profiles.push(json!({"customer_id": "q2", "birth_year": 1990, "gender": "X"}));
    let mut events: Vec<Value> = (0..30)
        .map(|i| {
            let amount = if i < 15 { 10.0 } else { 20.0 };
            tx(&format!("p{i}"), "2026-01-05T12:00:00Z", amount, "books")
        })
        .collect();
    events.push(tx("q1", "2026-01-05T13:00:00Z", 50.0, "books"));
    events.push(tx("q1", "2026-01-05T14:00:00Z", 60.0, "books"));
    events.push(tx("q2", "2026-01-05T15:00:00Z", 70.0, "books"));
    let mut job = bundled("need_correlation", &profiles).await;
    feed(
        &mut job,
        cxpulse::config::default_sources()
            .named("transactions")
            .expect("declared"),
        &events,
    )
    .await;
    let windowed = job.windowed_mut().expect("windowed");
    let fired = windowed
        .fire(ms("2026-01-06T00:00:00Z"), unhurried())
        .await
        .into_result()
        .expect("fire");
    let rows = published(&job, &fired);
    let books = row_where(&rows, &[("category", json!("books"))]);
    assert!(close(&books["corr_female_amount"], -1.0), "{books}");
    assert_eq!(books["uncoded_gender"], json!(2), "{books}");
    assert_eq!(books["age_pairs"], json!(33), "{books}");
}

#[tokio::test]
async fn need_by_segment_groups_a_gender_however_it_is_written() {
    // Born 1990: 36 at the end of 2026-01-01, all in 35-44.
    let profiles = [
        json!({"customer_id": "a", "birth_year": 1990, "gender": "F"}),
        json!({"customer_id": "b", "birth_year": 1990, "gender": "female"}),
        json!({"customer_id": "c", "birth_year": 1990, "gender": "femme"}),
        json!({"customer_id": "d", "birth_year": 1990}),
    ];
    let mut job = bundled("need_by_segment", &profiles).await;
    feed(
        &mut job,
        cxpulse::config::default_sources()
            .named("transactions")
            .expect("declared"),
        &[
            tx("a", "2026-01-01T09:00:00Z", 10.0, "books"),
            tx("b", "2026-01-01T10:00:00Z", 30.0, "books"),
            tx("c", "2026-01-01T11:00:00Z", 5.0, "books"),
            tx("d", "2026-01-01T12:00:00Z", 1.0, "books"),
        ],
    )
    .await;
    let windowed = job.windowed_mut().expect("windowed");
    let fired = windowed
        .fire(ms("2026-01-02T00:00:00Z"), unhurried())
        .await
        .into_result()
        .expect("fire");
    let genders: BTreeMap<String, (Value, Value)> = published(&job, &fired)
        .iter()
        .map(|r| {
            (
                r["gender"].as_str().unwrap_or_default().to_owned(),
                (r["orders"].clone(), r["revenue"].clone()),
            )
        })
        .collect();
    assert_eq!(
        genders,
        BTreeMap::from([
            ("f".to_owned(), (json!(2), json!(40.0))),
            ("uncoded".to_owned(), (json!(1), json!(5.0))),
            ("unknown".to_owned(), (json!(1), json!(1.0))),
        ])
    );
}

fn feedback(
    id: &str,
    customer: &str,
    ts: &str,
    channel: &str,
    rating: Option<i64>,
    nps: Option<i64>,
) -> Value {
    let mut v = json!({"event_id": id, "customer_id": customer, "ts": ts, "channel": channel});
    if let Some(r) = rating {
        v["rating"] = json!(r);
    }
    if let Some(n) = nps {
        v["nps"] = json!(n);
    }
    v
}

#[tokio::test]
async fn satisfaction_trend_slopes_and_week_over_week_change() {
    let mut job = bundled("satisfaction_trend", &[]).await;
    let answers = [
        ("16", 10, Some(5)),
        ("16", 0, Some(3)),
        ("18", 10, Some(5)),
        ("23", 10, Some(4)),
        ("23", 10, Some(4)),
        ("23", 5, None),
        ("27", 9, Some(2)),
    ];
    let events: Vec<Value> = answers
        .iter()
        .enumerate()
        .map(|(i, (day, nps, rating))| {
            feedback(
                &format!("f{i}"),
                "c",
                &format!("2026-01-{day}T10:00:00Z"),
                "web",
                *rating,
                Some(*nps),
            )
        })
        .collect();
    feed(
        &mut job,
        cxpulse::config::default_sources()
            .named("feedback")
            .expect("declared"),
        &events,
    )
    .await;
    let windowed = job.windowed_mut().expect("windowed");
    let fired = windowed
        .fire(ms("2026-01-29T00:00:00Z"), unhurried())
        .await
        .into_result()
        .expect("fire");
    let rows = published(&job, &fired);
    let row = row_where(&rows, &[("window_end", json!("2026-01-29T00:00:00.000Z"))]);
    // Daily NPS: 16th (1 promoter, 1 detractor of 2) 0; 18th 100; 23rd (2 - 1 of 3) 100/3;
    // 27th 100. Daily CSAT: 4, 5, 4, 2. Days from the 16th: 0, 2, 7, 11 (mean 5).
    // NPS slope: Σdx·dy = (875 - 375 - 150 + 750) / 3 = 1100 / 3 over Σdx² = 74.
    // CSAT slope: (-1.25 - 3.75 + 0.5 - 10.5) / 74 = -15 / 74.
    // Last 7 days: 3 promoters, 1 detractor of 4 → 50; the 7 before: 2 - 1 of 3 → 100/3.
    // CSAT last 7 days (4 + 4 + 2) / 3, before (5 + 3 + 5) / 3: change -1.
    assert!(close(&row["nps_slope"], 1100.0 / 3.0 / 74.0), "{row}");
    assert!(close(&row["csat_slope"], -15.0 / 74.0), "{row}");
    assert!(close(&row["nps_change_7d"], 50.0 - 100.0 / 3.0), "{row}");
    assert!(close(&row["csat_change_7d"], -1.0), "{row}");
}

#[tokio::test]
async fn satisfaction_correlation_of_age_and_gender_with_rating_and_nps() {
    // 15 women aged 30 rate 5 and answer nps 10; 15 men aged 40 rate 3 and answer 4.
    let profiles = cohorts();
    let mut events = Vec::new();
    for i in 0..30 {
        let (rating, nps) = if i < 15 { (5, 10) } else { (3, 4) };
        let id = format!("p{i}");
        events.push(feedback(
            &format!("f{i}"),
            &id,
            "2026-01-05T12:00:00Z",
            "web",
            Some(rating),
            Some(nps),
        ));
    }
    events.push(feedback(
        "f99",
        "p1",
        "2026-01-05T12:00:00Z",
        "app",
        Some(5),
        None,
    ));
    let mut job = bundled("satisfaction_correlation", &profiles).await;
    feed(
        &mut job,
        cxpulse::config::default_sources()
            .named("feedback")
            .expect("declared"),
        &events,
    )
    .await;
    let windowed = job.windowed_mut().expect("windowed");
    let fired = windowed
        .fire(ms("2026-01-06T00:00:00Z"), unhurried())
        .await
        .into_result()
        .expect("fire");
    let rows = published(&job, &fired);
    let web = row_where(&rows, &[("channel", json!("web"))]);
    for (field, r) in [
        ("corr_age_rating", -1.0),
        ("corr_age_nps", -1.0),
        ("corr_female_rating", 1.0),
        ("corr_female_nps", 1.0),
    ] {
        assert!(close(&web[field], r), "{field}: {web}");
    }
    let app = row_where(&rows, &[("channel", json!("app"))]);
    assert_eq!(
        app["corr_age_rating"],
        Value::Null,
        "one pair is not enough"
    );
}

#[tokio::test]
async fn loyalty_rfm_scores_by_quintile_and_segments_by_the_rule_table() {
    let mut job = bundled("loyalty_rfm", &[]).await;
    assert_eq!(
        job.record_key_columns(),
        vec!["customer_id"],
        "one key per customer"
    );
    let mut events = Vec::new();
    let mut buy =
        |customer: &str, ts: &str, amount: f64| events.push(tx(customer, ts, amount, "x"));
    for _ in 0..4 {
        buy("a", "2025-11-01T12:00:00Z", 100.0);
    }
    buy("a", "2026-01-10T12:00:00Z", 100.0);
    for _ in 0..3 {
        buy("b", "2025-11-01T12:00:00Z", 100.0);
    }
    buy("b", "2026-01-08T12:00:00Z", 100.0);
    buy("c", "2026-01-09T12:00:00Z", 10.0);
    buy("d", "2025-11-01T12:00:00Z", 100.0);
    buy("d", "2025-11-01T12:00:00Z", 100.0);
    buy("d", "2025-12-01T12:00:00Z", 100.0);
    buy("e", "2025-05-01T12:00:00Z", 25.0);
    buy("e", "2025-06-01T12:00:00Z", 25.0);
    feed(
        &mut job,
        cxpulse::config::default_sources()
            .named("transactions")
            .expect("declared"),
        &events,
    )
    .await;
    let windowed = job.windowed_mut().expect("windowed");
    let fired = windowed
        .fire(ms("2026-01-11T00:00:00Z"), unhurried())
        .await
        .into_result()
        .expect("fire");
    let rows = published(&job, &fired);
    // Window [2025-01-11, 2026-01-11). Recency in whole days to 2026-01-11:
    // a 0.5 → 0, b 2.5 → 2, c 1.5 → 1, d 40.5 → 40, e (June 1st, noon) 223.5 → 223.
    // Five customers: scores 1..5 in order. R (least recent first): e d b c a;
    // F and M (smallest first): c e d b a.
    // a 5/5/5 Champions; b 3/4/4 Loyal; c 4/1/1 with one purchase New;
    // d 2/3/3 At risk; e 1/2/2 Lost.
    let expect =
        |id: &str, recency: i64, frequency: i64, monetary: f64, r: i64, f: i64, segment: &str| {
            json!({"job": "loyalty_rfm", "window_start": "2025-01-11T00:00:00.000Z",
               "window_end": "2026-01-11T00:00:00.000Z", "customer_id": id,
               "recency_days": recency, "frequency": frequency, "monetary": monetary,
               "r_score": r, "f_score": f, "m_score": f, "segment": segment,
               "repeat_customer": frequency > 1, "final": true})
        };
    let last: Vec<Value> = rows
        .iter()
        .filter(|r| r["window_end"] == json!("2026-01-11T00:00:00.000Z"))
        .cloned()
        .collect();
    assert_eq!(
        last,
        sorted(vec![
            expect("a", 0, 5, 500.0, 5, 5, "Champions"),
            expect("b", 2, 4, 400.0, 3, 4, "Loyal"),
            expect("c", 1, 1, 10.0, 4, 1, "New"),
            expect("d", 40, 3, 300.0, 2, 3, "At risk"),
            expect("e", 223, 2, 50.0, 1, 2, "Lost"),
        ])
    );
}

#[tokio::test]
async fn loyalty_summary_counts_segments_repeat_rate_and_at_risk_share() {
    let mut job = bundled("loyalty_summary", &[]).await;
    // The customers of the loyalty_rfm test: a Champions, b Loyal, c New,
    // d At risk, e Lost; four of five bought more than once, one is at risk.
    let mut events = Vec::new();
    for (customer, ts, n) in [
        ("a", "2025-11-01T12:00:00Z", 4),
        ("a", "2026-01-10T12:00:00Z", 1),
        ("b", "2025-11-01T12:00:00Z", 3),
        ("b", "2026-01-08T12:00:00Z", 1),
        ("c", "2026-01-09T12:00:00Z", 1),
        ("d", "2025-11-01T12:00:00Z", 2),
        ("d", "2025-12-01T12:00:00Z", 1),
        ("e", "2025-05-01T12:00:00Z", 1),
        ("e", "2025-06-01T12:00:00Z", 1),
    ] {
        for _ in 0..n {
            let amount = if customer == "c" {
                10.0
            } else if customer == "e" {
                25.0
            } else {
                100.0
            };
            events.push(tx(customer, ts, amount, "x"));
        }
    }
    feed(
        &mut job,
        cxpulse::config::default_sources()
            .named("transactions")
            .expect("declared"),
        &events,
    )
    .await;
    let windowed = job.windowed_mut().expect("windowed");
    let fired = windowed
        .fire(ms("2026-01-11T00:00:00Z"), unhurried())
        .await
        .into_result()
        .expect("fire");
    let rows: Vec<Value> = published(&job, &fired)
        .into_iter()
        .filter(|r| r["window_end"] == json!("2026-01-11T00:00:00.000Z"))
        .collect();
    let segment = |name: &str| {
        json!({"job": "loyalty_summary", "window_start": "2025-01-11T00:00:00.000Z",
               "window_end": "2026-01-11T00:00:00.000Z", "segment": name, "customers": 1,
               "customer_share": 0.2, "repeat_rate": 0.8, "at_risk_share": 0.2, "final": true})
    };
    assert_eq!(
        rows,
        sorted(
            ["Champions", "Loyal", "New", "At risk", "Lost"]
                .map(segment)
                .to_vec()
        )
    );
}

#[tokio::test]
async fn complaints_hourly_counts_rates_resolution_times_and_open_complaints() {
    let lookups = Lookups::new(cxpulse::config::default_sources());
    let mut job = bundled_with("complaints_hourly", &[], &lookups).await;
    let complaint = |id: &str, status: &str, ts: &str, category: &str, severity: &str| {
        json!({"event_id": format!("{id}-{status}"), "customer_id": "c", "ts": ts,
               "complaint_id": id, "status": status, "category": category, "severity": severity})
    };
    // As the engine does: the complaint tables learn a batch before the job sees it.
    let complaints = |job_events: Vec<Value>| {
        let batch = batch_of(
            cxpulse::config::default_sources()
                .named("complaints")
                .expect("declared"),
            &job_events,
        );
        lookups
            .kept(
                cxpulse::config::default_sources()
                    .named("complaints")
                    .expect("declared"),
            )
            .expect("complaint tables")
            .lock()
            .expect("lock")
            .apply(&batch, Some(0))
            .expect("apply");
        job_events
    };
    let earlier = complaints(vec![
        complaint("k5", "opened", "2025-11-01T10:00:00Z", "delivery", "low"),
        complaint("k1", "opened", "2026-01-01T09:00:00Z", "billing", "high"),
        // Last event 30 days and 1 hour before the window end: abandoned.
        complaint("k9", "opened", "2025-12-02T10:00:00Z", "delivery", "low"),
        // Last event 29 days and 23 hours before the window end: open.
        complaint("k10", "opened", "2025-12-02T12:00:00Z", "delivery", "low"),
    ]);
    feed(
        &mut job,
        cxpulse::config::default_sources()
            .named("complaints")
            .expect("declared"),
        &earlier,
    )
    .await;
    let hour = complaints(vec![
        complaint("k1", "resolved", "2026-01-01T10:30:00Z", "billing", "high"),
        complaint("k2", "opened", "2026-01-01T10:00:00Z", "billing", "high"),
        complaint("k2", "resolved", "2026-01-01T10:15:00Z", "billing", "high"),
        complaint("k3", "opened", "2026-01-01T10:10:00Z", "billing", "high"),
        complaint("k3", "escalated", "2026-01-01T10:20:00Z", "billing", "high"),
        complaint("k4", "opened", "2026-01-01T10:40:00Z", "delivery", "low"),
        complaint("k5", "resolved", "2026-01-01T10:50:00Z", "delivery", "low"),
        complaint("k6", "resolved", "2026-01-01T10:55:00Z", "billing", "high"),
        complaint("k7", "opened", "2026-01-01T10:45:00Z", "billing", "high"),
        // Resolved after the window end: still open at 11:00.
        complaint("k7", "resolved", "2026-01-01T11:30:00Z", "billing", "high"),
        complaint("k8", "opened", "2026-01-01T10:05:00Z", "billing", "high"),
        complaint("k8", "resolved", "2026-01-01T10:35:00Z", "billing", "high"),
        // Reopened after the window end: still resolved at 11:00.
        complaint("k8", "escalated", "2026-01-01T11:20:00Z", "billing", "high"),
    ]);
    feed(
        &mut job,
        cxpulse::config::default_sources()
            .named("complaints")
            .expect("declared"),
        &hour,
    )
    .await;
    let sales: Vec<Value> = (0..8)
        .map(|i| {
            tx(
                &format!("t{i}"),
                &format!("2026-01-01T10:0{i}:00Z"),
                1.0,
                "x",
            )
        })
        .collect();
    feed(
        &mut job,
        cxpulse::config::default_sources()
            .named("transactions")
            .expect("declared"),
        &sales,
    )
    .await;

    let windowed = job.windowed_mut().expect("windowed");
    let fired = windowed
        .fire(ms("2026-01-01T11:00:00Z"), unhurried())
        .await
        .into_result()
        .expect("fire");
    let rows: Vec<Value> = published(&job, &fired)
        .into_iter()
        .filter(|r| r["window_start"] == json!("2026-01-01T10:00:00.000Z"))
        .collect();
    // billing/high: opened k2 k3 k7 k8, resolved k1 k2 k6 k8, escalated k3
    // (k8's escalation is in the next hour). Resolution: k1 09:00 → 10:30 =
    // 1.5 h, k2 0.25 h, k8 0.5 h, k6 has no opening: median 0.5, p90 at rank
    // 0.9 × 2 = 1.8: 0.5 + 0.8 × (1.5 − 0.5) = 1.3. 4 opened per 8
    // transactions: 500. Open at 11:00: k3 (escalated) and k7 (resolved only
    // at 11:30); not k8, resolved at 10:35 and reopened only at 11:20.
    // delivery/low: k4 opened (still open), k5 resolved more than 30 days
    // after its opening: no resolution time. 1 per 8 transactions: 125.
    // Open at 11:00: k4 and k10; k9 is untouched for over 30 days.
    let row =
        |category: &str, severity: &str, counts: [i64; 4], rate: f64, median: Value, p90: Value| {
            json!({"job": "complaints_hourly", "window_start": "2026-01-01T10:00:00.000Z",
               "window_end": "2026-01-01T11:00:00.000Z", "category": category, "severity": severity,
               "opened": counts[0], "resolved": counts[1], "escalated": counts[2],
               "opened_per_1000_tx": rate, "median_resolution_hours": median,
               "p90_resolution_hours": p90, "still_open": counts[3], "final": true})
        };
    assert_eq!(
        rows,
        sorted(vec![
            row(
                "billing",
                "high",
                [4, 4, 1, 2],
                500.0,
                json!(0.5),
                json!(1.3)
            ),
            row(
                "delivery",
                "low",
                [1, 1, 0, 2],
                125.0,
                Value::Null,
                Value::Null
            ),
        ])
    );
}
