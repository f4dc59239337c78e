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
use cxpulse::window::assign::SessionSpan;
use cxpulse::window::sessions::SessionStore;
use datafusion::common::ScalarValue;
use peak_alloc::PeakAlloc;
use rdkafka::producer::Producer;

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
    let _serial = ONE_AT_A_TIME.lock();
    const SESSIONS: usize = 200_000;
    const BATCH: usize = 2_000;
    let keys: Vec<String> = (0..SESSIONS).map(|i| format!("customer-{i:07}")).collect();
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
    let _serial = ONE_AT_A_TIME.lock();
    const KEYS: usize = 200_000;
    let complaints = cxpulse::config::default_sources()
        .named("complaints")
        .expect("declared");
    let spec = complaints.keep().expect("complaint tables").clone();
    let events: Vec<String> = (0..KEYS)
        .map(|i| {
            format!(
                r#"{{"event_id":"e{i}","customer_id":"c{i}","ts":{},"complaint_id":"complaint-{i:07}","status":"opened","category":"billing"}}"#,
                1_767_225_600_000_i64 + i as i64
            )
        })
        .collect();
    let before = allocated();
    let mut table = cxpulse::lookup::kept::KeptTable::new(spec);
    for chunk in events.chunks(5_000) {
        let mut builder = cxpulse::decode::BatchBuilder::new(complaints);
        for json in chunk {
            builder.append(&parse_record(complaints, json.as_bytes()).expect("valid"));
        }
        table
            .apply(&builder.finish().expect("batch"), Some(0))
            .expect("apply");
        drop(table.drain_changes());
    }
    assert_eq!(table.len(), KEYS);
    close_to("kept table", table.bytes(), allocated() - before);
}

#[test]
fn a_table_source_counts_what_its_rows_hold() {
    let _serial = ONE_AT_A_TIME.lock();
    const ROWS: usize = 200_000;
    let customers = cxpulse::config::default_sources()
        .named("customers")
        .expect("declared");
    let rows: Vec<String> = (0..ROWS)
        .map(|i| {
            format!(
                r#"{{"customer_id":"customer-{i:07}","birth_year":1980,"gender":"f","segment":"retail","region":"north"}}"#
            )
        })
        .collect();
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

/// A changelog of `values` pane batches of about 128 KiB each, every one
/// written twice (the second time its newer value) and a quarter of them
/// removed, as an engine writes it over time.
fn changelog_records(values: usize) -> Vec<cxpulse::sink::OutRecord> {
    use cxpulse::state::key::StateKey;
    let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
    let batch = |seed: i64| {
        RecordBatch::try_new(
            Arc::clone(&schema),
            vec![Arc::new(Int64Array::from_iter_values(
                (0..16_384).map(|i| i * seed),
            ))],
        )
        .expect("batch")
    };
    let key = |i: usize| StateKey::Pane {
        job: "memory".into(),
        fingerprint: "0".into(),
        source: "transactions".into(),
        partition: 0,
        pane_start: i as i64,
        seq: i as u64,
    };
    let mut writer = cxpulse::state::writer::ChangelogWriter::new("unused", 1);
    let mut records = Vec::new();
    for round in 1..=2 {
        for i in 0..values {
            let record = cxpulse::state::record::StateRecord {
                key: key(i),
                value: cxpulse::state::record::StateValue::Rows(batch(round * i as i64)),
            };
            records.extend(writer.put(record).expect("encode"));
        }
    }
    for i in (0..values).step_by(4) {
        records.extend(writer.delete(&key(i)));
    }
    records
}

#[test]
fn a_restore_holds_the_state_it_restores_and_not_the_changelog_besides() {
    let _serial = ONE_AT_A_TIME.lock();
    use cxpulse::state::reader::replay;
    let broker = cxpulse::tools::local_broker::LocalBroker::start().expect("broker");
    let topic = "memory-changelog";
    let records = changelog_records(400);
    let producer: rdkafka::producer::BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("message.max.bytes", "2000000")
        .create()
        .expect("producer");
    for record in &records {
        let mut out = rdkafka::producer::BaseRecord::<Vec<u8>, Vec<u8>>::to(topic).partition(0);
        if let Some(key) = &record.key {
            out = out.key(key);
        }
        if let Some(value) = &record.payload {
            out = out.payload(value);
        }
        while let Err((e, back)) = producer.send(out) {
            assert!(
                matches!(
                    e,
                    rdkafka::error::KafkaError::MessageProduction(
                        rdkafka::types::RDKafkaErrorCode::QueueFull
                    )
                ),
                "{e}"
            );
            producer.poll(std::time::Duration::from_millis(10));
            out = back;
        }
    }
    producer
        .flush(std::time::Duration::from_secs(60))
        .expect("flush");
    let client = {
        let mut client = rdkafka::ClientConfig::new();
        client
            .set("bootstrap.servers", broker.bootstrap())
            .set("receive.message.max.bytes", "2000000000");
        client
    };

    // What the engine's restore does with each final value: decode it into
    // its batch and keep it.
    let before = allocated();
    ALLOCATOR.reset_peak_usage();
    let mut state: std::collections::HashMap<cxpulse::state::key::StateKey, RecordBatch> =
        std::collections::HashMap::new();
    let began = std::time::Instant::now();
    let read = replay(&client, "memory-restore", topic, &[0], |(key, value)| {
        let (schema, batches) = cxpulse::state::value::decode(&value.value)
            .expect("decodes")
            .into_iter()
            .next()
            .expect("a frame");
        let batch = arrow::compute::concat_batches(&schema, &batches).expect("concat");
        assert!(state.insert(key, batch).is_none(), "each key once");
        Ok(())
    })
    .expect("replay");
    let took = began.elapsed();
    let held = allocated() - before;
    let peak = ALLOCATOR.peak_usage() as f64 - before;
    assert_eq!(state.len(), 300);
    assert_eq!(read.records as usize, records.len());
    let ratio = peak / held;
    println!(
        "restore: {} records read twice in {took:?}, {:.1} MiB of state held, peak {:.1} MiB: {ratio:.2}x",
        read.records,
        held / f64::from(1 << 20),
        peak / f64::from(1 << 20)
    );
    assert!(
        ratio <= 1.5,
        "a restore peaked at {ratio:.2}x the state it restored"
    );
}
