use std::path::Path;

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::Int64Type;

use super::*;
use crate::decode::{BatchBuilder, parse_record};
use crate::lookup::{RowChange, owned_cells};

fn lookups() -> Lookups {
    Lookups::new(crate::config::default_sources())
}

async fn plan(name: &str, sql: &str) -> Result<Job, QueryError> {
    let query = QueryFile::parse(Path::new(name), sql.to_owned())?;
    Job::plan(query, &lookups(), "cx.metrics.").await
}

fn batch(kind: Source, rows: &[&str]) -> RecordBatch {
    let mut builder = BatchBuilder::new(kind);
    for row in rows {
        builder.append(&parse_record(kind, row.as_bytes()).expect("valid row"));
    }
    builder.finish().expect("batch")
}

#[tokio::test]
async fn a_planned_job_runs_on_every_micro_batch() {
    let job = plan(
        "q/high.sql",
        "-- @key complaint_id\nSELECT complaint_id, severity FROM complaints WHERE severity = 'high'",
    )
    .await
    .expect("plans");
    assert_eq!(job.output_topic, "cx.metrics.high");
    assert_eq!(
        job.sources(),
        vec![crate::config::default_source("complaints")]
    );
    for (ids, expected) in [(["a", "b"], vec!["b"]), (["c", "d"], vec!["d"])] {
        let rows = [
            format!(
                r#"{{"event_id":"e","customer_id":"c","ts":1,"complaint_id":"{}","status":"opened","severity":"low"}}"#,
                ids[0]
            ),
            format!(
                r#"{{"event_id":"e","customer_id":"c","ts":1,"complaint_id":"{}","status":"opened","severity":"high"}}"#,
                ids[1]
            ),
        ];
        let refs: Vec<&str> = rows.iter().map(String::as_str).collect();
        let inputs = BTreeMap::from([(
            crate::config::default_source("complaints"),
            vec![batch(crate::config::default_source("complaints"), &refs)],
        )]);
        let out = job.run(&inputs).await.expect("runs");
        let got: Vec<String> = out
            .iter()
            .flat_map(|b| {
                b.column(0)
                    .as_string::<i32>()
                    .iter()
                    .flatten()
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(got, expected, "each run sees only its own micro-batch");
    }
}

#[tokio::test]
async fn the_lookup_join_sees_the_current_customers() {
    let lookups = lookups();
    let table = lookups
        .table(crate::config::default_source("customers"))
        .expect("a table");
    let query = QueryFile::parse(
        Path::new("q/enriched.sql"),
        "SELECT t.event_id, c.birth_year FROM transactions t LEFT JOIN customers c ON t.customer_id = c.customer_id".to_owned(),
    )
    .expect("parses");
    let job = Job::plan(query, &lookups, "").await.expect("plans");
    let tx = batch(
        crate::config::default_source("transactions"),
        &[r#"{"event_id":"e1","customer_id":"c1","ts":1,"amount":1,"category":"x"}"#],
    );
    let inputs = BTreeMap::from([(crate::config::default_source("transactions"), vec![tx])]);
    let before = job.run(&inputs).await.expect("runs");
    assert!(before[0].column(1).is_null(0), "no profile yet");

    let cells = parse_record(
        crate::config::default_source("customers"),
        br#"{"customer_id":"c1","birth_year":1985}"#,
    )
    .expect("valid");
    table
        .lock()
        .expect("lock")
        .apply([RowChange::Upsert(owned_cells(cells))]);
    let after = job.run(&inputs).await.expect("runs");
    assert_eq!(
        after[0].column(1).as_primitive::<Int64Type>().value(0),
        1985
    );
}

#[tokio::test]
async fn a_job_keeps_its_backfill_start_and_says_which_kept_table_it_reads() {
    let job = plan(
        "q/j.sql",
        "-- @backfill earliest\nSELECT channel FROM feedback",
    )
    .await
    .expect("plans");
    assert_eq!(job.backfill, Some(crate::query::BackfillFrom::Earliest));
    assert_eq!(job.kept_table_read(), None);
    let reader = plan(
        "q/k.sql",
        "SELECT c.complaint_id FROM complaints c JOIN complaint_status s ON c.complaint_id = s.complaint_id",
    )
    .await
    .expect("plans");
    assert_eq!(reader.backfill, None);
    assert_eq!(reader.kept_table_read(), Some("complaint_status"));
}

#[tokio::test]
async fn planning_errors_point_at_file_and_line() {
    let cases = [
        (
            "q/a.sql",
            "-- comment\nSELECT nope\nFROM feedback",
            2,
            "nope",
        ),
        (
            "q/b.sql",
            "SELECT channel, count(*) FROM feedback GROUP BY channel",
            1,
            "aggregate over a window instead",
        ),
        (
            "q/c.sql",
            "-- @key missing\nSELECT channel FROM feedback",
            1,
            "@key names column `missing`",
        ),
        (
            "q/d.sql",
            "-- x\n-- @emit every 30s\nSELECT channel FROM feedback",
            2,
            "@emit applies to windowed queries",
        ),
        (
            "q/e.sql",
            "SELECT * FROM customers",
            1,
            "reads no event source",
        ),
        (
            "q/f.sql",
            "SELECT 'x' AS job, channel FROM feedback",
            1,
            "`job` is added by cxpulse",
        ),
        ("q/g.sql", "CREATE TABLE t AS SELECT 1", 1, "not supported"),
        ("q/h.sql", "SELECT channel FROM orders", 1, "orders"),
        (
            "q/i.sql",
            "-- x\n-- @backfill 30d\nSELECT c.complaint_id FROM complaints c JOIN complaint_history h ON c.complaint_id = h.complaint_id",
            2,
            "a job reading the kept table `complaint_history` cannot be backfilled",
        ),
    ];
    for (file, sql, line, message) in cases {
        let err = plan(file, sql).await.expect_err(sql);
        assert_eq!(
            (err.file.as_path(), err.line),
            (Path::new(file), line),
            "{err}"
        );
        assert!(err.message.contains(message), "{err}");
    }
}

#[tokio::test]
async fn a_window_runs_where_its_events_are_read_when_grouped_by_the_partition_key() {
    let placed =
        |sql: &'static str| async move { plan("q/p.sql", sql).await.expect("plans").placement() };
    assert_eq!(
        placed("SELECT window_start, window_end, customer_id, count(*) AS n FROM TUMBLE(transactions, ts, INTERVAL '1 hour') GROUP BY window_start, window_end, customer_id").await,
        Placement::Local
    );
    assert_eq!(
        placed("SELECT window_start, window_end, category, count(*) AS n FROM TUMBLE(transactions, ts, INTERVAL '1 hour') GROUP BY window_start, window_end, category").await,
        Placement::Shuffled
    );
    // Ranked across customers: every group of a window in one place.
    assert_eq!(
        placed("SELECT window_start, window_end, customer_id, count(*) AS n, rank() OVER (PARTITION BY window_start ORDER BY count(*) DESC) AS r FROM TUMBLE(transactions, ts, INTERVAL '1 hour') GROUP BY window_start, window_end, customer_id").await,
        Placement::Shuffled
    );
    // Sessions keyed by the partition key stay where they are read; others
    // would need a shuffle of rows.
    assert_eq!(
        placed("SELECT window_start, window_end, customer_id, count(*) AS n FROM SESSION(transactions, ts, INTERVAL '30 minutes', customer_id) GROUP BY window_start, window_end, customer_id").await,
        Placement::Local
    );
    assert!(matches!(
        placed("SELECT window_start, window_end, category, count(*) AS n FROM SESSION(transactions, ts, INTERVAL '30 minutes', category) GROUP BY window_start, window_end, category").await,
        Placement::SingleOnly(why) if why.contains("SESSION window keyed by something else")
    ));
}

#[tokio::test]
async fn a_reader_of_kept_tables_shuffles_whole_with_a_copy_of_them_on_several_instances() {
    // Grouped by the partition key, but a window's rows join the whole
    // history table, of which each instance holds its partitions' keys.
    let sql = "SELECT e.window_start, e.window_end, e.customer_id, count(*) AS n, count(h.complaint_id) AS open FROM TUMBLE(complaints, ts, INTERVAL '1 hour') e LEFT JOIN complaint_history h ON h.complaint_id = e.complaint_id AND h.valid_from < e.window_end GROUP BY e.window_start, e.window_end, e.customer_id";
    let mut job = plan("q/k.sql", sql).await.expect("plans");
    assert_eq!(job.placement(), Placement::Shuffled);
    job.place(crate::cluster::Cluster::new(1, 0));
    assert!(!job.shuffles(), "one instance: as before");
    let windowed = job.windowed().expect("windowed");
    assert!(windowed.kept_copies().is_empty());
    assert!(!windowed.group_key_columns().is_empty());

    let mut job = plan("q/k.sql", sql).await.expect("plans");
    job.place(crate::cluster::Cluster::new(3, 1));
    assert!(job.shuffles());
    let windowed = job.windowed().expect("windowed");
    let complaints = crate::config::default_source("complaints");
    assert_eq!(
        windowed.kept_copies().keys().copied().collect::<Vec<_>>(),
        [complaints]
    );
    assert!(
        windowed.group_key_columns().is_empty(),
        "one copy: every group to one partition"
    );
    // Without a window, nothing gets a copy.
    let lookup = plan(
        "q/l.sql",
        "SELECT c.complaint_id, s.opened_ts FROM complaints c JOIN complaint_status s ON c.complaint_id = s.complaint_id",
    )
    .await
    .expect("plans");
    assert!(matches!(
        lookup.placement(),
        Placement::SingleOnly(why) if why.contains("without a window")
    ));
}
