//! Shared views: `queries/views/*.sql`, each `CREATE VIEW name AS SELECT …`
//! over sources or other views. A query that names a view gets it (and the
//! views it reads) as a `WITH` clause, written on the line of the query's
//! first SQL token so that every line keeps its number.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use datafusion::sql::sqlparser::ast::Statement;
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

use super::files::{QueryError, first_sql_line, line_from_message, list_query_files};
use crate::schema::Sources;

/// One view file.
#[derive(Debug, Clone, PartialEq)]
pub struct View {
    /// The view's name (lower case).
    pub name: String,
    /// The line of the file that names it.
    pub name_line: usize,
    /// Its file.
    pub path: PathBuf,
    /// The whole file.
    pub text: String,
    /// The `SELECT …` on one line, as SQL.
    pub select: String,
    /// The tables the `SELECT` reads (lower case): the views it reads are
    /// among them.
    reads: BTreeSet<String>,
}

/// The folder of views next to the query files of `queries_dir`.
pub fn views_dir(queries_dir: &Path) -> PathBuf {
    queries_dir.join("views")
}

/// Reads every view of `dir` (none when the folder is absent); returns the
/// views that parsed and the problems of the others, each at its file and
/// line.
pub fn load(dir: &Path) -> (Vec<View>, Vec<QueryError>) {
    let Ok(files) = list_query_files(dir) else {
        return (Vec::new(), Vec::new());
    };
    let mut views: Vec<View> = Vec::new();
    let mut problems = Vec::new();
    for path in files {
        match read(&path) {
            Ok(view) if views.iter().any(|v| v.name == view.name) => problems.push(QueryError {
                line: first_sql_line(&view.text),
                message: format!("a view named {} is defined twice", view.name),
                file: path,
            }),
            Ok(view) => views.push(view),
            Err(e) => problems.push(e),
        }
    }
    (views, problems)
}

impl View {
    /// The problem of a view named like one of `sources` (it would hide
    /// the source from the queries that read it), at the line naming it.
    pub fn source_name_problem(&self, sources: Sources) -> Option<QueryError> {
        sources.named(&self.name).map(|_| QueryError {
            file: self.path.clone(),
            line: self.name_line,
            message: format!(
                "the view name {} is a source's name; choose another",
                self.name
            ),
        })
    }
}

/// Parses one view file.
fn read(path: &Path) -> Result<View, QueryError> {
    let text = std::fs::read_to_string(path).map_err(|e| QueryError {
        file: path.to_path_buf(),
        line: 1,
        message: format!("cannot read the view file: {e}"),
    })?;
    let error = |line: usize, message: String| QueryError {
        file: path.to_path_buf(),
        line,
        message,
    };
    let start = first_sql_line(&text);
    let statements = Parser::parse_sql(&GenericDialect {}, &text).map_err(|e| {
        error(
            line_from_message(&e.to_string()).unwrap_or(start),
            e.to_string(),
        )
    })?;
    let [Statement::CreateView(create)] = statements.as_slice() else {
        return Err(error(
            start,
            "a view file holds one statement: CREATE VIEW name AS SELECT …".to_owned(),
        ));
    };
    if create.materialized || !create.columns.is_empty() {
        return Err(error(
            start,
            "write CREATE VIEW name AS SELECT … (no column list, not MATERIALIZED): name the \
             columns in the SELECT"
                .to_owned(),
        ));
    }
    let name = match create.name.0.as_slice() {
        [part] => match part.as_ident() {
            Some(ident) if ident.quote_style.is_none() => ident.value.to_ascii_lowercase(),
            _ => {
                return Err(error(
                    start,
                    "write the view's name without quotes (letters, digits and _)".to_owned(),
                ));
            }
        },
        _ => {
            return Err(error(
                start,
                "a view's name has no schema or catalog part".to_owned(),
            ));
        }
    };
    let select = create.query.to_string();
    Ok(View {
        name,
        name_line: start,
        path: path.to_path_buf(),
        reads: tables_read(&select),
        text,
        select,
    })
}

/// The tables `sql` reads (lower case): the names after `FROM` and `JOIN`,
/// and the first argument of `TUMBLE`, `HOP` and `SESSION`, less the names
/// its own `WITH` queries define (`name AS (`). Comments, string literals,
/// columns and aliases are not among them.
pub fn tables_read(sql: &str) -> BTreeSet<String> {
    let tokens: Vec<Token> = Tokenizer::new(&GenericDialect {}, sql)
        .tokenize()
        .unwrap_or_default()
        .into_iter()
        .filter(|t| !matches!(t, Token::Whitespace(_)))
        .collect();
    let word = |i: usize| match tokens.get(i) {
        Some(Token::Word(w)) => Some(w),
        _ => None,
    };
    let upper = |i: usize| word(i).map(|w| w.value.to_ascii_uppercase());
    let mut read = BTreeSet::new();
    let mut defined = BTreeSet::new();
    for i in 0..tokens.len() {
        let Some(w) = word(i) else { continue };
        let name = w.value.to_ascii_lowercase();
        let after_from = i > 0 && matches!(upper(i - 1).as_deref(), Some("FROM" | "JOIN"));
        let window_table = i > 1
            && tokens.get(i - 1) == Some(&Token::LParen)
            && matches!(upper(i - 2).as_deref(), Some("TUMBLE" | "HOP" | "SESSION"));
        if after_from || window_table {
            read.insert(name.clone());
        }
        if upper(i + 1).as_deref() == Some("AS") && tokens.get(i + 2) == Some(&Token::LParen) {
            defined.insert(name);
        }
    }
    read.retain(|name| !defined.contains(name));
    read
}

/// Why views cannot be put into a query.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ViewError {
    /// Views that read each other, in the order found.
    #[error("views read each other in a cycle: {}", .0.join(" -> "))]
    Cycle(Vec<String>),
    /// A view that reads itself.
    #[error("view {0} reads itself")]
    ReadsItself(String),
    /// `WITH RECURSIVE` in a query that reads views.
    #[error("a query reading views cannot use WITH RECURSIVE")]
    Recursive,
    /// A view file that does not start with `CREATE VIEW`.
    #[error("a view file starts with CREATE VIEW")]
    NoCreate,
    /// `CREATE VIEW` without `AS`.
    #[error("no AS after CREATE VIEW")]
    NoAs,
}

/// The views `sql` reads, directly or through other views, each after the
/// views it reads. A view that reads itself, through others or not, is an
/// error naming the cycle.
pub fn used<'v>(sql: &str, views: &'v [View]) -> Result<Vec<&'v View>, ViewError> {
    fn visit<'v>(
        view: &'v View,
        views: &'v [View],
        path: &mut Vec<String>,
        out: &mut Vec<&'v View>,
    ) -> Result<(), ViewError> {
        if out.iter().any(|v| v.name == view.name) {
            return Ok(());
        }
        if path.contains(&view.name) {
            path.push(view.name.clone());
            return Err(ViewError::Cycle(path.clone()));
        }
        path.push(view.name.clone());
        for inner in views
            .iter()
            .filter(|v| v.name != view.name && view.reads.contains(&v.name))
        {
            visit(inner, views, path, out)?;
        }
        if view.reads.contains(&view.name) {
            return Err(ViewError::ReadsItself(view.name.clone()));
        }
        path.pop();
        out.push(view);
        Ok(())
    }
    let named = tables_read(sql);
    let mut out = Vec::new();
    for view in views.iter().filter(|v| named.contains(&v.name)) {
        visit(view, views, &mut Vec::new(), &mut out)?;
    }
    Ok(out)
}

/// `sql` with the views it reads as a `WITH` clause, put on the line of its
/// first SQL token (so line numbers do not move), and their names.
pub fn expand(sql: &str, views: &[View]) -> Result<(String, Vec<String>), ViewError> {
    let used = used(sql, views)?;
    if used.is_empty() {
        return Ok((sql.to_owned(), Vec::new()));
    }
    let ctes: Vec<String> = used
        .iter()
        .map(|v| format!("{} AS ({})", v.name, v.select))
        .collect();
    let ctes = ctes.join(", ");
    let start = first_token_offset(sql);
    let rest = &sql[start..];
    let keyword_end = |keyword: &str| {
        rest.get(..keyword.len())
            .filter(|w| w.eq_ignore_ascii_case(keyword))
            .and_then(|_| {
                rest[keyword.len()..]
                    .starts_with(char::is_whitespace)
                    .then_some(keyword.len())
            })
    };
    let expanded = match keyword_end("WITH") {
        Some(with) => {
            let after = start + with;
            let rest_after = sql[after..].trim_start();
            if rest_after
                .get(..9)
                .is_some_and(|w| w.eq_ignore_ascii_case("RECURSIVE"))
            {
                return Err(ViewError::Recursive);
            }
            format!("{} {ctes},{}", &sql[..after], &sql[after..])
        }
        None => format!("{}WITH {ctes} {}", &sql[..start], rest),
    };
    Ok((expanded, used.iter().map(|v| v.name.clone()).collect()))
}

/// Byte offset of the first character that is neither white space nor
/// inside a `--` or `/* */` comment.
fn first_token_offset(sql: &str) -> usize {
    let bytes = sql.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b' ' | b'\t' | b'\n' | b'\r' => i += 1,
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                i = sql[i..].find('\n').map_or(bytes.len(), |n| i + n + 1);
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                i = sql[i + 2..]
                    .find("*/")
                    .map_or(bytes.len(), |n| i + 2 + n + 2);
            }
            _ => return i,
        }
    }
    bytes.len()
}

/// The view as a query file of its own, for checking: its `SELECT` where
/// it stands in the file (the `CREATE VIEW … AS` blanked out, so errors
/// point at the view file's lines), with the views it reads expanded.
pub fn as_query_text(view: &View, views: &[View]) -> Result<String, ViewError> {
    let upper = view.text.to_ascii_uppercase();
    let create = first_token_offset(&view.text);
    if !upper[create..].starts_with("CREATE") {
        return Err(ViewError::NoCreate);
    }
    let as_at = find_word(&upper[create..], "AS").ok_or(ViewError::NoAs)? + create;
    let mut text = String::with_capacity(view.text.len());
    text.push_str(&view.text[..create]);
    text.extend(
        view.text[create..as_at + 2]
            .chars()
            .map(|c| if c == '\n' { '\n' } else { ' ' }),
    );
    text.push_str(&view.text[as_at + 2..]);
    let others: Vec<View> = views
        .iter()
        .filter(|v| v.name != view.name)
        .cloned()
        .collect();
    expand(&text, &others).map(|(sql, _)| sql)
}

/// Offset of `word` standing alone (between non-identifier characters).
fn find_word(text: &str, word: &str) -> Option<usize> {
    let is_ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let bytes = text.as_bytes();
    text.match_indices(word).map(|(i, _)| i).find(|&i| {
        (i == 0 || !is_ident(bytes[i - 1]))
            && bytes.get(i + word.len()).is_none_or(|&c| !is_ident(c))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(name: &str, select: &str) -> View {
        View {
            name: name.to_owned(),
            name_line: 1,
            path: PathBuf::from(format!("queries/views/{name}.sql")),
            text: format!("CREATE VIEW {name} AS {select}"),
            select: select.to_owned(),
            reads: tables_read(select),
        }
    }

    #[test]
    fn a_query_gets_the_views_it_reads_in_order_on_its_first_line() {
        let views = [
            view("big_tx", "SELECT * FROM enriched WHERE amount > 100"),
            view("enriched", "SELECT * FROM transactions"),
            view("unused", "SELECT * FROM feedback"),
        ];
        let sql = "-- header\n-- @key x\nSELECT x\nFROM big_tx -- a big_tx comment\n";
        let (expanded, names) = expand(sql, &views).expect("expands");
        assert_eq!(names, vec!["enriched", "big_tx"]);
        assert_eq!(
            expanded,
            "-- header\n-- @key x\nWITH enriched AS (SELECT * FROM transactions), big_tx AS (SELECT * FROM enriched WHERE amount > 100) SELECT x\nFROM big_tx -- a big_tx comment\n"
        );
        assert_eq!(expanded.lines().count(), sql.lines().count());
    }

    #[test]
    fn a_query_with_its_own_with_keeps_it_after_the_views() {
        let views = [view("v", "SELECT 1 AS a")];
        let (expanded, _) =
            expand("WITH w AS (SELECT a FROM v) SELECT * FROM w", &views).expect("expands");
        assert_eq!(
            expanded,
            "WITH v AS (SELECT 1 AS a), w AS (SELECT a FROM v) SELECT * FROM w"
        );
        // A name after WITH whose ninth byte falls inside a character.
        let (expanded, _) =
            expand("WITH ääääää AS (SELECT a FROM v) SELECT 1", &views).expect("expands");
        assert_eq!(
            expanded,
            "WITH v AS (SELECT 1 AS a), ääääää AS (SELECT a FROM v) SELECT 1"
        );
        let (same, names) = expand("SELECT 'v' FROM transactions -- v", &views).expect("expands");
        assert_eq!(same, "SELECT 'v' FROM transactions -- v");
        assert!(names.is_empty());
    }

    #[test]
    fn only_tables_read_count_not_columns_aliases_strings_or_own_ctes() {
        let views = [
            view("segment", "SELECT * FROM transactions"),
            view("big_tx", "SELECT * FROM transactions"),
        ];
        let sql = "WITH big_tx AS (SELECT * FROM transactions) SELECT segment, 'segment', sum(amount) AS segment FROM big_tx";
        let (same, names) = expand(sql, &views).expect("expands");
        assert_eq!(same, sql);
        assert!(names.is_empty(), "{names:?}");
        let (_, names) = expand("SELECT * FROM HOP(big_tx, ts, INTERVAL '1 day', INTERVAL '7 days') JOIN segment ON true", &views)
            .expect("expands");
        assert_eq!(names, vec!["segment", "big_tx"]);
        let daily = view(
            "daily_spend",
            "SELECT sum(amount) AS daily_spend FROM transactions",
        );
        assert_eq!(
            expand("SELECT * FROM daily_spend", &[daily]).map(|(_, n)| n),
            Ok(vec!["daily_spend".to_owned()])
        );
    }

    #[test]
    fn views_in_a_cycle_are_refused() {
        let views = [view("a", "SELECT * FROM b"), view("b", "SELECT * FROM a")];
        let problem = expand("SELECT * FROM a", &views).expect_err("a cycle");
        assert_eq!(
            problem.to_string(),
            "views read each other in a cycle: a -> b -> a"
        );
    }

    #[test]
    fn a_view_checks_as_a_query_on_its_own_lines() {
        let enriched = view("enriched", "SELECT * FROM transactions");
        let mut big = view("big", "");
        big.text = "-- big ones\nCREATE VIEW big AS\nSELECT *\nFROM enriched\n".to_owned();
        let text = as_query_text(&big, &[enriched, big.clone()]).expect("text");
        assert_eq!(
            text,
            "-- big ones\n                  \nWITH enriched AS (SELECT * FROM transactions) SELECT *\nFROM enriched\n"
        );
    }
}
