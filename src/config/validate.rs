//! Semantic checks of a typed configuration: ranges, addresses, topic names.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use super::layers::Layered;
use super::sections::{Config, ConfigProblem};

/// Longest epoch: its transaction must fit in the broker's transaction
/// timeout (15 minutes by default) with room to spare.
const MAX_COMMIT_INTERVAL_MS: i64 = 300_000;

/// Shortest admin token accepted.
const MIN_ADMIN_TOKEN: usize = 16;

/// librdkafka properties the engine sets itself, and why `kafka.properties`
/// may not: exactly-once depends on them (or a key of its own sets them).
const ENGINE_PROPERTIES: &[(&str, &str)] = &[
    ("bootstrap.servers", "set kafka.brokers instead"),
    ("metadata.broker.list", "set kafka.brokers instead"),
    ("group.id", "set kafka.group_id instead"),
    (
        "group.instance.id",
        "cxpulse reads the partitions it owns (cluster.index) with assign(), without group membership",
    ),
    (
        "transactional.id",
        "it is <kafka.group_id>-<cluster.index>-of-<cluster.instances>, so that an instance restarted under its index fences its previous self",
    ),
    (
        "enable.auto.commit",
        "offsets are committed only inside each epoch's transaction, with its outputs",
    ),
    (
        "auto.commit.enable",
        "offsets are committed only inside each epoch's transaction, with its outputs",
    ),
    (
        "enable.auto.offset.store",
        "offsets are committed only inside each epoch's transaction, with its outputs",
    ),
    (
        "isolation.level",
        "the engine reads read_committed, so that aborted epochs and transactions are never read",
    ),
    (
        "enable.idempotence",
        "the transactional producer needs idempotence",
    ),
    ("acks", "the transactional producer needs acks=all"),
    (
        "request.required.acks",
        "the transactional producer needs acks=all",
    ),
    (
        "transaction.timeout.ms",
        "it follows engine.commit_interval_ms",
    ),
    ("message.timeout.ms", "set kafka.message_timeout_ms instead"),
    (
        "delivery.timeout.ms",
        "set kafka.message_timeout_ms instead",
    ),
];

/// Most instances `cluster.instances` may name (a partition count is
/// rarely larger).
const MAX_INSTANCES: i64 = 1024;

/// Every semantic problem of `config`, each with the origin of its value.
pub(super) fn validate(config: &Config, layers: &Layered) -> Vec<ConfigProblem> {
    let mut problems = Vec::new();
    let mut fail = |key: &str, message: String| problems.push(layers.problem(key, message));

    if config
        .kafka
        .brokers
        .split(',')
        .any(|b| !is_host_port(b.trim()))
    {
        fail(
            "kafka.brokers",
            format!(
                "{:?} must be a comma-separated list of host:port",
                config.kafka.brokers
            ),
        );
    }
    for (key, message) in super::sources::problems(&config.sources) {
        fail(&key, message);
    }
    for name in config.kafka.properties.keys() {
        if let Some((_, why)) = ENGINE_PROPERTIES.iter().find(|(p, _)| p == name) {
            fail(
                &format!("kafka.properties.{name}"),
                format!("cannot be set: cxpulse sets {name} itself ({why})"),
            );
        }
    }
    let token = &config.http.admin_token;
    if !token.is_empty() && token.chars().count() < MIN_ADMIN_TOKEN {
        fail(
            "http.admin_token",
            format!(
                "is {} characters long, at least {MIN_ADMIN_TOKEN} are needed (e.g. `openssl rand -hex 32`)",
                token.chars().count()
            ),
        );
    }
    if token.chars().any(|c| !c.is_ascii_graphic()) {
        fail(
            "http.admin_token",
            "must be visible ASCII characters (an HTTP header carries it): no spaces, control or non-ASCII characters".to_owned(),
        );
    }
    let (instances, index) = config.cluster_numbers();
    if !(1..=MAX_INSTANCES).contains(&instances) {
        fail(
            "cluster.instances",
            format!("is {instances}, it must be 1 to {MAX_INSTANCES}"),
        );
    } else if config.cluster.index < -1 {
        fail(
            "cluster.index",
            format!(
                "is {index}, it must be in 0..{instances} (-1: the host name's trailing number)"
            ),
        );
    } else if index >= instances && config.cluster.index == -1 {
        fail(
            "cluster.instances",
            format!(
                "is {instances}, but this instance's index, the trailing number of its host name, is {index}: instance i of N owns the partitions p with p mod N = i, so i must be in 0..N (set cluster.index, or run as many instances as the StatefulSet has pods)"
            ),
        );
    } else if index >= instances {
        fail(
            "cluster.index",
            format!(
                "is {index}, outside 0..{instances} (cluster.instances is {instances}): instance i of N owns the partitions p with p mod N = i"
            ),
        );
    }
    if config.cluster.generation < 0 {
        fail(
            "cluster.generation",
            format!("is {}, it must be 0 or more", config.cluster.generation),
        );
    }
    if config.kafka.group_id.trim().is_empty() {
        fail("kafka.group_id", "must not be empty".to_owned());
    }
    for (key, value, min) in [
        (
            "kafka.message_timeout_ms",
            config.kafka.message_timeout_ms,
            1,
        ),
        (
            "engine.max_out_of_orderness_ms",
            config.engine.max_out_of_orderness_ms,
            0,
        ),
        ("engine.idle_timeout_ms", config.engine.idle_timeout_ms, 1),
        (
            "engine.commit_interval_ms",
            config.engine.commit_interval_ms,
            1,
        ),
        ("engine.batch_max_rows", config.engine.batch_max_rows, 1),
        (
            "engine.backfill_batch_rows",
            config.engine.backfill_batch_rows,
            1,
        ),
        ("engine.batch_linger_ms", config.engine.batch_linger_ms, 1),
        (
            "engine.shutdown_drain_ms",
            config.engine.shutdown_drain_ms,
            1,
        ),
        (
            "engine.reload_interval_ms",
            config.engine.reload_interval_ms,
            0,
        ),
        (
            "engine.gauge_series_limit",
            config.engine.gauge_series_limit,
            0,
        ),
        ("engine.max_future_ms", config.engine.max_future_ms, 0),
    ] {
        if value < min {
            fail(key, format!("is {value}, must be at least {min}"));
        }
    }

    let t = &config.topics;
    // When derived from the group id, a bad name is the group id's fault.
    let changelog = config.changelog_topic();
    let changelog_key = if t.changelog.is_empty() {
        "kafka.group_id"
    } else {
        "topics.changelog"
    };
    let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
    for (key, topic) in [
        ("topics.transactions", &t.transactions),
        ("topics.feedback", &t.feedback),
        ("topics.complaints", &t.complaints),
        ("topics.customers", &t.customers),
        ("topics.deadletter", &t.deadletter),
        (changelog_key, &changelog),
    ] {
        if let Some(message) = topic_name_problem(topic) {
            fail(key, message);
        } else if let Some(other) = seen.insert(topic, key) {
            fail(key, format!("topic {topic:?} is also used by `{other}`"));
        }
    }
    if !t.output_prefix.is_empty() && !t.output_prefix.chars().all(is_topic_char) {
        fail(
            "topics.output_prefix",
            format!(
                "{:?} may only contain letters, digits, '.', '_' and '-'",
                t.output_prefix
            ),
        );
    }
    if config.engine.commit_interval_ms > MAX_COMMIT_INTERVAL_MS {
        fail(
            "engine.commit_interval_ms",
            format!(
                "is {}, at most {MAX_COMMIT_INTERVAL_MS} (5 minutes): a transaction stays open that long",
                config.engine.commit_interval_ms
            ),
        );
    }
    for (key, text, least) in [
        (
            "engine.state_memory_limit",
            &config.engine.state_memory_limit,
            0,
        ),
        (
            "engine.table_memory_limit",
            &config.engine.table_memory_limit,
            0,
        ),
        (
            "engine.job_memory_limit",
            &config.engine.job_memory_limit,
            MIN_JOB_MEMORY,
        ),
        (
            "engine.max_record_bytes",
            &config.engine.max_record_bytes,
            MIN_RECORD_BYTES,
        ),
        ("engine.batch_max_bytes", &config.engine.batch_max_bytes, 1),
    ] {
        match text.parse::<bytesize::ByteSize>() {
            Err(e) => fail(
                key,
                format!("{text:?} is not a size: {e} (write bytes, or e.g. 512MiB, 2GiB)"),
            ),
            Ok(size) if size.as_u64() < least => fail(
                key,
                format!(
                    "is {text}, must be at least {}",
                    bytesize::ByteSize::b(least)
                ),
            ),
            Ok(_) => {}
        }
    }
    if config.http.listen.parse::<SocketAddr>().is_err() {
        fail(
            "http.listen",
            format!(
                "{:?} is not an IP address with a port, e.g. 127.0.0.1:9464",
                config.http.listen
            ),
        );
    }
    problems
}

/// Smallest `engine.job_memory_limit`: DataFusion needs room for a batch.
const MIN_JOB_MEMORY: u64 = 1 << 20;

/// Smallest `engine.max_record_bytes`.
const MIN_RECORD_BYTES: u64 = 1 << 10;

fn is_host_port(text: &str) -> bool {
    match text.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0),
        None => false,
    }
}

fn is_topic_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

/// Why `topic` is not a legal Kafka topic name, if it is not.
pub fn topic_name_problem(topic: &str) -> Option<String> {
    if topic.is_empty() {
        Some("must not be empty".to_owned())
    } else if topic.len() > 249 {
        Some(format!(
            "is {} characters long, Kafka allows 249",
            topic.len()
        ))
    } else if topic == "." || topic == ".." {
        Some(format!("{topic:?} is not a legal topic name"))
    } else if !topic.chars().all(is_topic_char) {
        Some(format!(
            "{topic:?} may only contain letters, digits, '.', '_' and '-'"
        ))
    } else {
        None
    }
}
