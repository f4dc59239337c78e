//! `cxpulse tail JOB`: a job's output topic as a table, from the beginning,
//! following new rows. Column widths are fixed by the first rows, so later
//! rows line up under the same header; the `job` field (the same on every
//! row) is left out.

use std::time::Duration;

use anyhow::Context;
use comfy_table::{ColumnConstraint, Table, Width};
use futures::StreamExt;
use rdkafka::message::Message;
use serde_json::Value;

use crate::config::Config;

/// Rows arriving within this time are printed together.
const FLUSH_EVERY: Duration = Duration::from_millis(500);
/// Narrowest and widest column.
const WIDTHS: (usize, usize) = (6, 28);
/// Header line only: no borders, no column or row separators.
const PRESET: &str = "     ─             ";

/// Prints the output topic of `job` (planned from `config`'s queries
/// directory) as a table; with `follow`, waits for new rows for ever,
/// otherwise stops after `idle` without new rows.
pub async fn tail(config: &Config, job: &str, follow: bool, idle: Duration) -> anyhow::Result<()> {
    let (jobs, _) = crate::job::plan_configured(config).await;
    let Some(found) = jobs.iter().find(|j| j.name == job) else {
        let known: Vec<&str> = jobs.iter().map(|j| j.name.as_str()).collect();
        anyhow::bail!(
            "no job `{job}` in {}; the jobs are: {}",
            config.engine.queries_dir.display(),
            known.join(", ")
        );
    };
    let topic = found.output_topic.clone();
    let consumer = crate::tools::topic_io::reader(config.client_config(), &topic, "tail")?;
    eprintln!(
        "{job}: reading {topic} from the beginning{}",
        if follow {
            ", following (ctrl-c stops)"
        } else {
            ""
        }
    );
    let mut stream = consumer.stream();
    let mut printer = RowPrinter::default();
    let mut pending: Vec<serde_json::Map<String, Value>> = Vec::new();
    let mut quiet_since = tokio::time::Instant::now();
    let mut flush = tokio::time::interval(FLUSH_EVERY);
    loop {
        tokio::select! {
            message = stream.next() => {
                let Some(message) = message else { break };
                let message = message.with_context(|| format!("reading {topic}"))?;
                let row = message
                    .payload()
                    .and_then(|p| serde_json::from_slice::<Value>(p).ok());
                if let Some(Value::Object(row)) = row {
                    pending.push(row);
                }
                quiet_since = tokio::time::Instant::now();
            }
            _ = flush.tick() => {
                if !pending.is_empty() {
                    print!("{}", printer.render(&pending));
                    pending.clear();
                }
                if !follow && quiet_since.elapsed() >= idle {
                    break;
                }
            }
        }
    }
    print!("{}", printer.render(&pending));
    Ok(())
}

/// Renders rows under one header with fixed column widths.
#[derive(Debug, Default)]
pub struct RowPrinter {
    /// Column names and widths, fixed by the first rows rendered.
    columns: Vec<(String, u16)>,
}

impl RowPrinter {
    /// The lines for `rows`; the first call also prints the header.
    pub fn render(&mut self, rows: &[serde_json::Map<String, Value>]) -> String {
        let Some(first) = rows.first() else {
            return String::new();
        };
        let mut table = Table::new();
        table.load_preset(PRESET).force_no_tty();
        if self.columns.is_empty() {
            self.columns = first
                .keys()
                .filter(|name| *name != "job")
                .map(|name| {
                    let widest = rows
                        .iter()
                        .map(|r| r.get(name).map_or(4, |v| cell(v).chars().count()))
                        .chain([name.chars().count()])
                        .max()
                        .unwrap_or_default();
                    let width = widest.clamp(WIDTHS.0, WIDTHS.1) + 2;
                    (name.clone(), u16::try_from(width).unwrap_or(u16::MAX))
                })
                .collect();
            table.set_header(self.columns.iter().map(|(name, _)| name.as_str()));
        }
        for row in rows {
            table.add_row(
                self.columns
                    .iter()
                    .map(|(name, _)| row.get(name).map_or_else(|| "-".to_owned(), cell)),
            );
        }
        // After the rows: constraints apply to the columns that exist.
        table.set_constraints(
            self.columns
                .iter()
                .map(|(_, w)| ColumnConstraint::Absolute(Width::Fixed(*w))),
        );
        let mut out = String::new();
        for line in table.lines() {
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// One cell: numbers with at most 4 decimals, text as is, null as `-`.
fn cell(value: &Value) -> String {
    match value {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        Value::Number(n) if n.is_f64() => {
            let text = format!("{:.4}", n.as_f64().unwrap_or_default());
            text.trim_end_matches('0').trim_end_matches('.').to_owned()
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn row(value: Value) -> serde_json::Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => unreachable!("an object"),
        }
    }

    #[test]
    fn later_rows_line_up_under_the_first_header() {
        let mut printer = RowPrinter::default();
        let first = printer.render(&[row(
            json!({"job": "need", "category": "books", "orders": 12, "share": 0.123456, "final": true}),
        )]);
        let later = printer.render(&[row(
            json!({"category": "toys", "orders": 3, "share": null, "final": false}),
        )]);
        // Widths: each column's widest text (at least 6) plus one space each side.
        let rule = "─".repeat(10 + 8 + 8 + 8);
        assert_eq!(
            first,
            format!(" category  orders  share   final\n{rule}\n books     12      0.1235  true\n")
        );
        assert_eq!(later, " toys      3       -       false\n");
    }
}
