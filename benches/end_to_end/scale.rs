//! What several instances cost: CPU per event of the same jobs on one
//! instance and on several, and the bytes a run wrote to its jobs'
//! repartition topics (`<group>-<job>-<version>-repartition`), which carry the
//! partial aggregates and watermark marks of the jobs that shuffle.

use std::path::Path;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use serde_json::{Value, json};

use crate::measure::{EngineRun, Measured, RECEIVE_MAX};

/// Bytes (keys, values and headers) and records committed to the
/// repartition topics of consumer group `group`'s jobs, and those topics.
pub fn repartition_bytes(bootstrap: &str, group: &str) -> (u64, u64, Vec<String>) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "bench-repartition")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        .set("receive.message.max.bytes", RECEIVE_MAX)
        .create()
        .expect("consumer");
    let metadata = consumer
        .fetch_metadata(None, Duration::from_secs(10))
        .expect("metadata");
    let mut all = TopicPartitionList::new();
    let mut topics = Vec::new();
    for topic in metadata.topics() {
        let name = topic.name();
        if name.starts_with(&format!("{group}-")) && name.ends_with("-repartition") {
            topics.push(name.to_owned());
            for p in topic.partitions() {
                all.add_partition_offset(name, p.id(), Offset::Beginning)
                    .expect("partition");
            }
        }
    }
    let partitions = all.count();
    if partitions == 0 {
        return (0, 0, topics);
    }
    consumer.assign(&all).expect("assign");
    let (mut bytes, mut records, mut ended) = (0u64, 0u64, 0usize);
    while ended < partitions {
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => {
                records += 1;
                let headers = m.headers().map_or(0, |h| {
                    h.iter()
                        .map(|x| x.key.len() + x.value.map_or(0, <[u8]>::len))
                        .sum::<usize>()
                });
                bytes += (m.key().map_or(0, <[u8]>::len)
                    + m.payload().map_or(0, <[u8]>::len)
                    + headers) as u64;
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => ended += 1,
            Some(Err(e)) => panic!("reading the repartition topics: {e}"),
            None => {}
        }
    }
    (bytes, records, topics)
}

/// A job grouped by the partition key whose rows depend on their own group
/// alone: it never shuffles.
const PER_CUSTOMER: &str = "-- @key customer_id\nSELECT window_start, window_end, customer_id, count(*) AS orders, sum(amount) AS spent\nFROM TUMBLE(transactions, ts, INTERVAL '1 day')\nGROUP BY window_start, window_end, customer_id\n";

/// The customer-analytics jobs on one instance and on `instances`, over
/// the same preloaded events: the bundled pack; alone, a bundled job that
/// shuffles by group (`need_correlation`), three whose rows depend on other
/// groups and so finish in one place (`need_by_category`, `loyalty_rfm`,
/// and `complaints_hourly`, whose shuffle also carries the complaints for
/// its copy of the kept tables), and a job grouped by the partition key
/// that does not shuffle; only the cases whose names contain a word of
/// `cases`, if any. Prints a table and returns the figures.
pub fn customer_analytics(
    bootstrap: &str,
    topics: &[String],
    partitions: i32,
    events: u64,
    (instances, cases): (i32, &[String]),
    profiles: Option<&Path>,
) -> Value {
    let bundled = Path::new(env!("CARGO_MANIFEST_DIR")).join("queries");
    let read = |job: &str| {
        let sql =
            std::fs::read_to_string(bundled.join(format!("{job}.sql"))).expect("a bundled query");
        (job.to_owned(), sql)
    };
    let mut every: Vec<(String, String)> = std::fs::read_dir(&bundled)
        .expect("bundled queries")
        .filter_map(|e| {
            let path = e.expect("entry").path();
            let stem = path.file_stem()?.to_str()?.to_owned();
            (path.extension()? == "sql").then_some(stem)
        })
        .map(|job| read(&job))
        .collect();
    every.sort();
    let all: [(&str, Vec<(String, String)>); 6] = [
        ("bundled pack", every),
        (
            "need_correlation (shuffles by group)",
            vec![read("need_correlation")],
        ),
        (
            "need_by_category (shuffles to one place)",
            vec![read("need_by_category")],
        ),
        (
            "loyalty_rfm (shuffles to one place)",
            vec![read("loyalty_rfm")],
        ),
        (
            "complaints_hourly (shuffles to one place, with the kept tables' events)",
            vec![read("complaints_hourly")],
        ),
        (
            "orders per customer and day (partition key, no shuffle)",
            vec![(
                "orders_per_customer_day".to_owned(),
                PER_CUSTOMER.to_owned(),
            )],
        ),
    ];
    println!(
        "\n{instances} instances\n\n| run | instances | CPU s per M events | vs 1 instance | less librdkafka broker threads | vs 1 instance | peak RSS MiB (sum) | repartition bytes per event |\n|---|---|---|---|---|---|---|---|"
    );
    let mut figures = serde_json::Map::new();
    let picked = |name: &str| cases.is_empty() || cases.iter().any(|c| name.contains(c.as_str()));
    for (case, (name, jobs)) in all.iter().enumerate() {
        if !picked(name) {
            continue;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        for (job, sql) in jobs {
            std::fs::write(dir.path().join(format!("{job}.sql")), sql).expect("write a query");
        }
        copy_views(&bundled.join("views"), &dir.path().join("views"));
        let mut one = None;
        for n in [1, instances] {
            let group = format!("bench-scale-{case}-x{n}");
            let measured = EngineRun {
                config: None,
                env: vec![
                    (
                        "CXPULSE__ENGINE__QUERIES_DIR".to_owned(),
                        dir.path().display().to_string(),
                    ),
                    (
                        "CXPULSE__TOPICS__OUTPUT_PREFIX".to_owned(),
                        format!("{group}."),
                    ),
                ],
                group: group.clone(),
                topics,
                partitions,
                events,
                profile: profiles.map(|dir| dir.join(format!("{group}.perf.data"))),
                instances: n,
            }
            .measure(bootstrap);
            let (bytes, _, _) = repartition_bytes(bootstrap, &group);
            let per_event = bytes as f64 / events as f64;
            let (versus, engine_versus) = one.as_ref().map_or((1.0, 1.0), |o: &Measured| {
                (
                    measured.cpu_per_million() / o.cpu_per_million(),
                    measured.engine_cpu_per_million() / o.engine_cpu_per_million(),
                )
            });
            println!(
                "| {name} | {n} | {:.2} | {versus:.2} | {:.2} | {engine_versus:.2} | {} | {per_event:.1} |",
                measured.cpu_per_million(),
                measured.engine_cpu_per_million(),
                measured.peak_rss / 1_048_576,
            );
            let mut run = measured.json(None);
            run["repartition_bytes_per_event"] = json!(per_event);
            run["cpu_versus_one_instance"] = json!(versus);
            run["cpu_less_broker_threads_versus_one_instance"] = json!(engine_versus);
            figures.insert(format!("{name} ×{n}"), run);
            one.get_or_insert(measured);
        }
    }
    Value::Object(figures)
}

/// Copies the shared views.
fn copy_views(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("views dir");
    for entry in std::fs::read_dir(from).expect("bundled views") {
        let path = entry.expect("entry").path();
        if let Some(name) = path.file_name() {
            std::fs::copy(&path, to.join(name)).expect("copy a view");
        }
    }
}
