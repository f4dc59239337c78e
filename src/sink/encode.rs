//! Job result rows → JSON Kafka records with deterministic keys.

use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, StringBuilder};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema, TimestampMillisecondType};
use arrow::error::ArrowError;
use arrow::json::LineDelimitedWriter;
use arrow::json::writer::LineDelimited;
use arrow::json::writer::WriterBuilder;
use arrow::record_batch::{RecordBatch, RecordBatchOptions};
use chrono::{DateTime, SecondsFormat};

use super::OutRecord;
use crate::schema::timestamp_type;

/// Writes every timestamp column as text, RFC 3339 in UTC with
/// milliseconds (naive timestamps are taken as UTC), so that all output
/// timestamps share one format. Formatted here rather than by the JSON writer (chrono's
/// `strftime` per value): a value equal to the row before's (a window's
/// bounds) is formatted once.
fn timestamps_as_text(batch: &RecordBatch) -> Result<RecordBatch, ArrowError> {
    if !batch
        .schema()
        .fields()
        .iter()
        .any(|f| matches!(f.data_type(), DataType::Timestamp(..)))
    {
        return Ok(batch.clone());
    }
    let target = timestamp_type();
    let mut fields = Vec::with_capacity(batch.num_columns());
    let mut columns = Vec::with_capacity(batch.num_columns());
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        if matches!(field.data_type(), DataType::Timestamp(..)) {
            fields.push(field.as_ref().clone().with_data_type(DataType::Utf8));
            columns.push(utc_millis_text(&cast(column, &target)?));
        } else {
            fields.push(field.as_ref().clone());
            columns.push(Arc::clone(column));
        }
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
}

/// A `Timestamp(Millisecond, _)` column as `YYYY-MM-DDTHH:MM:SS.mmmZ` text.
fn utc_millis_text(column: &ArrayRef) -> ArrayRef {
    let millis = column.as_primitive::<TimestampMillisecondType>();
    let mut text = StringBuilder::with_capacity(millis.len(), millis.len() * 24);
    let mut last: Option<(i64, String)> = None;
    for value in millis {
        match value {
            None => text.append_null(),
            Some(ms) => {
                if last.as_ref().is_none_or(|(at, _)| *at != ms) {
                    let mut formatted = String::with_capacity(24);
                    write_utc_millis(ms, &mut formatted);
                    last = Some((ms, formatted));
                }
                text.append_value(last.as_ref().map_or("", |(_, f)| f.as_str()));
            }
        }
    }
    Arc::new(text.finish())
}

/// Appends epoch milliseconds as `YYYY-MM-DDTHH:MM:SS.mmmZ` (chrono
/// outside years 0 to 9999).
fn write_utc_millis(ms: i64, out: &mut String) {
    use std::fmt::Write;
    let (days, of_day) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    let (year, month, day) = civil_from_days(days);
    if !(0..=9999).contains(&year) {
        out.push_str(&format_timestamp_millis(ms));
        return;
    }
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        of_day / 3_600_000,
        of_day / 60_000 % 60,
        of_day / 1_000 % 60,
        of_day % 1_000
    );
}

/// The proleptic Gregorian (year, month, day) of a day count from
/// 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Formats epoch milliseconds as RFC 3339 UTC with milliseconds.
pub fn format_timestamp_millis(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Encodes one job's result rows.
#[derive(Debug, Clone)]
pub struct RowEncoder {
    /// Job name, written as the `job` field and the first key field.
    pub job: String,
    /// Output topic.
    pub topic: String,
    /// `@key` columns; with none, records have no key.
    pub key_columns: Vec<String>,
}

impl RowEncoder {
    /// One record per row: `{"job", <columns…>, "emitted_at"}`, keyed by
    /// `{"job", <key columns…>}` when the job has `@key` columns. Arrow's
    /// JSON writer writes each row's columns once; the job and
    /// `emitted_at` fields are spliced around them, with no JSON value
    /// built per row.
    pub fn encode(
        &self,
        batches: &[RecordBatch],
        emitted_at_ms: i64,
    ) -> Result<Vec<OutRecord>, ArrowError> {
        let job =
            serde_json::to_string(&self.job).map_err(|e| ArrowError::JsonError(e.to_string()))?;
        let emitted_at = format!(
            "\"emitted_at\":\"{}\"",
            format_timestamp_millis(emitted_at_ms)
        );
        let origin: Arc<str> = Arc::from(self.job.as_str());
        let mut records = Vec::new();
        for batch in batches {
            let batch = timestamps_as_text(batch)?;
            let rows = json_lines(&batch)?;
            let keys = if self.key_columns.is_empty() {
                None
            } else {
                Some(json_lines(&self.key_batch(&batch)?)?)
            };
            let mut keys = keys.as_deref().map(lines);
            for row in lines(&rows) {
                let key = keys
                    .as_mut()
                    .and_then(Iterator::next)
                    .map(|columns| object_with(&job, columns, None));
                records.push(OutRecord {
                    topic: self.topic.clone(),
                    partition: None,
                    key,
                    payload: Some(object_with(&job, row, Some(&emitted_at))),
                    headers: Vec::new(),
                    job: Some(Arc::clone(&origin)),
                });
            }
        }
        Ok(records)
    }

    /// The `@key` columns of `batch`, in `@key` order; a key column the
    /// rows lack is null.
    fn key_batch(&self, batch: &RecordBatch) -> Result<RecordBatch, ArrowError> {
        let schema = batch.schema();
        let mut fields = Vec::with_capacity(self.key_columns.len());
        let mut columns = Vec::with_capacity(self.key_columns.len());
        for name in &self.key_columns {
            match schema.index_of(name) {
                Ok(i) => {
                    fields.push(schema.field(i).clone());
                    columns.push(Arc::clone(batch.column(i)));
                }
                Err(_) => {
                    fields.push(Field::new(name, DataType::Null, true));
                    columns.push(arrow::array::new_null_array(
                        &DataType::Null,
                        batch.num_rows(),
                    ));
                }
            }
        }
        RecordBatch::try_new_with_options(
            Arc::new(Schema::new(fields)),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
        )
    }
}

/// Every row of `batch` as one JSON object per line, nulls written out.
fn json_lines(batch: &RecordBatch) -> Result<Vec<u8>, ArrowError> {
    let mut out = Vec::with_capacity(batch.num_rows() * 128);
    let mut writer: LineDelimitedWriter<&mut Vec<u8>> = WriterBuilder::new()
        .with_explicit_nulls(true)
        .build::<_, LineDelimited>(&mut out);
    writer.write(batch)?;
    writer.finish()?;
    Ok(out)
}

/// The lines of `json_lines`' output.
fn lines(text: &[u8]) -> impl Iterator<Item = &[u8]> {
    text.split(|b| *b == b'\n').filter(|l| !l.is_empty())
}

/// `{"job":<job>, <the fields of object>, <last field>}`.
fn object_with(job: &str, object: &[u8], last_field: Option<&str>) -> Vec<u8> {
    let fields = object
        .strip_prefix(b"{")
        .and_then(|o| o.strip_suffix(b"}"))
        .unwrap_or_default();
    let last = last_field.unwrap_or_default();
    let mut out = Vec::with_capacity(fields.len() + job.len() + last.len() + 10);
    out.extend_from_slice(b"{\"job\":");
    out.extend_from_slice(job.as_bytes());
    for part in [fields, last.as_bytes()] {
        if !part.is_empty() {
            out.push(b',');
            out.extend_from_slice(part);
        }
    }
    out.push(b'}');
    out
}

#[cfg(test)]
mod tests {
    /// How output timestamps were written before, by chrono.
    const TIMESTAMP_FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.3fZ";

    #[test]
    fn timestamps_are_written_as_chrono_writes_them() {
        // Spread over years 0 to 9999 and beyond, with every millisecond
        // field exercised, against chrono's own formatting.
        let mut ms: i64 = -62_167_219_200_000 - 86_400_000 * 400;
        let mut step: i64 = 1;
        while ms < 253_402_300_800_000 + 86_400_000 * 400 {
            let mut fast = String::new();
            write_utc_millis(ms, &mut fast);
            let reference = DateTime::from_timestamp_millis(ms)
                .expect("in range")
                .format(TIMESTAMP_FORMAT)
                .to_string();
            let reference = if (0..=9999).contains(&civil_from_days(ms.div_euclid(86_400_000)).0) {
                reference
            } else {
                format_timestamp_millis(ms)
            };
            assert_eq!(fast, reference, "{ms}");
            ms += step;
            step = step * 3 + 7_919;
            if step > 86_400_000 * 97 {
                step = 1 + step % 86_400_017;
            }
        }
    }

    use arrow::array::{
        Float64Array, StringArray, TimestampMillisecondArray, TimestampSecondArray,
    };
    use serde_json::Value;

    use super::*;

    #[test]
    fn rows_become_json_with_job_key_and_emitted_at() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("complaint_id", DataType::Utf8, false),
            Field::new("ts", timestamp_type(), false),
            Field::new("score", DataType::Float64, true),
            Field::new(
                "naive",
                DataType::Timestamp(arrow::datatypes::TimeUnit::Second, None),
                true,
            ),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec!["k1", "k2"])),
                Arc::new(
                    TimestampMillisecondArray::from(vec![1_767_323_045_678, 0])
                        .with_timezone("UTC"),
                ),
                Arc::new(Float64Array::from(vec![Some(1.5), None])),
                Arc::new(TimestampSecondArray::from(vec![Some(60), None])),
            ],
        )
        .expect("batch");
        let encoder = RowEncoder {
            job: "alerts".into(),
            topic: "cx.metrics.alerts".into(),
            key_columns: vec!["complaint_id".into()],
        };
        let records = encoder.encode(&[batch], 1000).expect("encode");
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].topic, "cx.metrics.alerts");
        assert_eq!(
            String::from_utf8(records[0].payload.clone().expect("payload")).expect("utf8"),
            r#"{"job":"alerts","complaint_id":"k1","ts":"2026-01-02T03:04:05.678Z","score":1.5,"naive":"1970-01-01T00:01:00.000Z","emitted_at":"1970-01-01T00:00:01.000Z"}"#
        );
        assert_eq!(
            String::from_utf8(records[1].key.clone().expect("key")).expect("utf8"),
            r#"{"job":"alerts","complaint_id":"k2"}"#
        );
        let second: Value =
            serde_json::from_slice(records[1].payload.as_deref().expect("payload")).expect("json");
        assert_eq!(second["score"], Value::Null);
    }
}
