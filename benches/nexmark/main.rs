//! Nexmark on cxpulse: each query of `benches/nexmark/queries` run alone
//! over the same preloaded events, beside the raw consume ceiling measured
//! in the same run.
//!
//! `cargo bench --bench nexmark [-- --events N] [--queries q5,q11]`
//! (default: 10,000,000 events, every query). It
//! starts a noida-db broker of its own on 127.0.0.1 (installed by
//! `scripts/broker.sh install`), writes N events of the standard generator
//! (`benches/nexmark/events.rs`, 10,000 per second of event time) to the
//! `person`, `auction` and `bid` topics (3 partitions each), then:
//!
//! * the ceiling: an rdkafka consumer that only counts the messages and
//!   bytes of the three topics, from the beginning to the end;
//! * each query: the engine, in this process, with only that query file,
//!   a fresh consumer group, from the first event consumed to the last.
//!
//! For each it prints events/s, events per second of this process's CPU
//! time (what one core does; the broker runs on the same two cores) and
//! the ratio to the ceiling. noida-db ignores `fetch.max.bytes` and answers
//! with a partition's whole backlog, so every client here raises
//! `receive.message.max.bytes` (as a deployment on noida-db would, through
//! `kafka.properties`), and the events are written lz4-compressed: 10 M
//! events are 2.6 GB of JSON, and one uncompressed answer would pass the
//! 2 GiB a Kafka response can hold (librdkafka then reports "Bad message
//! format"). Both the ceiling and the engine pay for decompression.
//! noida-db keeps everything in memory, so each run's output and changelog
//! topics are deleted after it (10 M events and the outputs of q0 and q1,
//! every bid each, were more than a 24 GiB machine holds); `--queries`
//! runs only some of the queries.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod events;
#[path = "../support/mod.rs"]
mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use cxpulse::config::Config;
use cxpulse::local_broker::LocalBroker;
use cxpulse::schema::Source;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// Events per second of event time.
const RATE: usize = 10_000;
/// Partitions of each topic.
const PARTITIONS: i32 = 3;
/// See the module doc: noida-db answers a fetch with a whole backlog.
const RECEIVE_MAX: &str = "2000000000";

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
    };
    let events: usize = value("--events").map_or(10_000_000, |n| n.parse().expect("--events N"));
    let only: Option<Vec<&str>> = value("--queries").map(|q| q.split(',').collect());
    let broker = LocalBroker::start().expect("noida-db (scripts/broker.sh install)");
    let nexmark = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/nexmark");
    let mut config = Config::load(Some(&nexmark.join("config.toml"))).expect("config");
    config.kafka.brokers = broker.bootstrap();
    config.kafka.properties.insert(
        "receive.message.max.bytes".to_owned(),
        RECEIVE_MAX.to_owned(),
    );
    config.http.listen = "127.0.0.1:0".to_owned();
    cxpulse::schema::declare(&config.sources).expect("the Nexmark sources");
    cxpulse::admin::ensure_topics(&config, &cxpulse::admin::source_topics(&config, PARTITIONS))
        .await
        .expect("topics");
    let topics = config.topics.of(Source::streams());

    let began = Instant::now();
    let bytes = preload(&config, events).await;
    println!(
        "preloaded {events} events ({:.0} MiB of JSON) in {:.1} s",
        bytes as f64 / 1_048_576.0,
        began.elapsed().as_secs_f64()
    );

    let ceiling = count_all(&config, &topics, events);
    println!(
        "raw consume ceiling: {:.0} events/s ({:.0} MiB/s), {:.0} events per CPU second",
        ceiling.rate,
        ceiling.bytes as f64 / ceiling.seconds / 1_048_576.0,
        ceiling.per_cpu_second
    );
    println!();
    println!("| query | events/s | events/s per core | vs raw ceiling |");
    println!("|---|---|---|---|");
    let mut queries: Vec<_> = std::fs::read_dir(nexmark.join("queries"))
        .expect("queries")
        .map(|e| e.expect("entry").path())
        .collect();
    queries.retain(|p| {
        let name = p.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
        only.as_ref().is_none_or(|only| only.contains(&name))
    });
    queries.sort_by_key(|p| {
        p.file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| s.trim_start_matches('q').parse::<u32>().ok())
    });
    for query in queries {
        let name = query
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("name")
            .to_owned();
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::copy(&query, dir.path().join(format!("{name}.sql"))).expect("copy");
        let mut run = config.clone();
        run.engine.queries_dir = dir.path().to_path_buf();
        run.kafka.group_id = format!("nexmark-{name}");
        run.kafka.instance_id = "bench".to_owned();
        run.topics.output_prefix = format!("nexmark.{name}.");
        let measured = engine_run(&run, &topics, events).await;
        // noida-db keeps every topic in memory: the run's output and
        // changelog go before the next run.
        drop_topics(
            &run,
            &[format!("nexmark.{name}.{name}"), run.changelog_topic()],
        )
        .await;
        println!(
            "| {name} | {:.0} | {:.0} | {:.2} |",
            measured.rate,
            measured.per_cpu_second,
            measured.rate / ceiling.rate
        );
    }
}

/// Produces `events` generated events; returns the JSON bytes written.
async fn preload(config: &Config, events: usize) -> usize {
    let kafka: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &config.kafka.brokers)
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .set("compression.type", "lz4")
        .create()
        .expect("producer");
    let topic_of = |source: &str| {
        let source = Source::named(source).expect("declared");
        config.topics.source_topic(source).to_owned()
    };
    let (person, auction, bid) = (topic_of("person"), topic_of("auction"), topic_of("bid"));
    let mut bytes = 0;
    let mut generated = events::generate(events, RATE).peekable();
    while generated.peek().is_some() {
        let chunk: Vec<events::Record> = generated.by_ref().take(50_000).collect();
        bytes += chunk.iter().map(|r| r.payload.len()).sum::<usize>();
        let acks = chunk.iter().map(|r| {
            let topic = match r.source {
                "person" => &person,
                "auction" => &auction,
                _ => &bid,
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
async fn drop_topics(config: &Config, topics: &[String]) {
    let admin: AdminClient<DefaultClientContext> =
        config.client_config().create().expect("admin client");
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

/// One measured run.
struct Measured {
    rate: f64,
    per_cpu_second: f64,
    seconds: f64,
    bytes: usize,
}

/// The ceiling: counts every message of `topics` from the beginning.
fn count_all(config: &Config, topics: &[String], events: usize) -> Measured {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &config.kafka.brokers)
        .set("group.id", "nexmark-ceiling")
        .set("enable.auto.commit", "false")
        .set("receive.message.max.bytes", RECEIVE_MAX)
        .create()
        .expect("consumer");
    let mut all = TopicPartitionList::new();
    for topic in topics {
        for p in 0..PARTITIONS {
            all.add_partition_offset(topic, p, Offset::Beginning)
                .expect("partition");
        }
    }
    consumer.assign(&all).expect("assign");
    let (mut count, mut bytes) = (0, 0);
    let mut first = None;
    while count < events {
        if let Some(message) = consumer.poll(Duration::from_millis(100)) {
            let message = message.expect("message");
            if first.is_none() {
                first = Some((Instant::now(), support::cpu_seconds("self")));
            }
            count += 1;
            bytes += message.payload().map_or(0, <[u8]>::len);
        }
    }
    let (began, cpu) = first.expect("a message");
    let seconds = began.elapsed().as_secs_f64();
    Measured {
        rate: count as f64 / seconds,
        per_cpu_second: count as f64 / (support::cpu_seconds("self") - cpu),
        seconds,
        bytes,
    }
}

/// The engine over every preloaded event.
async fn engine_run(config: &Config, topics: &[String], events: usize) -> Measured {
    let (metrics, stop, engine) = support::start_in_process(config);
    let consumed = || {
        topics
            .iter()
            .map(|t| metrics.records_consumed.with_label_values(&[t]).get())
            .sum::<u64>() as usize
    };
    let mut first = None;
    let deadline = Instant::now() + Duration::from_secs(3_600);
    while consumed() < events {
        if first.is_none() && consumed() > 0 {
            first = Some((Instant::now(), support::cpu_seconds("self")));
        }
        assert!(Instant::now() < deadline, "the run did not finish");
        assert!(!engine.is_finished(), "the engine stopped");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (began, cpu) = first.unwrap_or((Instant::now(), support::cpu_seconds("self")));
    let seconds = began.elapsed().as_secs_f64();
    let cpu = support::cpu_seconds("self") - cpu;
    let _ = stop.send(());
    engine
        .await
        .expect("join")
        .expect("the engine stops cleanly");
    Measured {
        rate: events as f64 / seconds,
        per_cpu_second: events as f64 / cpu,
        seconds,
        bytes: 0,
    }
}
