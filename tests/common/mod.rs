//! Shared helpers for integration tests: a broker (started here, or
//! `KAFKA_BOOTSTRAP`), topic set-up, producing, reading topics back, and a
//! plain HTTP GET.

#![allow(dead_code)]

pub mod exactly_once;
pub mod old_broker;
pub mod process;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cxpulse::admin::{TopicSpec, ensure_topics};
use cxpulse::config::Config;
use cxpulse::tools::local_broker::LocalBroker;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// A broker for one test: our own noida-db, or the one named by `KAFKA_BOOTSTRAP`.
pub struct TestBroker {
    bootstrap: String,
    _local: Option<LocalBroker>,
}

impl TestBroker {
    pub fn start() -> TestBroker {
        match std::env::var("KAFKA_BOOTSTRAP") {
            Ok(bootstrap) if !bootstrap.is_empty() => TestBroker {
                bootstrap,
                _local: None,
            },
            _ => {
                let local = LocalBroker::start().unwrap_or_else(|e| panic!("{e}"));
                TestBroker {
                    bootstrap: local.bootstrap(),
                    _local: Some(local),
                }
            }
        }
    }

    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }
}

/// A prefix unique to this test run, so tests can share a broker.
pub fn unique_prefix(test: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{test}-{}-{nanos}.", std::process::id())
}

/// A configuration for `broker` with every topic under `prefix` and HTTP on a free port.
pub fn test_config(broker: &TestBroker, prefix: &str, queries_dir: &Path) -> Config {
    test_config_for(broker.bootstrap(), prefix, queries_dir)
}

/// [`test_config`] for the broker at `bootstrap`.
pub fn test_config_for(bootstrap: &str, prefix: &str, queries_dir: &Path) -> Config {
    test_config_from(None, bootstrap, prefix, queries_dir)
}

/// [`test_config_for`], starting from the configuration `file` (else the
/// embedded default).
pub fn test_config_from(
    file: Option<&Path>,
    bootstrap: &str,
    prefix: &str,
    queries_dir: &Path,
) -> Config {
    let mut config = Config::load(file).expect("valid config");
    config.kafka.brokers = bootstrap.to_owned();
    config.kafka.group_id = format!("{prefix}group");
    config.topics.transactions = format!("{prefix}transactions");
    config.topics.feedback = format!("{prefix}feedback");
    config.topics.complaints = format!("{prefix}complaints");
    config.topics.customers = format!("{prefix}customers");
    config.topics.deadletter = format!("{prefix}deadletter");
    config.topics.output_prefix = format!("{prefix}out.");
    config.engine.queries_dir = queries_dir.to_path_buf();
    config.engine.batch_linger_ms = 50;
    config.http.listen = "127.0.0.1:0".to_owned();
    config
}

/// Creates the four source topics (with `partitions`, infinite retention) and the dead-letter topic.
pub async fn create_source_topics(config: &Config, partitions: i32) {
    let t = &config.topics;
    let specs: Vec<TopicSpec> = [&t.transactions, &t.feedback, &t.complaints, &t.customers]
        .into_iter()
        .map(|name| TopicSpec::new(name.as_str(), partitions).with_config("retention.ms", "-1"))
        .chain([TopicSpec::new(t.deadletter.as_str(), 1).with_config("retention.ms", "-1")])
        .collect();
    ensure_topics(config, &specs).await.expect("create topics");
}

pub fn producer(bootstrap: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("message.timeout.ms", "10000")
        .create()
        .expect("producer")
}

/// Produces `(partition, key, value)` records to `topic`, in order, waiting for each ack.
pub async fn produce(
    producer: &FutureProducer,
    topic: &str,
    records: &[(i32, Option<&str>, Option<&str>)],
) {
    for (partition, key, value) in records {
        let mut record = FutureRecord::<str, str>::to(topic).partition(*partition);
        if let Some(k) = key {
            record = record.key(k);
        }
        if let Some(v) = value {
            record = record.payload(v);
        }
        producer
            .send(record, Timeout::After(Duration::from_secs(10)))
            .await
            .unwrap_or_else(|(e, _)| panic!("produce to {topic}: {e}"));
    }
}

/// One record read back from a topic.
#[derive(Debug, Clone)]
pub struct ReadRecord {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub value: Option<String>,
    pub headers: BTreeMap<String, String>,
}

/// A read_committed consumer (no group commits) of every partition of
/// `topic`, from the beginning.
pub fn consumer_from_beginning(bootstrap: &str, topic: &str) -> BaseConsumer {
    consumer_with(bootstrap, topic, "read_committed", false)
}

/// A consumer of every partition of `topic` from the beginning, with
/// `isolation` (`read_committed` or `read_uncommitted`), optionally
/// reporting the end of each partition.
pub fn consumer_with(bootstrap: &str, topic: &str, isolation: &str, eof: bool) -> BaseConsumer {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("reader-{topic}"))
        .set("enable.auto.commit", "false")
        .set("isolation.level", isolation)
        .set("enable.partition.eof", eof.to_string())
        .create()
        .expect("reader");
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let mut tpl = TopicPartitionList::new();
    for t in metadata.topics() {
        for p in t.partitions() {
            tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
                .expect("tpl");
        }
    }
    consumer.assign(&tpl).expect("assign");
    consumer
}

/// Reads every partition of `topic` from the beginning until `expected`
/// records arrived and nothing more comes for a moment, or `timeout` passes.
pub fn read_topic(
    bootstrap: &str,
    topic: &str,
    expected: usize,
    timeout: Duration,
) -> Vec<ReadRecord> {
    let consumer = consumer_from_beginning(bootstrap, topic);
    let started = Instant::now();
    let mut out = Vec::new();
    let mut quiet_since: Option<Instant> = None;
    while started.elapsed() < timeout {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                quiet_since = None;
                out.push(read_record(&m));
            }
            Some(Err(e)) => panic!("reading {topic}: {e}"),
            None if out.len() >= expected => {
                let since = *quiet_since.get_or_insert_with(Instant::now);
                if since.elapsed() > Duration::from_millis(500) {
                    break;
                }
            }
            None => {}
        }
    }
    out
}

/// At least `n` records of `topic` (or what there is after `total`), each
/// try with a fresh read_committed reader: one that starts at the end of a
/// partition before a commit may not see it on noida-db (seen with the
/// tests' reader, not with a confluent-kafka consumer; not yet understood).
pub async fn read_committed_until(
    bootstrap: &str,
    topic: &str,
    n: usize,
    total: Duration,
) -> Vec<ReadRecord> {
    let (bootstrap, topic) = (bootstrap.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        let began = Instant::now();
        loop {
            let got = read_topic(&bootstrap, &topic, n, Duration::from_secs(5));
            if got.len() >= n || began.elapsed() > total {
                return got;
            }
        }
    })
    .await
    .expect("reader")
}

/// Every record of `topic` up to the end of each partition, read with
/// `isolation`; panics if the end is not reached within `timeout`.
pub fn read_topic_with(
    bootstrap: &str,
    topic: &str,
    isolation: &str,
    timeout: Duration,
) -> Vec<ReadRecord> {
    let consumer = consumer_with(bootstrap, topic, isolation, true);
    let partitions = consumer
        .assignment()
        .map(|a| a.count())
        .expect("assignment");
    let started = Instant::now();
    let mut ended = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    while ended.len() < partitions {
        assert!(
            started.elapsed() < timeout,
            "{topic}: end not reached in {timeout:?}"
        );
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => out.push(read_record(&m)),
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                ended.insert(p);
            }
            Some(Err(e)) => panic!("reading {topic}: {e}"),
            None => {}
        }
    }
    out
}

/// A record as read, its key, value and headers as text.
pub fn read_record<M: Message>(m: &M) -> ReadRecord {
    let headers = m
        .headers()
        .map(|h| {
            h.iter()
                .map(|x| {
                    (
                        x.key.to_owned(),
                        String::from_utf8_lossy(x.value.unwrap_or_default()).into_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    ReadRecord {
        partition: m.partition(),
        offset: m.offset(),
        key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
        value: m.payload().map(|v| String::from_utf8_lossy(v).into_owned()),
        headers,
    }
}

/// A plain HTTP/1.1 GET; returns status code and body.
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// A plain HTTP/1.1 POST of `body`, with an `Authorization` header if
/// given; returns status code and body.
pub fn http_post(
    addr: SocketAddr,
    path: &str,
    authorization: Option<&str>,
    body: &str,
) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    let auth = authorization
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// The value of one sample line `name{labels} value` in a Prometheus exposition.
pub fn metric(exposition: &str, series: &str) -> Option<f64> {
    exposition.lines().find_map(|line| {
        let (name, value) = line.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok()).flatten()
    })
}

/// Polls `/metrics` until `series` has `value`, or panics after `timeout`.
pub async fn wait_for_metric(
    addr: SocketAddr,
    series: &str,
    value: f64,
    timeout: Duration,
) -> String {
    let started = Instant::now();
    loop {
        let (_, body) = http_get(addr, "/metrics");
        if metric(&body, series) == Some(value) {
            return body;
        }
        if started.elapsed() > timeout {
            panic!("{series} never reached {value}; last exposition:\n{body}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An engine running in this process, with its HTTP address.
pub struct RunningEngine {
    pub addr: std::net::SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), cxpulse::engine::EngineError>>,
}

impl RunningEngine {
    /// Starts `cxpulse::engine::run` and waits until it listens.
    pub async fn start(config: Config) -> RunningEngine {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
        let metrics = std::sync::Arc::new(cxpulse::metrics::Metrics::new().expect("metrics"));
        let task = tokio::spawn(cxpulse::engine::run(
            config,
            metrics,
            async move {
                let _ = stopped.await;
            },
            move |addr| {
                let _ = addr_tx.send(addr);
            },
        ));
        let addr = addr_rx.await.expect("engine listening");
        RunningEngine { addr, stop, task }
    }

    /// Signals shutdown and asserts the engine drains and returns `Ok` within 15 s.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(15), self.task)
            .await
            .expect("engine stops within the drain time")
            .expect("join")
            .expect("engine ran cleanly");
    }
}

/// `promtool check metrics` must report nothing: no errors, no lint warnings.
pub fn promtool_check(exposition: &str) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect(
            "promtool is needed for this test: apt-get install prometheus (scripts/test.sh does)",
        );
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(exposition.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("promtool");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && report.trim().is_empty(),
        "promtool check metrics:\n{report}"
    );
}
