//! The memory the engine counts against its limits, checked against what
//! the allocator actually gave out (an independent measure: every
//! allocation of this test process is counted). A limit is only as good as
//! this count: the state limit pauses consumption when the counted bytes
//! pass it, so counted bytes far below the real ones would let the process
//! grow past it.
//!
//! Each structure is filled with many small entries, where the overhead of
//! maps and batches weighs most: a million-session store is this test's
//! sessions times five.

use std::sync::Arc;

use arrow::array::{Int64Array, RecordBatch, StringArray, TimestampMillisecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use cxpulse::decode::parse_record;
use cxpulse::lookup::{KeyedTable, RowChange, owned_cells};
use cxpulse::schema::Source;
use cxpulse::window::assign::SessionSpan;
use cxpulse::window::sessions::SessionStore;
use datafusion::common::ScalarValue;
use peak_alloc::PeakAlloc;

#[global_allocator]
static ALLOCATOR: PeakAlloc = PeakAlloc;

/// The tests measure the whole process's allocations: one at a time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Bytes allocated now.
fn allocated() -> f64 {
    ALLOCATOR.current_usage() as f64
}

/// Asserts that `counted` is within a quarter of `real`.
fn close_to(what: &str, counted: usize, real: f64) {
    let ratio = counted as f64 / real;
    println!("{what}: counted {counted} bytes, allocated {real:.0}: ratio {ratio:.2}");
    assert!(
        (0.75..=1.25).contains(&ratio),
        "{what}: counted {counted} bytes for {real:.0} allocated (ratio {ratio:.2})"
    );
}

fn session_schema() -> SchemaRef {
    let ts = DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
    Arc::new(Schema::new(vec![
        Field::new("window_start", ts.clone(), true),
        Field::new("window_end", ts, true),
        Field::new("customer_id", DataType::Utf8, true),
        Field::new("count(*)[count]", DataType::Int64, true),
    ]))
}

#[test]
fn the_session_store_counts_what_its_sessions_hold() {
    const SESSIONS: usize = 200_000;
    const BATCH: usize = 2_000;
    let keys: Vec<String> = (0..SESSIONS).map(|i| format!("customer-{i:07}")).collect();
    let _serial = ONE_AT_A_TIME.lock();
    let before = allocated();
    let mut store = SessionStore::new((0, 1), 2);
    for chunk in keys.chunks(BATCH) {
        store.add_spans(
            chunk
                .iter()
                .map(|k| SessionSpan {
                    key: ScalarValue::Utf8(Some(k.clone())),
                    start: 0,
                    end: 1_000,
                })
                .collect(),
        );
        let n = chunk.len();
        let batch = RecordBatch::try_new(
            session_schema(),
            vec![
                Arc::new(TimestampMillisecondArray::from(vec![0; n]).with_timezone("UTC")),
                Arc::new(TimestampMillisecondArray::from(vec![1_000; n]).with_timezone("UTC")),
                Arc::new(StringArray::from(chunk.to_vec())),
                Arc::new(Int64Array::from(vec![1; n])),
            ],
        )
        .expect("batch");
        store.insert(&batch).expect("insert");
        // The engine drains the journal at every commit.
        drop(store.drain_changes());
    }
    assert_eq!(store.len(), SESSIONS);
    close_to("sessions", store.bytes(), allocated() - before);
}

#[test]
fn a_kept_table_counts_what_its_keys_hold() {
    const KEYS: usize = 200_000;
    let complaints = Source::named("complaints").expect("declared");
    let spec = complaints.keep().expect("complaint tables").clone();
    let events: Vec<String> = (0..KEYS)
        .map(|i| {
            format!(
                r#"{{"event_id":"e{i}","customer_id":"c{i}","ts":{},"complaint_id":"complaint-{i:07}","status":"opened","category":"billing"}}"#,
                1_767_225_600_000_i64 + i as i64
            )
        })
        .collect();
    let _serial = ONE_AT_A_TIME.lock();
    let before = allocated();
    let mut table = cxpulse::lookup::kept::KeptTable::new(spec);
    for chunk in events.chunks(5_000) {
        let mut builder = cxpulse::decode::BatchBuilder::new(complaints);
        for json in chunk {
            builder.append(&parse_record(complaints, json.as_bytes()).expect("valid"));
        }
        table
            .apply(&builder.finish().expect("batch"))
            .expect("apply");
        drop(table.drain_changes());
    }
    assert_eq!(table.len(), KEYS);
    close_to("kept table", table.bytes(), allocated() - before);
}

#[test]
fn a_table_source_counts_what_its_rows_hold() {
    const ROWS: usize = 200_000;
    let customers = Source::named("customers").expect("declared");
    let rows: Vec<String> = (0..ROWS)
        .map(|i| {
            format!(
                r#"{{"customer_id":"customer-{i:07}","birth_year":1980,"gender":"f","segment":"retail","region":"north"}}"#
            )
        })
        .collect();
    let _serial = ONE_AT_A_TIME.lock();
    let before = allocated();
    let mut table = KeyedTable::new(customers);
    let changes = rows.iter().map(|json| {
        RowChange::Upsert(owned_cells(
            parse_record(customers, json.as_bytes()).expect("valid"),
        ))
    });
    assert!(table.apply(changes).is_empty());
    assert_eq!(table.len(), ROWS);
    close_to("table source", table.bytes(), allocated() - before);
}
