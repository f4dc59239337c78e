//! Query and view files on disk, and their problems located at file:line.

use std::fmt;
use std::path::{Path, PathBuf};

/// A problem in a query file, located at file:line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct QueryError {
    /// The query file.
    pub file: PathBuf,
    /// 1-based line of the problem.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for QueryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file.display(), self.line, self.message)
    }
}

/// Lists the `*.sql` files of `dir`, sorted by name.
pub fn list_query_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "sql"))
        .collect();
    files.sort();
    Ok(files)
}

/// The 1-based line of the first line that is neither blank nor a `--`
/// comment.
pub fn first_sql_line(sql: &str) -> usize {
    sql.lines()
        .position(|l| !l.trim().is_empty() && !l.trim_start().starts_with("--"))
        .map_or(1, |i| i + 1)
}

/// The line of a sqlparser message ("… at Line: 3, Column: 7").
pub fn line_from_message(message: &str) -> Option<usize> {
    let rest = &message[message.find("Line: ")? + 6..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}
