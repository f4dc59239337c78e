//! Merging the configuration layers and checking their keys and value types
//! against the embedded default, which lists every key.

use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::value::{Dict, Value};
use figment::{Figment, Source};

use super::sections::{Config, ConfigError, ConfigProblem, DEFAULT_TOML};

/// Prefix of configuration environment variables.
pub const ENV_PREFIX: &str = "CXPULSE__";

/// Keys whose string value must be one of a fixed set.
const CHOICES: &[(&str, &[&str])] = &[("log.format", &["text", "json"])];

/// Keys earlier versions had, and why they are gone.
const REMOVED: &[(&str, &str)] = &[
    (
        "engine.delivery",
        "removed: outputs are always committed in Kafka transactions, so read_committed \
         readers see every final row exactly once (README: Guarantees)",
    ),
    (
        "engine.state_dir",
        "removed: state lives in the Kafka changelog topic (topics.changelog), not on disk",
    ),
    (
        "kafka.instance_id",
        "removed: instances are told apart by cluster.index (default: the host name's \
         trailing number); the transactional id is <kafka.group_id>-<cluster.index>-of-<cluster.instances>, so \
         that an instance restarted under its index fences its previous self (README: Scaling \
         out)",
    ),
    (
        "kafka.produce_retries",
        "removed: a record not delivered within kafka.message_timeout_ms aborts its epoch, \
         which is replayed from the last committed one",
    ),
];

/// The table whose keys are free-form (librdkafka properties).
const PASSTHROUGH: &str = "kafka.properties";

/// The merged layers, remembering where each value came from.
pub(super) struct Layered {
    figment: Figment,
    file: Option<(PathBuf, String)>,
}

impl Layered {
    /// Merges default, `file` and environment.
    pub(super) fn new(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Toml::string(DEFAULT_TOML));
        let file = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    ConfigError(vec![ConfigProblem {
                        key: String::new(),
                        origin: path.display().to_string(),
                        message: format!("cannot read the config file: {e}"),
                    }])
                })?;
                figment = figment.merge(Toml::file_exact(path));
                Some((path.to_path_buf(), text))
            }
            None => None,
        };
        // librdkafka property names use '.', which env var names cannot:
        // CXPULSE__KAFKA__PROPERTIES__SASL_MECHANISM sets `sasl.mechanism`.
        let env = Env::prefixed(ENV_PREFIX)
            .map(|key| {
                let key = key.as_str().to_ascii_lowercase();
                match key.strip_prefix("kafka__properties__") {
                    Some(prop) => format!("kafka__properties__{}", prop.replace('_', ".")).into(),
                    None => key.into(),
                }
            })
            .split("__");
        Ok(Self {
            figment: figment.merge(env),
            file,
        })
    }

    /// Checks keys and types against the default, then deserializes with
    /// the default standing in for every rejected value, so that semantic
    /// validation can still report the remaining problems in the same run.
    /// Returns the configuration and the key and type problems.
    pub(super) fn extract(&self) -> Result<(Config, Vec<ConfigProblem>), ConfigError> {
        let mut merged: Dict = self.figment.extract().map_err(|e| self.figment_error(e))?;
        let mut problems = Vec::new();
        let default = Figment::from(Toml::string(DEFAULT_TOML));
        let default_dict: Dict = default.extract().map_err(|e| self.figment_error(e))?;
        // Figment replaces arrays; sources are merged by name instead.
        match (default_dict.get("sources"), merged.remove("sources")) {
            (Some(Value::Array(_, defaults)), Some(Value::Array(tag, written))) => {
                let sources = super::sources::merge_by_name(defaults.clone(), written);
                merged.insert("sources".to_owned(), Value::Array(tag, sources));
            }
            (_, Some(_)) => problems.push(
                self.problem(
                    "sources",
                    "must be [[sources]] tables in a file; environment variables cannot set them"
                        .to_owned(),
                ),
            ),
            _ => {}
        }
        let checked = self.check_table("", &default_dict, merged, &mut problems);
        let config = default
            .merge(Serialized::defaults(checked))
            .extract()
            .map_err(|e| self.figment_error(e))?;
        Ok((config, problems))
    }

    fn figment_error(&self, error: figment::Error) -> ConfigError {
        ConfigError(
            error
                .into_iter()
                .map(|e| {
                    let key = e.path.join(".");
                    ConfigProblem {
                        origin: self.origin(&key),
                        message: e.kind.to_string(),
                        key,
                    }
                })
                .collect(),
        )
    }

    /// Walks `actual` against `default`: unknown keys and wrong types become
    /// problems; env values parsed as numbers are turned back into strings
    /// where the key takes a string.
    fn check_table(
        &self,
        prefix: &str,
        default: &Dict,
        actual: Dict,
        problems: &mut Vec<ConfigProblem>,
    ) -> Dict {
        let mut out = Dict::new();
        for (key, value) in actual {
            let path = if prefix.is_empty() {
                key.clone()
            } else {
                format!("{prefix}.{key}")
            };
            if prefix == PASSTHROUGH {
                for (name, leaf) in flatten(key, value) {
                    let leaf_path = format!("{PASSTHROUGH}.{name}");
                    if let Some(v) = self.expect_string(&leaf_path, leaf, problems) {
                        out.insert(name, v);
                    }
                }
                continue;
            }
            let checked = if let Some(default_value) = default.get(&key) {
                self.check_value(&path, default_value, value, problems)
            } else if let Some((_, why)) = REMOVED.iter().find(|(k, _)| *k == path) {
                problems.push(self.problem(&path, (*why).to_owned()));
                None
            } else {
                let known: Vec<&str> = default.keys().map(String::as_str).collect();
                problems.push(self.problem(
                    &path,
                    format!("unknown key; known keys here: {}", known.join(", ")),
                ));
                None
            };
            if let Some(v) = checked {
                out.insert(key, v);
            }
        }
        out
    }

    fn check_value(
        &self,
        path: &str,
        default: &Value,
        actual: Value,
        problems: &mut Vec<ConfigProblem>,
    ) -> Option<Value> {
        match default {
            Value::Dict(_, default_dict) => match actual {
                Value::Dict(tag, dict) => Some(Value::Dict(
                    tag,
                    self.check_table(path, default_dict, dict, problems),
                )),
                other => {
                    problems
                        .push(self.problem(path, format!("must be a table, got {}", kind(&other))));
                    None
                }
            },
            Value::String(..) => {
                let value = self.expect_string(path, actual, problems)?;
                if let (Some((_, allowed)), Value::String(_, s)) =
                    (CHOICES.iter().find(|(k, _)| *k == path), &value)
                    && !allowed.contains(&s.as_str())
                {
                    problems.push(self.problem(
                        path,
                        format!("is {s:?}, expected one of {}", allowed.join(", ")),
                    ));
                    return None;
                }
                Some(value)
            }
            Value::Num(..) => match &actual {
                Value::Num(_, n) if integer(*n).is_some() => Some(actual),
                // Whole floats (`500.0`, what Helm's toToml writes for a
                // number from a values file) are integers.
                Value::Num(tag, n) if let Some(i) = whole(*n) => {
                    Some(Value::Num(*tag, figment::value::Num::I64(i)))
                }
                other => {
                    problems.push(
                        self.problem(path, format!("must be an integer, got {}", kind(other))),
                    );
                    None
                }
            },
            _ => Some(actual),
        }
    }

    fn expect_string(
        &self,
        path: &str,
        actual: Value,
        problems: &mut Vec<ConfigProblem>,
    ) -> Option<Value> {
        match actual {
            Value::String(..) => Some(actual),
            Value::Num(tag, n) => Some(Value::String(tag, num_text(n))),
            Value::Bool(tag, b) => Some(Value::String(tag, b.to_string())),
            other => {
                problems
                    .push(self.problem(path, format!("must be a string, got {}", kind(&other))));
                None
            }
        }
    }

    /// A problem with the value at `path`.
    pub(super) fn problem(&self, path: &str, message: String) -> ConfigProblem {
        ConfigProblem {
            key: path.to_owned(),
            origin: self.origin(path),
            message,
        }
    }

    /// Where the value at `path` came from: `file:line`, an env var or the default.
    pub(super) fn origin(&self, path: &str) -> String {
        if let Some((name, key)) = path
            .strip_prefix("sources.")
            .and_then(|rest| rest.split_once('.'))
        {
            return self.source_origin(name, key);
        }
        if let Some(property) = path.strip_prefix("kafka.properties.") {
            return self.property_origin(path, property);
        }
        let metadata = self.figment.find_metadata(path);
        if let (Some(Source::File(file)), Some((_, text))) =
            (metadata.and_then(|m| m.source.as_ref()), &self.file)
        {
            return match line_of(text, path) {
                Some(line) => format!("{}:{line}", file.display()),
                None => file.display().to_string(),
            };
        }
        if metadata.is_some_and(|m| m.name.contains("environment")) {
            return format!("env {}", env_var_name(path));
        }
        match line_of(DEFAULT_TOML, path) {
            Some(line) => format!("config/default.toml:{line} (default)"),
            None => "config/default.toml (default)".to_owned(),
        }
    }
}

impl Layered {
    /// Where a librdkafka property is set: the environment wins over the
    /// file, where it may be written as dotted keys or as one quoted key.
    fn property_origin(&self, path: &str, property: &str) -> String {
        let var = env_var_name(path);
        if std::env::var_os(&var).is_some() {
            return format!("env {var}");
        }
        if let Some((file, text)) = &self.file {
            let quoted = toml_edit::ImDocument::parse(text.as_str())
                .ok()
                .and_then(|doc| {
                    let (key, _) = doc
                        .as_table()
                        .get("kafka")?
                        .as_table_like()?
                        .get("properties")?
                        .as_table_like()?
                        .get_key_value(property)?;
                    let offset = key.span()?.start;
                    Some(text.get(..offset)?.matches('\n').count() + 1)
                });
            return match quoted.or_else(|| line_of(text, path)) {
                Some(line) => format!("{}:{line}", file.display()),
                None => file.display().to_string(),
            };
        }
        match line_of(DEFAULT_TOML, path) {
            Some(line) => format!("config/default.toml:{line} (default)"),
            None => "config/default.toml (default)".to_owned(),
        }
    }

    /// Where `key` of the source `name` is written: the file's
    /// `[[sources]]` entry of that name if it has one, else the default's.
    fn source_origin(&self, name: &str, key: &str) -> String {
        if let Some((file, text)) = &self.file
            && let Some(line) = source_line(text, name, key)
        {
            return format!("{}:{line}", file.display());
        }
        match source_line(DEFAULT_TOML, name, key) {
            Some(line) => format!("config/default.toml:{line} (default)"),
            None => "config/default.toml (default)".to_owned(),
        }
    }
}

/// The 1-based line of `key` (`event_time`, `columns[3].type`, `one_of[0]`)
/// in the `[[sources]]` entry named `name` of TOML `text`; the line of the
/// entry's `name` when `key` is not written there.
fn source_line(text: &str, name: &str, key: &str) -> Option<usize> {
    let doc = toml_edit::ImDocument::parse(text).ok()?;
    let entry = doc
        .as_table()
        .get("sources")?
        .as_array_of_tables()?
        .iter()
        .find(|t| t.get("name").and_then(toml_edit::Item::as_str) == Some(name))?;
    let name_span = entry.key("name").and_then(toml_edit::Key::span);
    let span = key_span(entry, key).or(name_span)?;
    Some(text.get(..span.start)?.matches('\n').count() + 1)
}

/// The span of `key` in `entry`, down one array index or sub-table and one
/// field.
fn key_span(entry: &toml_edit::Table, key: &str) -> Option<std::ops::Range<usize>> {
    let (head, field) = match key.split_once('.') {
        Some((head, field)) => (head, Some(field)),
        None => (key, None),
    };
    let (name, index) = match head.split_once('[') {
        Some((name, index)) => (name, index.trim_end_matches(']').parse::<usize>().ok()),
        None => (head, None),
    };
    let (written, item) = entry.get_key_value(name)?;
    let Some(index) = index else {
        // A sub-table (`keep.key`): the field's line, else the table's.
        return field
            .and_then(|f| item.as_table_like()?.get_key_value(f)?.0.span())
            .or_else(|| written.span());
    };
    let element = item.as_array()?.get(index)?;
    field
        .and_then(|f| element.as_inline_table()?.key(f)?.span())
        .or_else(|| element.span())
}

/// The environment variable that sets `path`.
pub fn env_var_name(path: &str) -> String {
    let mut name = String::from(ENV_PREFIX);
    match path.strip_prefix("kafka.properties.") {
        Some(prop) => {
            name.push_str("KAFKA__PROPERTIES__");
            name.push_str(&prop.replace('.', "_").to_uppercase());
        }
        None => name.push_str(&path.replace('.', "__").to_uppercase()),
    }
    name
}

/// Flattens nested tables under a passthrough key into dotted names
/// (`security.protocol` arrives nested from TOML dotted keys and from env).
fn flatten(name: String, value: Value) -> Vec<(String, Value)> {
    match value {
        Value::Dict(_, dict) => dict
            .into_iter()
            .flat_map(|(k, v)| flatten(format!("{name}.{k}"), v))
            .collect(),
        other => vec![(name, other)],
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::String(..) => "a string",
        Value::Char(..) => "a character",
        Value::Bool(..) => "a boolean",
        Value::Num(..) => "a number",
        Value::Empty(..) => "an empty value",
        Value::Dict(..) => "a table",
        Value::Array(..) => "an array",
    }
}

/// The value of an integral number, signed or unsigned.
fn integer(n: figment::value::Num) -> Option<i128> {
    n.to_i128()
        .or_else(|| n.to_u128().and_then(|u| i128::try_from(u).ok()))
}

/// A float without a fraction, as an integer.
fn whole(n: figment::value::Num) -> Option<i64> {
    let f = n.to_f64()?;
    (f.fract() == 0.0 && f.abs() < 9.0e15).then_some(f as i64)
}

fn num_text(n: figment::value::Num) -> String {
    match (integer(n), n.to_f64()) {
        (Some(i), _) => i.to_string(),
        (None, Some(f)) => f.to_string(),
        (None, None) => String::new(),
    }
}

/// The 1-based line of the key at dotted `path` in TOML `text`.
fn line_of(text: &str, path: &str) -> Option<usize> {
    let doc = toml_edit::ImDocument::parse(text).ok()?;
    let mut segments = path.split('.').peekable();
    let mut table = doc.as_table() as &dyn toml_edit::TableLike;
    let mut span = None;
    while let Some(segment) = segments.next() {
        let (key, item) = table.get_key_value(segment)?;
        span = key.span().or_else(|| item.span());
        if segments.peek().is_some() {
            table = item.as_table_like()?;
        }
    }
    let offset = span?.start;
    Some(text.get(..offset)?.matches('\n').count() + 1)
}
