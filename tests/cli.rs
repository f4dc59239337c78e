//! The `cxpulse` binary: `--version`, `check` (config, stateless and windowed
//! queries), `run` with SIGTERM and resuming from committed offsets, and query
//! reloads on SIGHUP.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::process::{BIN, EngineProcess, engine_env};
use common::*;

const READY: Duration = Duration::from_secs(30);
const DRAIN: Duration = Duration::from_secs(20);

fn cxpulse(args: &[&str], dir: &Path, env: &[(&str, &str)]) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .envs(env.iter().copied())
        .output()
        .expect("run cxpulse")
}

#[test]
fn version_names_the_package_version() {
    let out = cxpulse(&["--version"], Path::new("."), &[]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("cxpulse {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn check_passes_on_the_bundled_queries() {
    let out = cxpulse(&["check"], Path::new(env!("CARGO_MANIFEST_DIR")), &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("ok      complaint_alerts -> cx.metrics.complaint_alerts"),
        "{stdout}"
    );
}

#[test]
fn check_lists_every_config_problem_and_exits_1() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("bad.toml"),
        "[engine]\nbatch_max_rows = -1\n[http]\nlisten = \"nowhere\"\n",
    )
    .expect("write");
    let out = cxpulse(
        &["check", "--config", "bad.toml"],
        dir.path(),
        &[("CXPULSE__KAFKA__GROUP_ID", " ")],
    );
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let errors: Vec<&str> = stdout.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(
        errors,
        vec![
            "error   env CXPULSE__KAFKA__GROUP_ID: `kafka.group_id`: must not be empty",
            "error   bad.toml:2: `engine.batch_max_rows`: is -1, must be at least 1",
            "error   bad.toml:4: `http.listen`: \"nowhere\" is not an IP address with a port, e.g. 127.0.0.1:9464",
        ]
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("3 problem(s) found"));
}

/// Runs `cxpulse check` on a queries directory holding `files`; asserts that
/// it exits 1 and returns its standard output.
fn check_failing(files: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let queries = dir.path().join("queries");
    std::fs::create_dir(&queries).expect("mkdir");
    for (file, sql) in files {
        std::fs::write(queries.join(file), sql).expect("write query");
    }
    let out = cxpulse(&["check"], dir.path(), &[]);
    assert_eq!(out.status.code(), Some(1));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The default transactions columns, then `store_id`.
const TRANSACTIONS_WITH_STORE: &str = r#"
[[sources]]
name = "transactions"
columns = [
  { name = "event_id", type = "id", required = true },
  { name = "customer_id", type = "id", required = true },
  { name = "ts", type = "timestamp", required = true },
  { name = "amount", type = "float", required = true, min = 0 },
  { name = "category", type = "string", required = true },
  { name = "currency", type = "string" },
  { name = "channel", type = "string" },
  { name = "items", type = "int", min = 0 },
  { name = "order_id", type = "id" },
  { name = "store_id", type = "string", regex = "^S[0-9]+$" },
]
"#;

#[test]
fn a_column_added_to_a_source_in_the_config_file_is_a_column_of_its_table() {
    let dir = tempfile::tempdir().expect("tempdir");
    let queries = dir.path().join("queries");
    std::fs::create_dir(&queries).expect("mkdir");
    std::fs::write(
        queries.join("revenue_by_store.sql"),
        "SELECT window_start, window_end, store_id, sum(amount) AS revenue \
         FROM TUMBLE(transactions, ts, INTERVAL '1 hour') GROUP BY window_start, window_end, store_id",
    )
    .expect("write query");
    std::fs::write(dir.path().join("mine.toml"), TRANSACTIONS_WITH_STORE).expect("write");
    let out = cxpulse(&["check", "--config", "mine.toml"], dir.path(), &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("ok      revenue_by_store"), "{stdout}");
    // Without the declaration the column does not exist.
    let out = cxpulse(&["check"], dir.path(), &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("store_id"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// A stream and a table that are not among the defaults.
const CLICKS_AND_CAMPAIGNS: &str = r#"
[[sources]]
name = "campaigns"
topic = "crm.campaigns"
kind = "table"
key = "campaign_id"
columns = [
  { name = "campaign_id", type = "id", required = true },
  { name = "channel", type = "string", required = true },
  { name = "budget", type = "decimal(12,2)" },
]

[[sources]]
name = "clicks"
topic = "web.clicks"
kind = "stream"
event_time = "at"
max_out_of_orderness_ms = 2000
columns = [
  { name = "click_id", type = "id", required = true },
  { name = "at", type = "timestamp", required = true },
  { name = "campaign_id", type = "id", required = true },
  { name = "os", type = "string", path = "$.device.os" },
]
"#;

#[test]
fn check_plans_queries_over_new_sources_against_their_declared_columns() {
    let dir = tempfile::tempdir().expect("tempdir");
    let queries = dir.path().join("queries");
    std::fs::create_dir(&queries).expect("mkdir");
    std::fs::write(
        queries.join("clicks_by_channel.sql"),
        "SELECT window_start, window_end, c.channel, count(*) AS clicks \
         FROM TUMBLE(clicks, at, INTERVAL '1 hour') k JOIN campaigns c ON k.campaign_id = c.campaign_id \
         GROUP BY window_start, window_end, c.channel",
    )
    .expect("write query");
    std::fs::write(dir.path().join("mine.toml"), CLICKS_AND_CAMPAIGNS).expect("write");
    let out = cxpulse(&["check", "--config", "mine.toml"], dir.path(), &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("ok      clicks_by_channel"), "{stdout}");

    // A column the declaration does not have is named, with the columns it has.
    std::fs::write(
        queries.join("by_browser.sql"),
        "SELECT window_start, window_end, browser, count(*) AS n \
         FROM TUMBLE(clicks, at, INTERVAL '1 hour') GROUP BY window_start, window_end, browser",
    )
    .expect("write query");
    let out = cxpulse(&["check", "--config", "mine.toml"], dir.path(), &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("by_browser.sql"), "{stdout}");
    assert!(stdout.contains("browser"), "{stdout}");

    // Without the declarations the tables do not exist.
    std::fs::remove_file(queries.join("by_browser.sql")).expect("rm");
    let out = cxpulse(&["check"], dir.path(), &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("clicks"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_topics_creates_every_declared_source_and_generate_needs_the_cx_sources() {
    let broker = TestBroker::start();
    let prefix = unique_prefix("own-topics");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("queries")).expect("mkdir");
    let mine = CLICKS_AND_CAMPAIGNS
        .replace("\"crm.campaigns\"", &format!("\"{prefix}campaigns\""))
        .replace("\"web.clicks\"", &format!("\"{prefix}clicks\""));
    std::fs::write(dir.path().join("mine.toml"), mine).expect("write");
    let env = [("CXPULSE__KAFKA__BROKERS", broker.bootstrap())];
    let out = cxpulse(
        &["create-topics", "--config", "mine.toml"],
        dir.path(),
        &env,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let created: Vec<&str> = stdout.lines().collect();
    for topic in [format!("{prefix}campaigns"), format!("{prefix}clicks")] {
        assert!(created.contains(&topic.as_str()), "{topic} in {stdout}");
    }
    let mut config = cxpulse::config::Config::load(None).expect("default config");
    config.kafka.brokers = broker.bootstrap().to_owned();
    let counts = cxpulse::admin::partition_counts(
        &config,
        &[format!("{prefix}campaigns"), format!("{prefix}clicks")],
    )
    .await
    .expect("metadata");
    assert_eq!(counts.len(), 2, "{counts:?}");

    // The generator writes the CX sources only.
    std::fs::write(
        dir.path().join("off.toml"),
        "[[sources]]\nname = \"customers\"\nenabled = false\n",
    )
    .expect("write");
    let out = cxpulse(
        &[
            "generate",
            "--brokers",
            broker.bootstrap(),
            "--config",
            "off.toml",
            "--duration",
            "1s",
        ],
        dir.path(),
        &[],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("source customers is not declared (or is disabled)"),
        "{stderr}"
    );
}

#[test]
fn check_reports_windowed_query_problems_with_datafusion_messages() {
    let stdout = check_failing(&[
        (
            "hourly.sql",
            "-- @emit every 30s\n-- @gauge orders BY category\nSELECT window_start, window_end, category, count(*) AS orders\nFROM TUMBLE(transactions, ts, INTERVAL '1 hour')\nGROUP BY window_start, window_end, category\n",
        ),
        (
            "unknown.sql",
            "SELECT window_start, window_end,\n       count(*) AS n\nFROM TUMBLE(transactions, tss, INTERVAL '1 hour')\nGROUP BY window_start, window_end\n",
        ),
        (
            "types.sql",
            "SELECT window_start, window_end,\n  avg(category) AS a\nFROM TUMBLE(transactions, ts, INTERVAL '1 hour')\nGROUP BY window_start, window_end\n",
        ),
        (
            "gauge.sql",
            "-- @gauge revenue BY category\nSELECT window_start, window_end, category, count(*) AS orders\nFROM TUMBLE(transactions, ts, INTERVAL '1 hour')\nGROUP BY window_start, window_end, category\n",
        ),
    ]);
    let lines: Vec<&str> = stdout.lines().filter(|l| !l.starts_with(' ')).collect();
    assert_eq!(lines.len(), 4, "{stdout}");
    assert_eq!(lines[0], "ok      hourly -> cx.metrics.hourly");
    assert!(
        lines[1].starts_with("error   queries/gauge.sql:1: @gauge names column `revenue`"),
        "{stdout}"
    );
    assert!(
        lines[2].starts_with("error   queries/types.sql:2: "),
        "{stdout}"
    );
    assert!(
        lines[2].contains("Function 'avg' failed to match any signature"),
        "DataFusion's message: {stdout}"
    );
    assert!(
        lines[3].starts_with("error   queries/unknown.sql:3: TUMBLE(table, time_column, INTERVAL 'size'): `transactions` has no column `tss`"),
        "{stdout}"
    );
}

#[test]
fn check_lists_every_query_problem_with_file_and_line() {
    let stdout = check_failing(&[
        ("good.sql", "SELECT event_id FROM feedback WHERE nps >= 9\n"),
        (
            "typo.sql",
            "-- promoters\nSELECT event_id,\n       npss\nFROM feedback\n",
        ),
        (
            "opts.sql",
            "-- @emit sometimes\nSELECT 1 AS x FROM feedback\n",
        ),
        (
            "agg.sql",
            "SELECT channel, avg(rating) AS csat\nFROM feedback GROUP BY channel\n",
        ),
    ]);
    let lines: Vec<&str> = stdout.lines().filter(|l| !l.starts_with(' ')).collect();
    assert_eq!(lines.len(), 4, "{stdout}");
    assert_eq!(lines[0], "ok      good -> cx.metrics.good");
    assert!(
        lines[1].starts_with("error   queries/agg.sql:1: an aggregate (GROUP BY"),
        "{stdout}"
    );
    assert!(
        lines[1].contains("FROM TUMBLE(feedback, ts, INTERVAL '1 hour')"),
        "{stdout}"
    );
    assert!(
        lines[2].starts_with("error   queries/opts.sql:1: @emit \"sometimes\" is not an emit mode"),
        "{stdout}"
    );
    assert!(
        lines[3].starts_with("error   queries/typo.sql:3: "),
        "{stdout}"
    );
    assert!(lines[3].contains("No field named npss"), "{stdout}");
    assert!(
        stdout.contains("\n        Valid fields are feedback.event_id"),
        "continuation lines are indented: {stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_queries_and_keeps_jobs_running_past_a_bad_file() {
    let broker = TestBroker::start();
    let prefix = unique_prefix("reload");
    let dir = tempfile::tempdir().expect("tempdir");
    let queries = dir.path().join("queries");
    std::fs::create_dir(&queries).expect("mkdir");
    let config = test_config(&broker, &prefix, &queries);
    create_source_topics(&config, 1).await;
    let env = engine_env(&config, &[("CXPULSE__ENGINE__RELOAD_INTERVAL_MS", "0")]);
    std::fs::write(
        queries.join("big.sql"),
        "SELECT event_id FROM transactions WHERE amount > 100\n",
    )
    .expect("write");
    let mut engine = EngineProcess::start(&env);
    engine.wait_ready(READY);
    engine.wait_for_metrics(&[("cxpulse_jobs_loaded", 1.0)], READY);

    // A new job, a changed job and a file with an error, applied on SIGHUP only.
    std::fs::write(
        queries.join("small.sql"),
        "SELECT event_id FROM transactions WHERE amount < 5\n",
    )
    .expect("write");
    std::fs::write(
        queries.join("big.sql"),
        "SELECT event_id, amount FROM transactions WHERE amount > 50\n",
    )
    .expect("write");
    std::fs::write(
        queries.join("broken.sql"),
        "-- typo\nSELECT amout FROM transactions\n",
    )
    .expect("write");
    std::thread::sleep(Duration::from_millis(500));
    engine.wait_for_metrics(&[("cxpulse_jobs_loaded", 1.0)], READY);
    engine.signal("HUP");
    engine.wait_for_metrics(
        &[
            ("cxpulse_jobs_loaded", 2.0),
            ("cxpulse_query_files_invalid", 1.0),
        ],
        READY,
    );
    let producer = producer(broker.bootstrap());
    let tx = |id: &str, amount: u32| {
        format!(
            r#"{{"event_id":"{id}","customer_id":"c","ts":1,"amount":{amount},"category":"x"}}"#
        )
    };
    produce(
        &producer,
        &config.topics.transactions,
        &[
            (0, None, Some(&tx("t60", 60))),
            (0, None, Some(&tx("t1", 1))),
        ],
    )
    .await;
    let big = read_topic(
        broker.bootstrap(),
        &format!("{}big", config.topics.output_prefix),
        1,
        Duration::from_secs(30),
    );
    let values: Vec<&str> = big.iter().filter_map(|r| r.value.as_deref()).collect();
    assert_eq!(values.len(), 1, "{values:?}");
    assert!(
        values[0].contains(r#""event_id":"t60","amount":60.0"#),
        "the changed query runs: {values:?}"
    );
    let small = read_topic(
        broker.bootstrap(),
        &format!("{}small", config.topics.output_prefix),
        1,
        Duration::from_secs(30),
    );
    assert_eq!(small.len(), 1, "the added query runs");

    std::fs::remove_file(queries.join("small.sql")).expect("remove");
    std::fs::remove_file(queries.join("broken.sql")).expect("remove");
    engine.signal("HUP");
    engine.wait_for_metrics(
        &[
            ("cxpulse_jobs_loaded", 1.0),
            ("cxpulse_query_files_invalid", 0.0),
        ],
        READY,
    );
    let (code, stderr) = engine.terminate(DRAIN);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("broken.sql:2"),
        "the bad file is reported with its line: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_a_restart_resumes_from_committed_offsets() {
    let broker = TestBroker::start();
    let prefix = unique_prefix("cli");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = test_config(&broker, &prefix, &dir.path().join("queries"));
    create_source_topics(&config, 1).await;
    std::fs::create_dir(dir.path().join("queries")).expect("mkdir");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("queries/complaint_alerts.sql"),
        dir.path().join("queries/complaint_alerts.sql"),
    )
    .expect("copy query");
    let env = engine_env(&config, &[("CXPULSE__LOG__FORMAT", "json")]);
    let output = format!("{}complaint_alerts", config.topics.output_prefix);
    let alert = |id: &str| {
        format!(
            r#"{{"event_id":"e-{id}","customer_id":"c1","ts":"2026-03-01T10:00:00Z","complaint_id":"{id}","status":"escalated"}}"#
        )
    };
    let producer = producer(broker.bootstrap());

    let mut first = EngineProcess::start(&env);
    first.wait_ready(READY);
    produce(
        &producer,
        &config.topics.complaints,
        &[(0, None, Some(&alert("a1")))],
    )
    .await;
    let out = read_topic(broker.bootstrap(), &output, 1, Duration::from_secs(30));
    assert_eq!(out.len(), 1);
    let (code, stderr) = first.terminate(DRAIN);
    assert_eq!(code, Some(0), "{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    let last: serde_json::Value =
        serde_json::from_str(last).unwrap_or_else(|e| panic!("JSON log line {last:?}: {e}"));
    assert_eq!(last["message"], "stopped");

    produce(
        &producer,
        &config.topics.complaints,
        &[(0, None, Some(&alert("a2")))],
    )
    .await;
    let mut second = EngineProcess::start(&env);
    second.wait_ready(READY);
    let out = read_topic(broker.bootstrap(), &output, 2, Duration::from_secs(30));
    let ids: Vec<String> = out
        .iter()
        .map(|r| {
            serde_json::from_str::<serde_json::Value>(r.value.as_deref().expect("value"))
                .expect("json")["complaint_id"]
                .to_string()
        })
        .collect();
    assert_eq!(
        ids,
        vec!["\"a1\"", "\"a2\""],
        "a1 is not processed again after the restart"
    );
    let (code, stderr) = second.terminate(DRAIN);
    assert_eq!(code, Some(0), "{stderr}");
}

#[test]
fn every_command_that_talks_to_kafka_takes_the_configuration_and_a_flag_not_given_overrides_nothing()
 {
    let dir = tempfile::tempdir().expect("tempdir");
    let queries = Path::new(env!("CARGO_MANIFEST_DIR")).join("queries");
    // A property librdkafka does not know: a client built with the
    // configured properties fails at once, naming it.
    std::fs::write(
        dir.path().join("cluster.toml"),
        format!(
            "[kafka]\nbrokers = \"127.0.0.1:1\"\n[kafka.properties]\n\"no.such.property\" = \"1\"\n[engine]\nqueries_dir = {:?}\n",
            queries.display().to_string()
        ),
    )
    .expect("write config");
    let run = |args: &[&str]| {
        let out = cxpulse(args, dir.path(), &[]);
        assert!(!out.status.success(), "{args:?} succeeded");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    for args in [
        &[
            "produce",
            "--topic",
            "cx.feedback",
            "--config",
            "cluster.toml",
        ][..],
        &["read", "cx.deadletter", "--config", "cluster.toml"],
        &[
            "tail",
            "need_by_category",
            "--no-follow",
            "--config",
            "cluster.toml",
        ],
        &["generate", "--duration", "1s", "--config", "cluster.toml"],
    ] {
        let err = run(args);
        assert!(
            err.contains("No such configuration property: \"no.such.property\""),
            "{args:?}: {err}"
        );
    }
    // The brokers of the file, unless --brokers is given.
    let err = run(&["generate", "--duration", "1s", "--config", "cluster.toml"]);
    assert!(
        err.contains("creating the source topics on 127.0.0.1:1:"),
        "{err}"
    );
    let err = run(&[
        "generate",
        "--duration",
        "1s",
        "--config",
        "cluster.toml",
        "--brokers",
        "127.0.0.1:2",
    ]);
    assert!(
        err.contains("creating the source topics on 127.0.0.1:2:"),
        "{err}"
    );
    // The demo reads the same variable as the other commands.
    let help = cxpulse(&["demo", "--help"], dir.path(), &[]);
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("[env: CXPULSE__KAFKA__BROKERS"), "{help}");
}
