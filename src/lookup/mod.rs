//! Lookup tables that jobs join with, each read as a cached Arrow snapshot
//! rebuilt only after a change:
//!
//! * `customers`: latest profile per `customer_id`, fed from the compacted
//!   `cx.customers` topic; a record with a null value (tombstone) deletes the
//!   customer.
//! * `complaint_status` and `complaint_history` ([`complaints`]): per
//!   `complaint_id`, its opening, latest status and status periods, fed from
//!   the complaints events.

pub mod complaints;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use arrow::datatypes::SchemaRef;
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

/// The lookup tables of one engine, shared with every job.
#[derive(Debug, Clone, Default)]
pub struct Lookups {
    /// `customers`.
    pub customers: Arc<Mutex<CustomerTable>>,
    /// `complaint_status` and `complaint_history`.
    pub complaints: Arc<Mutex<complaints::ComplaintTable>>,
}

/// Reads a lookup table's current contents as one Arrow batch.
pub type Snapshot = Arc<dyn Fn() -> Result<RecordBatch, ArrowError> + Send + Sync>;

/// A lookup table as jobs see it.
pub struct LookupView {
    /// Name in queries.
    pub name: &'static str,
    /// Columns.
    pub schema: SchemaRef,
    /// Current contents.
    pub snapshot: Snapshot,
}

impl Lookups {
    /// The tables jobs can join with: `customers`, `complaint_status` and
    /// `complaint_history`.
    pub fn views(&self) -> [LookupView; 3] {
        let customers = Arc::clone(&self.customers);
        let status = Arc::clone(&self.complaints);
        let history = Arc::clone(&self.complaints);
        [
            LookupView {
                name: SourceKind::Customers.table_name(),
                schema: SourceKind::Customers.schema(),
                snapshot: Arc::new(move || lock(&customers).snapshot()),
            },
            LookupView {
                name: complaints::STATUS_TABLE,
                schema: complaints::status_schema(),
                snapshot: Arc::new(move || lock(&status).status_snapshot()),
            },
            LookupView {
                name: complaints::HISTORY_TABLE,
                schema: complaints::history_schema(),
                snapshot: Arc::new(move || lock(&history).history_snapshot()),
            },
        ]
    }
}

fn lock<T>(table: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    table
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Turns borrowed cells into owned ones, for storage beyond the payload.
pub fn owned_cells(cells: Vec<Cell<'_>>) -> Vec<Cell<'static>> {
    cells.into_iter().map(owned_cell).collect()
}

fn owned_cell(cell: Cell<'_>) -> Cell<'static> {
    match cell {
        Cell::Str(s) => Cell::Str(s.into_owned().into()),
        Cell::Null => Cell::Null,
        Cell::Int(v) => Cell::Int(v),
        Cell::Float(v) => Cell::Float(v),
        Cell::Ts(v) => Cell::Ts(v),
        Cell::Bool(v) => Cell::Bool(v),
        Cell::Decimal(v) => Cell::Decimal(v),
        Cell::List(items) => Cell::List(owned_cells(items)),
    }
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
