//! The two measured runs every workload shares: the raw consume ceiling,
//! and the `cxpulse` binary running some query files over the preloaded
//! events, watched from outside (its `/metrics`, its consumer group's
//! committed offsets, and `/proc`).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::{Value, json};

use crate::cpu::{broker_thread_seconds, cpu_seconds};

/// noida-db ignores `fetch.max.bytes` and answers a fetch with a
/// partition's whole backlog: every client here accepts answers this big.
pub const RECEIVE_MAX: &str = "2000000000";

/// How long one engine run may take before the bench gives up.
const RUN_LIMIT: Duration = Duration::from_secs(3_600);

/// One measured run.
#[derive(Debug, Clone, Default)]
pub struct Measured {
    /// Events processed.
    pub events: u64,
    /// Wall-clock seconds from the first event to the last.
    pub seconds: f64,
    /// CPU seconds (user + system) of the measured process in that span.
    pub cpu_seconds: f64,
    /// Of those, the seconds of librdkafka's broker threads (engine runs):
    /// on noida-db mostly idle consumers polling (`cpu::broker_thread_seconds`).
    pub broker_thread_seconds: f64,
    /// Peak resident set of the measured process, bytes.
    pub peak_rss: u64,
    /// Rows published per job (engine runs) or computed (batch runs).
    pub rows: BTreeMap<String, u64>,
}

impl Measured {
    /// Events per second of wall-clock time.
    pub fn rate(&self) -> f64 {
        self.events as f64 / self.seconds
    }

    /// CPU seconds per million events.
    pub fn cpu_per_million(&self) -> f64 {
        self.cpu_seconds / (self.events as f64 / 1e6)
    }

    /// CPU seconds per million events, less librdkafka's broker threads.
    pub fn engine_cpu_per_million(&self) -> f64 {
        (self.cpu_seconds - self.broker_thread_seconds) / (self.events as f64 / 1e6)
    }

    /// The figures as JSON; `ceiling` adds the ratio to it.
    pub fn json(&self, ceiling: Option<&Measured>) -> Value {
        json!({
            "events": self.events,
            "seconds": self.seconds,
            "events_per_second": self.rate(),
            "cpu_seconds": self.cpu_seconds,
            "cpu_seconds_per_million_events": self.cpu_per_million(),
            "broker_thread_cpu_seconds": self.broker_thread_seconds,
            "events_per_cpu_second": self.events as f64 / self.cpu_seconds,
            "peak_rss_bytes": self.peak_rss,
            "ratio_to_ceiling": ceiling.map(|c| self.rate() / c.rate()),
            "rows": self.rows,
        })
    }

    /// One Markdown table row.
    pub fn row(&self, name: &str, ceiling: Option<&Measured>) -> String {
        format!(
            "| {name} | {:.0} | {:.2} | {:.0} | {} | {} |",
            self.rate(),
            self.cpu_per_million(),
            self.events as f64 / self.cpu_seconds,
            self.peak_rss / 1_048_576,
            ceiling.map_or("—".to_owned(), |c| format!(
                "{:.2}",
                self.rate() / c.rate()
            )),
        )
    }
}

/// The header of [`Measured::row`]'s table.
pub const TABLE_HEADER: &str = "| run | events/s | CPU s per M events | events per CPU s | peak RSS MiB | vs ceiling |\n|---|---|---|---|---|---|";

/// Peak resident set of process `pid` so far (`VmHWM`), bytes.
pub fn peak_rss(pid: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Resets this process's peak resident set to its current one.
pub fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// The raw consume ceiling: an rdkafka consumer that only counts the
/// messages and bytes of `topics` (each with `partitions` partitions), from
/// the beginning until it has seen `events`; returns the run and the bytes.
pub fn ceiling(
    bootstrap: &str,
    topics: &[String],
    partitions: i32,
    events: u64,
) -> (Measured, u64) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "bench-ceiling")
        .set("enable.auto.commit", "false")
        .set("receive.message.max.bytes", RECEIVE_MAX)
        .create()
        .expect("consumer");
    let mut all = TopicPartitionList::new();
    for topic in topics {
        for p in 0..partitions {
            all.add_partition_offset(topic, p, Offset::Beginning)
                .expect("partition");
        }
    }
    consumer.assign(&all).expect("assign");
    reset_peak_rss();
    let (mut count, mut bytes) = (0u64, 0u64);
    let mut first = None;
    while count < events {
        if let Some(message) = consumer.poll(Duration::from_millis(100)) {
            let message = message.expect("message");
            if first.is_none() {
                first = Some((Instant::now(), cpu_seconds("self")));
            }
            count += 1;
            bytes += message.payload().map_or(0, <[u8]>::len) as u64;
        }
    }
    let (began, cpu) = first.expect("a message");
    let measured = Measured {
        events: count,
        seconds: began.elapsed().as_secs_f64(),
        cpu_seconds: cpu_seconds("self") - cpu,
        broker_thread_seconds: 0.0,
        peak_rss: peak_rss("self"),
        rows: BTreeMap::new(),
    };
    (measured, bytes)
}

/// One run of the `cxpulse` binary.
pub struct EngineRun<'a> {
    /// Configuration file layered over the default, if any.
    pub config: Option<&'a Path>,
    /// Settings as `CXPULSE__…` environment variables.
    pub env: Vec<(String, String)>,
    /// The consumer group (also set through `env`).
    pub group: String,
    /// The source topics whose events are counted.
    pub topics: &'a [String],
    /// Partitions per source topic.
    pub partitions: i32,
    /// Events preloaded in `topics`.
    pub events: u64,
    /// Where to write a `perf record` profile of the run (every
    /// instance), if anywhere.
    pub profile: Option<PathBuf>,
    /// How many instances share the partitions (`cluster.instances`).
    pub instances: i32,
}

impl EngineRun<'_> {
    /// Starts `cxpulse run` on this run's settings, once per instance.
    pub fn spawn_all(&self, bootstrap: &str) -> Vec<Spawned> {
        (0..self.instances)
            .map(|index| self.spawn_instance(bootstrap, index))
            .collect()
    }

    /// Starts `cxpulse run` on this run's settings as instance `index`.
    fn spawn_instance(&self, bootstrap: &str, index: i32) -> Spawned {
        let port = free_port();
        let logs = tempfile::NamedTempFile::new().expect("log file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_cxpulse"));
        command.arg("run");
        if let Some(config) = self.config {
            command.arg("--config").arg(config);
        }
        command
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("CXPULSE__KAFKA__BROKERS", bootstrap)
            .env("CXPULSE__KAFKA__GROUP_ID", &self.group)
            .env(
                "CXPULSE__KAFKA__PROPERTIES__RECEIVE_MESSAGE_MAX_BYTES",
                RECEIVE_MAX,
            )
            .env("CXPULSE__HTTP__LISTEN", format!("127.0.0.1:{port}"))
            .env("CXPULSE__ENGINE__RELOAD_INTERVAL_MS", "0")
            .env("CXPULSE__CLUSTER__INSTANCES", self.instances.to_string())
            .env("CXPULSE__CLUSTER__INDEX", index.to_string())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(logs.reopen().expect("log file"));
        let child = command.spawn().expect("cxpulse run");
        Spawned { child, port, logs }
    }

    /// Starts `cxpulse run` (every instance) and measures it from the first
    /// consumed event until its group has committed the end of every
    /// partition of `topics` and its windows have stopped closing; then
    /// stops it with SIGTERM. CPU seconds, peak RSS and rows are summed
    /// over the instances.
    pub fn measure(&self, bootstrap: &str) -> Measured {
        let mut engines = self.spawn_all(bootstrap);
        let pids: Vec<String> = engines.iter().map(|e| e.child.id().to_string()).collect();
        let ports: Vec<u16> = engines.iter().map(|e| e.port).collect();
        let cpu = || {
            pids.iter()
                .map(|pid| (cpu_seconds(pid), broker_thread_seconds(pid)))
                .fold((0.0, 0.0), |(a, b), (c, d)| (a + c, b + d))
        };
        let mut perf = self.profile.as_ref().map(|out| {
            Command::new("perf")
                .args([
                    "record",
                    "-F",
                    "199",
                    "--call-graph",
                    "dwarf,8192",
                    "-p",
                    &pids.join(","),
                    "-o",
                ])
                .arg(out)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("perf (Debian package linux-perf)")
        });
        let ends = end_offsets(bootstrap, self.topics, self.partitions);
        let offsets: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", &self.group)
            .create()
            .expect("consumer");
        let started = Instant::now();
        let mut first = None;
        loop {
            std::thread::sleep(Duration::from_millis(100));
            for engine in &mut engines {
                if let Ok(Some(status)) = engine.child.try_wait() {
                    let logs = std::fs::read_to_string(engine.logs.path()).unwrap_or_default();
                    panic!("cxpulse run stopped ({status}):\n{logs}");
                }
            }
            assert!(started.elapsed() < RUN_LIMIT, "the run did not finish");
            if first.is_none() {
                let consumed: f64 = ports
                    .iter()
                    .flat_map(|&port| metric(port, "cxpulse_records_consumed_total"))
                    .filter(|(labels, _)| self.topics.iter().any(|t| labels.contains(t.as_str())))
                    .map(|(_, v)| v)
                    .sum();
                if consumed > 0.0 {
                    first = Some((Instant::now(), cpu()));
                }
                continue;
            }
            // Every source offset committed, and every partial aggregate of
            // a shuffle read by its stage 2.
            if committed_through(&offsets, &ends) && repartition_lag(&ports) == 0.0 {
                break;
            }
        }
        // The last offsets are committed before the windows the final
        // watermark closes have all fired (firing is budgeted per round),
        // and, on several instances, before the second stage of a shuffle
        // has read the last partials: the run ends when windows stop
        // closing.
        let (ended, (cpu_at_end, io_at_end)) = windows_settled(&ports, cpu);
        let (began, (cpu_at_start, io_at_start)) = first.expect("started");
        let seconds = ended.duration_since(began).as_secs_f64();
        let peak_rss = pids.iter().map(|pid| peak_rss(pid)).sum();
        let rows = summed_per_job(&ports, "cxpulse_output_records_total");
        let errors: u64 = summed_per_job(&ports, "cxpulse_job_errors_total")
            .values()
            .sum();
        let restarts: f64 = ports
            .iter()
            .flat_map(|&port| metric(port, "cxpulse_restores_total"))
            .map(|(_, v)| v)
            .sum();
        if errors > 0 || restarts > f64::from(self.instances) {
            for (i, engine) in engines.iter().enumerate() {
                let kept = std::env::temp_dir().join(format!("{}-{i}.log", self.group));
                let _ = std::fs::copy(engine.logs.path(), &kept);
                eprintln!(
                    "warning: {} had {errors} job error(s) and {restarts} restore(s); the log of instance {i} is in {}",
                    self.group,
                    kept.display()
                );
            }
        }
        if let Some(perf) = &mut perf {
            let _ = Command::new("kill")
                .args(["-INT", &perf.id().to_string()])
                .status();
            let _ = perf.wait();
        }
        for engine in engines {
            engine.stop();
        }
        Measured {
            events: self.events,
            seconds,
            cpu_seconds: cpu_at_end - cpu_at_start,
            broker_thread_seconds: io_at_end - io_at_start,
            peak_rss,
            rows,
        }
    }
}

/// A running `cxpulse run`.
pub struct Spawned {
    /// The process.
    pub child: Child,
    /// Its HTTP port.
    pub port: u16,
    /// Its log (stderr).
    pub logs: tempfile::NamedTempFile,
}

impl Spawned {
    /// Waits until `/readyz` says ready; panics with the log if it exits.
    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                let logs = std::fs::read_to_string(self.logs.path()).unwrap_or_default();
                panic!("cxpulse run stopped ({status}):\n{logs}");
            }
            assert!(Instant::now() < deadline, "cxpulse run never got ready");
            if http_status(self.port, "/readyz") == Some(200) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops it with SIGTERM (SIGKILL after a minute).
    pub fn stop(mut self) {
        stop(&mut self.child);
    }
}

/// The status code of `GET path` on the engine's port.
fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    text.split_whitespace().nth(1)?.parse().ok()
}

/// When windows stopped closing: no job's `cxpulse_windows_fired_total`
/// on any of `ports` changed for five seconds, while the engines' own
/// threads (`cpu`: total and librdkafka broker-thread seconds) used under
/// a quarter of a CPU second each (a stage 2 firing a long window has not
/// fired yet, but works), or for a minute; and what `cpu` counted at the
/// last change.
fn windows_settled(ports: &[u16], cpu: impl Fn() -> (f64, f64)) -> (Instant, (f64, f64)) {
    let mut fired = summed_per_job(ports, "cxpulse_windows_fired_total");
    let mut last_change = (Instant::now(), cpu());
    let mut samples = std::collections::VecDeque::from([last_change]);
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let now = (Instant::now(), cpu());
        samples.push_back(now);
        while samples
            .front()
            .is_some_and(|(at, _)| now.0.duration_since(*at) > Duration::from_secs(5))
        {
            samples.pop_front();
        }
        let fired_now = summed_per_job(ports, "cxpulse_windows_fired_total");
        if fired_now != fired {
            fired = fired_now;
            last_change = now;
            continue;
        }
        let engine = |(total, io): (f64, f64)| total - io;
        let busy = samples
            .front()
            .map_or(0.0, |(_, first)| engine(now.1) - engine(*first));
        let quiet = last_change.0.elapsed();
        let idle = busy < 0.25 * ports.len() as f64;
        if (quiet >= Duration::from_secs(5) && idle) || quiet >= Duration::from_secs(60) {
            return last_change;
        }
    }
}

/// Metric `name`'s value per `job` label, summed over the engines on
/// `ports`.
fn summed_per_job(ports: &[u16], name: &str) -> BTreeMap<String, u64> {
    let mut sums = BTreeMap::new();
    for &port in ports {
        for (job, v) in per_job(port, name) {
            *sums.entry(job).or_default() += v;
        }
    }
    sums
}

/// Metric `name`'s value per `job` label.
fn per_job(port: u16, name: &str) -> BTreeMap<String, u64> {
    metric(port, name)
        .into_iter()
        .filter_map(|(labels, v)| {
            let job = labels.split("job=\"").nth(1)?.split('"').next()?.to_owned();
            Some((job, v as u64))
        })
        .collect()
}

/// Records of the repartition topics that the engines on `ports` have
/// not read yet (`cxpulse_consumer_lag_records`, once a second).
fn repartition_lag(ports: &[u16]) -> f64 {
    ports
        .iter()
        .flat_map(|&port| metric(port, "cxpulse_consumer_lag_records"))
        .filter(|(labels, _)| labels.contains("-repartition\""))
        .map(|(_, lag)| lag)
        .sum()
}

/// A port free on 127.0.0.1 a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Each series of metric `name` on the engine's `/metrics`: (labels, value).
pub fn metric(port: u16, name: &str) -> Vec<(String, f64)> {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return Vec::new();
    };
    let _ = stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text);
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series[name.len()..].to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// The end offset of every partition of `topics`.
fn end_offsets(
    bootstrap: &str,
    topics: &[String],
    partitions: i32,
) -> BTreeMap<(String, i32), i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("consumer");
    let mut ends = BTreeMap::new();
    for topic in topics {
        for p in 0..partitions {
            let (_, high) = consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .expect("watermarks");
            ends.insert((topic.clone(), p), high);
        }
    }
    ends
}

/// Whether the group of `consumer` has committed `ends` (or beyond) for every partition.
fn committed_through(consumer: &BaseConsumer, ends: &BTreeMap<(String, i32), i64>) -> bool {
    let mut list = TopicPartitionList::new();
    for (topic, partition) in ends.keys() {
        list.add_partition(topic, *partition);
    }
    let Ok(committed) = consumer.committed_offsets(list, Duration::from_secs(10)) else {
        return false;
    };
    committed.elements().iter().all(|e| match e.offset() {
        Offset::Offset(at) => at >= ends[&(e.topic().to_owned(), e.partition())],
        _ => false,
    })
}

/// SIGTERM, then the wait for a clean stop (SIGKILL after a minute).
fn stop(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}
