//! The `cxpulse` command line: parses arguments and calls the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
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
struct Brokers {
    /// Bootstrap servers (default: `kafka.brokers` of the configuration,
    /// which `CXPULSE__KAFKA__BROKERS` sets, else 127.0.0.1:9092).
    #[arg(long = "brokers")]
    list: Option<String>,
}

impl Brokers {
    /// The configuration of `file` (layered as for `run`), with these
    /// brokers if given.
    fn config(self, file: Option<&std::path::Path>) -> anyhow::Result<Config> {
        let mut config = load_config(file)?;
        if let Some(list) = self.list {
            config.kafka.brokers = list;
        }
        Ok(config)
    }
}

/// What the generator simulates and how fast.
#[derive(clap::Args)]
struct EventOptions {
    /// Events per second, on average (the population is sized for it).
    #[arg(long, default_value_t = 200.0, value_parser = parse_rate)]
    rate: f64,
    /// Simulated time per real second, e.g. 1h: a simulated day every 24 s.
    #[arg(long, default_value = "1h", value_parser = parse_speed)]
    speed: Duration,
    /// Seed: the same seed, rate and speed give the same events.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// First instant of simulated time (RFC 3339).
    #[arg(long, default_value = "2026-01-01T00:00:00Z", value_parser = parse_start)]
    start: i64,
}

/// How long after the start a simulation from `start_ms`, at `speed`
/// simulated seconds per second, passes the wall clock by more than a day
/// (the engine's default `max_future_ms`), if it does within `duration`.
fn future_after(start_ms: i64, speed: f64, duration: Option<Duration>) -> Option<Duration> {
    let limit = chrono::Utc::now().timestamp_millis() + 86_400_000;
    let after = Duration::from_secs_f64(((limit - start_ms) as f64 / speed / 1000.0).max(0.0));
    duration.is_none_or(|d| d > after).then_some(after)
}

fn parse_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(rate) if rate > 0.0 && rate.is_finite() => Ok(rate),
        Ok(_) => Err("must be a positive number of events per second".to_owned()),
        Err(e) => Err(e.to_string()),
    }
}

fn parse_speed(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text) {
        Ok(speed) if speed >= Duration::from_millis(1) => Ok(speed),
        Ok(_) => Err("must be at least 1ms of simulated time per second".to_owned()),
        Err(e) => Err(format!("{e} (expected e.g. 1h or 30m)")),
    }
}

fn parse_start(text: &str) -> Result<i64, String> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.timestamp_millis())
        .map_err(|e| format!("{e} (expected e.g. 2026-01-01T00:00:00Z)"))
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
        Command::Demo {
            brokers,
            config,
            events,
            duration,
            listen,
        } => runtime.block_on(cxpulse::demo::run(
            cxpulse::demo::DemoOptions {
                brokers,
                config,
                rate: events.rate,
                speed: events.speed.as_secs_f64(),
                seed: events.seed,
                start_ms: events.start,
                duration,
                listen,
            },
            shutdown_signal(),
        )),
        Command::Generate {
            brokers,
            config,
            events,
            duration,
            clean,
        } => runtime.block_on(async move {
            let config = brokers.config(config.as_deref())?;
            generate(config, events, duration, clean).await
        }),
        Command::Tail {
            job,
            brokers,
            config,
            no_follow,
        } => runtime.block_on(async move {
            let config = brokers.config(config.as_deref())?;
            cxpulse::tail::tail(&config, &job, !no_follow, Duration::from_secs(3)).await
        }),
        Command::Run { config } => runtime.block_on(run(config)),
        Command::Test {
            job,
            update,
            config,
        } => runtime.block_on(async move {
            let config = load_config(config.as_deref())?;
            if cxpulse::testcase::run_all(&config, job.as_deref(), update).await {
                Ok(())
            } else {
                anyhow::bail!("some test cases failed")
            }
        }),
        Command::Explain { job, config } => runtime.block_on(async move {
            let config = load_config(config.as_deref())?;
            let lookups = cxpulse::lookup::Lookups::default();
            let (job, _) = cxpulse::job::plan_named(&config, &job, &lookups).await?;
            print!("{}", job.explain(&config.topics));
            Ok(())
        }),
        Command::Backfill {
            job,
            from,
            config,
            url,
        } => request_backfill(&job, &from, config.as_deref(), url),
        Command::Check { config } => runtime.block_on(check(config)),
        Command::CreateTopics { config, partitions } => {
            runtime.block_on(create_topics(config, partitions))
        }
        Command::Reset {
            job,
            event_time,
            source,
            config,
        } => runtime.block_on(async move {
            let config = load_config(config.as_deref())?;
            match job {
                Some(job) if !event_time => {
                    let report = cxpulse::state::reset::reset_job(&config, &job).await?;
                    println!(
                        "reset {job}: {} state entries removed ({} tombstones in {})",
                        report.entries, report.tombstones, report.topic
                    );
                }
                _ => reset_event_time(&config, source.as_deref()).await?,
            }
            Ok(())
        }),
        Command::Produce {
            brokers,
            config,
            topic,
            key,
        } => runtime.block_on(async move {
            let config = brokers.config(config.as_deref())?;
            let sent = cxpulse::topic_io::produce_lines(
                config.client_config(),
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
            config,
            topic,
            follow,
        } => runtime.block_on(async move {
            let config = brokers.config(config.as_deref())?;
            cxpulse::topic_io::read_topic(
                config.client_config(),
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
    let config = load_config(config_file.as_deref())?;
    cxpulse::logging::init(config.log.format);
    tracing::info!(version = env!("CARGO_PKG_VERSION"), brokers = %config.kafka.brokers, "cxpulse starting");
    let metrics = Arc::new(cxpulse::metrics::Metrics::new()?);
    cxpulse::engine::run(config, metrics, shutdown_signal(), |_| {}).await?;
    Ok(())
}

/// `cxpulse generate`: publishes the simulation with a progress bar.
async fn generate(
    config: Config,
    events: EventOptions,
    duration: Option<Duration>,
    clean: bool,
) -> anyhow::Result<()> {
    use cxpulse::generate::Generator;
    use cxpulse::generate::publish::{Progress, customers_for_rate, publish};
    cxpulse::logging::init(config.log.format);
    cxpulse::generate::check_sources().map_err(anyhow::Error::msg)?;
    let sources = cxpulse::admin::source_topics(&config, 3);
    cxpulse::admin::ensure_topics(&config, &sources)
        .await
        .with_context(|| format!("creating the source topics on {}", config.kafka.brokers))?;
    let speed = events.speed.as_secs_f64();
    let customers = customers_for_rate(events.seed, events.start, events.rate, speed);
    let generator = Generator::new(events.seed, customers, events.start);
    let generator = if clean {
        generator
    } else {
        generator.with_noise()
    };
    let progress = Arc::new(Progress::default());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut task = tokio::spawn({
        let config = config.clone();
        let progress = Arc::clone(&progress);
        async move {
            publish(
                &config,
                generator.simulation(),
                events.start,
                speed,
                progress,
                stop_rx,
            )
            .await
        }
    });
    let bar = match duration {
        Some(d) => indicatif::ProgressBar::new(d.as_secs().max(1)).with_style(
            indicatif::ProgressStyle::with_template("{bar:30} {elapsed}/{duration} {msg}")?,
        ),
        None => indicatif::ProgressBar::new_spinner().with_style(
            indicatif::ProgressStyle::with_template("{spinner} {elapsed} {msg}")?,
        ),
    };
    eprintln!(
        "{customers} customers, about {:.0} events/s, {} of simulated time per second, to {}",
        events.rate,
        humantime::format_duration(events.speed),
        config.kafka.brokers
    );
    if let Some(after) = future_after(events.start, speed, duration) {
        eprintln!(
            "note: simulated time runs {speed:.0}x faster than the clock and passes it by more than a day after {}; \
             a cxpulse run with the default engine.max_future_ms (1 day) sends the later events to the dead-letter topic \
             as `future`: run it with CXPULSE__ENGINE__MAX_FUTURE_MS=0, or start the simulation earlier (--start)",
            humantime::format_duration(Duration::from_secs(after.as_secs()))
        );
    }
    let started = tokio::time::Instant::now();
    let mut ticks = tokio::time::interval(Duration::from_millis(250));
    let deadline = async {
        match duration {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deadline);
    let interrupt = shutdown_signal();
    tokio::pin!(interrupt);
    let finished = loop {
        tokio::select! {
            result = &mut task => break Some(result),
            () = &mut deadline => break None,
            () = &mut interrupt => break None,
            _ = ticks.tick() => {
                bar.set_position(started.elapsed().as_secs());
                bar.set_message(progress_message(&progress, started.elapsed()));
            }
        }
    };
    let _ = stop_tx.send(true);
    let result = match finished {
        Some(result) => result,
        None => task.await,
    };
    bar.finish_with_message(progress_message(&progress, started.elapsed()));
    result??;
    eprintln!(
        "sent {} events ({} acknowledged, {} failed)",
        progress.sent_total(),
        progress.delivered(),
        progress.failed()
    );
    Ok(())
}

fn progress_message(progress: &cxpulse::generate::publish::Progress, elapsed: Duration) -> String {
    let sent = progress.sent_total();
    let simulated = chrono::DateTime::from_timestamp_millis(progress.simulated_ms()).map_or_else(
        || "-".to_owned(),
        |t| t.format("%Y-%m-%d %H:%M").to_string(),
    );
    format!(
        "{sent} events ({:.0}/s), simulated time {simulated}, {} failed",
        sent as f64 / elapsed.as_secs_f64().max(1e-3),
        progress.failed()
    )
}

/// Loads the configuration and fixes this process's sources from its
/// `[[sources]]`.
/// `cxpulse reset --event-time`: forgets the watermarks of `source` (every
/// source when `None`) and the closed-through marks of the jobs reading it.
async fn reset_event_time(config: &Config, source: Option<&str>) -> anyhow::Result<()> {
    if let Some(name) = source
        && cxpulse::schema::Source::named(name).is_none_or(|s| !s.is_stream())
    {
        anyhow::bail!("--source {name}: not an event source of the configuration");
    }
    let (jobs, problems) = cxpulse::job::plan_configured(config).await;
    if !problems.is_empty() {
        let list: Vec<String> = problems.iter().map(ToString::to_string).collect();
        anyhow::bail!(
            "the queries must plan, to know which jobs read the source:\n  {}",
            list.join("\n  ")
        );
    }
    let readers = jobs
        .iter()
        .map(|j| {
            let sources = j.sources().iter().map(|s| s.name().to_owned()).collect();
            (j.name.clone(), sources)
        })
        .collect();
    let report = cxpulse::state::reset::reset_event_time(config, source, &readers).await?;
    println!(
        "reset event time of {}: {} entries removed ({} tombstones in {}); the next start computes the watermarks from the events it reads. To recompute windows that closed too early: cxpulse backfill JOB --from <a time before the bad event>",
        source.unwrap_or("every source"),
        report.entries,
        report.tombstones,
        report.topic
    );
    Ok(())
}

/// Asks the engine at `url` (default: the configured `http.listen`) to
/// backfill `job` from `from`, and prints its answer.
fn request_backfill(
    job: &str,
    from: &str,
    config: Option<&std::path::Path>,
    url: Option<String>,
) -> anyhow::Result<()> {
    cxpulse::query::BackfillFrom::parse(from)
        .and_then(|f| f.not_after(chrono::Utc::now().timestamp_millis()))
        .map_err(|e| anyhow::anyhow!("--from {e}"))?;
    let config = load_config(config)?;
    let token = config.http.admin_token.clone();
    if token.is_empty() {
        anyhow::bail!(
            "a backfill needs the engine's admin token: set CXPULSE__HTTP__ADMIN_TOKEN (its http.admin_token)"
        );
    }
    let base = url.unwrap_or_else(|| engine_url(&config.http.listen));
    let endpoint = format!("{}/jobs/{job}/backfill", base.trim_end_matches('/'));
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(std::time::Duration::from_secs(60)))
        .build()
        .into();
    let mut response = agent
        .post(&endpoint)
        .header("Authorization", &format!("Bearer {token}"))
        .send(from)
        .map_err(|e| anyhow::anyhow!("cannot reach the engine at {base}: {e}"))?;
    let answer = response.body_mut().read_to_string()?;
    if response.status().is_success() {
        print!("{answer}");
        Ok(())
    } else {
        anyhow::bail!("{}: {}", response.status(), answer.trim_end())
    }
}

/// The URL of an engine listening on `listen`: a wildcard address is
/// reached on the loopback interface.
fn engine_url(listen: &str) -> String {
    let local = listen
        .strip_prefix("0.0.0.0:")
        .map(|port| format!("127.0.0.1:{port}"))
        .or_else(|| {
            listen
                .strip_prefix("[::]:")
                .map(|port| format!("[::1]:{port}"))
        });
    format!("http://{}", local.as_deref().unwrap_or(listen))
}

fn load_config(file: Option<&std::path::Path>) -> anyhow::Result<Config> {
    let config = Config::load(file)?;
    cxpulse::schema::declare(&config.sources).map_err(|e| anyhow::anyhow!("[[sources]]: {e}"))?;
    Ok(config)
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
    let config = load_config(config_file.as_deref())?;
    let (jobs, _) = cxpulse::job::plan_configured(&config).await;
    let created = cxpulse::admin::create_engine_topics(&config, &jobs, partitions).await?;
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
