//! The `cxpulse` command line: parses arguments and calls the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use cxpulse::config::Config;

/// Streaming analytics for customer events: Kafka in, windowed SQL, Kafka and Prometheus out.
#[derive(Parser)]
#[command(name = "cxpulse", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run every job in the queries directory until SIGTERM or ctrl-c.
    Run {
        /// Configuration file layered over the embedded default (env vars CXPULSE__SECTION__KEY override both).
        #[arg(long, short)]
        config: Option<PathBuf>,
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
    /// Send JSON lines from stdin to a topic, one message per line.
    Produce {
        /// Bootstrap servers.
        #[arg(
            long,
            env = "CXPULSE__KAFKA__BROKERS",
            default_value = "127.0.0.1:9092"
        )]
        brokers: String,
        /// Destination topic, e.g. cx.feedback.
        #[arg(long)]
        topic: String,
        /// JSON field whose value becomes the message key, e.g. customer_id.
        #[arg(long)]
        key: Option<String>,
    },
    /// Print a topic from the beginning as `key<TAB>value` lines.
    Read {
        /// Bootstrap servers.
        #[arg(
            long,
            env = "CXPULSE__KAFKA__BROKERS",
            default_value = "127.0.0.1:9092"
        )]
        brokers: String,
        /// Topic to read, e.g. cx.metrics.complaint_alerts.
        topic: String,
        /// Keep waiting for new records instead of stopping after 3 quiet seconds.
        #[arg(long, short)]
        follow: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Run { config } => runtime.block_on(run(config)),
        Command::Check { config } => runtime.block_on(check(config)),
        Command::CreateTopics { config, partitions } => {
            runtime.block_on(create_topics(config, partitions))
        }
        Command::Produce {
            brokers,
            topic,
            key,
        } => runtime.block_on(async move {
            let sent = cxpulse::topic_io::produce_lines(
                &brokers,
                &topic,
                key.as_deref(),
                tokio::io::stdin(),
            )
            .await?;
            eprintln!("sent {sent} record(s) to {topic}");
            Ok(())
        }),
        Command::Read {
            brokers,
            topic,
            follow,
        } => runtime.block_on(async move {
            cxpulse::topic_io::read_topic(
                &brokers,
                &topic,
                follow,
                std::time::Duration::from_secs(3),
            )
            .await?;
            Ok(())
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config_file: Option<PathBuf>) -> anyhow::Result<()> {
    let config = Config::load(config_file.as_deref())?;
    cxpulse::logging::init(config.log.format);
    tracing::info!(version = env!("CARGO_PKG_VERSION"), brokers = %config.kafka.brokers, "cxpulse starting");
    cxpulse::engine::run(config, shutdown_signal(), |_| {}).await?;
    Ok(())
}

async fn check(config_file: Option<PathBuf>) -> anyhow::Result<()> {
    let report = cxpulse::check::check(config_file.as_deref()).await;
    print!("{report}");
    if report.is_ok() {
        Ok(())
    } else {
        anyhow::bail!("{} problem(s) found", report.problems.len())
    }
}

async fn create_topics(config_file: Option<PathBuf>, partitions: i32) -> anyhow::Result<()> {
    let config = Config::load(config_file.as_deref())?;
    let created = cxpulse::admin::create_engine_topics(&config, partitions).await?;
    for topic in created {
        println!("{topic}");
    }
    Ok(())
}

/// Resolves on SIGTERM or ctrl-c.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("ctrl-c received"),
        () = terminate => tracing::info!("SIGTERM received"),
    }
}
