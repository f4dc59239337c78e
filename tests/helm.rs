//! The Helm chart, its alerts and dashboards, and the container image,
//! checked with the tools an SRE uses (`helm`, `kubernetes-validate`,
//! `promtool`) and against a running engine. `scripts/test.sh` installs
//! the tools.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::exactly_once::preload;
use common::process::{BIN, EngineProcess, engine_env};
use common::{TestBroker, create_source_topics, test_config, unique_prefix};
use cxpulse::tools::generate::Generator;
use promql_parser::parser::Expr;
use promql_parser::util::{ExprVisitor, walk_expr};
use serde::Deserialize;
use yaml_serde::Value;

const START: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

/// The tests that run a broker and engines run one at a time (two cores).
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn chart() -> PathBuf {
    repo("helm/cxpulse")
}

/// Runs `program` with `args` (and `stdin`): success, stdout, stderr.
fn run(program: &str, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{program}: {e} (scripts/test.sh installs it)"));
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
    }
    let out = child.wait_with_output().expect("wait");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `helm template` of the chart with `args`: the manifests, or helm's error.
fn template(args: &[&str]) -> Result<String, String> {
    let chart = chart();
    let mut all = vec!["template", "cx", chart.to_str().expect("utf-8 path")];
    all.extend_from_slice(args);
    let (ok, out, err) = run("helm", &all, None);
    if ok { Ok(out) } else { Err(err) }
}

/// The documents of a multi-document YAML text.
fn documents(text: &str) -> Vec<Value> {
    yaml_serde::Deserializer::from_str(text)
        .map(|doc| Value::deserialize(doc).expect("YAML"))
        .filter(|doc| !doc.is_null())
        .collect()
}

fn kind(doc: &Value) -> &str {
    doc["kind"].as_str().unwrap_or_default()
}

fn name(doc: &Value) -> &str {
    doc["metadata"]["name"].as_str().unwrap_or_default()
}

/// The one document of `kind` named `name`.
fn find<'a>(docs: &'a [Value], kind_: &str, name_: &str) -> &'a Value {
    docs.iter()
        .find(|d| kind(d) == kind_ && name(d) == name_)
        .unwrap_or_else(|| panic!("no {kind_} {name_} among {:?}", kinds(docs)))
}

fn kinds(docs: &[Value]) -> Vec<String> {
    docs.iter()
        .map(|d| format!("{}/{}", kind(d), name(d)))
        .collect()
}

fn text(value: &Value) -> &str {
    value.as_str().unwrap_or_default()
}

#[test]
fn the_chart_lints_and_refuses_mistyped_or_unsafe_values() {
    let chart = chart();
    let (ok, out, err) = run(
        "helm",
        &["lint", "--strict", chart.to_str().expect("path")],
        None,
    );
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("1 chart(s) linted, 0 chart(s) failed"),
        "{out}"
    );

    let refused = [
        (
            vec!["--set", "kafka.brokr=kafka:9092"],
            "Additional property brokr is not allowed",
        ),
        (vec!["--set", "replicaCount=one"], "replicaCount"),
        (vec!["--set", "replicaCount=2000"], "replicaCount"),
        // replicaCount sets cluster.instances; a pod's name, its index.
        (
            vec!["--set", "config.cluster.instances=3"],
            "config: Additional property cluster is not allowed",
        ),
        (
            vec!["--set", "kafka.properties.sasl\\.password=hunter2"],
            "sasl.password must not be set in values",
        ),
        (
            vec![
                "--set",
                "config.kafka.properties.ssl\\.key\\.password=hunter2",
            ],
            "ssl.key.password must not be set in values",
        ),
        (
            vec!["--set", "terminationGracePeriodSeconds=10"],
            "must exceed engine.shutdown_drain_ms",
        ),
        (
            vec!["--set", "kafka.sasl.enabled=true"],
            "kafka.sasl.enabled needs kafka.sasl.existingSecret",
        ),
        (
            vec![
                "--set",
                "admin.token.create=true",
                "--set-string",
                "admin.token.value=short",
            ],
            "admin.token.value must be at least 16 characters long, it has 5",
        ),
        (
            vec!["--set-string", "config.http.admin_token=0123456789abcdef"],
            "http.admin_token must not be set in values",
        ),
        (
            vec![
                "--set",
                "extraEnv[0].name=CXPULSE__HTTP__ADMIN_TOKEN,extraEnv[0].value=0123456789abcdef",
            ],
            "CXPULSE__HTTP__ADMIN_TOKEN must not be set in extraEnv",
        ),
    ];
    for (args, message) in refused {
        let error = template(&args).expect_err(&format!("{args:?} refused"));
        assert!(error.contains(message), "{args:?}: {error}");
    }
}

/// `cxpulse check --config file` over the bundled queries and views: its
/// output when it refuses.
fn check_config(file: &Path) -> Result<(), String> {
    let check = Command::new(BIN)
        .args(["check", "--config"])
        .arg(file)
        .env("CXPULSE__ENGINE__QUERIES_DIR", repo("queries"))
        .env("CXPULSE__ENGINE__VIEWS_DIR", repo("queries/views"))
        .output()
        .expect("cxpulse check");
    if check.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        ))
    }
}

/// Renders the chart with `values` (a file of `ci/`) for a cluster that
/// serves the Prometheus operator's API, validates every manifest with
/// `kubernetes-validate --strict`, and returns them.
fn rendered(values: &str) -> Vec<Value> {
    let file = chart().join("ci").join(values);
    let manifests = template(&[
        "-f",
        file.to_str().expect("path"),
        "--api-versions",
        "monitoring.coreos.com/v1",
    ])
    .unwrap_or_else(|e| panic!("{values}: {e}"));
    let (ok, out, err) = run(
        "kubernetes-validate",
        &["--strict", "--quiet", "-"],
        Some(&manifests),
    );
    assert!(ok, "{values}: kubernetes-validate failed:\n{out}{err}");
    assert!(
        !out.contains("ERROR") && !err.contains("ERROR"),
        "{out}{err}"
    );
    let docs = documents(&manifests);
    // The engine accepts the configuration file the chart wrote.
    let config = text(&find(&docs, "ConfigMap", "cx-cxpulse-config")["data"]["cxpulse.toml"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("cxpulse.toml");
    std::fs::write(&path, config).expect("write");
    if let Err(refused) = check_config(&path) {
        panic!("{values}: cxpulse check refuses the rendered configuration:\n{config}\n{refused}");
    }
    docs
}

#[test]
fn every_ci_values_file_renders_manifests_that_kubernetes_accepts() {
    let files: BTreeSet<String> = std::fs::read_dir(chart().join("ci"))
        .expect("ci folder")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    for wanted in [
        "default-values.yaml",
        "monitoring-values.yaml",
        "sasl-values.yaml",
        "existing-queries-values.yaml",
        "admin-networkpolicy-values.yaml",
    ] {
        assert!(files.contains(wanted), "ci/{wanted} missing: {files:?}");
    }
    for file in &files {
        assert!(!rendered(file).is_empty(), "{file} renders nothing");
    }
}

/// The README's `helm install` command, as the shell would pass its
/// arguments: continuation lines joined, comments and single quotes gone.
fn readme_install_args() -> Vec<String> {
    let readme = std::fs::read_to_string(repo("README.md")).expect("README.md");
    let start = readme
        .find("helm install cxpulse helm/cxpulse")
        .expect("the install command");
    let mut command = String::new();
    for line in readme[start..].lines() {
        let line = line.split(" # ").next().unwrap_or_default().trim_end();
        match line.strip_suffix('\\') {
            Some(more) => command.push_str(more),
            None => {
                command.push_str(line);
                break;
            }
        }
    }
    command
        .split_whitespace()
        .skip(4)
        .map(|word| word.replace('\'', ""))
        .collect()
}

#[test]
fn replica_count_is_the_instance_count_each_pod_finds_its_index_in_its_name() {
    let docs = documents(&template(&["--set", "replicaCount=3"]).expect("renders"));
    let set = find(&docs, "StatefulSet", "cx-cxpulse");
    assert_eq!(set["spec"]["replicas"].as_u64(), Some(3));
    let config = text(&find(&docs, "ConfigMap", "cx-cxpulse-config")["data"]["cxpulse.toml"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("cxpulse.toml");
    std::fs::write(&path, config).expect("write");
    let loaded = cxpulse::config::Config::load(Some(&path)).expect("the rendered config loads");
    assert_eq!(loaded.cluster.instances, 3);
    // No StatefulSet to look up (helm template): the generation is the
    // release revision.
    assert_eq!(loaded.cluster.generation, 1);
    assert_eq!(
        text(&set["metadata"]["annotations"]["cxpulse.io/generation"]),
        "1"
    );
    let check_as = |pod: &str| {
        let out = Command::new(BIN)
            .args(["check", "--config"])
            .arg(&path)
            .env("HOSTNAME", pod)
            .env("CXPULSE__ENGINE__QUERIES_DIR", repo("queries"))
            .env("CXPULSE__ENGINE__VIEWS_DIR", repo("queries/views"))
            .output()
            .expect("cxpulse check");
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    };
    // Pod 2 is instance 2 of 3: every bundled job runs there, those that
    // shuffle (one reads a kept table) too.
    let said = check_as("cx-cxpulse-2");
    assert!(said.contains("ok      loyalty_rfm"), "{said}");
    assert!(said.contains("ok      need_by_category"), "{said}");
    assert!(said.contains("ok      complaints_hourly"), "{said}");
    assert!(!said.contains("cannot run on 3 instances"), "{said}");
    // A pod beyond the count is refused.
    let said = check_as("cx-cxpulse-5");
    assert!(
        said.contains("`cluster.instances`: is 3, but this instance's index, the trailing number of its host name, is 5"),
        "{said}"
    );
    let pdb = find(&docs, "PodDisruptionBudget", "cx-cxpulse");
    assert_eq!(
        pdb["spec"]["maxUnavailable"].as_u64(),
        Some(1),
        "one pod down at a time"
    );
}

#[test]
fn the_readme_install_command_renders_both_brokers() {
    let args = readme_install_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let docs = documents(&template(&args).expect("the README's command renders"));
    let config = find(&docs, "ConfigMap", "cx-cxpulse-config");
    let toml = text(&config["data"]["cxpulse.toml"]);
    assert!(
        toml.contains("brokers = \"kafka-0.kafka:9092,kafka-1.kafka:9092\""),
        "{toml}"
    );
}

#[test]
fn the_default_rendering_runs_one_hardened_pod_with_the_bundled_queries() {
    let docs = rendered("default-values.yaml");
    let mut kinds_seen: Vec<String> = kinds(&docs);
    kinds_seen.sort();
    // No Secret (no SASL, no admin token), no NetworkPolicy.
    assert_eq!(
        kinds_seen,
        [
            "ConfigMap/cx-cxpulse-config",
            "ConfigMap/cx-cxpulse-queries",
            "ConfigMap/cx-cxpulse-views",
            "PodDisruptionBudget/cx-cxpulse",
            "Service/cx-cxpulse",
            "Service/cx-cxpulse-headless",
            "ServiceAccount/cx-cxpulse",
            "StatefulSet/cx-cxpulse",
        ]
    );
    let set = find(&docs, "StatefulSet", "cx-cxpulse");
    let spec = &set["spec"];
    assert_eq!(spec["replicas"].as_u64(), Some(1));
    assert_eq!(text(&spec["serviceName"]), "cx-cxpulse-headless");
    let pod = &spec["template"]["spec"];
    assert_eq!(pod["terminationGracePeriodSeconds"].as_u64(), Some(30));
    assert_eq!(pod["securityContext"]["runAsNonRoot"].as_bool(), Some(true));
    assert_eq!(
        text(&pod["securityContext"]["seccompProfile"]["type"]),
        "RuntimeDefault"
    );
    let container = &pod["containers"][0];
    let security = &container["securityContext"];
    assert_eq!(security["readOnlyRootFilesystem"].as_bool(), Some(true));
    assert_eq!(security["allowPrivilegeEscalation"].as_bool(), Some(false));
    assert_eq!(text(&security["capabilities"]["drop"][0]), "ALL");
    for (probe, path) in [
        ("startupProbe", "/readyz"),
        ("readinessProbe", "/readyz"),
        ("livenessProbe", "/healthz"),
    ] {
        assert_eq!(text(&container[probe]["httpGet"]["path"]), path, "{probe}");
    }
    let startup = &container["startupProbe"];
    let allowed = startup["periodSeconds"].as_u64().unwrap_or(0)
        * startup["failureThreshold"].as_u64().unwrap_or(0);
    assert!(allowed >= 600, "{allowed} s to restore");
    assert!(
        container["env"].is_null(),
        "no environment without SASL or an admin token (no CXPULSE__HTTP__ADMIN_TOKEN: the admin endpoints are off)"
    );

    // The configuration: over the embedded defaults, queries and views
    // where the volumes are.
    let config = text(&find(&docs, "ConfigMap", "cx-cxpulse-config")["data"]["cxpulse.toml"]);
    let parsed: toml_edit::DocumentMut = config.parse().expect("TOML");
    assert_eq!(
        parsed["engine"]["queries_dir"].as_str(),
        Some("/etc/cxpulse/queries")
    );
    assert_eq!(
        parsed["engine"]["views_dir"].as_str(),
        Some("/etc/cxpulse/views")
    );
    assert_eq!(parsed["http"]["listen"].as_str(), Some("0.0.0.0:9464"));
    assert_eq!(parsed["kafka"]["brokers"].as_str(), Some("kafka:9092"));

    // Every bundled query and view, as in the repository; no test case.
    let queries = &find(&docs, "ConfigMap", "cx-cxpulse-queries")["data"];
    let views = &find(&docs, "ConfigMap", "cx-cxpulse-views")["data"];
    let bundled = |dir: &str| -> BTreeMap<String, String> {
        std::fs::read_dir(repo(dir))
            .expect("folder")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "sql"))
            .map(|p| {
                let name = p.file_name().expect("name").to_string_lossy().into_owned();
                (name, std::fs::read_to_string(&p).expect("read"))
            })
            .collect()
    };
    for (data, dir) in [(queries, "queries"), (views, "queries/views")] {
        let shipped: BTreeMap<String, String> = data
            .as_mapping()
            .expect("data")
            .iter()
            .map(|(k, v)| (text(k).to_owned(), text(v).to_owned()))
            .collect();
        let want = bundled(dir);
        assert_eq!(
            shipped.keys().collect::<Vec<_>>(),
            want.keys().collect::<Vec<_>>()
        );
        for (name, sql) in &want {
            assert_eq!(shipped[name].trim_end(), sql.trim_end(), "{name}");
        }
    }
}

#[test]
fn a_config_change_restarts_the_pods_and_a_query_change_does_not() {
    let checksum = |args: &[&str]| {
        let docs = documents(&template(args).expect("renders"));
        text(
            &find(&docs, "StatefulSet", "cx-cxpulse")["spec"]["template"]["metadata"]["annotations"]
                ["checksum/config"],
        )
        .to_owned()
    };
    let base = checksum(&[]);
    assert_eq!(base.len(), 64, "a sha256: {base}");
    assert_ne!(
        checksum(&["--set", "config.engine.commit_interval_ms=500"]),
        base
    );
    assert_eq!(
        checksum(&[
            "--set-string",
            "queries.files.extra\\.sql=SELECT event_id FROM transactions"
        ]),
        base
    );
    // The added query lands in the queries ConfigMap.
    let docs = documents(
        &template(&[
            "--set-string",
            "queries.files.extra\\.sql=SELECT event_id FROM transactions",
        ])
        .expect("renders"),
    );
    assert_eq!(
        text(&find(&docs, "ConfigMap", "cx-cxpulse-queries")["data"]["extra.sql"]).trim(),
        "SELECT event_id FROM transactions"
    );
}

#[test]
fn monitoring_renders_only_where_the_cluster_serves_it() {
    let docs = rendered("monitoring-values.yaml");
    let monitor = find(&docs, "ServiceMonitor", "cx-cxpulse");
    assert_eq!(
        monitor["spec"]["endpoints"][0]["honorLabels"].as_bool(),
        Some(true)
    );
    // It selects one Service: each pod is scraped once.
    let selector = monitor["spec"]["selector"]["matchLabels"]
        .as_mapping()
        .expect("matchLabels");
    let selected: Vec<&str> = docs
        .iter()
        .filter(|d| kind(d) == "Service")
        .filter(|d| {
            selector
                .iter()
                .all(|(k, v)| d["metadata"]["labels"][text(k)] == *v)
        })
        .map(name)
        .collect();
    assert_eq!(selected, ["cx-cxpulse"]);
    for dashboard in [
        "cx-cxpulse-dashboard-cxpulse-sre",
        "cx-cxpulse-dashboard-cxpulse-marketing",
    ] {
        let map = find(&docs, "ConfigMap", dashboard);
        assert_eq!(text(&map["metadata"]["labels"]["grafana_dashboard"]), "1");
    }
    // The PrometheusRule ships the plain rules file, whole.
    let rule = find(&docs, "PrometheusRule", "cx-cxpulse");
    let plain: Value = yaml_serde::from_str(
        &std::fs::read_to_string(chart().join("files/cxpulse-alerts.yaml")).expect("rules"),
    )
    .expect("YAML");
    assert_eq!(rule["spec"]["groups"], plain["groups"]);

    let file = chart().join("ci/monitoring-values.yaml");
    let without_api = documents(&template(&["-f", file.to_str().expect("path")]).expect("renders"));
    let kinds = kinds(&without_api);
    assert!(
        !kinds
            .iter()
            .any(|k| k.starts_with("ServiceMonitor") || k.starts_with("PrometheusRule")),
        "{kinds:?}"
    );
}

#[test]
fn queries_can_come_from_configmaps_managed_elsewhere() {
    let docs = rendered("existing-queries-values.yaml");
    let names = kinds(&docs);
    assert!(
        !names
            .iter()
            .any(|n| n.ends_with("-queries") || n.ends_with("-views")),
        "{names:?}"
    );
    let volumes = &find(&docs, "StatefulSet", "cx-cxpulse")["spec"]["template"]["spec"]["volumes"];
    let config_maps: BTreeMap<&str, &str> = volumes
        .as_sequence()
        .expect("volumes")
        .iter()
        .filter(|v| !v["configMap"].is_null())
        .map(|v| (text(&v["name"]), text(&v["configMap"]["name"])))
        .collect();
    assert_eq!(config_maps["queries"], "analytics-queries");
    assert_eq!(config_maps["views"], "analytics-views");
}

#[test]
fn sasl_and_tls_come_from_secrets() {
    let docs = rendered("sasl-values.yaml");
    let secret = find(&docs, "Secret", "cx-cxpulse-sasl");
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(text(&secret["data"]["password"]))
        .expect("base64");
    assert_eq!(decoded, b"not-a-real-password");
    let pod = &find(&docs, "StatefulSet", "cx-cxpulse")["spec"]["template"]["spec"];
    let env = &pod["containers"][0]["env"];
    let from_secret: BTreeMap<&str, (&str, &str)> = env
        .as_sequence()
        .expect("env")
        .iter()
        .map(|e| {
            let key = &e["valueFrom"]["secretKeyRef"];
            (text(&e["name"]), (text(&key["name"]), text(&key["key"])))
        })
        .collect();
    assert_eq!(
        from_secret["CXPULSE__KAFKA__PROPERTIES__SASL_PASSWORD"],
        ("cx-cxpulse-sasl", "password")
    );
    assert_eq!(
        from_secret["CXPULSE__KAFKA__PROPERTIES__SASL_USERNAME"],
        ("cx-cxpulse-sasl", "username")
    );
    let config = text(&find(&docs, "ConfigMap", "cx-cxpulse-config")["data"]["cxpulse.toml"]);
    let parsed: toml_edit::DocumentMut = config.parse().expect("TOML");
    let properties = &parsed["kafka"]["properties"];
    assert_eq!(properties["security.protocol"].as_str(), Some("SASL_SSL"));
    assert_eq!(properties["sasl.mechanism"].as_str(), Some("SCRAM-SHA-512"));
    assert_eq!(
        properties["ssl.ca.location"].as_str(),
        Some("/etc/cxpulse/tls/ca.crt")
    );
    let tls = pod["volumes"]
        .as_sequence()
        .expect("volumes")
        .iter()
        .find(|v| text(&v["name"]) == "tls")
        .expect("a tls volume");
    assert_eq!(text(&tls["secret"]["secretName"]), "kafka-ca");
}

#[test]
fn the_admin_token_comes_from_a_secret_and_only_the_given_peers_reach_the_port() {
    let values: Value = yaml_serde::from_str(
        &std::fs::read_to_string(chart().join("ci/admin-networkpolicy-values.yaml"))
            .expect("values"),
    )
    .expect("YAML");
    let token = text(&values["admin"]["token"]["value"]);
    assert!(token.len() >= 16, "{token}");
    let docs = rendered("admin-networkpolicy-values.yaml");

    // The token: in the Secret the chart created, to the engine as
    // CXPULSE__HTTP__ADMIN_TOKEN from a secretKeyRef, nowhere else.
    let secret = find(&docs, "Secret", "cx-cxpulse-admin");
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(text(&secret["data"]["admin-token"]))
        .expect("base64");
    assert_eq!(decoded, token.as_bytes());
    let set = find(&docs, "StatefulSet", "cx-cxpulse");
    let container = &set["spec"]["template"]["spec"]["containers"][0];
    let admin: Vec<&Value> = container["env"]
        .as_sequence()
        .expect("env")
        .iter()
        .filter(|e| text(&e["name"]) == "CXPULSE__HTTP__ADMIN_TOKEN")
        .collect();
    assert_eq!(admin.len(), 1, "{admin:?}");
    assert!(admin[0]["value"].is_null(), "a plain value: {:?}", admin[0]);
    let key = &admin[0]["valueFrom"]["secretKeyRef"];
    assert_eq!(
        (text(&key["name"]), text(&key["key"])),
        ("cx-cxpulse-admin", "admin-token")
    );
    let encoded = base64::engine::general_purpose::STANDARD.encode(token);
    for doc in &docs {
        let yaml = yaml_serde::to_string(doc).expect("YAML");
        assert!(
            !yaml.contains(token),
            "{} holds the admin token in clear",
            name(doc)
        );
        if kind(doc) != "Secret" {
            assert!(
                !yaml.contains(&encoded),
                "{} holds the admin token",
                name(doc)
            );
        }
    }
    let config = text(&find(&docs, "ConfigMap", "cx-cxpulse-config")["data"]["cxpulse.toml"]);
    let parsed: toml_edit::DocumentMut = config.parse().expect("TOML");
    assert!(
        parsed["http"].get("admin_token").is_none(),
        "the ConfigMap sets http.admin_token:\n{config}"
    );

    // The NetworkPolicy: the engine's pods, ingress only to the http port,
    // only from the peers of networkPolicy.metricsFrom; egress untouched.
    let policy = &find(&docs, "NetworkPolicy", "cx-cxpulse")["spec"];
    assert_eq!(
        policy["podSelector"]["matchLabels"],
        set["spec"]["selector"]["matchLabels"]
    );
    let types: Vec<&str> = policy["policyTypes"]
        .as_sequence()
        .expect("policyTypes")
        .iter()
        .map(text)
        .collect();
    assert_eq!(types, ["Ingress"], "egress (Kafka) is not restricted");
    assert!(policy["egress"].is_null(), "{policy:?}");
    let rules = policy["ingress"].as_sequence().expect("ingress");
    assert_eq!(rules.len(), 1, "{rules:?}");
    assert_eq!(rules[0]["from"], values["networkPolicy"]["metricsFrom"]);
    let ports = rules[0]["ports"].as_sequence().expect("ports");
    assert_eq!(ports.len(), 1, "{ports:?}");
    assert_eq!(text(&ports[0]["protocol"]), "TCP");
    assert_eq!(ports[0]["port"].as_u64(), Some(9464));
    assert_eq!(
        ports[0]["port"], container["ports"][0]["containerPort"],
        "the container's http port"
    );

    // With no peers, nothing reaches the port.
    let closed = documents(&template(&["--set", "networkPolicy.enabled=true"]).expect("renders"));
    let closed = &find(&closed, "NetworkPolicy", "cx-cxpulse")["spec"];
    assert_eq!(text(&closed["policyTypes"][0]), "Ingress");
    assert!(
        closed["ingress"]
            .as_sequence()
            .is_some_and(|rules| rules.is_empty()),
        "{closed:?}"
    );

    // An existing Secret: referenced, none created.
    let existing =
        documents(&template(&["--set", "admin.token.existingSecret=ops-admin"]).expect("renders"));
    assert!(
        !existing.iter().any(|d| kind(d) == "Secret"),
        "{:?}",
        kinds(&existing)
    );
    let env = &find(&existing, "StatefulSet", "cx-cxpulse")["spec"]["template"]["spec"]["containers"]
        [0]["env"];
    assert_eq!(text(&env[0]["name"]), "CXPULSE__HTTP__ADMIN_TOKEN");
    assert_eq!(
        text(&env[0]["valueFrom"]["secretKeyRef"]["name"]),
        "ops-admin"
    );
    assert_eq!(
        text(&env[0]["valueFrom"]["secretKeyRef"]["key"]),
        "admin-token"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planted_secret_reaches_the_engine_and_no_manifest_or_log_line() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let planted = format!("planted-{:016x}", rand::random::<u64>());
    let manifests = template(&[
        "--set",
        "kafka.sasl.enabled=true",
        "--set",
        "kafka.sasl.mechanism=PLAIN",
        "--set",
        "kafka.sasl.username=cxpulse",
        "--set-string",
        &format!("kafka.sasl.password={planted}"),
    ])
    .expect("renders");
    let encoded = base64::engine::general_purpose::STANDARD.encode(&planted);
    let docs = documents(&manifests);
    for doc in &docs {
        let text = yaml_serde::to_string(doc).expect("YAML");
        assert!(
            !text.contains(&planted),
            "{} holds the secret in clear",
            name(doc)
        );
        if kind(doc) != "Secret" {
            assert!(!text.contains(&encoded), "{} holds the secret", name(doc));
        }
    }
    let secret = find(&docs, "Secret", "cx-cxpulse-sasl");

    // Start the engine as the pod would: the rendered configuration file,
    // the environment with each secretKeyRef read from the Secret; only the
    // broker, folders and port are this machine's.
    let broker = TestBroker::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let queries = dir.path().join("queries");
    std::fs::create_dir(&queries).expect("mkdir");
    std::fs::write(
        queries.join("big_orders.sql"),
        "SELECT event_id, amount FROM transactions WHERE amount > 100",
    )
    .expect("write");
    let config = test_config(&broker, &unique_prefix("helm-secret"), &queries);
    create_source_topics(&config, 1).await;
    let config_file = dir.path().join("cxpulse.toml");
    std::fs::write(
        &config_file,
        text(&find(&docs, "ConfigMap", "cx-cxpulse-config")["data"]["cxpulse.toml"]),
    )
    .expect("write");
    let pod_env: Vec<(String, String)> = find(&docs, "StatefulSet", "cx-cxpulse")["spec"]
        ["template"]["spec"]["containers"][0]["env"]
        .as_sequence()
        .expect("env")
        .iter()
        .map(|e| {
            let key = text(&e["valueFrom"]["secretKeyRef"]["key"]);
            let value = base64::engine::general_purpose::STANDARD
                .decode(text(&secret["data"][key]))
                .expect("base64");
            (
                text(&e["name"]).to_owned(),
                String::from_utf8(value).expect("utf-8"),
            )
        })
        .collect();
    assert_eq!(pod_env.len(), 2, "{pod_env:?}");
    let mut env = engine_env(&config, &[]);
    env.push((
        "CXPULSE__ENGINE__VIEWS_DIR".into(),
        queries.join("views").display().to_string(),
    ));
    env.push(("RUST_LOG".into(), "debug".into()));
    let args = ["--config", config_file.to_str().expect("path")];

    // Without the Secret's variables, librdkafka refuses SASL at once.
    let mut without = EngineProcess::start_with(&args, &env);
    let status = without.wait_exit(Duration::from_secs(60));
    let refused = without.log_text();
    assert_eq!(status.and_then(|s| s.code()), Some(1), "{refused}");
    assert!(refused.contains("sasl.username"), "{refused}");

    // With them, it connects, restores and runs.
    env.extend(pod_env);
    let mut engine = EngineProcess::start_with(&args, &env);
    engine.wait_ready(Duration::from_secs(90));
    let (code, text) = engine.terminate(Duration::from_secs(30));
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("state restored"), "{text}");
    assert!(
        text.lines().count() > 20,
        "a debug log was written:\n{text}"
    );
    assert!(!text.contains(&planted), "the password is in the log");
    assert!(!text.contains(&encoded), "the password is in the log");
}

#[test]
fn the_alert_rules_pass_promtool_and_their_unit_tests() {
    let files = chart().join("files");
    let rules = files.join("cxpulse-alerts.yaml");
    let (ok, out, err) = run(
        "promtool",
        &["check", "rules", rules.to_str().expect("path")],
        None,
    );
    assert!(ok, "{out}{err}");
    assert!(out.contains("SUCCESS: 7 rules found"), "{out}");
    let tests = files.join("cxpulse-alerts.test.yaml");
    let (ok, out, err) = run(
        "promtool",
        &["test", "rules", tests.to_str().expect("path")],
        None,
    );
    assert!(ok, "{out}{err}");
    assert!(out.contains("SUCCESS"), "{out}");
    let tested = std::fs::read_to_string(&tests).expect("tests");
    for alert in [
        "CxpulseConsumerLagGrowing",
        "CxpulseJobSilent",
        "CxpulseInvalidRateHigh",
    ] {
        let cases = tested.matches(&format!("alertname: {alert}")).count();
        assert!(
            cases >= 2,
            "{alert}: {cases} case(s); one firing and one not, at least"
        );
    }
}

/// The metric names a PromQL expression reads.
struct Names(BTreeSet<String>);

impl ExprVisitor for Names {
    type Error = String;

    fn pre_visit(&mut self, expr: &Expr) -> Result<bool, String> {
        let selector = match expr {
            Expr::VectorSelector(v) => Some(v),
            Expr::MatrixSelector(m) => Some(&m.vs),
            _ => None,
        };
        if let Some(name) = selector.and_then(|s| s.name.clone()) {
            self.0.insert(name);
        }
        Ok(true)
    }
}

/// The metric names every PromQL expression of `dashboard` reads, with
/// Grafana's variables replaced by values PromQL accepts.
fn dashboard_metrics(dashboard: &serde_json::Value) -> BTreeSet<String> {
    let mut exprs: Vec<String> = Vec::new();
    let mut stack = vec![dashboard];
    while let Some(value) = stack.pop() {
        match value {
            serde_json::Value::Object(map) => {
                if let Some(serde_json::Value::String(expr)) = map.get("expr") {
                    exprs.push(expr.clone());
                }
                stack.extend(map.values());
            }
            serde_json::Value::Array(items) => stack.extend(items),
            _ => {}
        }
    }
    // Template variables: label_values(metric, label).
    for variable in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if let Some(query) = variable["definition"].as_str()
            && let Some(inner) = query.strip_prefix("label_values(")
        {
            exprs.push(inner.split(',').next().unwrap_or_default().to_owned());
        }
    }
    let mut names = Names(BTreeSet::new());
    for expr in &exprs {
        let promql = expr
            .replace("$__rate_interval", "5m")
            .replace("$__range", "1h")
            .replace("$instance", ".*");
        let parsed =
            promql_parser::parser::parse(&promql).unwrap_or_else(|e| panic!("{expr}: {e}"));
        walk_expr(&mut names, &parsed).expect("walk");
    }
    assert!(!exprs.is_empty());
    names.0
}

/// Metric names in a Prometheus exposition.
fn exposed(exposition: &str) -> BTreeSet<String> {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboards_and_alerts_query_is_one_the_engine_exports() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let mut wanted: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in ["cxpulse-sre.json", "cxpulse-marketing.json"] {
        let dashboard: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(chart().join("dashboards").join(file)).expect("dashboard"),
        )
        .expect("JSON");
        for name in dashboard_metrics(&dashboard) {
            wanted.entry(name).or_default().insert(file.to_owned());
        }
    }
    let rules: Value = yaml_serde::from_str(
        &std::fs::read_to_string(chart().join("files/cxpulse-alerts.yaml")).expect("rules"),
    )
    .expect("YAML");
    for rule in rules["groups"][0]["rules"].as_sequence().expect("rules") {
        let expr = promql_parser::parser::parse(text(&rule["expr"])).expect("PromQL");
        let mut names = Names(BTreeSet::new());
        walk_expr(&mut names, &expr).expect("walk");
        for name in names.0 {
            wanted
                .entry(name)
                .or_default()
                .insert(text(&rule["alert"]).to_owned());
        }
    }
    assert!(wanted.len() > 30, "{wanted:?}");

    // An engine with the bundled jobs over nine generated days, so that
    // every hourly and daily window publishes; then a backfilled job, read
    // one record per step; then a second engine whose window state is over
    // its limit at once. Every name any of them exports counts.
    let broker = TestBroker::start();
    let dir = tempfile::tempdir().expect("tempdir");
    common::exactly_once::copy_bundled(dir.path());
    let mut config = test_config(&broker, &unique_prefix("dashboards"), dir.path());
    config.engine.max_out_of_orderness_ms = 0;
    create_source_topics(&config, 1).await;
    // Nine days: need_trend's 7-day change needs days before the last 7.
    preload(&config, &Generator::new(3, 400, START).records(9)).await;
    let mut seen = BTreeSet::new();
    let missing = |seen: &BTreeSet<String>| -> Vec<String> {
        wanted
            .keys()
            .filter(|n| !seen.contains(*n))
            .cloned()
            .collect()
    };
    let watch = |engine: &EngineProcess,
                 seen: &mut BTreeSet<String>,
                 until: &dyn Fn(&BTreeSet<String>) -> bool| {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(120) {
            seen.extend(exposed(&engine.metrics()));
            if until(seen) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let mut engine = EngineProcess::start(&engine_env(
        &config,
        &[("CXPULSE__ENGINE__BACKFILL_BATCH_ROWS", "1")],
    ));
    engine.wait_ready(Duration::from_secs(60));
    watch(&engine, &mut seen, &|s| {
        missing(s)
            .iter()
            .all(|n| n == "cxpulse_backfill_lag_records" || n == "cxpulse_consumption_paused")
    });
    std::fs::write(
        dir.path().join("history.sql"),
        "-- @backfill earliest\nSELECT window_start, window_end, count(*) AS n FROM TUMBLE(transactions, ts, INTERVAL '1 hour') GROUP BY window_start, window_end",
    )
    .expect("write");
    watch(&engine, &mut seen, &|s| {
        s.contains("cxpulse_backfill_lag_records")
    });
    let (code, log) = engine.terminate(Duration::from_secs(30));
    assert_eq!(code, Some(0), "{log}");

    let mut small = config.clone();
    small.kafka.group_id = format!("{}-small", config.kafka.group_id);
    let mut engine = EngineProcess::start(&engine_env(
        &small,
        &[("CXPULSE__ENGINE__STATE_MEMORY_LIMIT", "1KiB")],
    ));
    engine.wait_ready(Duration::from_secs(60));
    watch(&engine, &mut seen, &|s| {
        s.contains("cxpulse_consumption_paused")
    });
    drop(engine);

    let absent: Vec<String> = missing(&seen)
        .into_iter()
        .map(|n| format!("{n} (read by {:?})", wanted[&n]))
        .collect();
    assert!(absent.is_empty(), "queried but never exported: {absent:#?}");
}

#[test]
fn the_dockerfile_copies_what_the_repository_has_and_runs_as_a_user() {
    let dockerfile = std::fs::read_to_string(repo("Dockerfile")).expect("Dockerfile");
    let stages = dockerfile
        .lines()
        .filter(|l| l.starts_with("FROM "))
        .count();
    assert_eq!(stages, 2, "a build stage and a runtime stage");
    for line in dockerfile.lines().filter(|l| l.starts_with("COPY ")) {
        let parts: Vec<&str> = line.split_whitespace().collect();
        if parts[1].starts_with("--from=") || parts[1] == "." {
            continue;
        }
        let source = parts[1];
        let found = match source.split_once('*') {
            Some((dir, suffix)) => std::fs::read_dir(repo(dir))
                .expect("COPY source folder")
                .any(|e| {
                    e.expect("entry")
                        .file_name()
                        .to_string_lossy()
                        .ends_with(suffix)
                }),
            None => repo(source).exists(),
        };
        assert!(found, "COPY {source}: nothing in the repository");
    }
    assert!(dockerfile.contains("cargo build --release --locked --bin cxpulse"));
    assert!(dockerfile.contains("USER 10001:10001"));
    // The image's configuration points at the folder the queries go to.
    let image: toml_edit::DocumentMut = std::fs::read_to_string(repo("config/image/cxpulse.toml"))
        .expect("image config")
        .parse()
        .expect("TOML");
    let queries = image["engine"]["queries_dir"]
        .as_str()
        .expect("queries_dir");
    assert!(
        dockerfile.contains(&format!("COPY queries/*.sql {queries}/")),
        "{queries}"
    );
    assert!(dockerfile.contains(&format!("COPY queries/views/*.sql {queries}/views/")));
    // And the binary accepts it.
    if let Err(refused) = check_config(&repo("config/image/cxpulse.toml")) {
        panic!("cxpulse check refuses the image's configuration:\n{refused}");
    }
}
