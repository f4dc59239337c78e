//! Lookup tables that jobs join with, each read as a cached Arrow snapshot
//! rebuilt only after a change:
//!
//! * `customers`: latest profile per `customer_id`, fed from the compacted
//!   `cx.customers` topic; a record with a null value (tombstone) deletes the
//!   customer.
//! * `complaint_status` ([`complaints`]): per `complaint_id`, when it was
//!   opened and its latest status, fed from the complaints events.

pub mod complaints;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;

use crate::decode::{BatchBuilder, Cell};
use crate::schema::SourceKind;

/// One change to the customers table, in topic order.
#[derive(Debug, Clone, PartialEq)]
pub enum CustomerChange {
    /// Insert or replace the profile (cells in `customers` field order).
    Upsert(Vec<Cell<'static>>),
    /// Remove the customer with this id.
    Delete(String),
}

/// Latest profile per customer, with a cached Arrow snapshot.
#[derive(Debug, Default)]
pub struct CustomerTable {
    rows: BTreeMap<String, Vec<Cell<'static>>>,
    snapshot: Option<RecordBatch>,
}

impl CustomerTable {
    /// Applies changes in order.
    pub fn apply(&mut self, changes: impl IntoIterator<Item = CustomerChange>) {
        for change in changes {
            match change {
                CustomerChange::Upsert(cells) => {
                    if let Some(Cell::Str(id)) = cells.first() {
                        self.rows.insert(id.to_string(), cells);
                    }
                }
                CustomerChange::Delete(id) => {
                    self.rows.remove(&id);
                }
            }
            self.snapshot = None;
        }
    }

    /// Number of customers.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether the table has no customer.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table as one batch, sorted by `customer_id`; rebuilt only after changes.
    pub fn snapshot(&mut self) -> Result<RecordBatch, ArrowError> {
        if let Some(batch) = &self.snapshot {
            return Ok(batch.clone());
        }
        let mut builder = BatchBuilder::new(SourceKind::Customers);
        for cells in self.rows.values() {
            builder.append(cells);
        }
        let batch = builder.finish()?;
        self.snapshot = Some(batch.clone());
        Ok(batch)
    }
}

/// A table jobs read as one Arrow batch.
pub trait LookupTable: std::fmt::Debug + Send {
    /// The current contents.
    fn snapshot(&mut self) -> Result<RecordBatch, ArrowError>;
}

impl LookupTable for CustomerTable {
    fn snapshot(&mut self) -> Result<RecordBatch, ArrowError> {
        CustomerTable::snapshot(self)
    }
}

/// The lookup tables of one engine, shared with every job.
#[derive(Debug, Clone, Default)]
pub struct Lookups {
    /// `customers`.
    pub customers: Arc<Mutex<CustomerTable>>,
    /// `complaint_status`.
    pub complaints: Arc<Mutex<complaints::ComplaintTable>>,
}

/// Turns borrowed cells into owned ones, for storage beyond the payload.
pub fn owned_cells(cells: Vec<Cell<'_>>) -> Vec<Cell<'static>> {
    cells
        .into_iter()
        .map(|cell| match cell {
            Cell::Str(s) => Cell::Str(s.into_owned().into()),
            Cell::Null => Cell::Null,
            Cell::Int(v) => Cell::Int(v),
            Cell::Float(v) => Cell::Float(v),
            Cell::Ts(v) => Cell::Ts(v),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use arrow::array::AsArray;
    use arrow::datatypes::Int64Type;

    use super::*;
    use crate::decode::parse_record;

    fn upsert(json: &str) -> CustomerChange {
        let cells = parse_record(SourceKind::Customers, json.as_bytes()).expect("valid");
        CustomerChange::Upsert(owned_cells(cells))
    }

    #[test]
    fn latest_record_wins_and_tombstones_delete() {
        let mut table = CustomerTable::default();
        table.apply([
            upsert(r#"{"customer_id":"b","birth_year":1990}"#),
            upsert(r#"{"customer_id":"a","birth_year":1980}"#),
            upsert(r#"{"customer_id":"b","birth_year":1991}"#),
            upsert(r#"{"customer_id":"c","birth_year":2000}"#),
            CustomerChange::Delete("c".to_owned()),
        ]);
        assert_eq!(table.len(), 2);
        let batch = table.snapshot().expect("snapshot");
        let ids = batch.column(0).as_string::<i32>();
        let years = batch.column(1).as_primitive::<Int64Type>();
        assert_eq!((ids.value(0), years.value(0)), ("a", 1980));
        assert_eq!((ids.value(1), years.value(1)), ("b", 1991));
    }
}
