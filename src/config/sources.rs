//! `[[sources]]`: the topics cxpulse reads, declared as data.
//!
//! Each entry names a SQL table, its topic, whether it is an event stream
//! (with an event-time column) or a table (the latest row per key), and its
//! columns. The defaults (the four CX sources) are entries of
//! `config/default.toml`; a user's file or environment changes them **by
//! name**: an entry with a default's name overrides the keys it sets (its
//! `columns`, when set, replace the default's list), an entry with a new name
//! is added, and `enabled = false` turns an entry off. Nobody has to copy the
//! defaults to add one source.
//!
//! The engine sees the enabled ones as [`crate::schema::Sources`], built
//! at load ([`super::Config::declared`]).

use std::collections::{BTreeMap, BTreeSet};

use figment::value::Value;
use serde::Deserialize;

/// One `[[sources]]` entry as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceEntry {
    /// SQL table name.
    pub name: String,
    /// Kafka topic.
    pub topic: String,
    /// `stream` or `table`.
    pub kind: String,
    /// Payload format; only `json`.
    #[serde(default = "json")]
    pub format: String,
    /// Streams: the event-time column.
    #[serde(default)]
    pub event_time: Option<String>,
    /// Streams: this source's own watermark lag behind its largest event
    /// time, in milliseconds (default: `engine.max_out_of_orderness_ms`).
    #[serde(default)]
    pub max_out_of_orderness_ms: Option<i64>,
    /// Streams: this source's own silence after which a partition no
    /// longer holds its watermark back, in milliseconds (default:
    /// `engine.idle_timeout_ms`).
    #[serde(default)]
    pub idle_timeout_ms: Option<i64>,
    /// Streams: how far ahead of the wall clock this source's event times
    /// may be, in milliseconds; 0: no check (default:
    /// `engine.max_future_ms`).
    #[serde(default)]
    pub max_future_ms: Option<i64>,
    /// Tables: the key column.
    #[serde(default)]
    pub key: Option<String>,
    /// Streams: the column the producers key their records by (so every
    /// event of one value is in one partition). A job grouped by it runs on
    /// each instance's own partitions when several instances share them.
    #[serde(default)]
    pub partition_key: Option<String>,
    /// Whether the source is consumed at all.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The columns.
    #[serde(default)]
    pub columns: Vec<ColumnEntry>,
    /// Groups of columns of which at least one must be set.
    #[serde(default)]
    pub one_of: Vec<Vec<String>>,
    /// Streams: tables kept from the stream's events.
    #[serde(default)]
    pub keep: Option<KeepEntry>,
}

/// A stream's `keep`: the latest state per key and its history, as
/// tables (see [`crate::lookup::kept`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeepEntry {
    /// The key column (text).
    pub key: String,
    /// The state column (text).
    pub state: String,
    /// Order of states at the same instant; states not listed come after.
    #[serde(default)]
    pub order: Vec<String>,
    /// Columns to add: the first time a state was reached, as
    /// `column = "state"`.
    #[serde(default)]
    pub since: BTreeMap<String, String>,
    /// Text columns whose latest non-null value is kept.
    #[serde(default)]
    pub carry: Vec<String>,
    /// Name of the latest-state table.
    #[serde(default)]
    pub latest: Option<String>,
    /// Name of the history table.
    #[serde(default)]
    pub history: Option<String>,
    /// How long a key is kept after its last event, in milliseconds of
    /// event time.
    pub retention_ms: i64,
}

/// One column of a source as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnEntry {
    /// Column name (a SQL identifier).
    pub name: String,
    /// Type: `id`, `string`, `int`, `float`, `bool`, `timestamp`,
    /// `decimal(P,S)`, `list<T>`.
    #[serde(rename = "type")]
    pub ty: String,
    /// Whether a record without it is a dead letter.
    #[serde(default)]
    pub required: bool,
    /// Where the value is in nested JSON (`$.device.os`); default: the
    /// top-level key `name`.
    #[serde(default)]
    pub path: Option<String>,
    /// The allowed values.
    #[serde(default)]
    pub values: Option<Vec<String>>,
    /// Smallest allowed number.
    #[serde(default)]
    pub min: Option<f64>,
    /// Largest allowed number.
    #[serde(default)]
    pub max: Option<f64>,
    /// A regular expression a string must match.
    #[serde(default)]
    pub regex: Option<String>,
    /// Strings are kept trimmed and lower-cased (`High` is `high`).
    #[serde(default)]
    pub lowercase: bool,
}

fn json() -> String {
    "json".to_owned()
}

fn yes() -> bool {
    true
}

/// A column type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnType {
    /// A non-empty string, or an integer kept as its decimal text.
    Id,
    /// Text.
    String,
    /// A 64-bit integer.
    Int,
    /// A finite 64-bit float.
    Float,
    /// `true` or `false`.
    Bool,
    /// RFC 3339 text or epoch milliseconds.
    Timestamp,
    /// A decimal with `precision` digits, `scale` of them after the point.
    Decimal {
        /// Digits in all.
        precision: u8,
        /// Digits after the point.
        scale: i8,
    },
    /// A JSON array of one type.
    List(Box<ColumnType>),
}

/// A column's type, bound or pattern that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ColumnError {
    /// `decimal(…)` without a precision and a scale.
    #[error("{0:?}: write decimal(PRECISION,SCALE)")]
    DecimalForm(String),
    /// A decimal precision outside 1 to 38.
    #[error("{0:?}: precision must be 1 to 38")]
    Precision(String),
    /// A decimal scale outside 0 to the precision.
    #[error("{0:?}: scale must be 0 to the precision")]
    Scale(String),
    /// A type cxpulse does not know.
    #[error(
        "unknown type {0:?}; known types: id, string, int, float, bool, timestamp, decimal(P,S), list<T>"
    )]
    UnknownType(String),
    /// A bound that is not a finite number.
    #[error("bound {0} is not a number")]
    NotANumber(String),
    /// A decimal bound with more digits after the point than the scale.
    #[error("bound {bound} has more than {scale} digits after the point (the column's scale)")]
    TooPrecise {
        /// The bound as written.
        bound: String,
        /// The column's scale.
        scale: usize,
    },
    /// A decimal bound beyond 128 bits.
    #[error("bound {0} is too large for a decimal")]
    TooLarge(String),
    /// A `regex` that does not compile.
    #[error("{0}")]
    Pattern(String),
}

impl ColumnType {
    /// Reads a type as written in a column's `type`.
    pub fn parse(written: &str) -> Result<ColumnType, ColumnError> {
        let t = written.trim();
        if let Some(inner) = t.strip_prefix("list<").and_then(|r| r.strip_suffix('>')) {
            return Ok(ColumnType::List(Box::new(ColumnType::parse(inner)?)));
        }
        if let Some(args) = t.strip_prefix("decimal(").and_then(|r| r.strip_suffix(')')) {
            let (p, s) = args
                .split_once(',')
                .ok_or_else(|| ColumnError::DecimalForm(written.to_owned()))?;
            let precision: u8 = p
                .trim()
                .parse()
                .ok()
                .filter(|p| (1..=38).contains(p))
                .ok_or_else(|| ColumnError::Precision(written.to_owned()))?;
            let scale: i8 = s
                .trim()
                .parse()
                .ok()
                .filter(|s: &i8| *s >= 0 && s.unsigned_abs() <= precision)
                .ok_or_else(|| ColumnError::Scale(written.to_owned()))?;
            return Ok(ColumnType::Decimal { precision, scale });
        }
        match t {
            "id" => Ok(ColumnType::Id),
            "string" => Ok(ColumnType::String),
            "int" => Ok(ColumnType::Int),
            "float" => Ok(ColumnType::Float),
            "bool" => Ok(ColumnType::Bool),
            "timestamp" => Ok(ColumnType::Timestamp),
            _ => Err(ColumnError::UnknownType(written.to_owned())),
        }
    }
}

/// Merges `overrides` into `defaults` by each entry's `name` (see the
/// module doc). Entries without a string `name` are appended as they are,
/// so that validation reports them.
pub fn merge_by_name(defaults: Vec<Value>, overrides: Vec<Value>) -> Vec<Value> {
    let mut merged = defaults;
    for entry in overrides {
        let position = name_of(&entry).and_then(|name| {
            merged
                .iter()
                .position(|e| name_of(e).as_deref() == Some(name.as_str()))
        });
        match (position, entry) {
            (Some(i), Value::Dict(_, keys)) => {
                if let Value::Dict(_, base) = &mut merged[i] {
                    base.extend(keys);
                }
            }
            (_, entry) => merged.push(entry),
        }
    }
    merged
}

fn name_of(entry: &Value) -> Option<String> {
    let Value::Dict(_, keys) = entry else {
        return None;
    };
    match keys.get("name") {
        Some(Value::String(_, name)) => Some(name.clone()),
        _ => None,
    }
}

/// Every problem of the entries, as (key, message); keys name the source,
/// as in `sources.clicks.columns[0].type`.
pub fn problems(entries: &[SourceEntry]) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let mut names = BTreeSet::new();
    let mut topics = BTreeMap::new();
    for source in entries {
        let at = |key: &str| format!("sources.{}.{key}", source.name);
        if !is_identifier(&source.name) {
            found.push((at("name"), identifier_message(&source.name)));
        }
        if !names.insert(source.name.as_str()) {
            found.push((
                at("name"),
                format!("duplicate source name {:?}", source.name),
            ));
        }
        if source.format != "json" {
            found.push((
                at("format"),
                format!("is {:?}; the only format is json", source.format),
            ));
        }
        let mut columns = BTreeSet::new();
        for (j, column) in source.columns.iter().enumerate() {
            let at_column = |key: &str| format!("sources.{}.columns[{j}].{key}", source.name);
            if !is_identifier(&column.name) {
                found.push((at_column("name"), identifier_message(&column.name)));
            }
            if !columns.insert(column.name.as_str()) {
                found.push((
                    at_column("name"),
                    format!("duplicate column name {:?}", column.name),
                ));
            }
            match ColumnType::parse(&column.ty) {
                Err(e) => found.push((at_column("type"), e.to_string())),
                Ok(ty) => {
                    for (key, message) in check_problems(column, &ty) {
                        found.push((at_column(key), message));
                    }
                }
            }
            if let Some(path) = &column.path
                && path
                    .strip_prefix("$.")
                    .is_none_or(|keys| keys.split('.').any(str::is_empty))
            {
                found.push((
                    at_column("path"),
                    format!("{path:?}: write $.key or $.outer.inner"),
                ));
            }
        }
        let has = |column: &Option<String>| column.as_deref().is_some_and(|c| columns.contains(c));
        if source.partition_key.is_some()
            && (source.kind != "stream" || !has(&source.partition_key))
        {
            found.push((
                at("partition_key"),
                not_a_column(
                    "a stream's partition_key names one of its columns (tables have none)",
                    &source.partition_key,
                ),
            ));
        }
        match source.kind.as_str() {
            "stream" if !has(&source.event_time) => found.push((
                at("event_time"),
                not_a_column("a stream needs event_time", &source.event_time),
            )),
            "table" if !has(&source.key) => {
                found.push((at("key"), not_a_column("a table needs key", &source.key)))
            }
            "stream" => {
                let time_type = source
                    .columns
                    .iter()
                    .find(|c| source.event_time.as_ref() == Some(&c.name))
                    .map(|c| c.ty.trim());
                if time_type != Some("timestamp") {
                    found.push((
                        at("event_time"),
                        format!(
                            "{:?} is a column of type {:?}; the event-time column must be a timestamp",
                            source.event_time.as_deref().unwrap_or_default(),
                            time_type.unwrap_or_default()
                        ),
                    ));
                }
                for key in [
                    "max_out_of_orderness_ms",
                    "idle_timeout_ms",
                    "max_future_ms",
                ] {
                    let value = match key {
                        "idle_timeout_ms" => source.idle_timeout_ms,
                        "max_future_ms" => source.max_future_ms,
                        _ => source.max_out_of_orderness_ms,
                    };
                    if value.is_some_and(|ms| ms < 0) {
                        found.push((at(key), "must be 0 or more".to_owned()));
                    }
                }
            }
            "table" => {}
            other => found.push((
                at("kind"),
                format!("is {other:?}, expected stream or table"),
            )),
        }
        if let Some(keep) = &source.keep {
            keep_problems(source, keep, &mut found);
        }
        if source.enabled
            && let Some(other) = topics.insert(source.topic.as_str(), source.name.as_str())
        {
            found.push((
                at("topic"),
                format!(
                    "{:?} is also the topic of source {other}; each topic is one source",
                    source.topic
                ),
            ));
        }
        for (g, group) in source.one_of.iter().enumerate() {
            for name in group.iter().filter(|n| !columns.contains(n.as_str())) {
                found.push((
                    format!("sources.{}.one_of[{g}]", source.name),
                    format!("{name:?} is not a column of {}", source.name),
                ));
            }
        }
    }
    let mut tables: BTreeSet<&str> = entries.iter().map(|s| s.name.as_str()).collect();
    for source in entries {
        let kept = source
            .keep
            .iter()
            .flat_map(|k| k.latest.iter().chain(&k.history));
        for name in kept {
            if !tables.insert(name.as_str()) {
                found.push((
                    format!("sources.{}.keep.latest", source.name),
                    format!("{name:?} is already the name of a source or of a kept table"),
                ));
            }
        }
    }
    found
}

/// The checks of `column` (of type `ty`) that its type cannot enforce, as
/// (key, message): every declared check is enforced or refused, never
/// accepted and ignored. A list's checks apply to its items.
fn check_problems(column: &ColumnEntry, ty: &ColumnType) -> Vec<(&'static str, String)> {
    let mut item = ty;
    while let ColumnType::List(inner) = item {
        item = inner;
    }
    let type_name = match item {
        ColumnType::Id => "id",
        ColumnType::String => "string",
        ColumnType::Int => "int",
        ColumnType::Float => "float",
        ColumnType::Bool => "bool",
        ColumnType::Timestamp => "timestamp",
        ColumnType::Decimal { .. } => "decimal",
        ColumnType::List(_) => "list",
    };
    let mut found = Vec::new();
    let applies_to = |check: &str, types: &str| {
        format!(
            "{check} applies to {types} columns, not to {type_name} (the check would never run)"
        )
    };
    let string = matches!(item, ColumnType::String);
    if column.values.is_some() && !string {
        found.push(("values", applies_to("values", "string")));
    }
    if column.regex.is_some() && !string {
        found.push(("regex", applies_to("regex", "string")));
    }
    if column.lowercase && !string {
        found.push(("lowercase", applies_to("lowercase", "string")));
    }
    if let Some(pattern) = &column.regex
        && let Err(e) = regex::Regex::new(pattern)
    {
        found.push((
            "regex",
            format!("{pattern:?} is not a regular expression: {e}"),
        ));
    }
    if string && column.values.is_some() && column.regex.is_some() {
        found.push((
            "regex",
            "set values or regex, not both: a value from the list is all that is accepted"
                .to_owned(),
        ));
    }
    if string && column.lowercase && (column.values.is_some() || column.regex.is_some()) {
        found.push((
            "lowercase",
            "lowercase cannot be combined with values or regex: values already match in any \
             case and keep the listed spelling; a regex sees the text as written"
                .to_owned(),
        ));
    }
    let bounds = [("min", column.min), ("max", column.max)];
    for (key, bound) in bounds {
        let Some(value) = bound else { continue };
        if !value.is_finite() {
            found.push((key, format!("{value} is not a finite number")));
            continue;
        }
        match item {
            ColumnType::Float => {}
            ColumnType::Int if value.fract() != 0.0 || value.abs() >= 9.0e15 => found.push((
                key,
                format!("{value} is not an integer; an int column's bounds are integers"),
            )),
            ColumnType::Int => {}
            &ColumnType::Decimal { scale, .. } => {
                if let Err(e) = decimal_units(value, scale) {
                    found.push((key, e.to_string()));
                }
            }
            _ => found.push((key, applies_to(key, "int, float and decimal"))),
        }
    }
    if let (Some(min), Some(max)) = (column.min, column.max)
        && min > max
    {
        found.push(("max", format!("{max} is below min {min}")));
    }
    found
}

/// Problems of a stream's `keep`.
fn keep_problems(source: &SourceEntry, keep: &KeepEntry, found: &mut Vec<(String, String)>) {
    let at = |key: &str| format!("sources.{}.keep.{key}", source.name);
    if source.kind != "stream" {
        found.push((at("key"), "only a stream can keep tables".to_owned()));
    }
    let text_column = |name: &str| {
        source
            .columns
            .iter()
            .find(|c| c.name == name)
            .is_some_and(|c| matches!(c.ty.trim(), "id" | "string"))
    };
    let needs_text = |what: &str, name: &str| {
        format!(
            "{what} {name:?} is not a text (`id` or `string`) column of {}",
            source.name
        )
    };
    if !text_column(&keep.key) {
        found.push((at("key"), needs_text("key", &keep.key)));
    }
    if !text_column(&keep.state) {
        found.push((at("state"), needs_text("state", &keep.state)));
    }
    for name in keep.carry.iter().filter(|n| !text_column(n)) {
        found.push((at("carry"), needs_text("carried column", name)));
    }
    for name in keep.since.keys().filter(|n| !is_identifier(n)) {
        found.push((at("since"), identifier_message(name)));
    }
    let tables: Vec<&String> = keep.latest.iter().chain(&keep.history).collect();
    if tables.is_empty() {
        found.push((
            at("latest"),
            "name at least one table: latest and/or history".to_owned(),
        ));
    }
    for name in tables.into_iter().filter(|n| !is_identifier(n)) {
        found.push((at("latest"), identifier_message(name)));
    }
    if keep.retention_ms < 0 {
        found.push((at("retention_ms"), "must be 0 or more".to_owned()));
    }
}

/// Why a stream's `event_time` or a table's `key` is not usable.
fn not_a_column(needs: &str, column: &Option<String>) -> String {
    match column {
        Some(name) => format!(
            "{name:?} is not one of the source's columns (its `columns` replace the \
             default's list: repeat the default columns, then add yours)"
        ),
        None => format!("{needs}, the name of one of its columns"),
    }
}

/// Whether `name` is a plain SQL identifier: a lowercase letter or `_`,
/// then lowercase letters, digits and `_`.
fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

fn identifier_message(name: &str) -> String {
    format!(
        "{name:?} is not a valid SQL identifier: use lowercase letters, digits and _, \
         starting with a letter or _"
    )
}

/// A bound written as a number (`min = 0`, `max = 9.99`), exactly, in units
/// of `10^-scale` of a decimal column: its shortest decimal form is read,
/// never its binary float value.
pub fn decimal_units(bound: f64, scale: i8) -> Result<i128, ColumnError> {
    if !bound.is_finite() {
        return Err(ColumnError::NotANumber(bound.to_string()));
    }
    let text = bound.to_string();
    let scale = usize::try_from(scale).unwrap_or(0);
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.as_str()),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    let fraction = fraction.trim_end_matches('0');
    if fraction.len() > scale {
        return Err(ColumnError::TooPrecise { bound: text, scale });
    }
    let units = format!("{whole}{fraction:0<scale$}")
        .parse::<i128>()
        .map_err(|_| ColumnError::TooLarge(text.clone()))?;
    Ok(if negative { -units } else { units })
}

#[cfg(test)]
fn dict(pairs: &[(&str, &str)]) -> Value {
    let keys: figment::value::Dict = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), Value::from((*v).to_owned())))
        .collect();
    Value::from(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_are_read_with_their_arguments() {
        assert_eq!(ColumnType::parse("id"), Ok(ColumnType::Id));
        assert_eq!(
            ColumnType::parse("decimal(12, 2)"),
            Ok(ColumnType::Decimal {
                precision: 12,
                scale: 2
            })
        );
        assert_eq!(
            ColumnType::parse("list<list<int>>"),
            Ok(ColumnType::List(Box::new(ColumnType::List(Box::new(
                ColumnType::Int
            )))))
        );
        for bad in [
            "text",
            "decimal(40,2)",
            "decimal(4,5)",
            "decimal(4)",
            "list<nope>",
        ] {
            assert!(ColumnType::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_override_changes_one_entry_and_a_new_name_is_added() {
        let defaults = vec![
            dict(&[("name", "a"), ("topic", "t.a")]),
            dict(&[("name", "b"), ("topic", "t.b")]),
        ];
        let merged = merge_by_name(
            defaults,
            vec![
                dict(&[("name", "b"), ("topic", "mine.b")]),
                dict(&[("name", "c"), ("topic", "t.c")]),
            ],
        );
        let topics: Vec<(Option<String>, String)> = merged
            .iter()
            .map(|e| {
                let Value::Dict(_, keys) = e else {
                    panic!("a table")
                };
                let topic = match keys.get("topic") {
                    Some(Value::String(_, t)) => t.clone(),
                    _ => String::new(),
                };
                (name_of(e), topic)
            })
            .collect();
        assert_eq!(
            topics,
            [
                (Some("a".to_owned()), "t.a".to_owned()),
                (Some("b".to_owned()), "mine.b".to_owned()),
                (Some("c".to_owned()), "t.c".to_owned()),
            ]
        );
    }

    fn column(name: &str, ty: &str) -> ColumnEntry {
        ColumnEntry {
            name: name.to_owned(),
            ty: ty.to_owned(),
            required: false,
            path: None,
            values: None,
            min: None,
            max: None,
            regex: None,
            lowercase: false,
        }
    }

    fn source(name: &str, kind: &str, columns: Vec<ColumnEntry>) -> SourceEntry {
        SourceEntry {
            name: name.to_owned(),
            topic: format!("t.{name}"),
            kind: kind.to_owned(),
            format: "json".to_owned(),
            event_time: Some("ts".to_owned()),
            max_out_of_orderness_ms: None,
            idle_timeout_ms: None,
            max_future_ms: None,
            key: Some("id".to_owned()),
            partition_key: None,
            enabled: true,
            columns,
            one_of: Vec::new(),
            keep: None,
        }
    }

    #[test]
    fn every_schema_problem_names_its_key() {
        let good = source("clicks", "stream", vec![column("ts", "timestamp")]);
        assert_eq!(problems(std::slice::from_ref(&good)), []);
        let mut no_key = source("campaigns", "table", vec![column("name", "string")]);
        no_key.one_of = vec![vec!["budget".to_owned()]];
        let entries = [
            good.clone(),
            good,
            source(
                "Bad-Name",
                "stream",
                vec![column("ts", "timestamp"), column("ts", "strin"), {
                    let mut nested = column("os", "string");
                    nested.path = Some("device.os".to_owned());
                    nested
                }],
            ),
            no_key,
            source("x", "queue", vec![]),
            {
                let mut late = source("late", "stream", vec![column("ts", "string")]);
                late.idle_timeout_ms = Some(-1);
                late
            },
        ];
        let keys: Vec<String> = problems(&entries).into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            keys,
            [
                "sources.clicks.name",
                "sources.clicks.topic",
                "sources.Bad-Name.name",
                "sources.Bad-Name.columns[1].name",
                "sources.Bad-Name.columns[1].type",
                "sources.Bad-Name.columns[2].path",
                "sources.campaigns.key",
                "sources.campaigns.one_of[0]",
                "sources.x.kind",
                "sources.late.event_time",
                "sources.late.idle_timeout_ms",
            ]
        );
    }
}
