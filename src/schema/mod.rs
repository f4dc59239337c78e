//! The declared sources: what each `[[sources]]` entry of the
//! configuration makes of its topic, as the rest of the engine sees it.
//!
//! A configuration's entries (the embedded `config/default.toml`, changed
//! by the user's file) are built into one [`Sources`] value when it is
//! loaded (`Config::load`); a [`Source`] is a cheap handle into it. Every
//! part of the engine that needs the set is handed it, so one process can
//! run engines over different sources. The decoder validates against a
//! source's [`FieldSpec`]s and its Arrow schema is derived from them, so
//! the two can never disagree. Topics are not part of a source: each
//! engine reads them from its own configuration.

mod keep;
mod layout;

use std::sync::{Arc, OnceLock};

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

pub use keep::KeepSpec;
pub use layout::{Layout, Slot, path_keys};

/// A declared source: a handle into its [`Sources`], cheap to copy and
/// ordered as sources are applied (tables first, then streams, each in
/// declaration order). Handles of one set compare by that order.
#[derive(Clone, Copy)]
pub struct Source(&'static Declared);

impl PartialEq for Source {
    fn eq(&self, other: &Self) -> bool {
        self.0.index == other.0.index
    }
}

impl Eq for Source {}

impl std::hash::Hash for Source {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.index.hash(state);
    }
}

impl PartialOrd for Source {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Source {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.index.cmp(&other.0.index)
    }
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Orders before every declared source: the lower end of ranges over keys
/// that hold a source.
static BEFORE_ALL: Declared = Declared {
    index: 0,
    spec: SourceSpec {
        name: String::new(),
        role: Role::Table { key: String::new() },
        fields: Vec::new(),
        layout: Layout::EMPTY,
        one_of: Vec::new(),
        keep: None,
    },
    schema: OnceLock::new(),
};

impl Source {
    /// The smallest handle, for ranges over keys that hold a source; it
    /// names no source (its name is empty).
    pub fn first() -> Source {
        Source(&BEFORE_ALL)
    }

    /// The SQL table name under which queries see this source.
    #[inline]
    pub fn name(self) -> &'static str {
        &self.0.spec.name
    }

    /// Whether this source is an event stream (as opposed to a table).
    #[inline]
    pub fn is_stream(self) -> bool {
        matches!(self.0.spec.role, Role::Stream { .. })
    }

    /// A stream's event-time column, or a table's key column: its name.
    #[inline]
    pub fn time_or_key(self) -> &'static str {
        match &self.0.spec.role {
            Role::Stream { event_time, .. } => event_time,
            Role::Table { key } => key,
        }
    }

    /// The column a stream's producers key its records by, if declared.
    pub fn partition_key(self) -> Option<&'static str> {
        match &self.0.spec.role {
            Role::Stream { partition_key, .. } => partition_key.as_deref(),
            Role::Table { .. } => None,
        }
    }

    /// How far ahead of the wall clock a stream's event time may be, in
    /// milliseconds, where declared (else the engine's); `None` for tables.
    pub fn max_future_ms(self) -> Option<i64> {
        match self.0.spec.role {
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
        match self.0.spec.role {
            Role::Stream {
                max_out_of_orderness_ms,
                idle_timeout_ms,
                ..
            } => (max_out_of_orderness_ms, idle_timeout_ms),
            Role::Table { .. } => (None, None),
        }
    }

    /// The field specification of this source.
    #[inline]
    pub fn fields(self) -> &'static [FieldSpec] {
        &self.0.spec.fields
    }

    /// Where this source's fields are in its JSON objects.
    #[inline]
    pub fn layout(self) -> &'static Layout {
        &self.0.spec.layout
    }

    /// Groups of fields of which at least one must be present and non-null.
    #[inline]
    pub fn one_of(self) -> &'static [Vec<String>] {
        &self.0.spec.one_of
    }

    /// The tables a stream keeps from its events, if declared.
    pub fn keep(self) -> Option<&'static KeepSpec> {
        self.0.spec.keep.as_ref()
    }

    /// The Arrow schema of this source's table, derived from [`Self::fields`].
    #[inline]
    pub fn schema(self) -> SchemaRef {
        Arc::clone(self.0.schema.get_or_init(|| self.0.spec.derived_schema()))
    }
}

/// The sources of one configuration: every enabled source, tables first.
/// Cheap to copy; built once per loaded configuration ([`Sources::new`]).
#[derive(Clone, Copy)]
pub struct Sources(&'static [Declared]);

impl std::fmt::Debug for Sources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.all()).finish()
    }
}

impl Default for Sources {
    /// No source at all (a configuration fills its own when loaded).
    fn default() -> Self {
        Sources(&[])
    }
}

impl Sources {
    /// The set of `specs`, in their order (the caller puts tables first).
    pub fn new(specs: Vec<SourceSpec>) -> Result<Sources, SourcesError> {
        if specs.len() > usize::from(u16::MAX) {
            return Err(SourcesError::TooMany(specs.len()));
        }
        let declared: Vec<Declared> = specs
            .into_iter()
            .enumerate()
            .map(|(index, spec)| Declared {
                index: index as u16,
                schema: OnceLock::new(),
                spec,
            })
            .collect();
        // A set lives as long as the process, so that a handle is a plain
        // reference: a configuration is loaded once per run.
        let set: &'static [Declared] = Box::leak(declared.into_boxed_slice());
        Ok(Sources(set))
    }

    /// Every enabled source, tables first.
    pub fn all(self) -> impl Iterator<Item = Source> + Clone {
        self.0.iter().map(Source)
    }

    /// Every event stream.
    pub fn streams(self) -> impl Iterator<Item = Source> + Clone {
        self.all().filter(|s| s.is_stream())
    }

    /// Every table (the latest row per key).
    pub fn tables(self) -> impl Iterator<Item = Source> + Clone {
        self.all().filter(|s| !s.is_stream())
    }

    /// The source whose SQL table name is `name`.
    pub fn named(self, name: &str) -> Option<Source> {
        self.all().find(|s| s.name() == name)
    }
}

/// Why a set of sources cannot be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SourcesError {
    /// More sources than a handle can index.
    #[error("{0} sources are declared; at most 65535 can be")]
    TooMany(usize),
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

/// What the engine needs of one declared source, as its entry declares it.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceSpec {
    /// The SQL table name.
    pub name: String,
    /// Stream or table, with what that needs.
    pub role: Role,
    /// The fields, in column order.
    pub fields: Vec<FieldSpec>,
    /// Where the fields are in a JSON object.
    pub layout: Layout,
    /// Groups of fields of which at least one must be set.
    pub one_of: Vec<Vec<String>>,
    /// The tables a stream keeps from its events, if declared.
    pub keep: Option<KeepSpec>,
}

impl SourceSpec {
    /// The Arrow schema of the source's table: one column per field,
    /// nullable unless required.
    fn derived_schema(&self) -> SchemaRef {
        Arc::new(Schema::new(
            self.fields
                .iter()
                .map(|f| Field::new(&f.name, f.ty.data_type(), !f.required))
                .collect::<Vec<_>>(),
        ))
    }
}

/// One source of a set: its spec, its place in the set and its schema
/// (derived once, on first use).
#[derive(Debug)]
struct Declared {
    index: u16,
    spec: SourceSpec,
    schema: OnceLock<SchemaRef>,
}

/// Whether a source is a stream or a table, with what that needs.
#[derive(Debug, Clone, PartialEq)]
pub enum Role {
    /// An event stream.
    Stream {
        /// The event-time column.
        event_time: String,
        /// Its own watermark lag, in milliseconds, if declared.
        max_out_of_orderness_ms: Option<i64>,
        /// Its own idle timeout, in milliseconds, if declared.
        idle_timeout_ms: Option<i64>,
        /// How far ahead of the clock its event time may be, if declared.
        max_future_ms: Option<i64>,
        /// The column its records are keyed (partitioned) by, if declared.
        partition_key: Option<String>,
    },
    /// A table: the latest row per key.
    Table {
        /// The key column.
        key: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemas_follow_the_field_specs() {
        let schema = crate::config::default_source("transactions").schema();
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
        let names: Vec<&str> = crate::config::default_sources()
            .all()
            .map(Source::name)
            .collect();
        assert_eq!(
            names,
            ["customers", "transactions", "feedback", "complaints"]
        );
        for source in crate::config::default_sources().all() {
            assert_eq!(
                crate::config::default_sources().named(source.name()),
                Some(source)
            );
        }
        assert_eq!(crate::config::default_sources().named("orders"), None);
        let customers = crate::config::default_source("customers");
        assert!(!customers.is_stream());
        assert_eq!(customers.time_or_key(), "customer_id");
        assert_eq!(crate::config::default_sources().streams().count(), 3);
    }
}
