//! The `cxpulse` command line as clap parses it: every command, flag and
//! default. `src/main.rs` runs the commands; `tests/readme.rs` parses the
//! README's command lines with it, so they cannot drift from the code.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::config::Config;

/// Streaming analytics for customer events: Kafka in, windowed SQL, Kafka and Prometheus out.
#[derive(Parser)]
#[command(name = "cxpulse", version, about)]
pub struct Cli {
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Subcommand)]
pub enum Command {
    /// Start a local broker, the event generator and every bundled job, with a live view; ctrl-c or q stops it all.
    Demo {
        /// Use this Kafka cluster instead of starting a local broker.
        #[arg(long, env = "CXPULSE__KAFKA__BROKERS")]
        brokers: Option<String>,
        /// Configuration file layered over the embedded default (its brokers and queries_dir are replaced).
        #[arg(long, short)]
        config: Option<PathBuf>,
        #[command(flatten)]
        events: EventOptions,
        /// Stop after this long (e.g. 2m); default: until ctrl-c or q.
        #[arg(long, value_parser = humantime::parse_duration)]
        duration: Option<Duration>,
        /// Address of /metrics, /healthz and /readyz (port 0: any free port).
        #[arg(long, default_value = "127.0.0.1:9464")]
        listen: String,
    },
    /// Publish simulated customer events to a Kafka cluster in compressed real time (a load generator).
    Generate {
        #[command(flatten)]
        brokers: Brokers,
        /// Configuration file (for the topic names and Kafka client properties).
        #[arg(long, short)]
        config: Option<PathBuf>,
        #[command(flatten)]
        events: EventOptions,
        /// Stop after this long (e.g. 10m); default: until ctrl-c.
        #[arg(long, value_parser = humantime::parse_duration)]
        duration: Option<Duration>,
        /// No out-of-order or malformed events.
        #[arg(long)]
        clean: bool,
    },
    /// Print a job's output topic as a table, from the beginning, following new rows.
    Tail {
        /// Job name (its query file name without .sql), e.g. need_by_category.
        job: String,
        #[command(flatten)]
        brokers: Brokers,
        /// Configuration file (for the queries directory, topic names and Kafka client properties).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Stop after 3 quiet seconds instead of following.
        #[arg(long)]
        no_follow: bool,
    },
    /// Run every job in the queries directory until SIGTERM or ctrl-c.
    Run {
        /// Configuration file layered over the embedded default (env vars CXPULSE__SECTION__KEY override both).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Run the query test cases of queries/tests/ offline, with no broker; exit 1 if any fails.
    Test {
        /// Only this job's cases (its query file name without .sql).
        job: Option<String>,
        /// Write each case's current output as its expected files, for review.
        #[arg(long)]
        update: bool,
        /// Configuration file layered over the embedded default (for the queries directory and sources).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Print what the engine will do with a job's query: sources, window and panes, state, plans, output, gauges.
    Explain {
        /// Job name (its query file name without .sql).
        job: String,
        /// Configuration file layered over the embedded default (for the queries directory and topics).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Rebuild a running job's state from its sources' history, then let it go live again (asks the running engine over HTTP).
    Backfill {
        /// Job name (its query file name without .sql).
        job: String,
        /// Where the history starts: `earliest`, a duration back from now such as `90d`, or an RFC 3339 time.
        #[arg(long)]
        from: String,
        /// Configuration file layered over the embedded default (for `http.listen`, the engine's address).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// The engine's HTTP address, e.g. http://cxpulse:9464 (default: from `http.listen`).
        #[arg(long)]
        url: Option<String>,
    },
    /// Validate the configuration and every query; exit 1 listing every problem.
    Check {
        /// Configuration file layered over the embedded default.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Create the source, dead-letter and job output topics that do not exist yet.
    CreateTopics {
        /// Configuration file layered over the embedded default.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Partitions of each new source topic.
        #[arg(long, default_value_t = 3)]
        partitions: i32,
    },
    /// Forget a job's window state, or repair event time (--event-time); the engine's next start goes on from there (a running engine of this instance is fenced and stops).
    Reset {
        /// Job name (its query file name without .sql).
        #[arg(required_unless_present = "event_time", conflicts_with = "event_time")]
        job: Option<String>,
        /// Forget the sources' watermarks and how far the windows of the jobs reading them have closed (after a far-future event moved them), instead of a job's state.
        #[arg(long)]
        event_time: bool,
        /// With --event-time: only this source's (e.g. transactions).
        #[arg(long, requires = "event_time")]
        source: Option<String>,
        /// Configuration file layered over the embedded default.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Send JSON lines from stdin to a topic, one message per line.
    Produce {
        #[command(flatten)]
        brokers: Brokers,
        /// Configuration file (for the brokers and Kafka client properties, e.g. SASL/TLS).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Destination topic, e.g. cx.feedback.
        #[arg(long)]
        topic: String,
        /// JSON field whose value becomes the message key, e.g. customer_id.
        #[arg(long)]
        key: Option<String>,
    },
    /// Print a topic from the beginning as `key<TAB>value` lines.
    Read {
        #[command(flatten)]
        brokers: Brokers,
        /// Configuration file (for the brokers and Kafka client properties, e.g. SASL/TLS).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Topic to read, e.g. cx.metrics.complaint_alerts.
        topic: String,
        /// Keep waiting for new records instead of stopping after 3 quiet seconds.
        #[arg(long, short)]
        follow: bool,
    },
}

/// `--brokers`, for the commands that talk to a cluster.
#[derive(clap::Args)]
pub struct Brokers {
    /// Bootstrap servers (default: `kafka.brokers` of the configuration,
    /// which `CXPULSE__KAFKA__BROKERS` sets, else 127.0.0.1:9092).
    #[arg(long = "brokers")]
    pub list: Option<String>,
}

impl Brokers {
    /// Replaces the brokers of `config` with these, if given.
    pub fn apply(self, config: &mut Config) {
        if let Some(list) = self.list {
            config.kafka.brokers = list;
        }
    }
}

/// What the generator simulates and how fast.
#[derive(clap::Args)]
pub struct EventOptions {
    /// Events per second, on average (the population is sized for it).
    #[arg(long, default_value_t = 200.0, value_parser = parse_rate)]
    pub rate: f64,
    /// Simulated time per real second, e.g. 1h: a simulated day every 24 s.
    #[arg(long, default_value = "1h", value_parser = parse_speed)]
    pub speed: Duration,
    /// Seed: the same seed, rate and speed give the same events.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// First instant of simulated time (RFC 3339).
    #[arg(long, default_value = "2026-01-01T00:00:00Z", value_parser = parse_start)]
    pub start: i64,
}

/// A `generate` flag clap could not take.
#[derive(Debug, thiserror::Error)]
pub enum FlagError {
    /// `--rate` that is not a positive number.
    #[error("must be a positive number of events per second")]
    Rate,
    /// `--rate` that is not a number.
    #[error(transparent)]
    Number(#[from] std::num::ParseFloatError),
    /// `--speed` under a millisecond of simulated time per second.
    #[error("must be at least 1ms of simulated time per second")]
    Speed,
    /// `--speed` that is not a duration.
    #[error("{0} (expected e.g. 1h or 30m)")]
    Duration(#[from] humantime::DurationError),
    /// `--start` that is not an RFC 3339 time.
    #[error("{0} (expected e.g. 2026-01-01T00:00:00Z)")]
    Start(#[from] chrono::ParseError),
}

fn parse_rate(text: &str) -> Result<f64, FlagError> {
    match text.parse::<f64>()? {
        rate if rate > 0.0 && rate.is_finite() => Ok(rate),
        _ => Err(FlagError::Rate),
    }
}

fn parse_speed(text: &str) -> Result<Duration, FlagError> {
    match humantime::parse_duration(text)? {
        speed if speed >= Duration::from_millis(1) => Ok(speed),
        _ => Err(FlagError::Speed),
    }
}

fn parse_start(text: &str) -> Result<i64, FlagError> {
    Ok(chrono::DateTime::parse_from_rfc3339(text)?.timestamp_millis())
}
