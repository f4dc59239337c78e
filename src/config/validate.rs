//! Semantic checks of a typed configuration: ranges, addresses, topic names.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use super::layers::Layered;
use super::{Config, ConfigProblem};

/// Longest epoch: its transaction must fit in the broker's transaction
/// timeout (15 minutes by default) with room to spare.
const MAX_COMMIT_INTERVAL_MS: i64 = 300_000;

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
    if let Err(e) = config
        .engine
        .state_memory_limit
        .parse::<bytesize::ByteSize>()
    {
        fail(
            "engine.state_memory_limit",
            format!(
                "{:?} is not a size: {e} (write bytes, or e.g. 512MiB, 2GiB)",
                config.engine.state_memory_limit
            ),
        );
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
