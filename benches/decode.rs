//! JSON decode to Arrow: how many events per second one core turns from
//! Kafka payloads into validated Arrow batches.
//!
//! Groups:
//! - `decode/transactions`: 10,000 valid transaction payloads → one RecordBatch.
//! - `decode/feedback_with_10pct_invalid`: 10,000 feedback payloads, one in ten
//!   rejected (out-of-range rating), the rest → one RecordBatch.
//!
//! Run: `cargo bench --bench decode`. Payloads are generated from a fixed seed.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use cxpulse::decode::{BatchBuilder, parse_record};
use cxpulse::schema::Source;

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
        b.iter(|| decode_all(Source::named("transactions").expect("declared"), &tx))
    });
    let fb = feedback();
    group.bench_function("feedback_with_10pct_invalid", |b| {
        b.iter(|| decode_all(Source::named("feedback").expect("declared"), &fb))
    });
    group.finish();
}

criterion_group!(benches, bench_decode);
criterion_main!(benches);
