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
