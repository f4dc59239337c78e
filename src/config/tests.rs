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
        assert_eq!(
            config.topics.source_topic(SourceKind::Feedback),
            "cx.feedback"
        );
        assert_eq!(config.engine.delivery, Delivery::AtLeastOnce);
        assert_eq!(config.log.format, LogFormat::Text);
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
                "bad.toml:6: `engine.batch_lingr_ms`: unknown key; known keys here: batch_linger_ms, batch_max_rows, delivery, gauge_series_limit, idle_timeout_ms, max_out_of_orderness_ms, queries_dir, reload_interval_ms, shutdown_drain_ms, state_dir",
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
