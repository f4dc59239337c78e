//! The `complaint_status` lookup table: per `complaint_id`, when it was
//! first opened and its latest status, so that a job can measure resolution
//! times (`resolved ts - opened_ts`) and count the complaints still open.
//!
//! Fed by the engine from the valid complaints events of each micro-batch
//! before the jobs run. A complaint without any event for 30 days of event
//! time (behind the complaints watermark) is forgotten.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{
    Array, AsArray, RecordBatch, StringArray, StringBuilder, TimestampMillisecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::error::ArrowError;

use super::LookupTable;
use crate::schema::timestamp_type;
use crate::window::epoch_millis;

/// How long a complaint is kept after its last event.
pub const RETENTION_MS: i64 = 30 * 86_400_000;

/// Name of the table in queries.
pub const TABLE_NAME: &str = "complaint_status";

#[derive(Debug, Clone, Default)]
struct Complaint {
    opened_ts: Option<i64>,
    status: String,
    status_ts: i64,
    category: Option<String>,
    severity: Option<String>,
}

/// Latest known state of every complaint.
#[derive(Debug, Default)]
pub struct ComplaintTable {
    rows: BTreeMap<String, Complaint>,
    snapshot: Option<RecordBatch>,
}

/// `complaint_id`, `opened_ts`, `status`, `status_ts`, `category`, `severity`.
pub fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("complaint_id", DataType::Utf8, false),
        Field::new("opened_ts", timestamp_type(), true),
        Field::new("status", DataType::Utf8, false),
        Field::new("status_ts", timestamp_type(), false),
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

impl ComplaintTable {
    /// Applies a batch of complaints events (any order): the earliest
    /// `opened` is the opening time; the latest event gives the status; the
    /// latest known category and severity are kept.
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
            let (status, ts) = (statuses.value(row), times.value(row));
            let complaint = self.rows.entry(ids.value(row).to_owned()).or_default();
            if status == "opened" {
                complaint.opened_ts = Some(complaint.opened_ts.map_or(ts, |o| o.min(ts)));
            }
            if complaint.status.is_empty() || ts >= complaint.status_ts {
                complaint.status = status.to_owned();
                complaint.status_ts = ts;
                if !categories.is_null(row) {
                    complaint.category = Some(categories.value(row).to_owned());
                }
                if !severities.is_null(row) {
                    complaint.severity = Some(severities.value(row).to_owned());
                }
            }
        }
        if events.num_rows() > 0 {
            self.snapshot = None;
        }
        Ok(())
    }

    /// Forgets complaints whose last event is more than [`RETENTION_MS`]
    /// behind `watermark`.
    pub fn expire(&mut self, watermark: i64) {
        let before = self.rows.len();
        self.rows
            .retain(|_, c| c.status_ts > watermark.saturating_sub(RETENTION_MS));
        if self.rows.len() != before {
            self.snapshot = None;
        }
    }

    /// Number of complaints known.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether no complaint is known.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

impl LookupTable for ComplaintTable {
    fn snapshot(&mut self) -> Result<RecordBatch, ArrowError> {
        if let Some(batch) = &self.snapshot {
            return Ok(batch.clone());
        }
        let n = self.rows.len();
        let mut ids = StringBuilder::with_capacity(n, n * 8);
        let mut opened = TimestampMillisecondBuilder::with_capacity(n).with_timezone("UTC");
        let mut statuses = StringBuilder::with_capacity(n, n * 8);
        let mut status_ts = TimestampMillisecondBuilder::with_capacity(n).with_timezone("UTC");
        let mut categories = StringBuilder::with_capacity(n, n * 8);
        let mut severities = StringBuilder::with_capacity(n, n * 8);
        for (id, c) in &self.rows {
            ids.append_value(id);
            opened.append_option(c.opened_ts);
            statuses.append_value(&c.status);
            status_ts.append_value(c.status_ts);
            categories.append_option(c.category.as_deref());
            severities.append_option(c.severity.as_deref());
        }
        let batch = RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(ids.finish()),
                Arc::new(opened.finish()),
                Arc::new(statuses.finish()),
                Arc::new(status_ts.finish()),
                Arc::new(categories.finish()),
                Arc::new(severities.finish()),
            ],
        )?;
        self.snapshot = Some(batch.clone());
        Ok(batch)
    }
}

#[cfg(test)]
mod tests {
    use arrow::datatypes::TimestampMillisecondType;

    use super::*;
    use crate::decode::{BatchBuilder, parse_record};
    use crate::schema::SourceKind;

    fn events(rows: &[(&str, &str, i64, Option<&str>)]) -> RecordBatch {
        let mut builder = BatchBuilder::new(SourceKind::Complaints);
        for (id, status, ts, category) in rows {
            let mut json = format!(
                r#"{{"event_id":"e","customer_id":"c","ts":{ts},"complaint_id":"{id}","status":"{status}""#
            );
            if let Some(c) = category {
                json.push_str(&format!(r#","category":"{c}""#));
            }
            json.push('}');
            builder.append(&parse_record(SourceKind::Complaints, json.as_bytes()).expect("valid"));
        }
        builder.finish().expect("batch")
    }

    #[test]
    fn keeps_the_first_opening_and_the_latest_status() {
        let mut table = ComplaintTable::default();
        // k1 resolved before its (late) opened event arrives; k2 escalated.
        table
            .apply(&events(&[
                ("k1", "resolved", 500, None),
                ("k2", "opened", 100, Some("billing")),
            ]))
            .expect("apply");
        table
            .apply(&events(&[
                ("k1", "opened", 200, Some("delivery")),
                ("k2", "escalated", 300, None),
            ]))
            .expect("apply");
        let batch = table.snapshot().expect("snapshot");
        let ids = batch.column(0).as_string::<i32>();
        let opened = batch.column(1).as_primitive::<TimestampMillisecondType>();
        let status = batch.column(2).as_string::<i32>();
        let category = batch.column(4).as_string::<i32>();
        assert_eq!(
            (ids.value(0), opened.value(0), status.value(0)),
            ("k1", 200, "resolved")
        );
        assert!(
            category.is_null(0),
            "the opened event is older than the status"
        );
        assert_eq!(
            (ids.value(1), opened.value(1), status.value(1)),
            ("k2", 100, "escalated")
        );
        assert_eq!(category.value(1), "billing");
        // 30 days after k2's last event (300), it is forgotten; k1 (500) is kept.
        table.expire(300 + RETENTION_MS);
        assert_eq!(table.len(), 1);
    }
}
