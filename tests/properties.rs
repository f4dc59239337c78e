//! Property tests: no input makes cxpulse panic. Arbitrary bytes and
//! arbitrary JSON into the record decoder, arbitrary text into the
//! timestamp parser, the query header parser and the configuration loader,
//! arbitrary bytes into every changelog decoder. Each either succeeds or
//! returns an error.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema};
use cxpulse::config::Config;
use cxpulse::decode::{Cell, parse_record, parse_rfc3339_millis};
use cxpulse::query::{JobOptions, QueryFile};
use cxpulse::schema::Source;
use cxpulse::sink::format_timestamp_millis;
use cxpulse::state::{codec, key::StateKey, value};
use proptest::prelude::*;
use serde_json::Value;

/// The largest accepted event time (9999-12-31T23:59:59.999Z).
use cxpulse::decode::MAX_EPOCH_MILLIS;

fn kinds() -> impl Strategy<Value = Source> {
    prop::sample::select(cxpulse::config::default_sources().all().collect::<Vec<_>>())
}

/// Any JSON value, a few levels deep.
fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ".{0,30}".prop_map(Value::String),
        // Strings that look like timestamps, valid or nearly.
        "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2})?"
            .prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(".{0,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// An object with some of `kind`'s field names, and others, set to any JSON.
fn record(kind: Source) -> impl Strategy<Value = Value> {
    let names: Vec<String> = kind
        .fields()
        .iter()
        .map(|f| f.name.to_owned())
        .chain(["extra".to_owned(), "ts".to_owned()])
        .collect();
    prop::collection::btree_map(prop::sample::select(names), json(), 0..12)
        .prop_map(|m| Value::Object(m.into_iter().collect()))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1_000))]

    #[test]
    fn the_decoder_takes_any_bytes(kind in kinds(), bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = parse_record(kind, &bytes);
    }

    #[test]
    fn the_decoder_takes_any_json_and_keeps_its_promises(
        (kind, value) in kinds().prop_flat_map(|k| (Just(k), record(k)))
    ) {
        let text = value.to_string();
        if let Ok(cells) = parse_record(kind, text.as_bytes()) {
            prop_assert_eq!(cells.len(), kind.fields().len());
            for (cell, spec) in cells.iter().zip(kind.fields()) {
                if spec.required {
                    prop_assert!(*cell != Cell::Null, "required {} is null", spec.name);
                }
                if let Cell::Ts(ms) = cell {
                    prop_assert!((0..=MAX_EPOCH_MILLIS).contains(ms));
                }
            }
        }
    }

    #[test]
    fn timestamps_take_any_text(text in ".{0,40}") {
        let _ = parse_rfc3339_millis(&text);
    }

    #[test]
    fn timestamps_read_as_chrono_reads_them(
        text in "[0-9]{4}-[0-1][0-9]-[0-3][0-9][Tt ][0-2][0-9]:[0-6][0-9]:[0-6][0-9](\\.[0-9]{0,11})?([Zz]|[+-][0-2][0-9]:[0-5][0-9])"
    ) {
        let chrono = chrono::DateTime::parse_from_rfc3339(&text)
            .ok()
            .map(|t| t.timestamp_millis())
            .filter(|ms| (0..=MAX_EPOCH_MILLIS).contains(ms));
        prop_assert_eq!(parse_rfc3339_millis(&text), chrono, "{}", text);
    }

    #[test]
    fn timestamps_round_trip(ms in 0..=MAX_EPOCH_MILLIS) {
        prop_assert_eq!(parse_rfc3339_millis(&format_timestamp_millis(ms)), Some(ms));
    }

    #[test]
    fn query_headers_take_any_text(
        lines in prop::collection::vec(
            prop_oneof![
                "-- @(key|emit|lateness|gauge|output|backfill)[ a-z0-9_,@]{0,30}",
                "-- @[a-z]{0,8} .{0,20}",
                "--.{0,30}",
                ".{0,40}",
            ],
            0..8,
        )
    ) {
        let text = lines.join("\n");
        let _ = JobOptions::parse(&text);
        let _ = QueryFile::parse(std::path::Path::new("queries/job.sql"), text);
    }

    #[test]
    fn changelog_keys_take_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = StateKey::decode(&bytes);
    }

    #[test]
    fn changelog_keys_take_any_json(value in json()) {
        let _ = StateKey::decode(value.to_string().as_bytes());
    }

    #[test]
    fn changelog_values_take_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, true)]));
        let _ = value::decode(&bytes);
        let _ = value::join(&[&bytes]);
        let _ = value::read_int(&bytes, "n");
        let _ = codec::decode_session(&bytes, &schema);
    }
}

/// Any TOML-ish configuration: known sections and keys, unknown ones, and
/// values of every type.
fn config_text() -> impl Strategy<Value = String> {
    let keys = prop::sample::select(vec![
        "kafka.brokers",
        "kafka.group_id",
        "cluster.instances",
        "cluster.index",
        "kafka.message_timeout_ms",
        "kafka.properties.\"security.protocol\"",
        "topics.transactions",
        "topics.changelog",
        "topics.output_prefix",
        "engine.batch_max_rows",
        "engine.commit_interval_ms",
        "engine.state_memory_limit",
        "engine.idle_timeout_ms",
        "engine.delivery",
        "http.listen",
        "log.format",
        "nowhere.at_all",
    ]);
    let values = prop_oneof![
        any::<i64>().prop_map(|v| v.to_string()),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|v| format!("{v:?}")),
        any::<bool>().prop_map(|v| v.to_string()),
        "[a-zA-Z0-9:. _-]{0,20}".prop_map(|s| format!("{s:?}")),
        Just("[1, 2]".to_owned()),
        Just("{ a = 1 }".to_owned()),
        ".{0,10}",
    ];
    prop::collection::vec((keys, values), 0..8).prop_map(|pairs| {
        pairs
            .into_iter()
            .map(|(k, v)| format!("{k} = {v}"))
            .collect::<Vec<_>>()
            .join("\n")
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn configuration_files_take_any_text(text in config_text()) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("cxpulse.toml");
        std::fs::write(&path, &text).expect("write");
        if let Err(e) = Config::load(Some(&path)) {
            // Every problem names where it is.
            for problem in &e.0 {
                prop_assert!(!problem.origin.is_empty(), "{problem}");
            }
        }
    }
}

#[test]
fn a_config_problem_list_is_not_empty_for_a_bad_file() {
    // The property above would pass vacuously if every text loaded; make
    // sure a known-bad one does not.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "engine.batch_max_rows = \"many\"\n").expect("write");
    let problems: BTreeMap<String, String> = Config::load(Some(&path))
        .expect_err("invalid")
        .0
        .into_iter()
        .map(|p| (p.key, p.origin))
        .collect();
    assert_eq!(
        problems.get("engine.batch_max_rows").map(String::as_str),
        Some(format!("{}:1", path.display()).as_str())
    );
}
