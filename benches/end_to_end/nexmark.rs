//! Nexmark: each query of `benches/nexmark/queries` run alone by the
//! `cxpulse` binary over the same preloaded events of the standard
//! generator (`benches/nexmark/events.rs`, 10,000 per second of event
//! time), beside the raw consume ceiling measured in the same run.
//!
//! The events are written lz4-compressed: 10 M events are 2.6 GB of JSON,
//! and one uncompressed answer of noida-db (which sends a partition's whole
//! backlog) would pass the 2 GiB a Kafka response can hold (librdkafka then
//! reports "Bad message format"). Both the ceiling and the engine pay for
//! decompression. This process never declares the Nexmark sources (the
//! customer-analytics workload has declared the default ones): it reads
//! topic names from the configuration file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use cxpulse::admin::TopicSpec;
use cxpulse::config::Config;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{Value, json};

use crate::events;
use crate::measure::{self, EngineRun};

/// Events per second of event time.
const RATE: usize = 10_000;
/// Partitions of each topic.
const PARTITIONS: i32 = 3;

/// The Nexmark folder of the repository.
fn folder() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/nexmark")
}

/// Preloads `events` events, measures the ceiling, then runs each query
/// (all, or those named in `only`), on one instance and, with `instances`
/// above 1, again on that many; prints a table and returns the figures.
pub async fn run(
    bootstrap: &str,
    events: u64,
    only: Option<&[String]>,
    profiles: Option<&Path>,
    instances: i32,
) -> Value {
    let config_file = folder().join("config.toml");
    let config = Config::load(Some(&config_file)).expect("the Nexmark configuration");
    let topic = |name: &str| {
        config
            .sources
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.topic.clone())
            .expect("declared")
    };
    let topics = vec![topic("person"), topic("auction"), topic("bid")];
    let mut admin = Config::load(None).expect("the default configuration");
    admin.kafka.brokers = bootstrap.to_owned();
    let specs: Vec<TopicSpec> = topics
        .iter()
        .map(|t| TopicSpec::new(t.clone(), PARTITIONS))
        .collect();
    cxpulse::admin::ensure_topics(&admin, &specs)
        .await
        .expect("topics");

    let bytes = preload(bootstrap, &topics, events).await;
    println!(
        "Nexmark: preloaded {events} events ({:.0} MiB of JSON)",
        bytes as f64 / 1_048_576.0
    );
    let (ceiling, read) = measure::ceiling(bootstrap, &topics, PARTITIONS, events);
    println!(
        "raw consume ceiling: {:.0} events/s ({:.0} MiB/s)\n",
        ceiling.rate(),
        read as f64 / ceiling.seconds / 1_048_576.0
    );
    println!("{}", measure::TABLE_HEADER);
    println!("{}", ceiling.row("ceiling", None));
    let mut queries: Vec<PathBuf> = std::fs::read_dir(folder().join("queries"))
        .expect("queries")
        .map(|e| e.expect("entry").path())
        .collect();
    let stem = |p: &Path| {
        p.file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_owned()
    };
    queries.retain(|p| only.is_none_or(|only| only.contains(&stem(p))));
    queries.sort_by_key(|p| stem(p).trim_start_matches('q').parse::<u32>().ok());
    let mut results = serde_json::Map::new();
    for query in queries {
        let name = stem(&query);
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::copy(&query, dir.path().join(format!("{name}.sql"))).expect("copy");
        let counts = if instances > 1 {
            vec![1, instances]
        } else {
            vec![1]
        };
        for n in counts {
            let (run, group) = match n {
                1 => (name.clone(), format!("nexmark-{name}")),
                n => (format!("{name} ×{n}"), format!("nexmark-{name}-x{n}")),
            };
            let prefix = format!("{group}.");
            let measured = EngineRun {
                config: Some(&config_file),
                env: vec![
                    (
                        "CXPULSE__ENGINE__QUERIES_DIR".to_owned(),
                        dir.path().display().to_string(),
                    ),
                    ("CXPULSE__TOPICS__OUTPUT_PREFIX".to_owned(), prefix.clone()),
                ],
                group: group.clone(),
                topics: &topics,
                partitions: PARTITIONS,
                events,
                profile: profiles.map(|dir| dir.join(format!("{group}.perf.data"))),
                instances: n,
            }
            .measure(bootstrap);
            let (shuffled, _, repartition) = crate::scale::repartition_bytes(bootstrap, &group);
            // noida-db keeps every topic in memory: the run's output,
            // changelog and repartition topic go before the next run.
            let mut written = vec![format!("{prefix}{name}"), format!("{group}-changelog")];
            written.extend(repartition);
            drop_topics(bootstrap, &written).await;
            println!("{}", measured.row(&run, Some(&ceiling)));
            let mut figures = measured.json(Some(&ceiling));
            figures["instances"] = json!(n);
            figures["repartition_bytes_per_event"] = json!(shuffled as f64 / events as f64);
            figures["cpu_seconds_per_million_events_less_broker_threads"] =
                json!(measured.engine_cpu_per_million());
            println!(
                "  ({run}: {:.2} CPU s per M events less librdkafka's broker threads; {:.1} repartition bytes per event)",
                measured.engine_cpu_per_million(),
                shuffled as f64 / events as f64
            );
            results.insert(run, figures);
        }
    }
    json!({
        "events": events,
        "json_bytes": bytes,
        "ceiling": ceiling.json(None),
        "queries": results,
    })
}

/// Produces `events` generated events, lz4-compressed; returns the JSON
/// bytes written.
async fn preload(bootstrap: &str, topics: &[String], events: u64) -> u64 {
    let kafka: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .set("compression.type", "lz4")
        .create()
        .expect("producer");
    let mut bytes = 0;
    let mut generated = events::generate(events as usize, RATE).peekable();
    while generated.peek().is_some() {
        let chunk: Vec<events::Record> = generated.by_ref().take(50_000).collect();
        bytes += chunk.iter().map(|r| r.payload.len() as u64).sum::<u64>();
        let acks = chunk.iter().map(|r| {
            let topic = match r.source {
                "person" => &topics[0],
                "auction" => &topics[1],
                _ => &topics[2],
            };
            kafka.send(
                FutureRecord::<(), String>::to(topic).payload(&r.payload),
                Duration::from_secs(120),
            )
        });
        for ack in futures::future::join_all(acks).await {
            ack.map_err(|(e, _)| e).expect("acknowledged");
        }
    }
    bytes
}

/// Deletes `topics`.
async fn drop_topics(bootstrap: &str, topics: &[String]) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin client");
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    for result in admin
        .delete_topics(&names, &AdminOptions::new())
        .await
        .expect("delete topics")
    {
        if let Err((topic, code)) = result {
            eprintln!("could not delete {topic}: {code}");
        }
    }
}
