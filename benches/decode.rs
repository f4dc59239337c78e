//! JSON decode to Arrow: how many events per second one core turns from
//! Kafka payloads into validated Arrow batches.
//!
//! Groups:
//! - `decode/transactions`: 10,000 valid transaction payloads → one RecordBatch.
//! - `decode/feedback_with_10pct_invalid`: 10,000 feedback payloads, one in ten
//!   rejected (out-of-range rating), the rest → one RecordBatch.
//! - `string_keys/*`: whether to intern `category` and `channel` as Arrow
//!   dictionaries: building 100,000 values as Utf8 or as a dictionary, and
//!   DataFusion grouping 100,000 decoded transactions by them each way.
//!
//! Run: `cargo bench --bench decode`. Payloads are generated from a fixed seed.

use std::sync::Arc;

use arrow::array::{Array, RecordBatch, StringBuilder, StringDictionaryBuilder};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Int32Type, Schema};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use cxpulse::decode::{BatchBuilder, parse_record};
use cxpulse::schema::Source;
use datafusion::physical_plan::collect;
use datafusion::prelude::{SessionConfig, SessionContext};

const EVENTS: usize = 10_000;
const CATEGORIES: [&str; 6] = [
    "books",
    "games",
    "grocery",
    "fashion",
    "electronics",
    "garden",
];
const CHANNELS: [&str; 3] = ["web", "app", "store"];

/// A small deterministic generator (64-bit LCG), so runs are comparable.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
}

fn transactions() -> Vec<Vec<u8>> {
    let mut rng = Lcg(42);
    (0..EVENTS)
        .map(|i| {
            format!(
                r#"{{"event_id":"t-{i}","customer_id":"c-{}","ts":"2026-03-01T10:{:02}:{:02}.{:03}Z","amount":{}.{:02},"category":"{}","currency":"EUR","channel":"{}","items":{},"order_id":"o-{i}"}}"#,
                rng.next() % 100_000,
                rng.next() % 60,
                rng.next() % 60,
                rng.next() % 1000,
                rng.next() % 500,
                rng.next() % 100,
                CATEGORIES[(rng.next() % 6) as usize],
                CHANNELS[(rng.next() % 3) as usize],
                1 + rng.next() % 5,
            )
            .into_bytes()
        })
        .collect()
}

fn feedback() -> Vec<Vec<u8>> {
    let mut rng = Lcg(7);
    (0..EVENTS)
        .map(|i| {
            let rating = if i % 10 == 0 { 9 } else { 1 + rng.next() % 5 };
            format!(
                r#"{{"event_id":"f-{i}","customer_id":"c-{}","ts":{},"rating":{rating},"nps":{},"channel":"{}","comment":"thanks"}}"#,
                rng.next() % 100_000,
                1_772_359_200_000 + rng.next() % 3_600_000,
                rng.next() % 11,
                CHANNELS[(rng.next() % 3) as usize],
            )
            .into_bytes()
        })
        .collect()
}

fn decode_all(kind: Source, payloads: &[Vec<u8>]) -> usize {
    let mut builder = BatchBuilder::new(kind);
    let mut rejected = 0;
    for payload in payloads {
        match parse_record(kind, payload) {
            Ok(cells) => builder.append(&cells),
            Err(_) => rejected += 1,
        }
    }
    builder.finish().map(|b| b.num_rows()).unwrap_or(0) + rejected
}

fn bench_decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Elements(EVENTS as u64));
    let tx = transactions();
    group.bench_function("transactions", |b| {
        b.iter(|| {
            decode_all(
                cxpulse::config::default_sources()
                    .named("transactions")
                    .expect("declared"),
                &tx,
            )
        })
    });
    let fb = feedback();
    group.bench_function("feedback_with_10pct_invalid", |b| {
        b.iter(|| {
            decode_all(
                cxpulse::config::default_sources()
                    .named("feedback")
                    .expect("declared"),
                &fb,
            )
        })
    });
    group.finish();
}

/// The decoder's `category` and `channel` columns as they are (Utf8) and as
/// Arrow dictionaries (interned): the cost of building each, and of
/// DataFusion grouping by them, low- and high-cardinality.
fn bench_string_keys(c: &mut Criterion) {
    let kind = cxpulse::config::default_sources()
        .named("transactions")
        .expect("declared");
    let payloads: Vec<Vec<u8>> = (0..10).flat_map(|_| transactions()).collect();
    let plain = decode_batch(kind, &payloads);
    let interned = with_dictionaries(&plain, &["category", "channel"]);
    let words: Vec<&str> = (0..payloads.len())
        .map(|i| CATEGORIES[i * 7 % CATEGORIES.len()])
        .collect();

    let mut group = c.benchmark_group("string_keys");
    group.throughput(Throughput::Elements(payloads.len() as u64));
    group.bench_function("build/utf8", |b| {
        b.iter(|| {
            let mut builder = StringBuilder::new();
            words.iter().for_each(|w| builder.append_value(w));
            builder.finish().len()
        })
    });
    group.bench_function("build/dictionary", |b| {
        b.iter(|| {
            let mut builder = StringDictionaryBuilder::<Int32Type>::new();
            words.iter().for_each(|w| builder.append_value(w));
            builder.finish().len()
        })
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let queries = [
        (
            "category_channel",
            "SELECT category, channel, count(*), sum(amount) FROM tx GROUP BY category, channel",
        ),
        (
            "customer_category",
            "SELECT customer_id, category, count(*), sum(amount) FROM tx GROUP BY customer_id, category",
        ),
    ];
    for (columns, batch) in [("utf8", &plain), ("dictionary", &interned)] {
        // One partition, as the engine plans its jobs (and a plan can run again).
        let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(1));
        ctx.register_batch("tx", batch.clone()).expect("register");
        for (name, sql) in queries {
            let plan = runtime
                .block_on(async { ctx.sql(sql).await?.create_physical_plan().await })
                .expect("plan");
            group.bench_function(format!("group_by_{name}/{columns}"), |b| {
                b.iter(|| {
                    runtime
                        .block_on(collect(plan.clone(), ctx.task_ctx()))
                        .expect("run")
                        .len()
                })
            });
        }
    }
    group.finish();
}

/// Decodes `payloads` into one batch.
fn decode_batch(kind: Source, payloads: &[Vec<u8>]) -> RecordBatch {
    let mut builder = BatchBuilder::new(kind);
    for payload in payloads {
        builder.append(&parse_record(kind, payload).expect("valid"));
    }
    builder.finish().expect("batch")
}

/// `batch` with the named string columns cast to `Dictionary(Int32, Utf8)`.
fn with_dictionaries(batch: &RecordBatch, names: &[&str]) -> RecordBatch {
    let dictionary = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
    let mut fields = Vec::new();
    let mut columns = Vec::new();
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        if names.contains(&field.name().as_str()) {
            fields.push(Field::new(
                field.name(),
                dictionary.clone(),
                field.is_nullable(),
            ));
            columns.push(cast(column, &dictionary).expect("cast"));
        } else {
            fields.push(field.as_ref().clone());
            columns.push(column.clone());
        }
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).expect("batch")
}

criterion_group!(benches, bench_decode, bench_string_keys);
criterion_main!(benches);
