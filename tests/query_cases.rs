//! `cxpulse test`: the bundled query cases pass, and a case that is wrong
//! fails with a readable diff; `--update` writes the expected files. No
//! broker: the cases run offline.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_cxpulse");

/// Runs `cxpulse test ARGS` with `queries_dir` as the queries directory.
fn cxpulse_test(queries_dir: &Path, args: &[&str]) -> (bool, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = Command::new(BIN)
        .arg("test")
        .args(args)
        .env("CXPULSE__ENGINE__QUERIES_DIR", queries_dir)
        .output()
        .expect("cxpulse runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&stdout),
        String::from_utf8_lossy(&stderr)
    );
    (status.success(), text)
}

fn bundled_queries() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/queries"))
}

#[test]
fn every_bundled_job_has_a_case_and_every_case_passes() {
    let (ok, text) = cxpulse_test(bundled_queries(), &[]);
    assert!(ok, "{text}");
    for entry in std::fs::read_dir(bundled_queries()).expect("queries") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "sql") {
            let job = path
                .file_stem()
                .expect("stem")
                .to_string_lossy()
                .into_owned();
            assert!(
                text.lines()
                    .any(|l| l.starts_with(&format!("{job}/")) && l.contains(" ... ok")),
                "no passing case for {job}:\n{text}"
            );
        }
    }
    assert!(!text.contains("FAILED"), "{text}");
}

/// A queries directory with `need_by_category.sql` and a copy of its two
/// cases.
fn one_job_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::copy(
        bundled_queries().join("need_by_category.sql"),
        dir.path().join("need_by_category.sql"),
    )
    .expect("copy query");
    let from = bundled_queries().join("tests/need_by_category");
    for case in std::fs::read_dir(&from).expect("cases") {
        let case = case.expect("case").path();
        let to = dir
            .path()
            .join("tests/need_by_category")
            .join(case.file_name().expect("name"));
        std::fs::create_dir_all(&to).expect("mkdir");
        for file in std::fs::read_dir(&case).expect("files") {
            let file = file.expect("file").path();
            std::fs::copy(&file, to.join(file.file_name().expect("name"))).expect("copy");
        }
    }
    dir
}

#[test]
fn a_wrong_expectation_fails_with_the_fields_that_differ_and_update_rewrites_it() {
    let dir = one_job_copy();
    let case = dir
        .path()
        .join("tests/need_by_category/two_hours_books_and_toys");
    let expected = std::fs::read_to_string(case.join("expected.ndjson")).expect("expected");
    // Books in [10:00, 11:00) earned 10 + 30 + 20 = 60, not 61; the last
    // window's row is dropped from the expectation.
    let mut lines: Vec<String> = expected.lines().map(str::to_owned).collect();
    let books = lines
        .iter()
        .position(|l| l.contains("\"books\"") && l.contains("T10:00:00"))
        .expect("books row");
    lines[books] = lines[books].replace("\"revenue\": 60.0", "\"revenue\": 61.0");
    assert!(lines[books].contains("61.0"), "{}", lines[books]);
    let last = lines
        .iter()
        .position(|l| l.contains("\"window_start\": \"2026-01-01T11:00:00.000Z\""))
        .expect("11:00 row");
    let dropped = lines.remove(last);
    std::fs::write(case.join("expected.ndjson"), lines.join("\n")).expect("write");

    let (ok, text) = cxpulse_test(dir.path(), &["need_by_category"]);
    assert!(!ok, "{text}");
    assert!(
        text.contains("need_by_category/two_hours_books_and_toys ... FAILED"),
        "{text}"
    );
    assert!(
        text.contains("need_by_category/late_event_is_dead_lettered ... ok"),
        "{text}"
    );
    assert!(text.contains("revenue: expected 61.0, got 60.0"), "{text}");
    assert!(
        text.contains("unexpected (published, not expected)"),
        "{text}"
    );
    assert!(text.contains("2 case(s): 1 passed, 1 failed"), "{text}");

    let (ok, text) = cxpulse_test(dir.path(), &["need_by_category", "--update"]);
    assert!(ok, "{text}");
    let rewritten = std::fs::read_to_string(case.join("expected.ndjson")).expect("expected");
    let value = |line: &str| -> serde_json::Value { serde_json::from_str(line).expect("json") };
    assert!(rewritten.lines().map(value).any(|v| v == value(&dropped)));
    assert_eq!(rewritten.lines().count(), 3);
    let (ok, text) = cxpulse_test(dir.path(), &[]);
    assert!(ok, "{text}");
}

#[test]
fn a_late_event_not_expected_on_the_dead_letter_topic_fails_the_case() {
    let dir = one_job_copy();
    let case = dir
        .path()
        .join("tests/need_by_category/late_event_is_dead_lettered");
    std::fs::write(case.join("expected_deadletters.ndjson"), "").expect("write");
    let (ok, text) = cxpulse_test(dir.path(), &[]);
    assert!(!ok, "{text}");
    assert!(text.contains("dead letters:"), "{text}");
    assert!(
        text.contains(
            r#"+ {"source":"transactions","line":4,"reason":"late","job":"need_by_category"}"#
        ),
        "{text}"
    );
}

#[test]
fn a_case_for_a_job_without_a_query_names_the_missing_file() {
    let dir = one_job_copy();
    std::fs::remove_file(dir.path().join("need_by_category.sql")).expect("rm");
    let (ok, text) = cxpulse_test(dir.path(), &[]);
    assert!(!ok, "{text}");
    assert!(text.contains("need_by_category.sql"), "{text}");
    let (ok, text) = cxpulse_test(dir.path(), &["no_such_job"]);
    assert!(!ok, "{text}");
    assert!(text.contains("no test case for job no_such_job"), "{text}");
}

/// A queries directory with a shared view `big_tx` (transactions of at
/// least 20, category upper-cased) and a job windowing it.
fn view_and_job() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let write = |path: &str, text: &str| {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    };
    write(
        "views/big_tx.sql",
        "-- Transactions of at least 20.\nCREATE VIEW big_tx AS\nSELECT customer_id, ts, amount, upper(category) AS category\nFROM transactions\nWHERE amount >= 20\n",
    );
    write(
        "big_by_category.sql",
        "-- @key category\nSELECT window_start, window_end, category, count(*) AS orders, sum(amount) AS revenue\nFROM TUMBLE(big_tx, ts, INTERVAL '1 hour')\nGROUP BY window_start, window_end, category\n",
    );
    let tx = |customer: &str, time: &str, amount: f64, category: &str| {
        format!(
            r#"{{"event_id": "{customer}-{time}", "customer_id": "{customer}", "ts": "2026-01-01T{time}:00Z", "amount": {amount}, "category": "{category}"}}"#
        )
    };
    let input = [
        tx("a", "10:05", 10.0, "books"),
        tx("b", "10:10", 30.0, "books"),
        tx("a", "10:20", 20.0, "toys"),
        tx("c", "10:50", 25.0, "books"),
        tx("d", "11:05", 5.0, "toys"),
        tx("e", "11:30", 40.0, "books"),
    ];
    write(
        "tests/big_by_category/two_hours/transactions.ndjson",
        &input.join("\n"),
    );
    // 10:00-11:00: books 30 + 25 (the 10 is filtered out), toys 20;
    // 11:00-12:00: books 40 (the 5 is filtered out).
    let row = |start: &str, end: &str, category: &str, orders: i64, revenue: f64| {
        format!(
            r#"{{"job": "big_by_category", "window_start": "2026-01-01T{start}:00:00.000Z", "window_end": "2026-01-01T{end}:00:00.000Z", "category": "{category}", "orders": {orders}, "revenue": {revenue:.1}, "final": true}}"#
        )
    };
    let expected = [
        row("10", "11", "BOOKS", 2, 55.0),
        row("10", "11", "TOYS", 1, 20.0),
        row("11", "12", "BOOKS", 1, 40.0),
    ];
    write(
        "tests/big_by_category/two_hours/expected.ndjson",
        &expected.join("\n"),
    );
    dir
}

#[test]
fn a_window_over_a_shared_view_publishes_the_rows_worked_out_by_hand() {
    let dir = view_and_job();
    let (ok, text) = cxpulse_test(dir.path(), &[]);
    assert!(ok, "{text}");
    assert!(
        text.contains("big_by_category/two_hours ... ok (3 rows)"),
        "{text}"
    );
    let explain = Command::new(BIN)
        .args(["explain", "big_by_category"])
        .env("CXPULSE__ENGINE__QUERIES_DIR", dir.path())
        .output()
        .expect("explain");
    let explain = String::from_utf8_lossy(&explain.stdout);
    assert!(explain.contains("views: big_tx"), "{explain}");
    assert!(
        explain.contains("window: TUMBLE(1h) over transactions"),
        "{explain}"
    );
}

#[test]
fn check_reports_a_mistake_in_a_view_at_the_view_files_line() {
    let dir = view_and_job();
    std::fs::write(
        dir.path().join("views/big_tx.sql"),
        "-- Transactions of at least 20.\nCREATE VIEW big_tx AS\nSELECT customer_id, ts, amout\nFROM transactions\n",
    )
    .expect("write");
    let output = Command::new(BIN)
        .arg("check")
        .env("CXPULSE__ENGINE__QUERIES_DIR", dir.path())
        .output()
        .expect("check");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "{text}");
    let at = format!("{}:3:", dir.path().join("views/big_tx.sql").display());
    assert!(
        text.lines()
            .any(|l| l.starts_with("error") && l.contains(&at) && l.contains("amout")),
        "no error at {at} in:\n{text}"
    );
}

#[test]
fn update_writes_the_expected_rows_of_a_case_that_has_none_yet() {
    let dir = view_and_job();
    let expected = dir
        .path()
        .join("tests/big_by_category/two_hours/expected.ndjson");
    let by_hand = std::fs::read_to_string(&expected).expect("expected");
    std::fs::remove_file(&expected).expect("rm");
    let (ok, text) = cxpulse_test(dir.path(), &[]);
    assert!(!ok, "a case without expected rows fails: {text}");
    assert!(text.contains("expected.ndjson: cannot read"), "{text}");
    let (ok, text) = cxpulse_test(dir.path(), &["--update"]);
    assert!(ok, "{text}");
    assert!(
        text.contains("big_by_category/two_hours ... updated (3 rows, 0 dead letters)"),
        "{text}"
    );
    let values = |text: &str| -> BTreeSet<String> {
        text.lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l)
                    .expect("json")
                    .to_string()
            })
            .collect()
    };
    let written = std::fs::read_to_string(&expected).expect("written");
    assert_eq!(values(&written), values(&by_hand));
}
