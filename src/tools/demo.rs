//! `cxpulse demo`: the whole product in one command. Starts a local broker
//! (or uses `--brokers`), creates the topics, runs every bundled job and the
//! event generator, serves `/metrics`, and shows a live view until ctrl-c,
//! `q`, or `--duration`; then stops everything it started.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use rdkafka::error::KafkaError;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::config::Config;
use crate::engine::EngineError;
use crate::metrics::Metrics;
use crate::tools::dashboard::{Snapshot, plain, terminal};
use crate::tools::generate::Generator;
use crate::tools::generate::publish::{Progress, customers_for_rate, publish};
use crate::tools::local_broker::LocalBroker;

/// How often the view refreshes.
const REFRESH: Duration = Duration::from_secs(1);
/// How often the plain view prints the full summary.
const PLAIN_SUMMARY_EVERY: u64 = 10;

/// What `cxpulse demo` runs.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// An existing cluster; `None` starts a local broker.
    pub brokers: Option<String>,
    /// Configuration file layered over the embedded default.
    pub config: Option<PathBuf>,
    /// Target events per second.
    pub rate: f64,
    /// Simulated seconds per wall-clock second.
    pub speed: f64,
    /// Seed of the generator.
    pub seed: u64,
    /// First instant of simulated time (ms since the epoch).
    pub start_ms: i64,
    /// Stop after this long; `None` runs until ctrl-c or `q`.
    pub duration: Option<Duration>,
    /// Address of `/metrics`.
    pub listen: String,
}

/// Why the view loop ended.
enum Ending {
    Asked,
    Elapsed,
    EngineStopped,
    PublisherStopped,
}

/// How far ahead of the wall clock the demo's events may be: a century of
/// simulated time (about ten days of the demo at its default speed).
const DEMO_MAX_FUTURE_MS: i64 = 100 * 365 * 86_400_000;

/// Runs the demo until `interrupt` resolves (ctrl-c, SIGTERM), `q` in the
/// full-screen view, or `duration`. The full-screen view is used when stdout
/// is a terminal; otherwise status lines are printed.
pub async fn run(options: DemoOptions, interrupt: impl Future<Output = ()>) -> anyhow::Result<()> {
    let full_screen = std::io::stdout().is_terminal();
    let log_path = std::env::temp_dir().join(format!("cxpulse-demo-{}.log", std::process::id()));
    let log_file = std::fs::File::create(&log_path)
        .with_context(|| format!("creating the log file {}", log_path.display()))?;
    crate::logging::init_to_file(log_file);

    let broker = match &options.brokers {
        Some(_) => None,
        None => {
            println!("starting the local broker (noida-db)…");
            Some(
                tokio::task::spawn_blocking(LocalBroker::start)
                    .await
                    .context("starting the local broker")??,
            )
        }
    };
    let bootstrap = options
        .brokers
        .clone()
        .or_else(|| broker.as_ref().map(LocalBroker::bootstrap))
        .unwrap_or_default();
    let queries = tempfile::Builder::new()
        .prefix("cxpulse-demo-queries-")
        .tempdir()?;
    crate::tools::bundled::write_queries(queries.path())?;

    let mut config = Config::load(options.config.as_deref())?;
    crate::tools::generate::check_sources(config.declared)?;
    config.kafka.brokers.clone_from(&bootstrap);
    config.engine.queries_dir = queries.path().to_owned();
    // Simulated time runs `speed` times faster than the clock and soon
    // passes it: the demo takes events up to a century ahead, which still
    // refuses a year-9999 event.
    if config.engine.max_future_ms != 0 {
        config.engine.max_future_ms = config.engine.max_future_ms.max(DEMO_MAX_FUTURE_MS);
    }
    config.http.listen.clone_from(&options.listen);
    let (jobs, _) = crate::job::plan_configured(&config).await;
    crate::admin::create_engine_topics(&config, &jobs, 3)
        .await
        .with_context(|| format!("creating the topics on {bootstrap}"))?;

    let metrics = Arc::new(Metrics::new()?);
    let (stop_tx, stop_rx) = watch::channel(false);
    let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
    let engine = tokio::spawn(crate::engine::run(
        config.clone(),
        Arc::clone(&metrics),
        stopped(stop_rx.clone()),
        move |addr| {
            let _ = addr_tx.send(addr);
        },
    ));
    let Ok(addr) = addr_rx.await else {
        let result = engine.await.context("the engine task")?;
        if let Err(e @ EngineError::Http { .. }) = result {
            anyhow::bail!(
                "{e} (is another process using it? --listen 127.0.0.1:0 picks a free port)"
            );
        }
        result?;
        anyhow::bail!("the engine stopped before it listened");
    };

    let customers = customers_for_rate(options.seed, options.start_ms, options.rate, options.speed);
    let simulation = Generator::new(options.seed, customers, options.start_ms)
        .with_noise()
        .simulation();
    let progress = Arc::new(Progress::default());
    let publisher = tokio::spawn({
        let config = config.clone();
        let progress = Arc::clone(&progress);
        let start_ms = options.start_ms;
        let speed = options.speed;
        let stop = stop_rx.clone();
        async move { publish(&config, simulation, start_ms, speed, progress, stop).await }
    });

    // The job to suggest reading: need_by_category when it is there.
    let shown = jobs
        .iter()
        .find(|j| j.name == "need_by_category")
        .or(jobs.first());
    let shown_job = shown.map_or("need_by_category", |j| j.name.as_str());
    let shown_topic = shown.map_or("cx.metrics.need_by_category", |j| j.output_topic.as_str());
    let header = vec![
        format!(
            "broker    {bootstrap} ({})",
            if broker.is_some() {
                "noida-db started by the demo, stopped when it ends"
            } else {
                "--brokers"
            }
        ),
        format!("metrics   http://{addr}/metrics"),
        format!(
            "outputs   {} job topics: {}",
            jobs.len(),
            jobs.iter()
                .map(|j| j.output_topic.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        format!(
            "read      cxpulse tail {shown_job} --brokers {bootstrap}    (or: cxpulse read {shown_topic} --brokers {bootstrap})"
        ),
        format!(
            "events    {customers} customers, about {:.0} events/s, {} of simulated time per second from {}, seed {}; 2 % out of order (some by hours), 0.5 % malformed",
            options.rate,
            humantime::format_duration(Duration::from_secs_f64(options.speed)),
            chrono::DateTime::from_timestamp_millis(options.start_ms)
                .map_or_else(String::new, |t| t.format("%Y-%m-%d").to_string()),
            options.seed
        ),
        format!("logs      {}", log_path.display()),
    ];
    for line in &header {
        println!("{line}");
    }

    let view = View {
        metrics: &metrics,
        config: &config,
        duration: options.duration,
        engine: &engine,
        publisher: &publisher,
    };
    let ending = if full_screen {
        view.full_screen(&header, interrupt).await?
    } else {
        view.plain(interrupt).await
    };
    let _ = stop_tx.send(true);
    let published = publisher.await.context("the generator task")?;
    let engine_result = engine.await.context("the engine task")?;
    let last = Snapshot::read(&metrics.gather(), &config.topics, config.declared);
    println!("\n{}", plain::summary(&last));
    println!(
        "generated {} events ({} acknowledged, {} failed)",
        progress.sent_total(),
        progress.delivered(),
        progress.failed()
    );
    drop(broker);
    engine_result.context("the engine")?;
    published.context("the generator")?;
    match ending {
        Ending::EngineStopped => anyhow::bail!(
            "the engine stopped unexpectedly; see {}",
            log_path.display()
        ),
        Ending::Asked | Ending::Elapsed | Ending::PublisherStopped => {}
    }
    println!(
        "demo stopped{}",
        if matches!(ending, Ending::Elapsed) {
            " (duration reached)"
        } else {
            ""
        }
    );
    Ok(())
}

/// Resolves when `stop` turns true.
async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Resolves after `duration`, or never.
async fn elapsed(duration: Option<Duration>) {
    match duration {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

/// The live view and what ends it.
struct View<'a> {
    metrics: &'a Metrics,
    config: &'a Config,
    duration: Option<Duration>,
    /// The engine: the view ends if it stops.
    engine: &'a JoinHandle<Result<(), EngineError>>,
    /// The generator: the view ends if it stops.
    publisher: &'a JoinHandle<Result<(), KafkaError>>,
}

impl View<'_> {
    fn snapshot(&self) -> Snapshot {
        Snapshot::read(
            &self.metrics.gather(),
            &self.config.topics,
            self.config.declared,
        )
    }

    /// Why the demo should end now, if it should (checked every refresh).
    fn task_ended(&self) -> Option<Ending> {
        if self.engine.is_finished() {
            Some(Ending::EngineStopped)
        } else if self.publisher.is_finished() {
            Some(Ending::PublisherStopped)
        } else {
            None
        }
    }

    /// Status lines on stdout, with the full summary every few seconds.
    async fn plain(&self, interrupt: impl Future<Output = ()>) -> Ending {
        let started = Instant::now();
        let mut earlier = self.snapshot();
        let mut earlier_at = started;
        let mut ticks = tokio::time::interval_at(started + REFRESH, REFRESH);
        tokio::pin!(interrupt);
        let end = elapsed(self.duration);
        tokio::pin!(end);
        loop {
            tokio::select! {
                () = &mut interrupt => return Ending::Asked,
                () = &mut end => return Ending::Elapsed,
                now = ticks.tick() => {
                    let snapshot = self.snapshot();
                    println!("{}", plain::status_line(&snapshot, &earlier, now - earlier_at, now - started));
                    if (now - started).as_secs().is_multiple_of(PLAIN_SUMMARY_EVERY) {
                        print!("{}", plain::summary(&snapshot));
                    }
                    earlier = snapshot;
                    earlier_at = now;
                    if let Some(ending) = self.task_ended() {
                        return ending;
                    }
                }
            }
        }
    }

    /// The full-screen view, until ctrl-c, `q`, Esc or the duration.
    async fn full_screen(
        &self,
        header: &[String],
        interrupt: impl Future<Output = ()>,
    ) -> anyhow::Result<Ending> {
        let mut screen = ratatui::try_init().context("taking over the terminal")?;
        let (keys_done, mut quit) = quit_keys();
        let mut earlier = self.snapshot();
        let mut earlier_at = Instant::now();
        let mut ticks = tokio::time::interval(REFRESH);
        tokio::pin!(interrupt);
        let end = elapsed(self.duration);
        tokio::pin!(end);
        let ending = loop {
            tokio::select! {
                () = &mut interrupt => break Ok(Ending::Asked),
                _ = quit.recv() => break Ok(Ending::Asked),
                () = &mut end => break Ok(Ending::Elapsed),
                now = ticks.tick() => {
                    let snapshot = self.snapshot();
                    let since = now - earlier_at;
                    let drawn = screen.draw(|frame| terminal::draw(frame, header, &snapshot, &earlier, since));
                    if let Err(e) = drawn {
                        break Err(e).context("drawing the view");
                    }
                    earlier = snapshot;
                    earlier_at = now;
                    if let Some(ending) = self.task_ended() {
                        break Ok(ending);
                    }
                }
            }
        };
        keys_done.store(true, Ordering::Relaxed);
        ratatui::restore();
        ending
    }
}

/// Reads keys on a thread of its own (the terminal is in raw mode, so ctrl-c
/// arrives as a key): `q`, Esc or ctrl-c send on the channel. The thread
/// ends when the returned flag is set.
fn quit_keys() -> (Arc<AtomicBool>, mpsc::Receiver<()>) {
    use ratatui::crossterm::event::{self, Event, KeyCode, KeyModifiers};
    let done = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel(1);
    let flag = Arc::clone(&done);
    std::thread::spawn(move || {
        while !flag.load(Ordering::Relaxed) {
            if !event::poll(Duration::from_millis(100)).unwrap_or(false) {
                continue;
            }
            if let Ok(Event::Key(key)) = event::read() {
                let ctrl_c =
                    key.code == KeyCode::Char('c') && key.modifiers.contains(KeyModifiers::CONTROL);
                if ctrl_c || matches!(key.code, KeyCode::Char('q') | KeyCode::Esc) {
                    let _ = tx.blocking_send(());
                    return;
                }
            }
        }
    });
    (done, rx)
}
