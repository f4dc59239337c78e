//! The `cxpulse` command line: parses arguments and calls the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use cxpulse::config::Config;
use cxpulse::tools::cli::{Brokers, Cli, Command, EventOptions};

/// How long after the start a simulation from `start_ms`, at `speed`
/// simulated seconds per second, passes the wall clock by more than a day
/// (the engine's default `max_future_ms`), if it does within `duration`.
fn future_after(start_ms: i64, speed: f64, duration: Option<Duration>) -> Option<Duration> {
    let limit = chrono::Utc::now().timestamp_millis() + 86_400_000;
    let after = Duration::from_secs_f64(((limit - start_ms) as f64 / speed / 1000.0).max(0.0));
    duration.is_none_or(|d| d > after).then_some(after)
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
        } => runtime.block_on(cxpulse::tools::demo::run(
            cxpulse::tools::demo::DemoOptions {
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
            let config = configured(brokers, config.as_deref())?;
            generate(config, events, duration, clean).await
        }),
        Command::Tail {
            job,
            brokers,
            config,
            no_follow,
        } => runtime.block_on(async move {
            let config = configured(brokers, config.as_deref())?;
            cxpulse::tools::tail::tail(&config, &job, !no_follow, Duration::from_secs(3)).await
        }),
        Command::Run { config } => runtime.block_on(run(config)),
        Command::Test {
            job,
            update,
            config,
        } => runtime.block_on(async move {
            let config = Config::load(config.as_deref())?;
            if cxpulse::tools::testcase::run_all(&config, job.as_deref(), update).await {
                Ok(())
            } else {
                anyhow::bail!("some test cases failed")
            }
        }),
        Command::Explain { job, config } => runtime.block_on(async move {
            let config = Config::load(config.as_deref())?;
            let lookups = cxpulse::lookup::Lookups::new(config.declared);
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
            let config = Config::load(config.as_deref())?;
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
            let config = configured(brokers, config.as_deref())?;
            let sent = cxpulse::tools::topic_io::produce_lines(
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
            let config = configured(brokers, config.as_deref())?;
            cxpulse::tools::topic_io::read_topic(
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
    let config = Config::load(config_file.as_deref())?;
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
    use cxpulse::tools::generate::Generator;
    use cxpulse::tools::generate::publish::{Progress, customers_for_rate, publish};
    cxpulse::logging::init(config.log.format);
    cxpulse::tools::generate::check_sources(config.declared)?;
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

fn progress_message(
    progress: &cxpulse::tools::generate::publish::Progress,
    elapsed: Duration,
) -> String {
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

/// `cxpulse reset --event-time`: forgets the watermarks of `source` (every
/// source when `None`) and the closed-through marks of the jobs reading it.
async fn reset_event_time(config: &Config, source: Option<&str>) -> anyhow::Result<()> {
    if let Some(name) = source
        && config.declared.named(name).is_none_or(|s| !s.is_stream())
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
    let config = Config::load(config)?;
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

/// The configuration of `file`, with `--brokers` if given.
fn configured(brokers: Brokers, file: Option<&std::path::Path>) -> anyhow::Result<Config> {
    let mut config = Config::load(file)?;
    brokers.apply(&mut config);
    Ok(config)
}

async fn check(config_file: Option<PathBuf>) -> anyhow::Result<()> {
    let report = cxpulse::tools::check::check(config_file.as_deref()).await;
    print!("{report}");
    if report.is_ok() {
        Ok(())
    } else {
        anyhow::bail!("{} problem(s) found", report.problems.len())
    }
}

async fn create_topics(config_file: Option<PathBuf>, partitions: i32) -> anyhow::Result<()> {
    let config = Config::load(config_file.as_deref())?;
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
