//! `cxpulse test`: query test cases run offline, with no broker.
//!
//! A case is a folder `queries/tests/<job>/<case>/` holding one NDJSON file
//! per source (`transactions.ndjson`, …; rows in arrival order, an optional
//! `_partition` field), `expected.ndjson` (the rows the job publishes,
//! without `emitted_at`), optionally `expected_deadletters.ndjson` and a
//! `case.toml` (`description`, `tolerance`). The job runs through the
//! engine's own steps ([`crate::engine::run_offline`]).

mod compare;
mod input;

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::config::Config;
use crate::engine::run_offline;
use crate::job::plan_named;
use crate::lookup::Lookups;
pub use compare::{Diff, compare};
use input::CaseInput;
pub use input::{CaseError, DEFAULT_TOLERANCE};

/// One case folder: its job and name.
#[derive(Debug, Clone)]
pub struct CaseDir {
    /// The job (query file name without `.sql`).
    pub job: String,
    /// The case folder's name.
    pub name: String,
    /// The folder.
    pub dir: PathBuf,
}

/// The case folders under `queries_dir/tests/`, of `job` only if given,
/// sorted by job then case.
pub fn discover(queries_dir: &Path, job: Option<&str>) -> Result<Vec<CaseDir>, CaseError> {
    let root = queries_dir.join("tests");
    let mut cases = Vec::new();
    for job_dir in sorted_dirs(&root)? {
        let name = file_name(&job_dir);
        if job.is_some_and(|j| j != name) {
            continue;
        }
        for case in sorted_dirs(&job_dir)? {
            cases.push(CaseDir {
                job: name.clone(),
                name: file_name(&case),
                dir: case,
            });
        }
    }
    if let Some(job) = job
        && cases.is_empty()
    {
        return Err(CaseError::new(
            &root.join(job),
            None,
            format!("no test case for job {job} (a case is a folder under this one)"),
        ));
    }
    Ok(cases)
}

fn sorted_dirs(dir: &Path) -> Result<Vec<PathBuf>, CaseError> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| CaseError::new(dir, None, format!("cannot list: {e}")))?;
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    Ok(dirs)
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// What one case's job published and rejected.
#[derive(Debug)]
pub struct CaseOutput {
    /// Published rows, without `emitted_at`, sorted.
    pub rows: Vec<Value>,
    /// Dead letters as `{"source", "line", "reason", "job"}`, sorted.
    pub dead_letters: Vec<Value>,
    /// The fields of a row's Kafka key (`job` first), to pair rows.
    key_fields: Vec<String>,
}

/// A case's output against its expected files.
#[derive(Debug)]
pub struct CaseRun {
    /// Rows against `expected.ndjson`.
    pub rows_diff: Diff,
    /// Dead letters against `expected_deadletters.ndjson`, when the case
    /// has one.
    pub dead_letters_diff: Option<Diff>,
}

impl CaseRun {
    /// Whether the case passed.
    pub fn passed(&self) -> bool {
        self.rows_diff.is_empty() && self.dead_letters_diff.as_ref().is_none_or(Diff::is_empty)
    }
}

/// Runs one case's job (of `config`'s queries directory) on its input.
pub async fn run_case(config: &Config, case: &CaseDir) -> Result<CaseOutput, CaseError> {
    let lookups = Lookups::new(config.declared);
    let (job, query_path) = plan_named(config, &case.job, &lookups)
        .await
        .map_err(query_error)?;
    let key_fields: Vec<String> = std::iter::once("job".to_owned())
        .chain(job.record_key_columns())
        .collect();
    let CaseInput { tables, events } = input::read(&case.dir, config.declared)?;
    let output = run_offline(config, &lookups, vec![(job, query_path)], tables, events)
        .await
        .map_err(|e| CaseError::new(&case.dir, None, format!("the run failed: {e}")))?;

    let mut rows = Vec::new();
    for record in &output.records {
        let mut row: Value = serde_json::from_slice(record.payload.as_deref().unwrap_or_default())
            .map_err(|e| CaseError::new(&case.dir, None, format!("unreadable output: {e}")))?;
        if let Some(fields) = row.as_object_mut() {
            fields.remove("emitted_at");
        }
        rows.push(row);
    }
    rows.sort_by_key(Value::to_string);
    let mut dead_letters: Vec<Value> = output
        .dead_letters
        .iter()
        .map(|d| {
            let mut letter = serde_json::json!({
                "source": config.topics.source_of(config.declared, &d.topic).map_or(d.topic.as_str(), |s| s.name()),
                "line": d.offset,
                "reason": d.rejection.kind.as_str(),
            });
            if let Some(job) = &d.job {
                letter["job"] = Value::String(job.clone());
            }
            letter
        })
        .chain(output.failures.iter().map(|f| {
            let mut failure = serde_json::json!({
                "job": f.job,
                "reason": f.rejection.kind.as_str(),
            });
            if let Some((start, end)) = f.window {
                failure["window_start"] =
                    Value::String(crate::sink::format_timestamp_millis(start));
                failure["window_end"] = Value::String(crate::sink::format_timestamp_millis(end));
            }
            failure
        }))
        .collect();
    dead_letters.sort_by_key(Value::to_string);
    Ok(CaseOutput {
        rows,
        dead_letters,
        key_fields,
    })
}

/// Compares a case's output with its expected files.
pub fn check(case: &CaseDir, output: &CaseOutput) -> Result<CaseRun, CaseError> {
    let settings = input::settings(&case.dir)?;
    let expected = input::rows(&case.dir.join("expected.ndjson"))?;
    let rows_diff = compare(
        &expected,
        &output.rows,
        &output.key_fields,
        settings.tolerance,
    );
    let letters_file = case.dir.join("expected_deadletters.ndjson");
    let dead_letters_diff = if letters_file.exists() {
        let expected = input::rows(&letters_file)?;
        Some(compare(&expected, &output.dead_letters, &[], 0.0))
    } else {
        None
    };
    Ok(CaseRun {
        rows_diff,
        dead_letters_diff,
    })
}

fn query_error(e: crate::query::QueryError) -> CaseError {
    CaseError::new(&e.file, Some(e.line), e.message)
}

/// Writes what the case produced as its expected files, for review: the
/// rows always, the dead letters when there are any (or a file existed).
pub fn update(case: &CaseDir, run: &CaseOutput) -> Result<(), CaseError> {
    let write = |name: &str, rows: &[Value]| {
        let path = case.dir.join(name);
        let text: String = rows.iter().map(|r| format!("{r}\n")).collect();
        std::fs::write(&path, text)
            .map_err(|e| CaseError::new(&path, None, format!("cannot write: {e}")))
    };
    write("expected.ndjson", &run.rows)?;
    if !run.dead_letters.is_empty() || case.dir.join("expected_deadletters.ndjson").exists() {
        write("expected_deadletters.ndjson", &run.dead_letters)?;
    }
    Ok(())
}

/// Runs the cases of `job` (all jobs' when `None`), printing one line per
/// case and what differs; with `update`, rewrites their expected files.
/// Returns whether every case passed (or was updated).
pub async fn run_all(config: &Config, job: Option<&str>, update_files: bool) -> bool {
    let cases = match discover(&config.engine.queries_dir, job) {
        Ok(cases) => cases,
        Err(e) => {
            eprintln!("error: {e}");
            return false;
        }
    };
    let mut failed = 0;
    for case in &cases {
        let label = format!("{}/{}", case.job, case.name);
        let output = match run_case(config, case).await {
            Ok(output) => output,
            Err(e) => {
                failed += 1;
                println!("{label} ... error\n    {e}");
                continue;
            }
        };
        if update_files {
            match update(case, &output) {
                Ok(()) => println!(
                    "{label} ... updated ({} rows, {} dead letters)",
                    output.rows.len(),
                    output.dead_letters.len()
                ),
                Err(e) => {
                    failed += 1;
                    println!("{label} ... error\n    {e}");
                }
            }
            continue;
        }
        match check(case, &output) {
            Ok(run) if run.passed() => println!("{label} ... ok ({} rows)", output.rows.len()),
            Ok(run) => {
                failed += 1;
                println!("{label} ... FAILED");
                if !run.rows_diff.is_empty() {
                    print!("  rows:\n{}", run.rows_diff);
                }
                if let Some(diff) = run.dead_letters_diff.filter(|d| !d.is_empty()) {
                    print!("  dead letters:\n{diff}");
                }
            }
            Err(e) => {
                failed += 1;
                println!("{label} ... error\n    {e}");
            }
        }
    }
    println!(
        "{} case(s): {} passed, {failed} failed",
        cases.len(),
        cases.len() - failed
    );
    failed == 0
}
