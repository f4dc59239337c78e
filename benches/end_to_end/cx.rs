//! The customer-analytics workload: generated customers and their
//! transactions, feedback and complaints, preloaded into the source topics
//! and into one NDJSON file per source; the bundled jobs run on them by the
//! engine and, for the no-streaming ceiling, by DataFusion in batch mode.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use arrow::array::AsArray;
use arrow::datatypes::TimestampMillisecondType;
use arrow::record_batch::RecordBatch;
use cxpulse::config::Config;
use cxpulse::decode::{BatchBuilder, parse_record};
use cxpulse::job::Job;
use cxpulse::lookup::{Lookups, RowChange, owned_cells};
use cxpulse::schema::Source;
use cxpulse::tools::generate::Generator;
use rdkafka::ClientConfig;
use rdkafka::producer::FutureProducer;

use crate::cpu::cpu_seconds;
use crate::measure::{Measured, peak_rss, reset_peak_rss};

/// 2026-01-01T00:00:00Z: the generated events' start.
const START: i64 = 1_767_225_600_000;
/// Rows per batch in the batch-mode run (DataFusion's default batch size
/// is 8,192; bigger batches favour the batch run).
const BATCH_ROWS: usize = 65_536;

/// Writes the customers' profiles and the first `events` events of the
/// simulation to the source topics and to `dir/<source>.ndjson`; returns
/// the JSON bytes of the events and the simulated days they span.
pub async fn preload(config: &Config, customers: usize, events: u64, dir: &Path) -> (u64, f64) {
    let kafka: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &config.kafka.brokers)
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .create()
        .expect("producer");
    let mut files: BTreeMap<Source, BufWriter<std::fs::File>> = config
        .declared
        .all()
        .map(|s| {
            let file = std::fs::File::create(dir.join(format!("{}.ndjson", s.name())))
                .expect("events file");
            (s, BufWriter::new(file))
        })
        .collect();
    let mut simulation = Generator::new(7, customers, START).simulation().peekable();
    let (mut sent, mut bytes, mut last_ts) = (0u64, 0u64, START);
    while sent < events && simulation.peek().is_some() {
        let mut chunk = Vec::with_capacity(50_000);
        while chunk.len() < 50_000 && sent < events {
            let Some(record) = simulation.next() else {
                break;
            };
            if record.kind.is_stream() {
                sent += 1;
                bytes += record.value.len() as u64;
                last_ts = record.ts;
            }
            let file = files.get_mut(&record.kind).expect("a file per source");
            writeln!(file, "{}", record.value).expect("write events");
            chunk.push(record);
        }
        crate::preload::send_generated(&kafka, &config.topics, &chunk).await;
    }
    for file in files.values_mut() {
        file.flush().expect("flush");
    }
    (bytes, (last_ts - START) as f64 / 86_400_000.0)
}

/// The no-streaming ceiling: the jobs of `queries` planned as the engine
/// plans them, the events of `dir` decoded from their files and fed to
/// them `BATCH_ROWS` at a time, source by source, then every window up to
/// each source's latest event time less its out-of-orderness closed at
/// once (the engine's watermark follows the slowest partition, so it may
/// close a few windows fewer). No Kafka, no micro-batches, no changelog,
/// no output encoding.
pub async fn batch(config: &Config, dir: &Path, queries: &Path, events: u64) -> Measured {
    reset_peak_rss();
    let began = Instant::now();
    let cpu = cpu_seconds("self");
    let lookups = Lookups::new(config.declared);
    for table in config.declared.tables() {
        let changes = read_lines(dir, table, |line| {
            let cells = parse_record(table, line.as_bytes()).expect("a valid row");
            RowChange::Upsert(owned_cells(cells))
        });
        if let Some(rows) = lookups.table(table) {
            rows.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .apply(changes);
        }
    }
    let views = cxpulse::query::views::views_dir(queries);
    let (mut jobs, problems) =
        cxpulse::job::load_all(queries, &views, &lookups, "bench.", None).await;
    assert!(problems.is_empty(), "{problems:?}");
    let mut rows: BTreeMap<String, u64> = jobs.iter().map(|j| (j.name.clone(), 0)).collect();
    let mut latest: BTreeMap<Source, i64> = BTreeMap::new();
    for source in config.declared.streams() {
        let path = dir.join(format!("{}.ndjson", source.name()));
        let reader = BufReader::new(std::fs::File::open(&path).expect("events file"));
        let mut builder = BatchBuilder::new(source);
        let mut lines = reader.lines();
        loop {
            let line = lines.next().map(|l| l.expect("read"));
            if let Some(line) = &line {
                let cells = parse_record(source, line.as_bytes()).expect("a valid event");
                builder.append(&cells);
            }
            if builder.len() == BATCH_ROWS || (line.is_none() && !builder.is_empty()) {
                let batch = builder.finish().expect("batch");
                let times = batch
                    .column_by_name(source.time_or_key())
                    .expect("event time")
                    .as_primitive::<TimestampMillisecondType>();
                let at = latest.entry(source).or_insert(i64::MIN);
                *at = (*at).max(arrow::compute::max(times).unwrap_or(i64::MIN));
                feed(&mut jobs, &lookups, source, batch, &mut rows).await;
            }
            if line.is_none() {
                break;
            }
        }
    }
    // Close to the engine's last watermark: each source's latest event time
    // less its allowed out-of-orderness, the slowest source of the job.
    let watermark = |source: &Source| {
        let (out_of_orderness, _) = source.event_time_settings();
        latest.get(source).copied().unwrap_or(i64::MIN)
            - out_of_orderness.unwrap_or(config.engine.max_out_of_orderness_ms)
    };
    let far = Instant::now() + Duration::from_secs(86_400);
    for job in &mut jobs {
        let name = job.name.clone();
        if let Some(windowed) = job.windowed_mut() {
            let through = windowed.info.sources.iter().map(watermark).min();
            let fired = windowed.fire(through.unwrap_or(i64::MIN), far).await;
            assert!(fired.failures.is_empty(), "{:?}", fired.failures);
            *rows.entry(name).or_default() +=
                fired.rows.iter().map(|b| b.num_rows() as u64).sum::<u64>();
        }
    }
    Measured {
        events,
        seconds: began.elapsed().as_secs_f64(),
        cpu_seconds: cpu_seconds("self") - cpu,
        broker_thread_seconds: 0.0,
        peak_rss: peak_rss("self"),
        rows,
    }
}

/// One batch of `source` into its kept tables, then into every job that
/// reads it.
async fn feed(
    jobs: &mut [Job],
    lookups: &Lookups,
    source: Source,
    batch: RecordBatch,
    rows: &mut BTreeMap<String, u64>,
) {
    if let Some(kept) = lookups.kept(source) {
        kept.lock()
            .expect("kept table")
            .apply(&batch, Some(0))
            .expect("kept");
    }
    for job in jobs.iter_mut().filter(|j| j.reads(source)) {
        let name = job.name.clone();
        if let Some(windowed) = job.windowed_mut() {
            windowed
                .accumulate(source, 0, batch.clone())
                .await
                .expect("accumulate");
        } else {
            let inputs = BTreeMap::from([(source, vec![batch.clone()])]);
            let out = job.run(&inputs).await.expect("run");
            *rows.entry(name).or_default() += out.iter().map(|b| b.num_rows() as u64).sum::<u64>();
        }
    }
}

/// Every line of `dir/<source>.ndjson`, mapped.
fn read_lines<T>(dir: &Path, source: Source, f: impl Fn(&str) -> T) -> Vec<T> {
    let path = dir.join(format!("{}.ndjson", source.name()));
    BufReader::new(std::fs::File::open(path).expect("file"))
        .lines()
        .map(|l| f(&l.expect("read")))
        .collect()
}
