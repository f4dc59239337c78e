//! Windowed jobs without Kafka: plan, accumulate micro-batches per
//! partition, fire, and compare with results worked out by hand.

use std::path::Path;

use arrow::array::RecordBatch;
use arrow::util::pretty::pretty_format_batches;

use super::*;
use crate::decode::{BatchBuilder, parse_record};
use crate::lookup::{Lookups, RowChange, owned_cells};
use crate::query::QueryFile;

const MIN: i64 = 60_000;

/// A firing deadline no test reaches: every due window closes.
fn unhurried() -> std::time::Instant {
    std::time::Instant::now() + std::time::Duration::from_secs(3_600)
}

async fn plan_with(sql: &str, lookups: &Lookups) -> Job {
    let query = QueryFile::parse(Path::new("q/w.sql"), sql.to_owned()).expect("parses");
    match Job::plan(query, lookups, "").await {
        Ok(job) => job,
        Err(e) => panic!("{e}"),
    }
}

async fn plan(sql: &str) -> Job {
    plan_with(sql, &Lookups::new(crate::config::default_sources())).await
}

fn tx(rows: &[(&str, i64, f64, &str)]) -> RecordBatch {
    let mut builder = BatchBuilder::new(crate::config::default_source("transactions"));
    for (customer, ts, amount, category) in rows {
        let json = format!(
            r#"{{"event_id":"e","customer_id":"{customer}","ts":{ts},"amount":{amount},"category":"{category}"}}"#
        );
        builder.append(
            &parse_record(
                crate::config::default_source("transactions"),
                json.as_bytes(),
            )
            .expect("valid"),
        );
    }
    builder.finish().expect("batch")
}

fn table(batches: &[RecordBatch]) -> Vec<String> {
    pretty_format_batches(batches)
        .expect("format")
        .to_string()
        .lines()
        .map(str::to_owned)
        .collect()
}

async fn accumulate(job: &mut Job, partition: i32, batch: RecordBatch) {
    let w = job.windowed_mut().expect("windowed");
    let late = w.late_rows(partition, &batch).expect("late");
    assert_eq!(late.true_count(), 0, "no late rows expected");
    w.accumulate(
        crate::config::default_source("transactions"),
        partition,
        batch,
    )
    .await
    .expect("accumulate");
}

#[tokio::test]
async fn tumble_merges_partitions_and_fires_each_window_once() {
    let mut job = plan(
        "SELECT window_start, window_end, category, count(*) AS orders, sum(amount) AS revenue, \
         count(DISTINCT customer_id) AS customers \
         FROM TUMBLE(transactions, ts, INTERVAL '10 minutes') \
         GROUP BY window_start, window_end, category ORDER BY category",
    )
    .await;
    assert_eq!(job.record_key_columns(), vec!["window_start", "window_end"]);
    accumulate(
        &mut job,
        0,
        tx(&[("a", MIN, 10.0, "books"), ("b", 2 * MIN, 5.0, "toys")]),
    )
    .await;
    accumulate(
        &mut job,
        1,
        tx(&[("a", 3 * MIN, 1.5, "books"), ("c", 12 * MIN, 7.0, "books")]),
    )
    .await;
    accumulate(&mut job, 0, tx(&[("d", 9 * MIN, 2.5, "books")])).await;
    let w = job.windowed_mut().expect("windowed");
    assert!(
        w.fire(9 * MIN, unhurried())
            .await
            .into_result()
            .expect("fire")
            .is_empty(),
        "[0, 10 min) is still open"
    );
    let rows = w
        .fire(10 * MIN, unhurried())
        .await
        .into_result()
        .expect("fire");
    assert_eq!(
        table(&rows),
        vec![
            "+----------------------+----------------------+----------+--------+---------+-----------+-------+",
            "| window_start         | window_end           | category | orders | revenue | customers | final |",
            "+----------------------+----------------------+----------+--------+---------+-----------+-------+",
            "| 1970-01-01T00:00:00Z | 1970-01-01T00:10:00Z | books    | 3      | 14.0    | 2         | true  |",
            "| 1970-01-01T00:00:00Z | 1970-01-01T00:10:00Z | toys     | 1      | 5.0     | 1         | true  |",
            "+----------------------+----------------------+----------+--------+---------+-----------+-------+",
        ]
    );
    assert!(
        w.fire(15 * MIN, unhurried())
            .await
            .into_result()
            .expect("fire")
            .is_empty()
    );
    // A row for the closed window is late; one for [10, 20) is not.
    let late = w
        .late_rows(
            0,
            &tx(&[("e", 4 * MIN, 1.0, "books"), ("e", 11 * MIN, 1.0, "books")]),
        )
        .expect("late");
    assert_eq!(
        late.iter().collect::<Vec<_>>(),
        vec![Some(true), Some(false)]
    );
    let rows = w
        .fire(20 * MIN, unhurried())
        .await
        .into_result()
        .expect("fire");
    assert_eq!(
        table(&rows)[3],
        "| 1970-01-01T00:10:00Z | 1970-01-01T00:20:00Z | books    | 1      | 7.0     | 1         | true  |"
    );
    assert_eq!(w.state_rows(), 0, "state is dropped once windows close");
}

#[tokio::test]
async fn hop_stores_each_event_once_and_counts_it_in_every_window() {
    let mut job = plan(
        "-- @emit every 1s\n\
         SELECT window_start, window_end, count(*) AS n, avg(amount) AS mean \
         FROM HOP(transactions, ts, INTERVAL '5 minutes', INTERVAL '15 minutes') \
         GROUP BY window_start, window_end",
    )
    .await;
    assert_eq!(job.emit_every, Some(std::time::Duration::from_secs(1)));
    // Events at 1, 6 and 7 min. Windows: [-10,5) {1}; [-5,10) {1,6,7}; [0,15) {1,6,7}; [5,20) {6,7}.
    accumulate(
        &mut job,
        0,
        tx(&[
            ("a", MIN, 3.0, "x"),
            ("b", 6 * MIN, 6.0, "x"),
            ("c", 7 * MIN, 9.0, "x"),
        ]),
    )
    .await;
    let w = job.windowed_mut().expect("windowed");
    assert_eq!(
        w.state_rows(),
        2,
        "one state row per 5-minute pane, not per window"
    );
    let early = w.early().await.into_result().expect("early");
    assert_eq!(
        table(&early)[3..7],
        [
            "| 1969-12-31T23:50:00Z | 1970-01-01T00:05:00Z | 1 | 3.0  | false |",
            "| 1969-12-31T23:55:00Z | 1970-01-01T00:10:00Z | 3 | 6.0  | false |",
            "| 1970-01-01T00:00:00Z | 1970-01-01T00:15:00Z | 3 | 6.0  | false |",
            "| 1970-01-01T00:05:00Z | 1970-01-01T00:20:00Z | 2 | 7.5  | false |",
        ],
        "four open windows, not final"
    );
    assert_eq!(w.state_rows(), 2, "early results leave the state in place");
    let rows = w
        .fire(20 * MIN, unhurried())
        .await
        .into_result()
        .expect("fire");
    assert_eq!(
        table(&rows)[3..7],
        [
            "| 1969-12-31T23:50:00Z | 1970-01-01T00:05:00Z | 1 | 3.0  | true  |",
            "| 1969-12-31T23:55:00Z | 1970-01-01T00:10:00Z | 3 | 6.0  | true  |",
            "| 1970-01-01T00:00:00Z | 1970-01-01T00:15:00Z | 3 | 6.0  | true  |",
            "| 1970-01-01T00:05:00Z | 1970-01-01T00:20:00Z | 2 | 7.5  | true  |",
        ]
    );
}

#[tokio::test]
async fn sessions_merge_across_micro_batches_and_partitions() {
    let mut job = plan(
        "SELECT window_start, window_end, customer_id, count(*) AS events, sum(amount) AS spent \
         FROM SESSION(transactions, ts, INTERVAL '10 minutes', customer_id) \
         WHERE amount > 0 \
         GROUP BY window_start, window_end, customer_id ORDER BY customer_id, window_start",
    )
    .await;
    // a: 0, 25 (separate), then 12 bridges nothing yet... 0 → [0,10); 12 → [12,22) joins neither;
    // then 20 on another partition: [20,30) touches [12,22) and, with 25's [25,35), merges all three.
    accumulate(
        &mut job,
        0,
        tx(&[
            ("a", 0, 1.0, "x"),
            ("a", 25 * MIN, 2.0, "x"),
            ("b", 3 * MIN, 5.0, "x"),
        ]),
    )
    .await;
    accumulate(&mut job, 1, tx(&[("a", 12 * MIN, 4.0, "x")])).await;
    // amount 0 is filtered out, but the event still bridges the sessions.
    accumulate(&mut job, 1, tx(&[("a", 20 * MIN, 0.0, "x")])).await;
    let w = job.windowed_mut().expect("windowed");
    let rows = w
        .fire(20 * MIN, unhurried())
        .await
        .into_result()
        .expect("fire");
    assert_eq!(
        table(&rows)[3..5],
        [
            "| 1970-01-01T00:00:00Z | 1970-01-01T00:10:00Z | a           | 1      | 1.0   | true  |",
            "| 1970-01-01T00:03:00Z | 1970-01-01T00:13:00Z | b           | 1      | 5.0   | true  |",
        ]
    );
    let rows = w
        .fire(35 * MIN, unhurried())
        .await
        .into_result()
        .expect("fire");
    assert_eq!(
        table(&rows)[3],
        "| 1970-01-01T00:12:00Z | 1970-01-01T00:35:00Z | a           | 2      | 6.0   | true  |"
    );
}

#[tokio::test]
async fn statistics_lookups_and_functions_over_the_window_result() {
    let lookups = Lookups::new(crate::config::default_sources());
    let customers = lookups
        .table(crate::config::default_source("customers"))
        .expect("a table");
    for (id, year) in [("a", 1990), ("b", 1980), ("c", 1970)] {
        let json = format!(r#"{{"customer_id":"{id}","birth_year":{year}}}"#);
        let cells = parse_record(crate::config::default_source("customers"), json.as_bytes())
            .expect("valid");
        customers
            .lock()
            .expect("lock")
            .apply([RowChange::Upsert(owned_cells(cells))]);
    }
    let mut job = plan_with(
        "SELECT window_start, window_end, t.category, count(*) AS n, median(t.amount) AS med, \
         corr(CAST(c.birth_year AS DOUBLE), t.amount) AS r, \
         approx_percentile_cont(0.5) WITHIN GROUP (ORDER BY t.amount) AS p50, \
         round(regr_slope(t.amount, CAST(c.birth_year AS DOUBLE)), 9) AS slope, \
         ntile(2) OVER (ORDER BY count(*) DESC, t.category) AS half \
         FROM TUMBLE(transactions, ts, INTERVAL '1 hour') t \
         LEFT JOIN customers c ON t.customer_id = c.customer_id \
         GROUP BY window_start, window_end, t.category \
         HAVING count(*) > 1 ORDER BY n DESC, category",
        &lookups,
    )
    .await;
    accumulate(
        &mut job,
        0,
        tx(&[
            ("a", 0, 10.0, "x"),
            ("b", 1, 20.0, "x"),
            ("c", 2, 30.0, "y"),
        ]),
    )
    .await;
    accumulate(
        &mut job,
        1,
        tx(&[("c", 3, 60.0, "x"), ("a", 4, 1.0, "y"), ("a", 5, 1.0, "z")]),
    )
    .await;
    let w = job.windowed_mut().expect("windowed");
    let rows = w
        .fire(3_600_000, unhurried())
        .await
        .into_result()
        .expect("fire");
    // x: amounts 10 (1990), 20 (1980), 60 (1970): median 20; corr(year, amount) =
    // corr([1990,1980,1970],[10,20,60]) = -500 / sqrt(200 · 1400) = -0.9449111825230679.
    // y: 30 (1970), 1 (1990): corr -1.
    // regr_slope(amount, year) = Σdxdy / Σdx²: x: -500 / 200 = -2.5; y: -290 / 200 = -1.45.
    // z has one row and is cut by HAVING.
    assert_eq!(
        table(&rows)[3..5],
        [
            "| 1970-01-01T00:00:00Z | 1970-01-01T01:00:00Z | x        | 3 | 20.0 | -0.9449111825230679 | 20.0 | -2.5  | 1    | true  |",
            "| 1970-01-01T00:00:00Z | 1970-01-01T01:00:00Z | y        | 2 | 15.5 | -1.0                | 15.5 | -1.45 | 2    | true  |",
        ]
    );
}

#[tokio::test]
async fn queries_that_cannot_run_continuously_are_explained() {
    let cases = [
        (
            "SELECT window_start, window_end, count(*) FROM HOP(transactions, ts, INTERVAL '1 minute', INTERVAL '5 minutes') WHERE window_start > TIMESTAMP '2024-01-01T00:00:00Z' GROUP BY window_start, window_end",
            "may only be grouped by",
        ),
        (
            "SELECT window_start, count(*) FROM TUMBLE(transactions, ts, INTERVAL '1 minute') GROUP BY window_start",
            "must GROUP BY window_start, window_end",
        ),
        (
            "SELECT * FROM TUMBLE(transactions, ts, INTERVAL '1 minute')",
            "must aggregate per window",
        ),
        (
            "SELECT window_start, window_end, count(*) FROM TUMBLE(transactions, ts, INTERVAL '1 month') GROUP BY window_start, window_end",
            "may not use months",
        ),
        (
            "SELECT window_start, window_end, count(*) FROM TUMBLE(transactions, nope, INTERVAL '1 minute') GROUP BY window_start, window_end",
            "has no column `nope`",
        ),
        (
            "SELECT window_start, window_end, count(*) FROM TUMBLE(customers, signup_ts, INTERVAL '1 minute') GROUP BY window_start, window_end",
            "`customers` is neither an event source nor a view over one",
        ),
        (
            "SELECT window_start, window_end, count(*) FROM SESSION(transactions, ts, INTERVAL '1 minute', customer_id) GROUP BY window_start, window_end",
            "GROUP BY its session key",
        ),
        (
            "SELECT window_start, window_end, count(*) FROM HOP(transactions, ts, INTERVAL '10 minutes', INTERVAL '5 minutes') GROUP BY window_start, window_end",
            "longer than the size",
        ),
        (
            "SELECT w.window_start, w.window_end, count(*) FROM TUMBLE(transactions, ts, INTERVAL '1 minute') w JOIN feedback f ON w.customer_id = f.customer_id GROUP BY w.window_start, w.window_end",
            "joining two event streams is not supported",
        ),
        (
            "SELECT window_start, window_end, count(*) FROM TUMBLE(transactions, ts, INTERVAL '1 minute') GROUP BY window_start, window_end, categry",
            "categry",
        ),
    ];
    for (sql, message) in cases {
        let text = format!("-- header\n{sql}");
        let query = QueryFile::parse(Path::new("q/bad.sql"), text).expect("parses");
        let err = Job::plan(query, &Lookups::new(crate::config::default_sources()), "")
            .await
            .expect_err(sql);
        assert!(err.message.contains(message), "{sql}\n→ {err}");
        assert_eq!(err.line, 2, "{err}");
    }
}

#[tokio::test]
async fn order_by_limit_and_over_apply_per_window() {
    let mut job = plan(
        "SELECT window_start, window_end, category, sum(amount) AS revenue, \
         sum(amount) / sum(sum(amount)) OVER () AS share \
         FROM TUMBLE(transactions, ts, INTERVAL '1 minute') \
         GROUP BY window_start, window_end, category ORDER BY revenue DESC LIMIT 2",
    )
    .await;
    accumulate(
        &mut job,
        0,
        tx(&[
            ("a", 0, 5.0, "x"),
            ("a", 1, 3.0, "y"),
            ("a", 2, 2.0, "z"),
            ("a", MIN, 1.0, "x"),
            ("a", MIN + 1, 4.0, "y"),
        ]),
    )
    .await;
    let w = job.windowed_mut().expect("windowed");
    let rows = w
        .fire(2 * MIN, unhurried())
        .await
        .into_result()
        .expect("fire");
    // Window 1: x 5, y 3, z 2 (total 10) → x 0.5, y 0.3. Window 2: y 4, x 1 (total 5) → y 0.8, x 0.2.
    assert_eq!(
        table(&rows)[3..7],
        [
            "| 1970-01-01T00:00:00Z | 1970-01-01T00:01:00Z | x        | 5.0     | 0.5   | true  |",
            "| 1970-01-01T00:00:00Z | 1970-01-01T00:01:00Z | y        | 3.0     | 0.3   | true  |",
            "| 1970-01-01T00:01:00Z | 1970-01-01T00:02:00Z | y        | 4.0     | 0.8   | true  |",
            "| 1970-01-01T00:01:00Z | 1970-01-01T00:02:00Z | x        | 1.0     | 0.2   | true  |",
        ]
    );
}

#[tokio::test]
async fn one_window_over_two_sources() {
    let mut job = plan(
        "SELECT window_start, window_end, \
                count(*) FILTER (WHERE kind = 'complaint') AS complaints, \
                count(*) FILTER (WHERE kind = 'transaction') AS transactions, \
                1000.0 * count(*) FILTER (WHERE kind = 'complaint') \
                  / NULLIF(count(*) FILTER (WHERE kind = 'transaction'), 0) AS per_1000 \
         FROM TUMBLE((SELECT ts, 'transaction' AS kind FROM transactions \
                      UNION ALL SELECT ts, 'complaint' AS kind FROM complaints), ts, INTERVAL '1 minute') \
         GROUP BY window_start, window_end",
    )
    .await;
    assert_eq!(
        job.windowed().expect("windowed").info.sources,
        vec![
            crate::config::default_source("transactions"),
            crate::config::default_source("complaints")
        ]
    );
    let mut complaints = BatchBuilder::new(crate::config::default_source("complaints"));
    for ts in [1, 2] {
        let json = format!(
            r#"{{"event_id":"k","customer_id":"c","ts":{ts},"complaint_id":"k{ts}","status":"opened"}}"#
        );
        complaints.append(
            &parse_record(crate::config::default_source("complaints"), json.as_bytes())
                .expect("valid"),
        );
    }
    let w = job.windowed_mut().expect("windowed");
    let sales: Vec<(&str, i64, f64, &str)> = (0..8).map(|i| ("a", 100 + i, 1.0, "x")).collect();
    w.accumulate(crate::config::default_source("transactions"), 0, tx(&sales))
        .await
        .expect("transactions");
    w.accumulate(
        crate::config::default_source("complaints"),
        0,
        complaints.finish().expect("batch"),
    )
    .await
    .expect("complaints");
    // 2 complaints for 8 transactions: 250 per 1,000.
    let rows = w.fire(MIN, unhurried()).await.into_result().expect("fire");
    assert_eq!(
        table(&rows)[3],
        "| 1970-01-01T00:00:00Z | 1970-01-01T00:01:00Z | 2          | 8            | 250.0    | true  |"
    );
    for (sql, message) in [
        (
            "SELECT window_start, window_end, count(*) FROM TUMBLE((SELECT ts FROM transactions UNION SELECT ts FROM complaints), ts, INTERVAL '1 minute') GROUP BY window_start, window_end",
            "write UNION ALL",
        ),
        (
            "SELECT window_start, window_end, count(*) FROM TUMBLE((SELECT ts AS t FROM transactions), t, INTERVAL '1 minute') GROUP BY window_start, window_end",
            "must be the sources' `ts`",
        ),
    ] {
        let query = QueryFile::parse(Path::new("q/bad.sql"), sql.to_owned()).expect("parses");
        let err = Job::plan(query, &Lookups::new(crate::config::default_sources()), "")
            .await
            .expect_err(sql);
        assert!(err.message.contains(message), "{sql}\n→ {err}");
    }
}
