//! What a stream's `keep` declares: the tables kept from its events (the
//! engine keeps them in `lookup::kept`).

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use super::timestamp_type;

/// What a stream's `keep` declares, as the engine uses it.
#[derive(Debug, Clone, PartialEq)]
pub struct KeepSpec {
    /// The stream's event-time column.
    pub time: String,
    /// The key column.
    pub key: String,
    /// The state column.
    pub state: String,
    /// Order of states at the same instant; states not listed come after.
    pub order: Vec<String>,
    /// Columns holding the first time a state was reached: (column, state).
    pub since: Vec<(String, String)>,
    /// Columns whose latest non-null value is kept.
    pub carry: Vec<String>,
    /// Name of the latest table, if kept.
    pub latest: Option<String>,
    /// Name of the history table, if kept.
    pub history: Option<String>,
    /// How long a key is kept after its last event, in milliseconds of
    /// event time.
    pub retention_ms: i64,
}

impl KeepSpec {
    /// The stream's columns the tables are kept from: key, time, state and
    /// the carried columns.
    pub fn columns(&self) -> impl Iterator<Item = &str> {
        [&self.key, &self.time, &self.state]
            .into_iter()
            .chain(&self.carry)
            .map(String::as_str)
    }

    /// The latest table's schema: key, `since` columns, state,
    /// `<state>_ts`, `carry` columns.
    pub fn latest_schema(&self) -> SchemaRef {
        self.schema(&[
            Field::new(&self.state, DataType::Utf8, false),
            Field::new(format!("{}_ts", self.state), timestamp_type(), false),
        ])
    }

    /// The history table's schema: key, `since` columns, state,
    /// `valid_from`, `valid_until` (null for the current state), `carry`
    /// columns.
    pub fn history_schema(&self) -> SchemaRef {
        self.schema(&[
            Field::new(&self.state, DataType::Utf8, false),
            Field::new("valid_from", timestamp_type(), false),
            Field::new("valid_until", timestamp_type(), true),
        ])
    }

    fn schema(&self, middle: &[Field]) -> SchemaRef {
        let mut fields = vec![Field::new(&self.key, DataType::Utf8, false)];
        fields.extend(
            self.since
                .iter()
                .map(|(name, _)| Field::new(name, timestamp_type(), true)),
        );
        fields.extend(middle.iter().cloned());
        fields.extend(
            self.carry
                .iter()
                .map(|name| Field::new(name, DataType::Utf8, true)),
        );
        Arc::new(Schema::new(fields))
    }

    /// Schema of one key's events in the changelog.
    pub fn events_schema(&self) -> SchemaRef {
        let mut fields = vec![
            Field::new("ts", DataType::Int64, false),
            Field::new(&self.state, DataType::Utf8, false),
        ];
        fields.extend(
            self.carry
                .iter()
                .map(|name| Field::new(name, DataType::Utf8, true)),
        );
        Arc::new(Schema::new(fields))
    }

    /// Where `state` comes among states at the same instant.
    pub fn rank(&self, state: &str) -> usize {
        self.order
            .iter()
            .position(|s| s == state)
            .unwrap_or(self.order.len())
    }
}
