//! Command-line topic I/O for trying cxpulse without other Kafka tools:
//! `cxpulse produce` (JSON lines from stdin to a topic) and `cxpulse read`
//! (a topic's records to stdout).

use std::time::Duration;

use futures::StreamExt;
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

/// Why a topic I/O command failed.
#[derive(Debug, thiserror::Error)]
pub enum TopicIoError {
    /// The Kafka client failed.
    #[error("Kafka")]
    Kafka(#[from] KafkaError),
    /// Reading input failed.
    #[error("reading input")]
    Io(#[from] std::io::Error),
}

/// Sends every non-empty line of `input` to `topic` with a producer of
/// `client` (the configured brokers and `kafka.properties`); the key is the
/// value of the JSON field `key_field` when given and present. Returns the
/// count sent.
pub async fn produce_lines(
    mut client: ClientConfig,
    topic: &str,
    key_field: Option<&str>,
    input: impl AsyncRead + Unpin,
) -> Result<u64, TopicIoError> {
    let producer: FutureProducer = client.set("message.timeout.ms", "10000").create()?;
    let mut lines = BufReader::new(input).lines();
    let mut sent = 0;
    while let Some(line) = lines.next_line().await? {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let key = key_field.and_then(|field| {
            let value: serde_json::Value = serde_json::from_str(line).ok()?;
            match value.get(field)? {
                serde_json::Value::String(s) => Some(s.clone()),
                other => Some(other.to_string()),
            }
        });
        let mut record = FutureRecord::<str, str>::to(topic).payload(line);
        if let Some(key) = &key {
            record = record.key(key);
        }
        producer
            .send(record, Timeout::After(Duration::from_secs(10)))
            .await
            .map_err(|(e, _)| e)?;
        sent += 1;
    }
    Ok(sent)
}

/// A consumer of `topic` from its beginning, in a group of its own
/// (`cxpulse-<purpose>-<pid>`) that commits nothing.
pub fn reader(
    mut client: ClientConfig,
    topic: &str,
    purpose: &str,
) -> Result<StreamConsumer, KafkaError> {
    let consumer: StreamConsumer = client
        .set(
            "group.id",
            format!("cxpulse-{purpose}-{}", std::process::id()),
        )
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()?;
    consumer.subscribe(&[topic])?;
    Ok(consumer)
}

/// Prints `topic` from the beginning, read with `client` (the configured
/// brokers and `kafka.properties`), as `key<TAB>value` lines, followed by
/// `<TAB>{headers as JSON}` when the record has headers (dead letters do);
/// stops after `idle` without new records unless `follow` is set.
pub async fn read_topic(
    client: ClientConfig,
    topic: &str,
    follow: bool,
    idle: Duration,
) -> Result<u64, TopicIoError> {
    let consumer = reader(client, topic, "read")?;
    let mut stream = consumer.stream();
    let mut printed = 0;
    loop {
        let next = if follow {
            stream.next().await
        } else {
            match tokio::time::timeout(idle, stream.next()).await {
                Ok(next) => next,
                Err(_) => break,
            }
        };
        let Some(message) = next else { break };
        let message = message?;
        let text = |bytes: Option<&[u8]>| {
            bytes.map_or_else(
                || "null".to_owned(),
                |b| String::from_utf8_lossy(b).into_owned(),
            )
        };
        let mut line = format!("{}\t{}", text(message.key()), text(message.payload()));
        if let Some(headers) = message.headers() {
            let map: serde_json::Map<String, serde_json::Value> = headers
                .iter()
                .map(|h| (h.key.to_owned(), text(h.value).into()))
                .collect();
            line.push('\t');
            line.push_str(&serde_json::Value::Object(map).to_string());
        }
        println!("{line}");
        printed += 1;
    }
    Ok(printed)
}
