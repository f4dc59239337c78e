//! Helpers for the fault tests: load generated events into the source
//! topics, wait until an engine has committed every event, and read back
//! the final rows a read_committed reader sees.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cxpulse::config::Config;
use cxpulse::tools::generate::Generated;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::FutureRecord;
use rdkafka::{ClientConfig, TopicPartitionList};
use serde_json::Value;

use super::process::EngineProcess;
use super::{ReadRecord, producer, read_topic_with};

/// Produces every record to its source topic, keyed by customer (so the
/// events of one customer stay in order on one partition), and waits for
/// every acknowledgement.
pub async fn preload(config: &Config, records: &[Generated]) {
    let kafka = producer(&config.kafka.brokers);
    for chunk in records.chunks(20_000) {
        let mut acks = Vec::with_capacity(chunk.len());
        for record in chunk {
            let future = kafka
                .send_result(
                    FutureRecord::to(config.topics.source_topic(record.kind))
                        .key(&record.key)
                        .payload(&record.value),
                )
                .map_err(|(e, _)| e)
                .expect("queue record");
            acks.push(future);
        }
        for ack in futures::future::join_all(acks).await {
            ack.expect("delivery").expect("acknowledged");
        }
    }
}

/// The event topics of `config`.
pub fn event_topics(config: &Config) -> Vec<String> {
    let t = &config.topics;
    vec![
        t.transactions.clone(),
        t.feedback.clone(),
        t.complaints.clone(),
    ]
}

/// How many event records the group of `config` has not committed yet.
pub fn uncommitted(config: &Config) -> i64 {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &config.kafka.brokers)
        .set("group.id", &config.kafka.group_id)
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut wanted = TopicPartitionList::new();
    let mut ends = BTreeMap::new();
    for topic in event_topics(config) {
        let metadata = consumer
            .fetch_metadata(Some(&topic), Duration::from_secs(10))
            .expect("metadata");
        for p in metadata.topics()[0].partitions() {
            wanted.add_partition(&topic, p.id());
            let (_, high) = consumer
                .fetch_watermarks(&topic, p.id(), Duration::from_secs(10))
                .expect("watermarks");
            ends.insert((topic.clone(), p.id()), high);
        }
    }
    let committed = consumer
        .committed_offsets(wanted, Duration::from_secs(10))
        .expect("committed offsets");
    committed
        .elements()
        .iter()
        .map(|e| {
            let end = ends[&(e.topic().to_owned(), e.partition())];
            end - e.offset().to_raw().filter(|o| *o >= 0).unwrap_or(0)
        })
        .sum()
}

/// Waits until the group of `config` has committed every event.
pub fn wait_all_committed(config: &Config, timeout: Duration, log: impl Fn() -> String) {
    let started = Instant::now();
    loop {
        let left = uncommitted(config);
        if left == 0 {
            return;
        }
        assert!(
            started.elapsed() < timeout,
            "{left} events still uncommitted after {timeout:?}; engine log:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// `base` with a consumer group, output topics and dead-letter topic of
/// `run`'s own; the instance is `index` of `instances`.
pub fn run_config(base: &Config, run: &str, index: i64, instances: i64) -> Config {
    let mut config = base.clone();
    config.kafka.group_id = format!("{}-{run}", base.kafka.group_id);
    config.cluster.index = index;
    config.cluster.instances = instances;
    config.topics.output_prefix = format!("{}{run}.", base.topics.output_prefix);
    config.topics.deadletter = format!("{}.{run}", base.topics.deadletter);
    config
}

/// Waits until `engine` has committed every event of `config`, read what
/// its repartition partitions hold (jobs that shuffle), and fired every
/// window they close (windows close a few at a time, so the last ones may
/// fire after the last commit of offsets); a SIGTERM then commits the last
/// of them. Statistics come once a second, so it holds twice, 1.5 s apart.
pub fn wait_finished(config: &Config, engine: &EngineProcess, timeout: Duration) {
    let started = Instant::now();
    wait_all_committed(config, timeout, || engine.log_text());
    println!("every event committed after {:?}", started.elapsed());
    let mut seen_done = false;
    loop {
        if windows_closed(engine) {
            if seen_done {
                return;
            }
            seen_done = true;
            std::thread::sleep(Duration::from_millis(1500));
            continue;
        }
        seen_done = false;
        assert!(
            started.elapsed() < timeout,
            "windows still closing after {timeout:?}; lags:\n{}\nengine log:\n{}",
            engine
                .metrics()
                .lines()
                .filter(|l| l.starts_with("cxpulse_window_close_lag_seconds")
                    || l.starts_with("cxpulse_windows_fired_total")
                    || (l.starts_with("cxpulse_consumer_lag_records{")
                        && l.contains("-repartition")))
                .collect::<Vec<_>>()
                .join("\n"),
            engine.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Whether `engine` has nothing left to read in its repartition partitions
/// and every windowed job has closed the windows its watermark passed.
fn windows_closed(engine: &EngineProcess) -> bool {
    let body = engine.metrics();
    if !repartition_read(&body) {
        return false;
    }
    let series = |name: &str| -> BTreeMap<String, f64> {
        body.lines()
            .filter_map(|l| l.strip_prefix(name)?.strip_prefix("{job=\""))
            .filter_map(|l| {
                let (job, value) = l.split_once("\"} ")?;
                Some((job.to_owned(), value.parse().ok()?))
            })
            .collect()
    };
    // Each windowed job has a `windows_fired` series from its start; its
    // lag appears once it has fired, job by job within a firing round.
    let windowed: Vec<String> = series("cxpulse_windows_fired_total").into_keys().collect();
    let lags = series("cxpulse_window_close_lag_seconds");
    !windowed.is_empty()
        && windowed
            .iter()
            .all(|job| lags.get(job).is_some_and(|lag| *lag == 0.0))
}

/// Whether the metrics `body` show nothing left to read in the engine's
/// repartition partitions.
pub fn repartition_read(body: &str) -> bool {
    body.lines()
        .filter(|l| l.starts_with("cxpulse_consumer_lag_records{") && l.contains("-repartition\""))
        .all(|l| l.ends_with(" 0"))
}

/// One final row: output topic, Kafka key, window; the value is compared.
pub type RowId = (String, String, String, String);

/// The rows of job `from` as job `to`'s would be: the job name in the row
/// id and the `job` field replaced.
pub fn renamed(
    rows: BTreeMap<RowId, Vec<Value>>,
    from: &str,
    to: &str,
) -> BTreeMap<RowId, Vec<Value>> {
    rows.into_iter()
        .map(|((job, key, start, end), values)| {
            assert_eq!(job, from);
            let values = values
                .into_iter()
                .map(|mut v| {
                    v["job"] = Value::String(to.to_owned());
                    v
                })
                .collect();
            (
                (to.to_owned(), key.replacen(from, to, 1), start, end),
                values,
            )
        })
        .collect()
}

/// The final rows of `jobs`' output topics as a read_committed reader sees
/// them, each with how often it was seen; values without `emitted_at`.
pub fn final_rows(config: &Config, jobs: &[String]) -> BTreeMap<RowId, Vec<Value>> {
    let read = jobs.iter().flat_map(|job| {
        let topic = format!("{}{job}", config.topics.output_prefix);
        read_topic_with(
            &config.kafka.brokers,
            &topic,
            "read_committed",
            Duration::from_secs(120),
        )
        .into_iter()
        .map(move |record| (job.clone(), record))
    });
    final_rows_of(read)
}

/// The final rows among records read from jobs' output topics, each with
/// how often it was seen; values without `emitted_at`.
pub fn final_rows_of(
    read: impl IntoIterator<Item = (String, ReadRecord)>,
) -> BTreeMap<RowId, Vec<Value>> {
    let mut rows: BTreeMap<RowId, Vec<Value>> = BTreeMap::new();
    for (job, record) in read {
        let mut value: Value =
            serde_json::from_str(record.value.as_deref().unwrap_or("null")).expect("json row");
        if value["final"] == Value::Bool(false) {
            continue;
        }
        if let Some(row) = value.as_object_mut() {
            row.remove("emitted_at");
        }
        let text = |field: &str| value[field].as_str().unwrap_or_default().to_owned();
        // Rows of a stateless job have no window: the row itself tells
        // them apart (several events of one complaint share a key).
        let id = if value.get("final").is_some() {
            (
                job.clone(),
                record.key.unwrap_or_default(),
                text("window_start"),
                text("window_end"),
            )
        } else {
            (
                job.clone(),
                record.key.unwrap_or_default(),
                value.to_string(),
                String::new(),
            )
        };
        rows.entry(id).or_default().push(value);
    }
    rows
}

/// A read_committed reader that follows jobs' output topics while they are
/// written, fetch by fetch, as a dashboard does (a reader started after the
/// run reads it in a few large fetches instead).
pub struct Tail {
    stop: Arc<AtomicBool>,
    reader: std::thread::JoinHandle<Vec<(String, ReadRecord)>>,
}

impl Tail {
    /// Follows the output topics of `jobs`, which must exist, from their
    /// beginning.
    pub fn follow(config: &Config, jobs: &[String]) -> Tail {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &config.kafka.brokers)
            .set("group.id", "tail")
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed")
            .create()
            .expect("tail reader");
        let mut assigned = TopicPartitionList::new();
        let mut job_of = BTreeMap::new();
        for job in jobs {
            let topic = format!("{}{job}", config.topics.output_prefix);
            let metadata = consumer
                .fetch_metadata(Some(&topic), Duration::from_secs(10))
                .expect("metadata");
            for p in metadata.topics().iter().flat_map(|t| t.partitions()) {
                assigned
                    .add_partition_offset(&topic, p.id(), rdkafka::Offset::Beginning)
                    .expect("partition");
            }
            job_of.insert(topic, job.clone());
        }
        consumer.assign(&assigned).expect("assign");
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let reader = std::thread::spawn(move || {
            let mut read = Vec::new();
            let mut last = Instant::now();
            // Once stopped, reads on until nothing came for 3 s.
            while !(stopped.load(Ordering::Relaxed) && last.elapsed() > Duration::from_secs(3)) {
                match consumer.poll(Duration::from_millis(100)) {
                    Some(Ok(m)) => {
                        last = Instant::now();
                        read.push((job_of[m.topic()].clone(), super::read_record(&m)));
                    }
                    // A broker gone for a moment (or at the end of a failed
                    // test); what was missed shows in the comparison.
                    Some(Err(e)) => eprintln!("tail: {e}"),
                    None => {}
                }
            }
            read
        });
        Tail { stop, reader }
    }

    /// What it read, once nothing more came for 3 s.
    pub fn stop(self) -> Vec<(String, ReadRecord)> {
        self.stop.store(true, Ordering::Relaxed);
        self.reader.join().expect("tail reader")
    }
}

/// Asserts that `got` has exactly the rows of `want`, each once, with equal
/// values: floats within 1e-9 relative (sums over micro-batches of
/// different sizes round differently), everything else exactly.
pub fn assert_same_rows(
    what: &str,
    want: &BTreeMap<RowId, Vec<Value>>,
    got: &BTreeMap<RowId, Vec<Value>>,
) {
    let missing: Vec<&RowId> = want.keys().filter(|k| !got.contains_key(*k)).collect();
    let extra: Vec<&RowId> = got.keys().filter(|k| !want.contains_key(*k)).collect();
    let mut missing_per_job: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for id in want.keys() {
        let counts = missing_per_job.entry(id.0.as_str()).or_default();
        counts.1 += 1;
        if !got.contains_key(id) {
            counts.0 += 1;
        }
    }
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{what}: {} rows missing (e.g. {:?}; missing of expected, per job: {:?}), {} unexpected (e.g. {:?})",
        missing.len(),
        missing.first(),
        missing_per_job,
        extra.len(),
        extra.first()
    );
    for (id, values) in got {
        assert_eq!(
            values.len(),
            1,
            "{what}: {id:?} published {} times",
            values.len()
        );
        assert_eq!(
            want[id].len(),
            1,
            "reference: {id:?} published more than once"
        );
        assert!(
            close(&want[id][0], &values[0]),
            "{what}: {id:?}\n  uninterrupted: {}\n  this run:      {}",
            want[id][0],
            values[0]
        );
    }
}

fn close(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => x == y,
            _ => {
                let (x, y) = (
                    x.as_f64().unwrap_or(f64::NAN),
                    y.as_f64().unwrap_or(f64::NAN),
                );
                (x - y).abs() <= (1e-9 * x.abs().max(y.abs())).max(1e-12)
            }
        },
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| close(v, w)))
        }
        _ => a == b,
    }
}

/// Copies the bundled query files `jobs` (all when empty) into `dir`;
/// returns the job names.
pub fn copy_bundled(dir: &Path) -> Vec<String> {
    let bundled = Path::new(env!("CARGO_MANIFEST_DIR")).join("queries");
    let mut jobs = Vec::new();
    for entry in std::fs::read_dir(&bundled).expect("queries") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "sql") {
            let name = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default();
            std::fs::copy(&path, dir.join(format!("{name}.sql"))).expect("copy query");
            jobs.push(name.to_owned());
        }
    }
    cxpulse::tools::bundled::write_views(dir).expect("views");
    jobs.sort();
    jobs
}
