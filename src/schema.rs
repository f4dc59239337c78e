//! The four input sources, their field specifications and Arrow schemas.
//!
//! Each source is described once, as a list of [`FieldSpec`]s; the decoder
//! validates against it and the Arrow schema is derived from it, so the two
//! can never disagree.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use serde::{Deserialize, Serialize};

/// Complaint statuses accepted on `cx.complaints`.
pub const COMPLAINT_STATUSES: &[&str] = &["opened", "resolved", "escalated"];

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
        match self {
            SourceKind::Transactions => TRANSACTIONS,
            SourceKind::Feedback => FEEDBACK,
            SourceKind::Complaints => COMPLAINTS,
            SourceKind::Customers => CUSTOMERS,
        }
    }

    /// Groups of fields of which at least one must be present and non-null.
    pub fn one_of(self) -> &'static [&'static str] {
        match self {
            SourceKind::Feedback => &["rating", "nps", "effort"],
            _ => &[],
        }
    }

    /// The Arrow schema of this source's table, derived from [`Self::fields`].
    pub fn schema(self) -> SchemaRef {
        let fields: Vec<Field> = self
            .fields()
            .iter()
            .map(|f| Field::new(f.name, f.ty.data_type(), !f.required))
            .collect();
        Arc::new(Schema::new(fields))
    }
}

/// The JSON type a field accepts and the Arrow type it becomes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FieldType {
    /// An identifier: a non-empty string, or an integer (kept as its decimal text).
    Id,
    /// Free text.
    Text,
    /// RFC 3339 string or epoch milliseconds, stored as `Timestamp(Millisecond, UTC)`.
    Timestamp,
    /// A finite number, at least `min`.
    Float {
        /// Smallest accepted value.
        min: f64,
    },
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
    Enum(&'static [&'static str]),
}

impl FieldType {
    /// The Arrow data type of a column of this field type.
    pub fn data_type(self) -> DataType {
        match self {
            FieldType::Id | FieldType::Text | FieldType::Coded | FieldType::Enum(_) => {
                DataType::Utf8
            }
            FieldType::Timestamp => timestamp_type(),
            FieldType::Float { .. } => DataType::Float64,
            FieldType::Int { .. } => DataType::Int64,
        }
    }
}

/// The Arrow type of every event-time column: milliseconds, UTC.
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

/// One field of an input event.
#[derive(Debug, Clone, Copy)]
pub struct FieldSpec {
    /// JSON key and column name.
    pub name: &'static str,
    /// Accepted values.
    pub ty: FieldType,
    /// Whether a record without it (or with `null`) is invalid.
    pub required: bool,
}

const fn req(name: &'static str, ty: FieldType) -> FieldSpec {
    FieldSpec {
        name,
        ty,
        required: true,
    }
}

const fn opt(name: &'static str, ty: FieldType) -> FieldSpec {
    FieldSpec {
        name,
        ty,
        required: false,
    }
}

const TRANSACTIONS: &[FieldSpec] = &[
    req("event_id", FieldType::Id),
    req("customer_id", FieldType::Id),
    req("ts", FieldType::Timestamp),
    req("amount", FieldType::Float { min: 0.0 }),
    req("category", FieldType::Text),
    opt("currency", FieldType::Text),
    opt("channel", FieldType::Text),
    opt(
        "items",
        FieldType::Int {
            min: 0,
            max: i64::MAX,
        },
    ),
    opt("order_id", FieldType::Id),
];

const FEEDBACK: &[FieldSpec] = &[
    req("event_id", FieldType::Id),
    req("customer_id", FieldType::Id),
    req("ts", FieldType::Timestamp),
    opt("rating", FieldType::Int { min: 1, max: 5 }),
    opt("nps", FieldType::Int { min: 0, max: 10 }),
    opt("effort", FieldType::Int { min: 1, max: 7 }),
    opt("channel", FieldType::Text),
    opt("topic", FieldType::Text),
    opt("comment", FieldType::Text),
];

const COMPLAINTS: &[FieldSpec] = &[
    req("event_id", FieldType::Id),
    req("customer_id", FieldType::Id),
    req("ts", FieldType::Timestamp),
    req("complaint_id", FieldType::Id),
    req("status", FieldType::Enum(COMPLAINT_STATUSES)),
    opt("category", FieldType::Text),
    opt("severity", FieldType::Coded),
    opt("channel", FieldType::Text),
];

const CUSTOMERS: &[FieldSpec] = &[
    req("customer_id", FieldType::Id),
    opt(
        "birth_year",
        FieldType::Int {
            min: 1900,
            max: 2100,
        },
    ),
    opt("gender", FieldType::Text),
    opt("segment", FieldType::Text),
    opt("region", FieldType::Text),
    opt("signup_ts", FieldType::Timestamp),
];

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
