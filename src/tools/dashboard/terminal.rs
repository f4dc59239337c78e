//! The live view full-screen, drawn with ratatui: sources, satisfaction,
//! top categories, RFM segments and rows per job.

use std::time::Duration;

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Style, Stylize};
use ratatui::text::Line;
use ratatui::widgets::{Block, Row, Table};

use super::Snapshot;
use super::plain::number;

/// Draws one frame: `now` against `earlier` (taken `elapsed` before), with
/// `header` (where to look) on top.
pub fn draw(
    frame: &mut Frame<'_>,
    header: &[String],
    now: &Snapshot,
    earlier: &Snapshot,
    elapsed: Duration,
) {
    // Jobs in two columns; borders and header take three lines.
    let jobs_per_column = now.job_rows.len().div_ceil(2);
    let [top, sources, middle, jobs, footer] = Layout::vertical([
        Constraint::Length(header.len() as u16 + 2),
        Constraint::Length(now.sources.len() as u16 + 3),
        Constraint::Min(8),
        Constraint::Length(jobs_per_column as u16 + 3),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    let title = format!(
        " cxpulse demo · event time {} ",
        now.event_time().unwrap_or_else(|| "-".to_owned())
    );
    let lines: Vec<Line<'_>> = header.iter().map(|h| Line::from(h.as_str())).collect();
    frame.render_widget(
        ratatui::widgets::Paragraph::new(lines).block(Block::bordered().title(title.bold())),
        top,
    );

    let rates = now.rates(earlier, elapsed);
    let source_rows = now.sources.iter().map(|(source, l)| {
        Row::new(vec![
            (*source).to_owned(),
            format!("{:.0}", rates.get(source).copied().unwrap_or_default()),
            format!("{}", l.consumed),
            format!("{}", l.invalid),
            format!("{}", l.late),
            l.watermark
                .and_then(|w| chrono::DateTime::from_timestamp_millis((w * 1000.0) as i64))
                .map_or_else(
                    || "-".to_owned(),
                    |t| t.format("%Y-%m-%d %H:%M:%S").to_string(),
                ),
        ])
    });
    frame.render_widget(
        table(
            source_rows,
            &["source", "events/s", "read", "invalid", "late", "watermark"],
            &[12, 9, 10, 8, 8, 20],
            " Events in ",
        ),
        sources,
    );

    let [satisfaction, categories, segments] = Layout::horizontal([
        Constraint::Percentage(40),
        Constraint::Percentage(30),
        Constraint::Percentage(30),
    ])
    .areas(middle);
    let satisfaction_rows = now
        .satisfaction
        .iter()
        .map(|((channel, topic), (nps, csat))| {
            Row::new(vec![
                channel.clone(),
                topic.clone(),
                number(*nps, 1),
                number(*csat, 2),
            ])
        });
    frame.render_widget(
        table(
            satisfaction_rows,
            &["channel", "topic", "NPS", "CSAT"],
            &[8, 10, 7, 6],
            " Satisfaction, latest hour ",
        ),
        satisfaction,
    );
    let category_rows = now
        .top_categories(8)
        .into_iter()
        .map(|(c, r)| Row::new(vec![c.to_owned(), format!("{r:.2}")]));
    frame.render_widget(
        table(
            category_rows,
            &["category", "revenue"],
            &[12, 12],
            " Top categories, latest hour ",
        ),
        categories,
    );
    let segment_rows = now
        .segments
        .iter()
        .map(|(s, n)| Row::new(vec![s.clone(), format!("{n}")]));
    frame.render_widget(
        table(
            segment_rows,
            &["segment", "customers"],
            &[19, 9],
            " RFM segments, latest day ",
        ),
        segments,
    );

    let job_rows: Vec<Row<'_>> = now
        .job_rows
        .iter()
        .map(|(job, rows)| Row::new(vec![job.clone(), format!("{rows}")]))
        .collect();
    let [left, right] =
        Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(jobs);
    let mut rows = job_rows.into_iter();
    let first: Vec<Row<'_>> = rows.by_ref().take(jobs_per_column).collect();
    frame.render_widget(
        table(first, &["job", "rows published"], &[26, 14], " Jobs "),
        left,
    );
    frame.render_widget(
        table(rows, &["job", "rows published"], &[26, 14], " "),
        right,
    );
    frame.render_widget(
        Line::from(" q or ctrl-c: stop the demo (and the broker it started)").dim(),
        footer,
    );
}

fn table<'a>(
    rows: impl IntoIterator<Item = Row<'a>>,
    header: &[&'a str],
    widths: &[u16],
    title: &'a str,
) -> Table<'a> {
    Table::new(rows, widths.iter().map(|w| Constraint::Length(*w)))
        .header(Row::new(header.to_vec()).style(Style::new().bold()))
        .block(Block::bordered().title(title))
}
