// figment::Jail closures return figment::Error, which is large by design.
#![allow(clippy::result_large_err)]

use figment::Jail;

use super::*;

#[test]
fn default_config_loads() {
    // Inside a jail: other tests set CXPULSE__* variables concurrently.
    Jail::expect_with(|_| {
        let config = Config::load(None).expect("default config is valid");
        assert_eq!(config.kafka.brokers, "127.0.0.1:9092");
        assert_eq!(config.topics.feedback, "cx.feedback");
        assert_eq!(config.engine.commit_interval_ms, 1000);
        assert_eq!(config.state_memory_limit_bytes(), 1 << 30);
        assert_eq!(config.changelog_topic(), "cxpulse-changelog");
        assert_eq!(config.log.format, LogFormat::Text);
        assert_eq!(config.views_dir(), std::path::Path::new("queries/views"));
        Ok(())
    });
}

#[test]
fn views_can_live_apart_from_the_queries() {
    Jail::expect_with(|jail| {
        jail.set_env("CXPULSE__ENGINE__VIEWS_DIR", "/etc/cxpulse/views");
        let config = Config::load(None).expect("valid");
        assert_eq!(
            config.views_dir(),
            std::path::Path::new("/etc/cxpulse/views")
        );
        Ok(())
    });
}

#[test]
fn file_then_env_override_the_default() {
    Jail::expect_with(|jail| {
        jail.create_file("my.toml", "[kafka]\nbrokers = \"b1:9092,b2:9092\"\ngroup_id = \"g\"\n[kafka.properties]\n\"security.protocol\" = \"SSL\"\n")?;
        jail.set_env("CXPULSE__KAFKA__GROUP_ID", "from-env");
        jail.set_env("CXPULSE__ENGINE__BATCH_MAX_ROWS", "77");
        jail.set_env("CXPULSE__KAFKA__PROPERTIES__SASL_MECHANISM", "PLAIN");
        jail.set_env("CXPULSE__TOPICS__OUTPUT_PREFIX", "123");
        let config = Config::load(Some(Path::new("my.toml"))).expect("valid");
        assert_eq!(config.kafka.brokers, "b1:9092,b2:9092");
        assert_eq!(config.kafka.group_id, "from-env");
        assert_eq!(config.engine.batch_max_rows, 77);
        assert_eq!(config.topics.output_prefix, "123");
        let props: Vec<(&str, &str)> = config
            .kafka
            .properties
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            props,
            vec![("sasl.mechanism", "PLAIN"), ("security.protocol", "SSL")]
        );
        Ok(())
    });
}

#[test]
fn every_problem_is_reported_at_once_with_its_origin() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "bad.toml",
            "[kafka]\nbrokers = \"nohost\"\n\n[engine]\nbatch_max_rows = 0\nbatch_lingr_ms = 5\nmax_out_of_orderness_ms = \"soon\"\n[log]\nformat = \"yaml\"\n",
        )?;
        jail.set_env("CXPULSE__HTTP__LISTEN", "localhost");
        jail.set_env("CXPULSE__TOPICS__DEADLETTER", "cx.feedback");
        let err = Config::load(Some(Path::new("bad.toml"))).expect_err("invalid");
        let lines: Vec<String> = err.0.iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            vec![
                "bad.toml:6: `engine.batch_lingr_ms`: unknown key; known keys here: backfill_batch_rows, batch_linger_ms, batch_max_bytes, batch_max_rows, commit_interval_ms, gauge_series_limit, idle_timeout_ms, job_memory_limit, max_future_ms, max_out_of_orderness_ms, max_record_bytes, queries_dir, reload_interval_ms, shutdown_drain_ms, state_memory_limit, table_memory_limit, views_dir",
                "bad.toml:7: `engine.max_out_of_orderness_ms`: must be an integer, got a string",
                "bad.toml:9: `log.format`: is \"yaml\", expected one of text, json",
                "bad.toml:2: `kafka.brokers`: \"nohost\" must be a comma-separated list of host:port",
                "bad.toml:5: `engine.batch_max_rows`: is 0, must be at least 1",
                "env CXPULSE__TOPICS__DEADLETTER: `topics.deadletter`: topic \"cx.feedback\" is also used by `topics.feedback`",
                "env CXPULSE__HTTP__LISTEN: `http.listen`: \"localhost\" is not an IP address with a port, e.g. 127.0.0.1:9464",
            ]
        );
        Ok(())
    });
}

#[test]
fn removed_keys_and_bad_sizes_say_why() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "old.toml",
            "[kafka]\nproduce_retries = 3\ngroup_id = \"has space\"\ninstance_id = \"pod-3\"\n[engine]\ndelivery = \"exactly_once\"\nstate_dir = \"state\"\nstate_memory_limit = \"lots\"\n",
        )?;
        let err = Config::load(Some(Path::new("old.toml"))).expect_err("invalid");
        let lines: Vec<String> = err.0.iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            vec![
                "old.toml:6: `engine.delivery`: removed: outputs are always committed in Kafka transactions, so read_committed readers see every final row exactly once (README: Guarantees)",
                "old.toml:7: `engine.state_dir`: removed: state lives in the Kafka changelog topic (topics.changelog), not on disk",
                "old.toml:4: `kafka.instance_id`: removed: instances are told apart by cluster.index (default: the host name's trailing number); the transactional id is <kafka.group_id>-<cluster.index>-of-<cluster.instances>, so that an instance restarted under its index fences its previous self (README: Scaling out)",
                "old.toml:2: `kafka.produce_retries`: removed: a record not delivered within kafka.message_timeout_ms aborts its epoch, which is replayed from the last committed one",
                "old.toml:3: `kafka.group_id`: \"has space-changelog\" may only contain letters, digits, '.', '_' and '-'",
                "old.toml:8: `engine.state_memory_limit`: \"lots\" is not a size: couldn't parse \"lots\" into a ByteSize, cannot parse float from empty string (write bytes, or e.g. 512MiB, 2GiB)",
            ]
        );
        jail.set_env("CXPULSE__KAFKA__GROUP_ID", "g");
        jail.set_env("CXPULSE__CLUSTER__INDEX", "0");
        jail.set_env("CXPULSE__ENGINE__STATE_MEMORY_LIMIT", "512MiB");
        let config = Config::load(None).expect("valid");
        assert_eq!(config.transactional_id_prefix(), "g-0-of-1");
        assert_eq!(config.changelog_topic(), "g-changelog");
        assert_eq!(config.state_memory_limit_bytes(), 512 * 1024 * 1024);
        Ok(())
    });
}

#[test]
fn one_source_added_or_changed_in_a_file_keeps_the_other_defaults() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "mine.toml",
            r#"
[[sources]]
name = "transactions"
topic = "crm.orders"

[[sources]]
name = "clicks"
topic = "web.clicks"
kind = "stream"
event_time = "at"
columns = [{ name = "at", type = "timestamp", required = true }]
"#,
        )?;
        let config = Config::load(Some(Path::new("mine.toml"))).expect("valid");
        assert_eq!(
            config.topics.transactions, "crm.orders",
            "either key sets the topic"
        );
        let topics: Vec<(&str, &str, usize)> = config
            .sources
            .iter()
            .map(|s| (s.name.as_str(), s.topic.as_str(), s.columns.len()))
            .collect();
        assert_eq!(
            topics,
            [
                ("transactions", "crm.orders", 9),
                ("feedback", "cx.feedback", 9),
                ("complaints", "cx.complaints", 8),
                ("customers", "cx.customers", 6),
                ("clicks", "web.clicks", 1),
            ]
        );
        Ok(())
    });
}

#[test]
fn kept_tables_are_checked_and_named_with_their_line() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "keep.toml",
            r#"
[[sources]]
name = "tickets"
topic = "crm.tickets"
kind = "stream"
event_time = "at"
columns = [
  { name = "ticket_id", type = "id", required = true },
  { name = "at", type = "timestamp", required = true },
  { name = "stage", type = "int" },
]

[sources.keep]
key = "ticket_id"
state = "stage"
latest = "complaint_status"
retention_ms = 1000
"#,
        )?;
        let problems = Config::load(Some(Path::new("keep.toml")))
            .expect_err("invalid")
            .0;
        let found: Vec<String> = problems
            .iter()
            .map(|p| format!("{}: {}: {}", p.origin, p.key, p.message))
            .collect();
        assert_eq!(
            found,
            [
                "keep.toml:15: sources.tickets.keep.state: state \"stage\" is not a text (`id` or `string`) column of tickets",
                "keep.toml:16: sources.tickets.keep.latest: \"complaint_status\" is already the name of a source or of a kept table",
            ]
        );
        Ok(())
    });
}

#[test]
fn every_declared_check_is_enforced_or_refused_with_its_line() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "checks.toml",
            r#"
[[sources]]
name = "orders"
topic = "shop.orders"
kind = "stream"
event_time = "ts"
max_future_ms = -1
columns = [
  { name = "ts", type = "timestamp", required = true, min = 0 },
  { name = "total", type = "decimal(10,2)", min = 0, max = 99999.999 },
  { name = "items", type = "int", min = 0.5 },
  { name = "sku", type = "int", regex = "^[0-9]+$" },
  { name = "kind", type = "string", values = ["a", "b"], regex = "^[ab]$" },
  { name = "tier", type = "string", values = ["gold"], lowercase = true },
  { name = "paid", type = "bool", lowercase = true },
  { name = "tags", type = "list<int>", values = ["x"] },
  { name = "score", type = "float", min = 5, max = 1 },
  { name = "weight", type = "float", max = nan },
]
"#,
        )?;
        let problems = Config::load(Some(Path::new("checks.toml")))
            .expect_err("invalid")
            .0;
        let found: Vec<String> = problems
            .iter()
            .map(|p| format!("{}: {}: {}", p.origin, p.key, p.message))
            .collect();
        assert_eq!(
            found,
            [
                "checks.toml:9: sources.orders.columns[0].min: min applies to int, float and decimal columns, not to timestamp (the check would never run)",
                "checks.toml:10: sources.orders.columns[1].max: bound 99999.999 has more than 2 digits after the point (the column's scale)",
                "checks.toml:11: sources.orders.columns[2].min: 0.5 is not an integer; an int column's bounds are integers",
                "checks.toml:12: sources.orders.columns[3].regex: regex applies to string columns, not to int (the check would never run)",
                "checks.toml:13: sources.orders.columns[4].regex: set values or regex, not both: a value from the list is all that is accepted",
                "checks.toml:14: sources.orders.columns[5].lowercase: lowercase cannot be combined with values or regex: values already match in any case and keep the listed spelling; a regex sees the text as written",
                "checks.toml:15: sources.orders.columns[6].lowercase: lowercase applies to string columns, not to bool (the check would never run)",
                "checks.toml:16: sources.orders.columns[7].values: values applies to string columns, not to int (the check would never run)",
                "checks.toml:17: sources.orders.columns[8].max: 1 is below min 5",
                "checks.toml:18: sources.orders.columns[9].max: NaN is not a finite number",
                "checks.toml:7: sources.orders.max_future_ms: must be 0 or more",
            ]
        );
        Ok(())
    });
}

#[test]
fn a_decimal_column_compares_its_bounds_exactly() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "orders.toml",
            r#"
[[sources]]
name = "transactions"
columns = [
  { name = "event_id", type = "id", required = true },
  { name = "customer_id", type = "id", required = true },
  { name = "ts", type = "timestamp", required = true },
  { name = "amount", type = "decimal(10,2)", required = true, min = 0, max = 0.3 },
  { name = "category", type = "string", required = true },
]
"#,
        )?;
        let config = Config::load(Some(Path::new("orders.toml"))).expect("valid");
        let entry = config
            .sources
            .iter()
            .find(|s| s.name == "transactions")
            .expect("transactions");
        let amount = &entry.columns[3];
        let ty = crate::config::sources::ColumnType::parse(&amount.ty).expect("type");
        let crate::config::sources::ColumnType::Decimal { scale, .. } = ty else {
            panic!("a decimal");
        };
        // 0.3 as a binary float is 0.299999…: read as written, it is 30 cents.
        assert_eq!(super::sources::decimal_units(0.3, scale), Ok(30));
        assert_eq!(super::sources::decimal_units(0.0, scale), Ok(0));
        assert_eq!(super::sources::decimal_units(-5.0, scale), Ok(-500));
        Ok(())
    });
}

#[test]
fn exactly_once_settings_cannot_be_overridden_and_the_admin_token_is_long() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "eos.toml",
            "[kafka.properties]\nenable.auto.commit = \"true\"\n\"isolation.level\" = \"read_uncommitted\"\nsecurity.protocol = \"SASL_SSL\"\n",
        )?;
        jail.set_env("CXPULSE__KAFKA__PROPERTIES__TRANSACTIONAL_ID", "mine");
        jail.set_env("CXPULSE__HTTP__ADMIN_TOKEN", "short");
        let problems = Config::load(Some(Path::new("eos.toml")))
            .expect_err("invalid")
            .0;
        let found: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(
            found,
            [
                "eos.toml:2: `kafka.properties.enable.auto.commit`: cannot be set: cxpulse sets enable.auto.commit itself (offsets are committed only inside each epoch's transaction, with its outputs)",
                "eos.toml:3: `kafka.properties.isolation.level`: cannot be set: cxpulse sets isolation.level itself (the engine reads read_committed, so that aborted epochs and transactions are never read)",
                "env CXPULSE__KAFKA__PROPERTIES__TRANSACTIONAL_ID: `kafka.properties.transactional.id`: cannot be set: cxpulse sets transactional.id itself (it is <kafka.group_id>-<cluster.index>-of-<cluster.instances>, so that an instance restarted under its index fences its previous self)",
                "env CXPULSE__HTTP__ADMIN_TOKEN: `http.admin_token`: is 5 characters long, at least 16 are needed (e.g. `openssl rand -hex 32`)",
            ]
        );
        jail.clear_env();
        jail.set_env("CXPULSE__HTTP__ADMIN_TOKEN", "0123456789abcdef");
        let config = Config::load(None).expect("a long enough token");
        assert_eq!(config.http.admin_token, "0123456789abcdef");
        assert!(
            !format!("{config:?}").contains("0123456789abcdef"),
            "the token is never printed"
        );
        jail.set_env("CXPULSE__HTTP__ADMIN_TOKEN", "0123456789abcdéf");
        let problems = Config::load(None).expect_err("not ASCII").0;
        assert_eq!(
            problems.iter().map(ToString::to_string).collect::<Vec<_>>(),
            [
                "env CXPULSE__HTTP__ADMIN_TOKEN: `http.admin_token`: must be visible ASCII characters (an HTTP header carries it): no spaces, control or non-ASCII characters"
            ]
        );
        jail.set_env("CXPULSE__HTTP__ADMIN_TOKEN", "0123456789abcdef");
        jail.set_env(
            "CXPULSE__KAFKA__PROPERTIES__SASL_PASSWORD",
            "hunter2-secret",
        );
        jail.set_env("CXPULSE__KAFKA__PROPERTIES__SASL_USERNAME", "analyst");
        let config = Config::load(None).expect("valid");
        let shown = format!("{config:?}");
        assert!(
            !shown.contains("hunter2-secret")
                && shown.contains("\"sasl.password\": \"<redacted>\""),
            "{shown}"
        );
        assert!(shown.contains("\"sasl.username\": \"analyst\""), "{shown}");
        Ok(())
    });
}

#[test]
fn a_source_schema_problem_names_its_key() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "bad.toml",
            r#"
[[sources]]
name = "clicks"
topic = "web.clicks"
kind = "stream"
event_time = "when"
columns = [{ name = "at", type = "datetime" }]
"#,
        )?;
        let problems = Config::load(Some(Path::new("bad.toml")))
            .expect_err("invalid")
            .0;
        let found: Vec<String> = problems
            .iter()
            .map(|p| format!("{}: {}", p.origin, p.key))
            .collect();
        assert_eq!(
            found,
            [
                "bad.toml:7: sources.clicks.columns[0].type",
                "bad.toml:6: sources.clicks.event_time",
            ]
        );
        Ok(())
    });
}

#[test]
fn every_enabled_default_entry_is_a_source_of_the_process() {
    let config = Config::embedded_default();
    let names: Vec<&str> = crate::config::default_sources()
        .all()
        .map(|s| s.name())
        .collect();
    assert_eq!(
        names,
        ["customers", "transactions", "feedback", "complaints"]
    );
    for declared in &config.sources {
        let source = crate::config::default_source(&declared.name);
        assert_eq!(config.topics.source_topic(source), declared.topic);
        let columns: Vec<&str> = declared.columns.iter().map(|c| c.name.as_str()).collect();
        let schema = source.schema();
        let fields: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(fields, columns, "{}", declared.name);
        assert_eq!(source.one_of(), declared.one_of.as_slice());
    }
}

#[test]
fn a_source_topic_set_two_different_ways_is_a_problem() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "two.toml",
            "[topics]\ntransactions = \"a\"\n\n[[sources]]\nname = \"transactions\"\ntopic = \"b\"\n",
        )?;
        let problems = Config::load(Some(Path::new("two.toml")))
            .expect_err("two topics")
            .0;
        assert_eq!(
            problems.iter().map(ToString::to_string).collect::<Vec<_>>(),
            [
                "two.toml:6: `sources.transactions.topic`: is \"b\" but topics.transactions is \"a\"; set one of them"
            ]
        );
        jail.set_env("CXPULSE__SOURCES__FEEDBACK__TOPIC", "x");
        let problems = Config::load(None).expect_err("env sources").0;
        assert_eq!(problems[0].key, "sources");
        jail.clear_env();
        jail.set_env("CXPULSE__TOPICS__FEEDBACK", "crm.feedback");
        let config = Config::load(None).expect("valid");
        let feedback = config
            .sources
            .iter()
            .find(|s| s.name == "feedback")
            .expect("declared");
        assert_eq!(feedback.topic, "crm.feedback");
        Ok(())
    });
}

#[test]
fn whole_floats_are_integers_and_fractions_are_refused() {
    // Helm's toToml writes numbers from a values file as floats.
    Jail::expect_with(|jail| {
        jail.create_file("helm.toml", "[engine]\ncommit_interval_ms = 500.0\n")?;
        let config = Config::load(Some(Path::new("helm.toml"))).expect("valid");
        assert_eq!(config.engine.commit_interval_ms, 500);
        jail.create_file("half.toml", "[engine]\ncommit_interval_ms = 500.5\n")?;
        let error = Config::load(Some(Path::new("half.toml"))).expect_err("a fraction");
        assert!(error.to_string().contains("must be an integer"), "{error}");
        Ok(())
    });
}

#[test]
fn the_cluster_index_defaults_to_the_host_names_number_and_must_be_below_the_count() {
    Jail::expect_with(|jail| {
        jail.set_env("HOSTNAME", "cxpulse-2");
        let config = Config::load(None).expect("one instance, whatever its host name");
        assert_eq!(config.cluster(), crate::cluster::Cluster::single());
        assert_eq!(config.transactional_id_prefix(), "cxpulse-0-of-1");

        jail.set_env("CXPULSE__CLUSTER__INSTANCES", "3");
        let config = Config::load(None).expect("valid");
        assert_eq!(config.cluster(), crate::cluster::Cluster::new(3, 2));
        assert_eq!(config.transactional_id_prefix(), "cxpulse-2-of-3");

        jail.set_env("CXPULSE__CLUSTER__INSTANCES", "2");
        let err = Config::load(None).expect_err("index 2 of 2");
        assert_eq!(
            err.0.iter().map(ToString::to_string).collect::<Vec<_>>(),
            vec![
                "env CXPULSE__CLUSTER__INSTANCES: `cluster.instances`: is 2, but this instance's index, the trailing number of its host name, is 2: instance i of N owns the partitions p with p mod N = i, so i must be in 0..N (set cluster.index, or run as many instances as the StatefulSet has pods)"
            ]
        );

        jail.set_env("CXPULSE__CLUSTER__INSTANCES", "4");
        jail.create_file("c.toml", "[cluster]\nindex = 4\n")?;
        let err = Config::load(Some(Path::new("c.toml"))).expect_err("index 4 of 4");
        assert_eq!(
            err.0.iter().map(ToString::to_string).collect::<Vec<_>>(),
            vec![
                "c.toml:2: `cluster.index`: is 4, outside 0..4 (cluster.instances is 4): instance i of N owns the partitions p with p mod N = i"
            ]
        );
        Ok(())
    });
}
