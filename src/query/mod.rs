//! Query files: `queries/<job>.sql`, one continuous job each.
//!
//! A file is a single SQL `SELECT` with header comments `-- @name value` that
//! set job options. [`QueryFile::parse`] reads the options; planning the SQL
//! happens in [`crate::job`].

mod files;
mod options;
pub mod views;

use std::path::{Path, PathBuf};

pub use files::{QueryError, first_sql_line, line_from_message, list_query_files};
pub use options::{BackfillFrom, EmitMode, GaugeSpec, JobOptions, OptionError};

/// Name of the column the engine adds to windowed rows: whether the row is
/// its window's final result.
pub const FINAL_COLUMN: &str = "final";

/// Output columns the engine adds to rows; a query may not produce them.
pub const RESERVED_COLUMNS: &[&str] = &["job", "emitted_at", FINAL_COLUMN];

/// A parsed query file: job name, options and SQL text.
#[derive(Debug, Clone)]
pub struct QueryFile {
    /// Job name: the file name without `.sql`.
    pub name: String,
    /// Where the file was read from.
    pub path: PathBuf,
    /// The whole file, passed to DataFusion as is (headers are SQL comments),
    /// so DataFusion's line numbers are file line numbers.
    pub sql: String,
    /// Options from the header lines.
    pub options: JobOptions,
    /// The shared views the query reads (`queries/views/`), expanded into
    /// [`Self::sql`] as a `WITH` clause.
    pub views: Vec<String>,
}

impl QueryFile {
    /// Reads and parses one query file, with the shared views of
    /// `views_dir` expanded.
    pub fn read(path: &Path, views_dir: &Path) -> Result<QueryFile, QueryError> {
        let text = std::fs::read_to_string(path).map_err(|e| QueryError {
            file: path.to_path_buf(),
            line: 1,
            message: format!("cannot read the query file: {e}"),
        })?;
        let mut query = Self::parse(path, text)?;
        let (views, problems) = views::load(views_dir);
        let error = |message: String| QueryError {
            file: path.to_path_buf(),
            line: first_sql_line(&query.sql),
            message,
        };
        let reads = views::tables_read(&query.sql);
        if let Some(problem) = problems.iter().find(|p| {
            p.file
                .file_stem()
                .is_some_and(|stem| reads.contains(&stem.to_string_lossy().to_ascii_lowercase()))
        }) {
            return Err(error(format!("reads a view that has an error: {problem}")));
        }
        let (sql, used) = views::expand(&query.sql, &views).map_err(|e| error(e.to_string()))?;
        query.sql = sql;
        query.views = used;
        Ok(query)
    }

    /// Parses a query file's text; `path` names the job and locates errors.
    pub fn parse(path: &Path, text: String) -> Result<QueryFile, QueryError> {
        let error = |line: usize, message: String| QueryError {
            file: path.to_path_buf(),
            line,
            message,
        };
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_owned();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            || name.starts_with(|c: char| c.is_ascii_digit())
        {
            return Err(error(
                1,
                format!(
                    "job name {name:?} (the file name) must be lowercase letters, digits and '_', \
                     starting with a letter, because it names the output topic and metrics"
                ),
            ));
        }
        let options = JobOptions::parse(&text).map_err(|(line, message)| error(line, message))?;
        if text
            .lines()
            .all(|l| l.trim().is_empty() || l.trim_start().starts_with("--"))
        {
            return Err(error(
                1,
                "the file has no SQL statement; write one SELECT".to_owned(),
            ));
        }
        Ok(QueryFile {
            name,
            path: path.to_path_buf(),
            sql: text,
            options,
            views: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_come_from_parser_messages_and_the_first_sql_line() {
        assert_eq!(
            line_from_message("sql parser error: Expected: x at Line: 3, Column: 5"),
            Some(3)
        );
        assert_eq!(line_from_message("no position"), None);
        assert_eq!(first_sql_line("-- header\n\n  SELECT 1\n"), 3);
    }

    fn parse(name: &str, text: &str) -> Result<QueryFile, QueryError> {
        QueryFile::parse(Path::new(name), text.to_owned())
    }

    #[test]
    fn views_are_read_from_the_views_folder_given() {
        let root = tempfile::tempdir().expect("tempdir");
        let (queries, views) = (root.path().join("q"), root.path().join("v"));
        std::fs::create_dir_all(&queries).expect("mkdir");
        std::fs::create_dir_all(&views).expect("mkdir");
        let job = queries.join("big.sql");
        std::fs::write(&job, "SELECT * FROM big_tx").expect("write");
        std::fs::write(
            views.join("big_tx.sql"),
            "CREATE VIEW big_tx AS SELECT * FROM transactions WHERE amount > 100",
        )
        .expect("write");
        let q = QueryFile::read(&job, &views).expect("reads");
        assert_eq!(q.views, vec!["big_tx".to_owned()]);
        assert!(q.sql.starts_with("WITH big_tx AS ("), "{}", q.sql);
        // Not beside the queries: there the query reads a table of that name.
        let beside = QueryFile::read(&job, &views::views_dir(&queries)).expect("reads");
        assert_eq!(
            (beside.views.len(), beside.sql.as_str()),
            (0, "SELECT * FROM big_tx")
        );
    }

    #[test]
    fn job_name_comes_from_the_file_name() {
        let q = parse("queries/complaint_alerts.sql", "SELECT 1").expect("valid");
        assert_eq!(q.name, "complaint_alerts");
        assert_eq!(q.sql, "SELECT 1");
    }

    #[test]
    fn bad_job_names_and_empty_files_are_rejected_at_line_1() {
        let e = parse("queries/Bad-Name.sql", "SELECT 1").expect_err("bad name");
        assert_eq!(e.line, 1);
        assert!(
            e.to_string()
                .starts_with("queries/Bad-Name.sql:1: job name \"Bad-Name\""),
            "{e}"
        );
        let e = parse("queries/empty.sql", "-- @key a\n\n-- nothing\n").expect_err("no sql");
        assert_eq!(
            e.to_string(),
            "queries/empty.sql:1: the file has no SQL statement; write one SELECT"
        );
    }
}
