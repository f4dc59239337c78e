//! The four input sources, their field specifications and Arrow schemas.
//!
//! Each source is described once, as a `[[sources]]` entry of the
//! configuration (the embedded `config/default.toml`, changed by the user's
//! file), read into [`FieldSpec`]s when the engine starts ([`declare`]); the
//! decoder validates against them and the Arrow schema is derived from
//! them, so the two can never disagree.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use figment::Figment;
use figment::providers::{Format, Toml};

use crate::config::DEFAULT_TOML;
use crate::config::sources::{ColumnEntry, ColumnType, SourceEntry};

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use serde::{Deserialize, Serialize};

/// The input sources cxpulse consumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// Purchases: the basis of need and loyalty metrics.
    Transactions,
    /// CSAT / NPS / CES survey answers.
    Feedback,
    /// Complaint lifecycle events.
    Complaints,
    /// Customer profiles, a compacted lookup table keyed by `customer_id`.
    Customers,
}

impl SourceKind {
    /// Every source, in the order batches are applied (lookup tables first).
    pub const ALL: [SourceKind; 4] = [
        SourceKind::Customers,
        SourceKind::Transactions,
        SourceKind::Feedback,
        SourceKind::Complaints,
    ];

    /// The SQL table name under which queries see this source.
    pub fn table_name(self) -> &'static str {
        match self {
            SourceKind::Transactions => "transactions",
            SourceKind::Feedback => "feedback",
            SourceKind::Complaints => "complaints",
            SourceKind::Customers => "customers",
        }
    }

    /// Looks a source up by its SQL table name.
    pub fn from_table_name(name: &str) -> Option<SourceKind> {
        Self::ALL.into_iter().find(|k| k.table_name() == name)
    }

    /// Whether this source is an event stream (as opposed to a lookup table).
    pub fn is_stream(self) -> bool {
        self != SourceKind::Customers
    }

    /// The field specification of this source.
    pub fn fields(self) -> &'static [FieldSpec] {
        &declared()[&self].fields
    }

    /// Where this source's fields are in its JSON objects.
    pub fn layout(self) -> &'static crate::decode::Layout {
        &declared()[&self].layout
    }

    /// Fields of which at least one must be present and non-null (none
    /// when empty).
    pub fn one_of(self) -> &'static [String] {
        &declared()[&self].one_of
    }

    /// The Arrow schema of this source's table, derived from [`Self::fields`].
    pub fn schema(self) -> SchemaRef {
        let fields: Vec<Field> = self
            .fields()
            .iter()
            .map(|f| Field::new(&f.name, f.ty.data_type(), !f.required))
            .collect();
        Arc::new(Schema::new(fields))
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
    /// after the point, `precision` digits in all.
    Decimal {
        /// Digits in all.
        precision: u8,
        /// Digits after the point.
        scale: i8,
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
            FieldType::Decimal { precision, scale } => DataType::Decimal128(*precision, *scale),
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

/// What the decoder needs of one declared source.
#[derive(Debug, Clone, PartialEq)]
struct Declared {
    fields: Vec<FieldSpec>,
    layout: crate::decode::Layout,
    /// Fields of which at least one must be set.
    one_of: Vec<String>,
}

/// The sources of this process, fixed by [`declare`] or, if nothing was
/// declared before the first use, by the embedded default configuration.
static DECLARED: OnceLock<BTreeMap<SourceKind, Declared>> = OnceLock::new();

fn declared() -> &'static BTreeMap<SourceKind, Declared> {
    DECLARED.get_or_init(|| {
        build(&default_entries()).unwrap_or_else(|e| panic!("config/default.toml [[sources]]: {e}"))
    })
}

/// The `[[sources]]` of the embedded default configuration.
fn default_entries() -> Vec<SourceEntry> {
    Figment::from(Toml::string(DEFAULT_TOML))
        .extract_inner("sources")
        .unwrap_or_else(|e| panic!("config/default.toml [[sources]]: {e}"))
}

/// Fixes this process's sources from a loaded configuration's
/// `[[sources]]` (checked by `Config::load`); sources take effect on
/// restart. Call it at start, before any record is read: once sources are
/// fixed, other declarations are refused.
///
/// For now the four CX sources must stay, with the kind, event time (`ts`)
/// or key (`customer_id`) and leading columns of their defaults; columns
/// may be added after those and checks changed, and no other source can be
/// declared yet.
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

/// Each of the four CX sources, as `entries` declare it.
fn build(entries: &[SourceEntry]) -> Result<BTreeMap<SourceKind, Declared>, String> {
    if let Some(other) = entries
        .iter()
        .find(|e| e.enabled && SourceKind::from_table_name(&e.name).is_none())
    {
        return Err(format!(
            "source {}: only transactions, feedback, complaints and customers can be \
             declared yet",
            other.name
        ));
    }
    let defaults = default_entries();
    SourceKind::ALL
        .into_iter()
        .map(|kind| {
            let name = kind.table_name();
            let default_columns = defaults
                .iter()
                .find(|d| d.name == name)
                .map_or(&[][..], |d| d.columns.as_slice());
            let entry = entries
                .iter()
                .find(|e| e.name == name && e.enabled)
                .ok_or_else(|| format!("source {name} cannot be removed or disabled yet"))?;
            let (kind_text, time_or_key) = if kind.is_stream() {
                ("stream", entry.event_time.as_deref() == Some("ts"))
            } else {
                ("table", entry.key.as_deref() == Some("customer_id"))
            };
            if entry.kind != kind_text || !time_or_key {
                return Err(format!(
                    "source {name} must stay a {kind_text} with event_time = \"ts\" \
                     (streams) or key = \"customer_id\" (customers) for now"
                ));
            }
            let keeps_defaults = default_columns.iter().enumerate().all(|(i, d)| {
                entry
                    .columns
                    .get(i)
                    .is_some_and(|c| c.name == d.name && c.ty == d.ty)
            });
            if !keeps_defaults {
                let names: Vec<&str> = default_columns.iter().map(|c| c.name.as_str()).collect();
                return Err(format!(
                    "source {name}: its first columns must stay the default's ({}), with \
                     their types; add new columns after them",
                    names.join(", ")
                ));
            }
            let fields: Vec<FieldSpec> = entry
                .columns
                .iter()
                .map(field_spec)
                .collect::<Result<_, _>>()?;
            let one_of = entry.one_of.concat();
            let paths: Vec<Vec<String>> = entry
                .columns
                .iter()
                .map(|c| crate::decode::path_keys(&c.name, c.path.as_deref()))
                .collect();
            let layout = crate::decode::Layout::new(&paths);
            Ok((
                kind,
                Declared {
                    fields,
                    layout,
                    one_of,
                },
            ))
        })
        .collect()
}

/// The decoder's view of a declared column.
fn field_spec(column: &ColumnEntry) -> Result<FieldSpec, String> {
    let ty = match (&column.values, &column.regex) {
        (Some(values), _) => FieldType::Enum(values.clone()),
        (None, Some(pattern)) => regex::Regex::new(pattern)
            .map(|re| FieldType::Matching(Pattern(re)))
            .map_err(|e| format!("column {}: {e}", column.name))?,
        (None, None) => match ColumnType::parse(&column.ty)? {
            ColumnType::String if column.lowercase => FieldType::Coded,
            ty => field_type(&ty, column.min, column.max),
        },
    };
    Ok(FieldSpec {
        name: column.name.clone(),
        ty,
        required: column.required,
    })
}

/// The decoder's type for a declared type, with a number's bounds.
fn field_type(ty: &ColumnType, min: Option<f64>, max: Option<f64>) -> FieldType {
    match ty {
        ColumnType::Id => FieldType::Id,
        ColumnType::String => FieldType::Text,
        ColumnType::Timestamp => FieldType::Timestamp,
        ColumnType::Bool => FieldType::Bool,
        &ColumnType::Decimal { precision, scale } => FieldType::Decimal { precision, scale },
        ColumnType::Float => FieldType::Float {
            min: min.unwrap_or(f64::NEG_INFINITY),
            max: max.unwrap_or(f64::INFINITY),
        },
        ColumnType::Int => FieldType::Int {
            min: min.map_or(i64::MIN, |m| m as i64),
            max: max.map_or(i64::MAX, |m| m as i64),
        },
        ColumnType::List(item) => FieldType::List(Box::new(field_type(item, min, max))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemas_follow_the_field_specs() {
        let schema = SourceKind::Transactions.schema();
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
    fn table_names_round_trip() {
        for kind in SourceKind::ALL {
            assert_eq!(SourceKind::from_table_name(kind.table_name()), Some(kind));
        }
        assert_eq!(SourceKind::from_table_name("orders"), None);
    }
}
