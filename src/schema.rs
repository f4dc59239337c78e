//! The declared sources: what each `[[sources]]` entry of the
//! configuration makes of its topic, as the rest of the engine sees it.
//!
//! The entries (the embedded `config/default.toml`, changed by the user's
//! file) are read into a registry when the engine starts ([`declare`]);
//! a [`Source`] is a cheap handle into it. The decoder validates against a
//! source's [`FieldSpec`]s and its Arrow schema is derived from them, so
//! the two can never disagree. Sources take effect on restart: the
//! registry is fixed for the life of the process. Topics are not part of
//! it: each engine reads them from its own configuration
//! ([`crate::config::TopicsConfig::source_topic`]).

use std::sync::{Arc, OnceLock};

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use figment::Figment;
use figment::providers::{Format, Toml};

use crate::config::DEFAULT_TOML;
use crate::config::sources::{ColumnEntry, ColumnType, SourceEntry};
use crate::decode::Layout;
use crate::lookup::kept::KeepSpec;

/// A declared source: an index into the process's registry, cheap to copy
/// and ordered as sources are applied (tables first, then streams, each in
/// declaration order).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Source(u16);

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Source {
    /// The smallest handle, for ranges over keys that hold a source.
    pub const FIRST: Source = Source(0);

    /// Every enabled source, tables first.
    pub fn all() -> impl Iterator<Item = Source> + Clone {
        (0..declared().len()).map(|i| Source(i as u16))
    }

    /// Every event stream.
    pub fn streams() -> impl Iterator<Item = Source> + Clone {
        Self::all().filter(|s| s.is_stream())
    }

    /// Every table (the latest row per key).
    pub fn tables() -> impl Iterator<Item = Source> + Clone {
        Self::all().filter(|s| !s.is_stream())
    }

    /// The source whose SQL table name is `name`.
    pub fn named(name: &str) -> Option<Source> {
        Self::all().find(|s| s.name() == name)
    }

    fn spec(self) -> &'static Declared {
        &declared()[usize::from(self.0)]
    }

    /// The SQL table name under which queries see this source.
    pub fn name(self) -> &'static str {
        &self.spec().name
    }

    /// Whether this source is an event stream (as opposed to a table).
    pub fn is_stream(self) -> bool {
        matches!(self.spec().role, Role::Stream { .. })
    }

    /// A stream's event-time column, or a table's key column: its name.
    pub fn time_or_key(self) -> &'static str {
        match &self.spec().role {
            Role::Stream { event_time, .. } => event_time,
            Role::Table { key } => key,
        }
    }

    /// How far ahead of the wall clock a stream's event time may be, in
    /// milliseconds, where declared (else the engine's); `None` for tables.
    pub fn max_future_ms(self) -> Option<i64> {
        match self.spec().role {
            Role::Stream { max_future_ms, .. } => max_future_ms,
            Role::Table { .. } => None,
        }
    }

    /// The position of a stream's event-time column (a table's key column)
    /// among [`Self::fields`].
    pub fn time_or_key_index(self) -> usize {
        let name = self.time_or_key();
        self.fields()
            .iter()
            .position(|f| f.name == name)
            .unwrap_or_default()
    }

    /// A stream's own watermark lag and idle timeout, in milliseconds,
    /// where declared (else the engine's).
    pub fn event_time_settings(self) -> (Option<i64>, Option<i64>) {
        match self.spec().role {
            Role::Stream {
                max_out_of_orderness_ms,
                idle_timeout_ms,
                ..
            } => (max_out_of_orderness_ms, idle_timeout_ms),
            Role::Table { .. } => (None, None),
        }
    }

    /// The field specification of this source.
    pub fn fields(self) -> &'static [FieldSpec] {
        &self.spec().fields
    }

    /// Where this source's fields are in its JSON objects.
    pub fn layout(self) -> &'static Layout {
        &self.spec().layout
    }

    /// Groups of fields of which at least one must be present and non-null.
    pub fn one_of(self) -> &'static [Vec<String>] {
        &self.spec().one_of
    }

    /// The tables a stream keeps from its events, if declared.
    pub fn keep(self) -> Option<&'static KeepSpec> {
        self.spec().keep.as_ref()
    }

    /// The Arrow schema of this source's table, derived from [`Self::fields`].
    pub fn schema(self) -> SchemaRef {
        Arc::clone(&self.spec().schema)
    }
}

/// The JSON type a field accepts and the Arrow type it becomes.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldType {
    /// An identifier: a non-empty string, or an integer (kept as its decimal text).
    Id,
    /// Free text.
    Text,
    /// RFC 3339 string or epoch milliseconds, stored as `Timestamp(Millisecond, UTC)`.
    Timestamp,
    /// A finite number within `min..=max`.
    Float {
        /// Smallest accepted value.
        min: f64,
        /// Largest accepted value.
        max: f64,
    },
    /// `true` or `false`.
    Bool,
    /// A decimal number (JSON number or string), exact to `scale` digits
    /// after the point, `precision` digits in all, within bounds compared
    /// exactly (in units of `10^-scale`).
    Decimal {
        /// Digits in all.
        precision: u8,
        /// Digits after the point.
        scale: i8,
        /// Smallest accepted value, in units of `10^-scale`.
        min: Option<i128>,
        /// Largest accepted value, in units of `10^-scale`.
        max: Option<i128>,
    },
    /// Text that must match a regular expression.
    Matching(Pattern),
    /// A JSON array whose items are all of one type.
    List(Box<FieldType>),
    /// An integer within `min..=max` (an integral float such as `4.0` is accepted).
    Int {
        /// Smallest accepted value.
        min: i64,
        /// Largest accepted value.
        max: i64,
    },
    /// Free text that CRMs write in any case: kept trimmed and lower-cased,
    /// so that `High` and `high` are one value.
    Coded,
    /// One of a fixed set of strings, in any case and with spaces around;
    /// kept as written in the set.
    Enum(Vec<String>),
}

impl FieldType {
    /// The Arrow data type of a column of this field type.
    pub fn data_type(&self) -> DataType {
        match self {
            FieldType::Id
            | FieldType::Text
            | FieldType::Coded
            | FieldType::Enum(_)
            | FieldType::Matching(_) => DataType::Utf8,
            FieldType::Bool => DataType::Boolean,
            FieldType::Decimal {
                precision, scale, ..
            } => DataType::Decimal128(*precision, *scale),
            FieldType::List(item) => list_type(item.data_type()),
            FieldType::Timestamp => timestamp_type(),
            FieldType::Float { .. } => DataType::Float64,
            FieldType::Int { .. } => DataType::Int64,
        }
    }
}

/// A compiled regular expression, equal to another with the same text.
#[derive(Debug, Clone)]
pub struct Pattern(pub regex::Regex);

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

/// The Arrow type of a list of `item`s (items may be null).
pub fn list_type(item: DataType) -> DataType {
    DataType::List(Arc::new(Field::new("item", item, true)))
}

/// The Arrow type of every event-time column: milliseconds, UTC.
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

/// One field of an input event.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldSpec {
    /// JSON key and column name.
    pub name: String,
    /// Accepted values.
    pub ty: FieldType,
    /// Whether a record without it (or with `null`) is invalid.
    pub required: bool,
}

/// What the engine needs of one declared source.
#[derive(Debug, Clone, PartialEq)]
struct Declared {
    name: String,
    role: Role,
    fields: Vec<FieldSpec>,
    layout: Layout,
    /// Groups of fields of which at least one must be set.
    one_of: Vec<Vec<String>>,
    schema: SchemaRef,
    keep: Option<KeepSpec>,
}

/// Whether a source is a stream or a table, with what that needs.
#[derive(Debug, Clone, PartialEq)]
enum Role {
    Stream {
        event_time: String,
        max_out_of_orderness_ms: Option<i64>,
        idle_timeout_ms: Option<i64>,
        max_future_ms: Option<i64>,
    },
    Table {
        key: String,
    },
}

/// The sources of this process, fixed by [`declare`] or, if nothing was
/// declared before the first use, by the embedded default configuration.
static DECLARED: OnceLock<Vec<Declared>> = OnceLock::new();

fn declared() -> &'static [Declared] {
    DECLARED.get_or_init(|| {
        let defaults: Vec<SourceEntry> = Figment::from(Toml::string(DEFAULT_TOML))
            .extract_inner("sources")
            .unwrap_or_else(|e| panic!("config/default.toml [[sources]]: {e}"));
        build(&defaults).unwrap_or_else(|e| panic!("config/default.toml [[sources]]: {e}"))
    })
}

/// Fixes this process's sources from a loaded configuration's
/// `[[sources]]` (checked by `Config::load`, topics reconciled); sources
/// take effect on restart. Call it at start, before any record is read:
/// once sources are fixed, other declarations are refused.
pub fn declare(entries: &[SourceEntry]) -> Result<(), String> {
    let mut built = Some(build(entries)?);
    let fixed = DECLARED.get_or_init(|| built.take().unwrap_or_default());
    match built {
        Some(other) if other != *fixed => {
            Err("the sources of this process were fixed before with other declarations".to_owned())
        }
        _ => Ok(()),
    }
}

/// The enabled entries, tables first, as the engine sees them.
fn build(entries: &[SourceEntry]) -> Result<Vec<Declared>, String> {
    let enabled = entries.iter().filter(|e| e.enabled);
    let (tables, streams): (Vec<&SourceEntry>, Vec<&SourceEntry>) =
        enabled.partition(|e| e.kind == "table");
    if tables.len() + streams.len() > usize::from(u16::MAX) {
        return Err("too many sources".to_owned());
    }
    tables
        .into_iter()
        .chain(streams)
        .map(declared_source)
        .collect()
}

/// One entry as the engine sees it.
fn declared_source(entry: &SourceEntry) -> Result<Declared, String> {
    let named = |column: &Option<String>, what: &str| {
        column
            .clone()
            .ok_or_else(|| format!("source {}: {what} is not set", entry.name))
    };
    let role = match entry.kind.as_str() {
        "stream" => Role::Stream {
            event_time: named(&entry.event_time, "event_time")?,
            max_out_of_orderness_ms: entry.max_out_of_orderness_ms,
            idle_timeout_ms: entry.idle_timeout_ms,
            max_future_ms: entry.max_future_ms,
        },
        "table" => Role::Table {
            key: named(&entry.key, "key")?,
        },
        other => return Err(format!("source {}: unknown kind {other:?}", entry.name)),
    };
    let fields: Vec<FieldSpec> = entry
        .columns
        .iter()
        .map(field_spec)
        .collect::<Result<_, _>>()?;
    let paths: Vec<Vec<String>> = entry
        .columns
        .iter()
        .map(|c| crate::decode::path_keys(&c.name, c.path.as_deref()))
        .collect();
    let schema = Arc::new(Schema::new(
        fields
            .iter()
            .map(|f| Field::new(&f.name, f.ty.data_type(), !f.required))
            .collect::<Vec<_>>(),
    ));
    Ok(Declared {
        name: entry.name.clone(),
        role,
        fields,
        layout: Layout::new(&paths),
        one_of: entry.one_of.clone(),
        schema,
        keep: entry.keep.as_ref().map(|k| KeepSpec {
            time: entry.event_time.clone().unwrap_or_default(),
            key: k.key.clone(),
            state: k.state.clone(),
            order: k.order.clone(),
            since: k.since.clone().into_iter().collect(),
            carry: k.carry.clone(),
            latest: k.latest.clone(),
            history: k.history.clone(),
            retention_ms: k.retention_ms,
        }),
    })
}

/// The decoder's view of a declared column: its type with every check it
/// declares (a list's checks apply to its items). The checks were
/// validated with the configuration ([`crate::config::sources::problems`]).
fn field_spec(column: &ColumnEntry) -> Result<FieldSpec, String> {
    Ok(FieldSpec {
        name: column.name.clone(),
        ty: checked_type(&ColumnType::parse(&column.ty)?, column)?,
        required: column.required,
    })
}

/// `ty` with the column's checks.
fn checked_type(ty: &ColumnType, column: &ColumnEntry) -> Result<FieldType, String> {
    let at = |e: String| format!("column {}: {e}", column.name);
    Ok(match ty {
        ColumnType::List(item) => FieldType::List(Box::new(checked_type(item, column)?)),
        ColumnType::String => match (&column.values, &column.regex) {
            (Some(values), _) => FieldType::Enum(values.clone()),
            (None, Some(pattern)) => regex::Regex::new(pattern)
                .map(|re| FieldType::Matching(Pattern(re)))
                .map_err(|e| at(e.to_string()))?,
            (None, None) if column.lowercase => FieldType::Coded,
            (None, None) => FieldType::Text,
        },
        ColumnType::Id => FieldType::Id,
        ColumnType::Timestamp => FieldType::Timestamp,
        ColumnType::Bool => FieldType::Bool,
        &ColumnType::Decimal { precision, scale } => {
            let bound = |b: Option<f64>| {
                b.map(|v| crate::decode::decimal_units(v, scale))
                    .transpose()
                    .map_err(at)
            };
            FieldType::Decimal {
                precision,
                scale,
                min: bound(column.min)?,
                max: bound(column.max)?,
            }
        }
        ColumnType::Float => FieldType::Float {
            min: column.min.unwrap_or(f64::NEG_INFINITY),
            max: column.max.unwrap_or(f64::INFINITY),
        },
        ColumnType::Int => FieldType::Int {
            min: column.min.map_or(i64::MIN, |m| m as i64),
            max: column.max.map_or(i64::MAX, |m| m as i64),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemas_follow_the_field_specs() {
        let schema = Source::named("transactions").expect("declared").schema();
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(
            names,
            [
                "event_id",
                "customer_id",
                "ts",
                "amount",
                "category",
                "currency",
                "channel",
                "items",
                "order_id"
            ]
        );
        let ts = schema.field_with_name("ts").expect("ts column");
        assert_eq!(ts.data_type(), &timestamp_type());
        assert!(!ts.is_nullable());
        assert!(
            schema
                .field_with_name("currency")
                .expect("currency")
                .is_nullable()
        );
    }

    #[test]
    fn the_defaults_are_declared_tables_first() {
        let names: Vec<&str> = Source::all().map(Source::name).collect();
        assert_eq!(
            names,
            ["customers", "transactions", "feedback", "complaints"]
        );
        for source in Source::all() {
            assert_eq!(Source::named(source.name()), Some(source));
        }
        assert_eq!(Source::named("orders"), None);
        let customers = Source::named("customers").expect("declared");
        assert!(!customers.is_stream());
        assert_eq!(customers.time_or_key(), "customer_id");
        assert_eq!(Source::streams().count(), 3);
    }
}
