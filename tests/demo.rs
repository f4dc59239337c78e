//! `cxpulse demo`, `generate` and `tail`, run as a user runs them: the
//! binary, without a terminal, against its own broker or a given one.

mod common;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use common::*;
use cxpulse::tools::bundled::QUERIES;

const BIN: &str = env!("CARGO_BIN_EXE_cxpulse");

/// The demos are heavy for a 2-core machine: one at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn cxpulse(args: &[&str], env: &[(String, String)]) -> Output {
    let output = Command::new(BIN)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .output()
        .expect("run cxpulse");
    assert!(
        output.status.success(),
        "cxpulse {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// A broker, and every topic under a prefix of this test's own.
fn isolated(test: &str) -> (TestBroker, String, Vec<(String, String)>) {
    let broker = TestBroker::start();
    let prefix = unique_prefix(test);
    let env = prefixed_topics(&prefix);
    (broker, prefix, env)
}

/// Source topics under a prefix of their own, as `CXPULSE__TOPICS__*`.
fn prefixed_topics(prefix: &str) -> Vec<(String, String)> {
    [
        "transactions",
        "feedback",
        "complaints",
        "customers",
        "deadletter",
    ]
    .iter()
    .map(|t| {
        (
            format!("CXPULSE__TOPICS__{}", t.to_uppercase()),
            format!("{prefix}{t}"),
        )
    })
    .chain([(
        "CXPULSE__TOPICS__OUTPUT_PREFIX".to_owned(),
        format!("{prefix}metrics."),
    )])
    .collect()
}

/// The last "rows published per job" block of the demo's output.
fn rows_per_job(stdout: &str) -> BTreeMap<String, f64> {
    let block = stdout
        .rsplit("rows published per job:\n")
        .next()
        .unwrap_or_default();
    block
        .lines()
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            Some((words.next()?.to_owned(), words.next()?.parse().ok()?))
        })
        .collect()
}

/// The sum over sources of the `N word` counts of a status line such as
/// `[ 9s] event time … | transactions 50/s (120 read, 5 invalid, 7 late) | …`.
fn status_count(line: &str, word: &str) -> u64 {
    line.match_indices(&format!(" {word}"))
        .filter_map(|(at, _)| line[..at].rsplit([' ', '(']).next()?.parse::<u64>().ok())
        .sum()
}

/// Every bundled job published rows, and the output names each of them.
fn assert_every_job_published(stdout: &str) {
    let rows = rows_per_job(stdout);
    for (job, _) in QUERIES {
        assert!(
            rows.get(job).is_some_and(|n| *n > 0.0),
            "{job} published no rows: {rows:?}\n{stdout}"
        );
        assert!(stdout.contains(job));
    }
}

#[test]
fn the_demo_starts_its_broker_runs_every_bundled_job_and_stops_the_broker() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // 6 simulated hours per second: a simulated day every 4 s, so that the
    // daily jobs (feedback starts a day in) fire within the run. Started in a
    // process group of its own, which gets SIGINT as a terminal's ctrl-c
    // would send it.
    let mut demo = Command::new(BIN)
        .args([
            "demo",
            "--speed",
            "6h",
            "--rate",
            "150",
            "--listen",
            "127.0.0.1:0",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("start the demo");
    let stdout_pipe = demo.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut { stdout_pipe }, &mut text).expect("read stdout");
        text
    });
    std::thread::sleep(Duration::from_secs(35));
    let ctrl_c = Command::new("kill")
        .args(["-INT", "--", &format!("-{}", demo.id())])
        .status()
        .expect("kill");
    assert!(ctrl_c.success());
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = demo.try_wait().expect("wait") {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(40),
            "the demo stops after ctrl-c"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let stdout = reader.join().expect("reader");
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut demo.stderr.take().expect("stderr"), &mut stderr)
        .expect("read stderr");
    assert!(status.success(), "{status}:\n{stdout}\n{stderr}");
    assert_every_job_published(&stdout);
    for expected in [
        "metrics   http://127.0.0.1:",
        "cx.metrics.need_by_category",
        "cxpulse tail ",
        "\ndemo stopped\n",
    ] {
        assert!(stdout.contains(expected), "{expected} missing:\n{stdout}");
    }
    // Status lines show events coming in and the malformed ones rejected.
    let last_status = stdout
        .lines()
        .rfind(|l| l.starts_with('['))
        .expect("status lines");
    assert!(
        last_status.contains("event time 2026-01-0"),
        "{last_status}"
    );
    let invalid = status_count(last_status, "invalid");
    assert!(
        invalid > 0,
        "some malformed events were rejected: {last_status}"
    );
    let late = status_count(last_status, "late");
    assert!(late > 0, "some events were hours late: {last_status}");

    // The broker it started is gone: its port refuses connections and no
    // process is left with that port on its command line.
    let port: u16 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("broker    127.0.0.1:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .expect("broker line");
    assert!(TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err());
    let leftover = std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .find(|c| c.contains("noida-db") && c.contains(&format!("--kafka-port {port} ")));
    assert_eq!(leftover, None);
}

#[test]
fn the_demo_on_a_given_cluster_fills_every_output_topic_and_tail_prints_it() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (broker, prefix, env) = isolated("demo");
    let output = cxpulse(
        &[
            "demo",
            "--brokers",
            broker.bootstrap(),
            "--duration",
            "30s",
            "--speed",
            "6h",
            "--rate",
            "150",
            "--listen",
            "127.0.0.1:0",
        ],
        &env,
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_every_job_published(&stdout);
    assert!(stdout.contains("(--brokers)"), "{stdout}");
    assert!(
        stdout.ends_with("demo stopped (duration reached)\n"),
        "{stdout}"
    );
    // Read back from Kafka: as many rows on each output topic as the demo counted.
    let rows = rows_per_job(&stdout);
    for (job, _) in QUERIES {
        let topic = format!("{prefix}metrics.{job}");
        let expected = rows[job] as usize;
        let read = read_topic(
            broker.bootstrap(),
            &topic,
            expected,
            Duration::from_secs(20),
        );
        assert_eq!(read.len(), expected, "{topic}");
    }

    // `tail` prints the rows of need_by_category as a table.
    let mut tail_env = env.clone();
    tail_env.push((
        "CXPULSE__KAFKA__BROKERS".to_owned(),
        broker.bootstrap().to_owned(),
    ));
    let tail = cxpulse(&["tail", "need_by_category", "--no-follow"], &tail_env);
    let table = String::from_utf8_lossy(&tail.stdout);
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().expect("header").split_whitespace().collect();
    assert_eq!(
        header,
        [
            "window_start",
            "window_end",
            "category",
            "orders",
            "customers",
            "revenue",
            "avg_basket",
            "order_share",
            "revenue_share",
            "final",
            "emitted_at"
        ]
    );
    assert!(lines.next().expect("rule").chars().all(|c| c == '─'));
    let body: Vec<&str> = lines.collect();
    assert_eq!(body.len(), rows["need_by_category"] as usize, "{table}");
    assert!(
        body.iter().all(|l| l.trim_start().starts_with("2026-01-")),
        "{table}"
    );
}

#[test]
fn generate_publishes_what_it_reports_to_any_cluster() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (broker, prefix, env) = isolated("generate");
    let output = cxpulse(
        &[
            "generate",
            "--brokers",
            broker.bootstrap(),
            "--duration",
            "4s",
            "--speed",
            "6h",
            "--rate",
            "300",
            "--clean",
        ],
        &env,
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    let summary = stderr
        .lines()
        .find(|l| l.starts_with("sent "))
        .unwrap_or_else(|| panic!("no summary in {stderr}"));
    let sent: usize = summary
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("count");
    assert!(
        summary.ends_with(&format!("({sent} acknowledged, 0 failed)")),
        "{summary}"
    );
    let customers: usize = stderr
        .lines()
        .find_map(|l| l.split_once(" customers, ")?.0.parse().ok())
        .expect("population line");
    // What is on the topics is exactly the start of the same seed's
    // simulation: every profile, then the events in time order.
    let start = 1_767_225_600_000; // the default --start, 2026-01-01T00:00:00Z
    let expected: Vec<cxpulse::tools::generate::Generated> =
        cxpulse::tools::generate::Generator::new(1, customers, start)
            .simulation()
            .take(sent)
            .collect();
    let mut on_topics = 0;
    for kind in cxpulse::config::default_sources().all() {
        let topic = format!("{prefix}{}", kind.name());
        let mut read: Vec<String> =
            read_topic(broker.bootstrap(), &topic, 1, Duration::from_secs(10))
                .into_iter()
                .map(|r| r.value.unwrap_or_default())
                .collect();
        let mut want: Vec<String> = expected
            .iter()
            .filter(|g| g.kind == kind)
            .map(|g| g.value.clone())
            .collect();
        read.sort();
        want.sort();
        assert_eq!(read, want, "{topic}");
        on_topics += read.len();
    }
    assert_eq!(on_topics, sent);
    // No event was sent before its time: 4 s at 6 simulated hours per second
    // (plus the time to stop) reach at most 30 simulated hours.
    let last = expected.iter().map(|g| g.ts).max().expect("events");
    assert!(last <= start + 30 * 3_600_000, "{}", last - start);
}

#[test]
fn a_missing_broker_names_the_command_that_installs_it() {
    let output = Command::new(BIN)
        .args(["demo", "--duration", "5s"])
        .env("NOIDA_DB_BIN", "/nonexistent/noida-db")
        .stdin(Stdio::null())
        .output()
        .expect("run cxpulse");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(
            "install it with: scripts/broker.sh install (or pip install noida-db==0.2.3)"
        ),
        "{stderr}"
    );
}

#[test]
fn a_rate_or_speed_that_cannot_run_is_refused_with_its_reason() {
    for (args, reason) in [
        (
            ["--rate", "0"],
            "must be a positive number of events per second",
        ),
        (["--rate", "lots"], "invalid float literal"),
        (
            ["--speed", "0s"],
            "must be at least 1ms of simulated time per second",
        ),
        (["--speed", "fast"], "expected e.g. 1h or 30m"),
    ] {
        for command in ["demo", "generate"] {
            let output = Command::new(BIN)
                .arg(command)
                .args(args)
                .stdin(Stdio::null())
                .output()
                .expect("run cxpulse");
            assert_eq!(output.status.code(), Some(2), "{command} {args:?}");
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(stderr.contains(reason), "{command} {args:?}: {stderr}");
        }
    }
}
