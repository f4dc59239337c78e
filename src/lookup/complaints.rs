//! The complaint lookup tables, kept from the complaints events:
//!
//! * `complaint_status`: per `complaint_id`, when it was first opened and
//!   its latest status, so that a job can measure resolution times
//!   (`resolved ts - opened_ts`);
//! * `complaint_history`: per complaint, one row per status period
//!   (`valid_from` .. `valid_until`), so that a job can ask which status a
//!   complaint had at a given instant, such as a window end, whatever
//!   events after that instant have already arrived.
//!
//! Both are fed by the engine from the valid complaints events of each
//! micro-batch before the jobs run. A complaint without any event for 30
//! days of event time before every window that has yet to fire is
//! forgotten.
//!
//! The table remembers which complaints changed since the changelog last
//! recorded them ([`ComplaintTable::drain_changes`]); each is recorded as
//! the batch of its events ([`ComplaintTable::events_of`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use arrow::array::{
    Array, AsArray, RecordBatch, StringArray, StringBuilder, TimestampMillisecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::error::ArrowError;

use crate::schema::timestamp_type;
use crate::window::epoch_millis;

/// How long a complaint is kept after its last event.
pub const RETENTION_MS: i64 = 30 * 86_400_000;

/// Name of the latest-status table in queries.
pub const STATUS_TABLE: &str = "complaint_status";

/// Name of the status-period table in queries.
pub const HISTORY_TABLE: &str = "complaint_history";

/// One complaints event, as kept in a complaint's history.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct StatusEvent {
    ts: i64,
    /// Orders events at the same instant: opened, escalated, resolved.
    rank: u8,
    status: String,
    category: Option<String>,
    severity: Option<String>,
}

/// Where a complaint stands after some of its events.
#[derive(Debug, Clone, Default)]
struct Standing<'a> {
    opened_ts: Option<i64>,
    category: Option<&'a str>,
    severity: Option<&'a str>,
}

impl<'a> Standing<'a> {
    fn after(&mut self, event: &'a StatusEvent) {
        if event.status == "opened" {
            self.opened_ts = Some(self.opened_ts.map_or(event.ts, |o| o.min(event.ts)));
        }
        self.category = event.category.as_deref().or(self.category);
        self.severity = event.severity.as_deref().or(self.severity);
    }
}

/// Every complaint's events, in event-time order, with cached snapshots of
/// both tables.
#[derive(Debug, Default)]
pub struct ComplaintTable {
    events: BTreeMap<String, Vec<StatusEvent>>,
    status_snapshot: Option<RecordBatch>,
    history_snapshot: Option<RecordBatch>,
    /// Complaints added, changed or forgotten since the last drain.
    changed: BTreeSet<String>,
}

/// Schema of one complaint's events in the changelog.
pub fn events_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("ts", DataType::Int64, false),
        Field::new("status", DataType::Utf8, false),
        Field::new("category", DataType::Utf8, true),
        Field::new("severity", DataType::Utf8, true),
    ]))
}

/// `complaint_status`: `complaint_id`, `opened_ts`, `status`, `status_ts`,
/// `category`, `severity`.
pub fn status_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("complaint_id", DataType::Utf8, false),
        Field::new("opened_ts", timestamp_type(), true),
        Field::new("status", DataType::Utf8, false),
        Field::new("status_ts", timestamp_type(), false),
        Field::new("category", DataType::Utf8, true),
        Field::new("severity", DataType::Utf8, true),
    ]))
}

/// `complaint_history`: `complaint_id`, `opened_ts`, `status`, `valid_from`,
/// `valid_until` (null for the current status), `category`, `severity`.
pub fn history_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("complaint_id", DataType::Utf8, false),
        Field::new("opened_ts", timestamp_type(), true),
        Field::new("status", DataType::Utf8, false),
        Field::new("valid_from", timestamp_type(), false),
        Field::new("valid_until", timestamp_type(), true),
        Field::new("category", DataType::Utf8, true),
        Field::new("severity", DataType::Utf8, true),
    ]))
}

fn text<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a StringArray, ArrowError> {
    batch
        .column_by_name(name)
        .map(|c| c.as_string::<i32>())
        .ok_or_else(|| ArrowError::SchemaError(format!("complaints batch without `{name}`")))
}

fn optional(column: &StringArray, row: usize) -> Option<String> {
    (!column.is_null(row)).then(|| column.value(row).to_owned())
}

fn status_rank(status: &str) -> u8 {
    match status {
        "opened" => 0,
        "escalated" => 1,
        _ => 2,
    }
}

/// Builders for the columns both tables share.
struct CommonColumns {
    ids: StringBuilder,
    opened: TimestampMillisecondBuilder,
    statuses: StringBuilder,
    categories: StringBuilder,
    severities: StringBuilder,
}

impl CommonColumns {
    fn with_capacity(n: usize) -> Self {
        Self {
            ids: StringBuilder::with_capacity(n, n * 8),
            opened: TimestampMillisecondBuilder::with_capacity(n).with_timezone("UTC"),
            statuses: StringBuilder::with_capacity(n, n * 8),
            categories: StringBuilder::with_capacity(n, n * 8),
            severities: StringBuilder::with_capacity(n, n * 8),
        }
    }

    fn append(&mut self, id: &str, standing: &Standing<'_>, status: &str) {
        self.ids.append_value(id);
        self.opened.append_option(standing.opened_ts);
        self.statuses.append_value(status);
        self.categories.append_option(standing.category);
        self.severities.append_option(standing.severity);
    }
}

impl ComplaintTable {
    /// Applies a batch of complaints events, in any order; an event already
    /// known (same time and status) is ignored.
    pub fn apply(&mut self, events: &RecordBatch) -> Result<(), ArrowError> {
        let ids = text(events, "complaint_id")?;
        let statuses = text(events, "status")?;
        let categories = text(events, "category")?;
        let severities = text(events, "severity")?;
        let times = epoch_millis(
            events
                .column_by_name("ts")
                .ok_or_else(|| ArrowError::SchemaError("complaints batch without `ts`".into()))?,
        )?;
        for row in 0..events.num_rows() {
            if ids.is_null(row) || statuses.is_null(row) || times.is_null(row) {
                continue;
            }
            let status = statuses.value(row);
            let event = StatusEvent {
                ts: times.value(row),
                rank: status_rank(status),
                status: status.to_owned(),
                category: optional(categories, row),
                severity: optional(severities, row),
            };
            let id = ids.value(row);
            let history = self.events.entry(id.to_owned()).or_default();
            let at = history.partition_point(|e| (e.ts, e.rank) < (event.ts, event.rank));
            if history
                .get(at)
                .is_none_or(|e| (e.ts, e.rank) != (event.ts, event.rank))
            {
                history.insert(at, event);
                self.status_snapshot = None;
                self.history_snapshot = None;
                self.changed.insert(id.to_owned());
            }
        }
        Ok(())
    }

    /// Forgets complaints whose last event is more than [`RETENTION_MS`]
    /// before `now` (in event time).
    pub fn expire(&mut self, now: i64) {
        let before = self.events.len();
        let horizon = now.saturating_sub(RETENTION_MS);
        let changed = &mut self.changed;
        self.events.retain(|id, history| {
            let keep = history.last().is_some_and(|e| e.ts > horizon);
            if !keep {
                changed.insert(id.clone());
            }
            keep
        });
        if self.events.len() != before {
            self.status_snapshot = None;
            self.history_snapshot = None;
        }
    }

    /// The complaints added, changed or forgotten since the last call.
    pub fn drain_changes(&mut self) -> BTreeSet<String> {
        std::mem::take(&mut self.changed)
    }

    /// Every complaint known.
    pub fn ids(&self) -> Vec<String> {
        self.events.keys().cloned().collect()
    }

    /// One complaint's events in event-time order, or `None` if it is not
    /// (or no longer) known.
    pub fn events_of(&self, id: &str) -> Option<Result<RecordBatch, ArrowError>> {
        let history = self.events.get(id)?;
        let mut ts = arrow::array::Int64Builder::with_capacity(history.len());
        let mut status = StringBuilder::new();
        let mut category = StringBuilder::new();
        let mut severity = StringBuilder::new();
        for event in history {
            ts.append_value(event.ts);
            status.append_value(&event.status);
            category.append_option(event.category.as_deref());
            severity.append_option(event.severity.as_deref());
        }
        Some(RecordBatch::try_new(
            events_schema(),
            vec![
                Arc::new(ts.finish()),
                Arc::new(status.finish()),
                Arc::new(category.finish()),
                Arc::new(severity.finish()),
            ],
        ))
    }

    /// Puts back one complaint's events read from the changelog.
    pub fn restore(&mut self, id: &str, events: &RecordBatch) -> Result<(), ArrowError> {
        let column = |name: &str| {
            events.column_by_name(name).ok_or_else(|| {
                ArrowError::SchemaError(format!("complaint events without `{name}`"))
            })
        };
        let ts = column("ts")?
            .as_primitive_opt::<arrow::datatypes::Int64Type>()
            .ok_or_else(|| ArrowError::SchemaError("`ts` is not Int64".into()))?;
        let text = |name: &str| -> Result<&StringArray, ArrowError> {
            column(name)?
                .as_string_opt::<i32>()
                .ok_or_else(|| ArrowError::SchemaError(format!("`{name}` is not text")))
        };
        let (status, category, severity) = (text("status")?, text("category")?, text("severity")?);
        let mut history: Vec<StatusEvent> = (0..events.num_rows())
            .filter(|&row| ts.is_valid(row) && status.is_valid(row))
            .map(|row| StatusEvent {
                ts: ts.value(row),
                rank: status_rank(status.value(row)),
                status: status.value(row).to_owned(),
                category: optional(category, row),
                severity: optional(severity, row),
            })
            .collect();
        history.sort();
        self.events.insert(id.to_owned(), history);
        self.status_snapshot = None;
        self.history_snapshot = None;
        Ok(())
    }

    /// Number of complaints known.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Whether no complaint is known.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// `complaint_status` as one batch, sorted by `complaint_id`: the
    /// earliest `opened` time, the latest event's status and time, and the
    /// latest known category and severity.
    pub fn status_snapshot(&mut self) -> Result<RecordBatch, ArrowError> {
        if let Some(batch) = &self.status_snapshot {
            return Ok(batch.clone());
        }
        let n = self.events.len();
        let mut common = CommonColumns::with_capacity(n);
        let mut status_ts = TimestampMillisecondBuilder::with_capacity(n).with_timezone("UTC");
        for (id, history) in &self.events {
            let Some(last) = history.last() else { continue };
            let mut standing = Standing::default();
            history.iter().for_each(|e| standing.after(e));
            common.append(id, &standing, &last.status);
            status_ts.append_value(last.ts);
        }
        let batch = RecordBatch::try_new(
            status_schema(),
            vec![
                Arc::new(common.ids.finish()),
                Arc::new(common.opened.finish()),
                Arc::new(common.statuses.finish()),
                Arc::new(status_ts.finish()),
                Arc::new(common.categories.finish()),
                Arc::new(common.severities.finish()),
            ],
        )?;
        self.status_snapshot = Some(batch.clone());
        Ok(batch)
    }

    /// `complaint_history` as one batch, by `complaint_id` then time: a row
    /// per event, valid from its time until the next event's; `opened_ts`,
    /// category and severity as known at that event.
    pub fn history_snapshot(&mut self) -> Result<RecordBatch, ArrowError> {
        if let Some(batch) = &self.history_snapshot {
            return Ok(batch.clone());
        }
        let n = self.events.values().map(Vec::len).sum();
        let mut common = CommonColumns::with_capacity(n);
        let mut from = TimestampMillisecondBuilder::with_capacity(n).with_timezone("UTC");
        let mut until = TimestampMillisecondBuilder::with_capacity(n).with_timezone("UTC");
        for (id, history) in &self.events {
            let mut standing = Standing::default();
            for (i, event) in history.iter().enumerate() {
                standing.after(event);
                common.append(id, &standing, &event.status);
                from.append_value(event.ts);
                until.append_option(history.get(i + 1).map(|next| next.ts));
            }
        }
        let batch = RecordBatch::try_new(
            history_schema(),
            vec![
                Arc::new(common.ids.finish()),
                Arc::new(common.opened.finish()),
                Arc::new(common.statuses.finish()),
                Arc::new(from.finish()),
                Arc::new(until.finish()),
                Arc::new(common.categories.finish()),
                Arc::new(common.severities.finish()),
            ],
        )?;
        self.history_snapshot = Some(batch.clone());
        Ok(batch)
    }
}

#[cfg(test)]
mod tests {
    use arrow::datatypes::TimestampMillisecondType;

    use super::*;
    use crate::decode::{BatchBuilder, parse_record};
    use crate::schema::Source;

    fn events(rows: &[(&str, &str, i64, Option<&str>)]) -> RecordBatch {
        let mut builder = BatchBuilder::new(Source::named("complaints").expect("declared"));
        for (id, status, ts, category) in rows {
            let mut json = format!(
                r#"{{"event_id":"e","customer_id":"c","ts":{ts},"complaint_id":"{id}","status":"{status}""#
            );
            if let Some(c) = category {
                json.push_str(&format!(r#","category":"{c}""#));
            }
            json.push('}');
            builder.append(
                &parse_record(
                    Source::named("complaints").expect("declared"),
                    json.as_bytes(),
                )
                .expect("valid"),
            );
        }
        builder.finish().expect("batch")
    }

    fn times(batch: &RecordBatch, column: &str) -> Vec<Option<i64>> {
        let array = batch
            .column_by_name(column)
            .expect("column")
            .as_primitive::<TimestampMillisecondType>();
        array.iter().collect()
    }

    fn texts(batch: &RecordBatch, column: &str) -> Vec<Option<String>> {
        let array = batch
            .column_by_name(column)
            .expect("column")
            .as_string::<i32>();
        array.iter().map(|v| v.map(str::to_owned)).collect()
    }

    fn some(values: &[&str]) -> Vec<Option<String>> {
        values.iter().map(|v| Some((*v).to_owned())).collect()
    }

    /// k1: resolved at 500 arrives before its opening at 200; k2: opened
    /// at 100, resolved at 250, then escalated (reopened) at 300.
    fn table() -> ComplaintTable {
        let mut table = ComplaintTable::default();
        table
            .apply(&events(&[
                ("k1", "resolved", 500, None),
                ("k2", "opened", 100, Some("billing")),
                ("k2", "escalated", 300, None),
            ]))
            .expect("apply");
        table
            .apply(&events(&[
                ("k1", "opened", 200, Some("delivery")),
                ("k2", "resolved", 250, None),
                ("k2", "resolved", 250, None),
            ]))
            .expect("apply");
        table
    }

    #[test]
    fn status_has_the_first_opening_and_the_latest_event() {
        let batch = table().status_snapshot().expect("snapshot");
        assert_eq!(texts(&batch, "complaint_id"), some(&["k1", "k2"]));
        assert_eq!(times(&batch, "opened_ts"), [Some(200), Some(100)]);
        assert_eq!(texts(&batch, "status"), some(&["resolved", "escalated"]));
        assert_eq!(times(&batch, "status_ts"), [Some(500), Some(300)]);
        assert_eq!(texts(&batch, "category"), some(&["delivery", "billing"]));
    }

    #[test]
    fn history_has_one_period_per_event_in_time_order() {
        let batch = table().history_snapshot().expect("snapshot");
        assert_eq!(
            texts(&batch, "complaint_id"),
            some(&["k1", "k1", "k2", "k2", "k2"])
        );
        assert_eq!(
            texts(&batch, "status"),
            some(&["opened", "resolved", "opened", "resolved", "escalated"])
        );
        assert_eq!(
            times(&batch, "valid_from"),
            [Some(200), Some(500), Some(100), Some(250), Some(300)]
        );
        assert_eq!(
            times(&batch, "valid_until"),
            [Some(500), None, Some(250), Some(300), None]
        );
        assert_eq!(
            times(&batch, "opened_ts"),
            [Some(200), Some(200), Some(100), Some(100), Some(100)]
        );
    }

    #[test]
    fn changes_are_tracked_and_a_restored_table_is_the_same() {
        let mut live = table();
        assert_eq!(
            live.drain_changes().into_iter().collect::<Vec<_>>(),
            ["k1", "k2"]
        );
        let mut restored = ComplaintTable::default();
        for id in live.ids() {
            let events = live.events_of(&id).expect("known").expect("batch");
            restored.restore(&id, &events).expect("restore");
        }
        assert_eq!(
            restored.history_snapshot().expect("snapshot"),
            live.history_snapshot().expect("snapshot")
        );
        assert_eq!(
            restored.status_snapshot().expect("snapshot"),
            live.status_snapshot().expect("snapshot")
        );
        live.expire(300 + RETENTION_MS);
        assert_eq!(live.drain_changes().into_iter().collect::<Vec<_>>(), ["k2"]);
        assert!(live.events_of("k2").is_none(), "forgotten: a tombstone");
    }

    #[test]
    fn forgets_a_complaint_30_days_after_its_last_event() {
        let mut table = table();
        table.expire(300 + RETENTION_MS);
        assert_eq!(table.len(), 1, "k2 (last event 300) is forgotten");
        let batch = table.history_snapshot().expect("snapshot");
        assert_eq!(texts(&batch, "complaint_id"), some(&["k1", "k1"]));
    }
}
