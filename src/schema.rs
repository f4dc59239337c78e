//! The four input sources, their field specifications and Arrow schemas.
//!
//! Each source is described once, as a `[[sources]]` entry of the embedded
//! `config/default.toml`, read into [`FieldSpec`]s; the decoder validates
//! against them and the Arrow schema is derived from them, so the two can
//! never disagree. (Work in progress: a user's `[[sources]]` do not reach
//! the engine yet.)

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};

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
        &DECLARED[&self].fields
    }

    /// Where this source's fields are in its JSON objects.
    pub fn layout(self) -> &'static crate::decode::Layout {
        &DECLARED[&self].layout
    }

    /// Fields of which at least one must be present and non-null (none
    /// when empty).
    pub fn one_of(self) -> &'static [String] {
        &DECLARED[&self].one_of
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
#[derive(Debug, Clone)]
pub struct FieldSpec {
    /// JSON key and column name.
    pub name: String,
    /// Accepted values.
    pub ty: FieldType,
    /// Whether a record without it (or with `null`) is invalid.
    pub required: bool,
}

/// What the decoder needs of one declared source.
struct Declared {
    fields: Vec<FieldSpec>,
    layout: crate::decode::Layout,
    /// Fields of which at least one must be set.
    one_of: Vec<String>,
}

/// Each source as declared in the embedded default configuration.
static DECLARED: LazyLock<BTreeMap<SourceKind, Declared>> = LazyLock::new(|| {
    let entries: Vec<SourceEntry> = Figment::from(Toml::string(DEFAULT_TOML))
        .extract_inner("sources")
        .unwrap_or_else(|e| panic!("config/default.toml [[sources]]: {e}"));
    SourceKind::ALL
        .into_iter()
        .map(|kind| {
            let entry = entries
                .iter()
                .find(|e| e.name == kind.table_name())
                .unwrap_or_else(|| panic!("config/default.toml declares no {kind:?}"));
            let fields = entry.columns.iter().map(field_spec).collect();
            let one_of = entry.one_of.concat();
            let paths: Vec<Vec<String>> = entry
                .columns
                .iter()
                .map(|c| crate::decode::path_keys(&c.name, c.path.as_deref()))
                .collect();
            let layout = crate::decode::Layout::new(&paths);
            (
                kind,
                Declared {
                    fields,
                    layout,
                    one_of,
                },
            )
        })
        .collect()
});

/// The decoder's view of a declared column.
fn field_spec(column: &ColumnEntry) -> FieldSpec {
    let ty = match (&column.values, &column.regex) {
        (Some(values), _) => FieldType::Enum(values.clone()),
        (None, Some(pattern)) => match regex::Regex::new(pattern) {
            Ok(re) => FieldType::Matching(Pattern(re)),
            Err(e) => panic!("config/default.toml: column {}: {e}", column.name),
        },
        (None, None) => match ColumnType::parse(&column.ty) {
            Ok(ColumnType::String) if column.lowercase => FieldType::Coded,
            Ok(ty) => field_type(&ty, column.min, column.max),
            Err(e) => panic!("config/default.toml: column {}: {e}", column.name),
        },
    };
    FieldSpec {
        name: column.name.clone(),
        ty,
        required: column.required,
    }
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
