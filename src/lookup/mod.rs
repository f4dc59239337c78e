//! Lookup tables that jobs join with, each read as a cached Arrow snapshot
//! rebuilt only after a change:
//!
//! * every `kind = "table"` source (by default `customers`): the latest row
//!   per key, fed from its compacted topic; a record with a null value
//!   (tombstone) deletes the row of its key;
//! * the tables a stream keeps from its events ([`kept`]; by default the
//!   complaints' `complaint_status` and `complaint_history`).

pub mod kept;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;

use crate::decode::{BatchBuilder, Cell};
use crate::schema::{Source, Sources};

/// One change to a table source, in topic order.
#[derive(Debug, Clone, PartialEq)]
pub enum RowChange {
    /// Insert or replace the row of its key (cells in field order).
    Upsert(Vec<Cell<'static>>),
    /// Remove the row with this key.
    Delete(String),
}

/// The text of a key cell, as a tombstone's Kafka key writes it.
pub fn key_text(cell: &Cell<'_>) -> Option<String> {
    match cell {
        Cell::Str(s) => Some(s.to_string()),
        Cell::Int(v) => Some(v.to_string()),
        _ => None,
    }
}

/// Latest row per key of one table source, with a cached Arrow snapshot.
#[derive(Debug)]
pub struct KeyedTable {
    source: Source,
    key_index: usize,
    rows: BTreeMap<String, Vec<Cell<'static>>>,
    snapshot: Option<RecordBatch>,
    /// Memory held by the rows (the snapshot apart).
    row_bytes: usize,
    /// Most memory the rows may hold: a row of a new key beyond it is
    /// refused. The snapshot, a copy of the rows in Arrow, comes on top.
    limit: usize,
}

/// Memory one row holds: its key, its cells and its share of the map's
/// nodes (measured: `tests/memory.rs`).
fn row_bytes(key: &str, cells: &[Cell<'_>]) -> usize {
    const MAP_ENTRY: usize = 110;
    MAP_ENTRY
        + std::mem::size_of::<String>()
        + key.len()
        + std::mem::size_of::<Vec<Cell<'_>>>()
        + cells_bytes(cells)
}

fn cells_bytes(cells: &[Cell<'_>]) -> usize {
    cells
        .iter()
        .map(|c| {
            std::mem::size_of::<Cell<'_>>()
                + match c {
                    Cell::Str(s) => s.len(),
                    Cell::List(items) => cells_bytes(items),
                    _ => 0,
                }
        })
        .sum()
}

impl KeyedTable {
    /// An empty table for a table source.
    pub fn new(source: Source) -> Self {
        let key_index = source
            .fields()
            .iter()
            .position(|f| f.name == source.time_or_key())
            .unwrap_or_default();
        Self {
            source,
            key_index,
            rows: BTreeMap::new(),
            snapshot: None,
            row_bytes: 0,
            limit: usize::MAX,
        }
    }

    /// Sets the most memory the table may hold (`engine.table_memory_limit`).
    pub fn set_limit(&mut self, bytes: usize) {
        self.limit = bytes;
    }

    /// Memory held by the rows and the snapshot jobs read.
    pub fn bytes(&self) -> usize {
        self.row_bytes
            + self
                .snapshot
                .as_ref()
                .map_or(0, RecordBatch::get_array_memory_size)
    }

    /// Applies changes in order; returns the positions of those refused: a
    /// row of a new key while the table holds its limit (changes to known
    /// keys and deletes always apply).
    pub fn apply(&mut self, changes: impl IntoIterator<Item = RowChange>) -> Vec<usize> {
        let mut refused = Vec::new();
        for (i, change) in changes.into_iter().enumerate() {
            match change {
                RowChange::Upsert(cells) => {
                    let Some(key) = cells.get(self.key_index).and_then(key_text) else {
                        continue;
                    };
                    let bytes = row_bytes(&key, &cells);
                    match self.rows.get(&key) {
                        Some(old) => self.row_bytes -= row_bytes(&key, old),
                        None if self.row_bytes + bytes > self.limit => {
                            refused.push(i);
                            continue;
                        }
                        None => {}
                    }
                    self.row_bytes += bytes;
                    self.rows.insert(key, cells);
                }
                RowChange::Delete(key) => {
                    if let Some(old) = self.rows.remove(&key) {
                        self.row_bytes -= row_bytes(&key, &old);
                    }
                }
            }
            self.snapshot = None;
        }
        refused
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether the table has no row.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table as one batch, sorted by key text; rebuilt only after changes.
    pub fn snapshot(&mut self) -> Result<RecordBatch, ArrowError> {
        if let Some(batch) = &self.snapshot {
            return Ok(batch.clone());
        }
        let mut builder = BatchBuilder::new(self.source);
        for cells in self.rows.values() {
            builder.append(cells);
        }
        let batch = builder.finish()?;
        self.snapshot = Some(batch.clone());
        Ok(batch)
    }
}

/// The lookup tables of one engine, shared with every job.
#[derive(Debug, Clone)]
pub struct Lookups {
    /// The engine's declared sources.
    sources: Sources,
    /// One table per table source.
    tables: BTreeMap<Source, Arc<Mutex<KeyedTable>>>,
    /// The kept tables of each stream that declares them.
    kept: BTreeMap<Source, Arc<Mutex<kept::KeptTable>>>,
}

impl Lookups {
    /// Empty tables for every table source of `sources` and every table a
    /// stream of `sources` keeps.
    pub fn new(sources: Sources) -> Self {
        Self {
            sources,
            tables: sources
                .tables()
                .map(|s| (s, Arc::new(Mutex::new(KeyedTable::new(s)))))
                .collect(),
            kept: sources
                .streams()
                .filter_map(|s| {
                    let spec = s.keep()?.clone();
                    Some((s, Arc::new(Mutex::new(kept::KeptTable::new(spec)))))
                })
                .collect(),
        }
    }
}

/// Reads a lookup table's current contents as one Arrow batch.
pub type Snapshot = Arc<dyn Fn() -> Result<RecordBatch, ArrowError> + Send + Sync>;

/// Snapshots that stand in for lookup tables, by table name, in the plans
/// run with a task context carrying them (a session config extension):
/// the copies of the kept tables that stage 2 of a shuffled job fires
/// with ([`crate::shuffle`]).
#[derive(Default)]
pub struct TableOverrides(pub BTreeMap<String, Snapshot>);

impl std::fmt::Debug for TableOverrides {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

/// The snapshots of `table`'s latest and history tables, by name.
pub fn kept_snapshots(table: &Arc<Mutex<kept::KeptTable>>) -> BTreeMap<String, Snapshot> {
    let spec = lock(table).spec().clone();
    let mut snapshots: BTreeMap<String, Snapshot> = BTreeMap::new();
    if let Some(name) = spec.latest {
        let table = Arc::clone(table);
        snapshots.insert(name, Arc::new(move || lock(&table).latest_snapshot()));
    }
    if let Some(name) = spec.history {
        let table = Arc::clone(table);
        snapshots.insert(name, Arc::new(move || lock(&table).history_snapshot()));
    }
    snapshots
}

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
    /// The declared sources these tables are of.
    pub fn sources(&self) -> Sources {
        self.sources
    }

    /// The table of a table source.
    pub fn table(&self, source: Source) -> Option<&Arc<Mutex<KeyedTable>>> {
        self.tables.get(&source)
    }

    /// The kept tables of a stream, if it declares them.
    pub fn kept(&self, source: Source) -> Option<&Arc<Mutex<kept::KeptTable>>> {
        self.kept.get(&source)
    }

    /// Every stream's kept tables.
    pub fn all_kept(&self) -> impl Iterator<Item = (Source, &Arc<Mutex<kept::KeptTable>>)> {
        self.kept.iter().map(|(s, t)| (*s, t))
    }

    /// Applies one change to its table source; returns why the table
    /// refused it (a new key beyond `engine.table_memory_limit`), if it did.
    pub fn apply(&self, source: Source, change: RowChange) -> Option<String> {
        let mut table = lock(self.tables.get(&source)?);
        if table.apply([change]).is_empty() {
            return None;
        }
        Some(format!(
            "table {} holds {} bytes, its limit (engine.table_memory_limit); rows of new keys are refused until rows are deleted or the limit is raised",
            source.name(),
            table.bytes()
        ))
    }

    /// Sets the most memory each table source may hold.
    pub fn set_table_limit(&self, bytes: usize) {
        for table in self.tables.values() {
            lock(table).set_limit(bytes);
        }
    }

    /// Memory held by each table source and each kept table, by table name.
    pub fn memory(&self) -> Vec<(String, usize)> {
        let sources = self
            .tables
            .iter()
            .map(|(source, table)| (source.name().to_owned(), lock(table).bytes()));
        let kept = self.kept.iter().map(|(source, table)| {
            let spec = source.keep();
            let name = spec
                .and_then(|k| k.latest.clone().or_else(|| k.history.clone()))
                .unwrap_or_else(|| source.name().to_owned());
            (name, lock(table).bytes())
        });
        sources.chain(kept).collect()
    }

    /// Memory held by the tables kept from streams: it counts against
    /// `engine.state_memory_limit`, and shrinks as windows close.
    pub fn kept_bytes(&self) -> usize {
        self.kept.values().map(|t| lock(t).bytes()).sum()
    }

    /// The tables jobs can join with: every table source and every kept
    /// table.
    pub fn views(&self) -> Vec<LookupView> {
        let mut views: Vec<LookupView> = self
            .tables
            .iter()
            .map(|(source, table)| {
                let table = Arc::clone(table);
                LookupView {
                    name: source.name(),
                    schema: source.schema(),
                    snapshot: Arc::new(move || lock(&table).snapshot()),
                }
            })
            .collect();
        for (source, table) in &self.kept {
            let Some(spec) = source.keep() else { continue };
            let mut snapshots = kept_snapshots(table);
            for (name, schema) in [
                (&spec.latest, spec.latest_schema()),
                (&spec.history, spec.history_schema()),
            ] {
                let Some(name) = name else { continue };
                if let Some(snapshot) = snapshots.remove(name) {
                    views.push(LookupView {
                        name,
                        schema,
                        snapshot,
                    });
                }
            }
        }
        views
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

    fn customers() -> Source {
        crate::config::default_source("customers")
    }

    fn upsert(json: &str) -> RowChange {
        let cells = parse_record(customers(), json.as_bytes()).expect("valid");
        RowChange::Upsert(owned_cells(cells))
    }

    #[test]
    fn a_full_table_refuses_new_keys_and_takes_changes_to_known_ones() {
        let mut table = KeyedTable::new(customers());
        assert_eq!(
            table.apply([upsert(r#"{"customer_id":"a","birth_year":1980}"#)]),
            Vec::<usize>::new()
        );
        table.set_limit(table.bytes());
        assert_eq!(
            table.apply([
                upsert(r#"{"customer_id":"b","birth_year":1990}"#),
                upsert(r#"{"customer_id":"a","birth_year":1981}"#),
            ]),
            [0],
            "b is new and does not fit; a is known"
        );
        assert_eq!(table.len(), 1);
        let batch = table.snapshot().expect("snapshot");
        assert_eq!(batch.column(1).as_primitive::<Int64Type>().value(0), 1981);
        table.apply([RowChange::Delete("a".to_owned())]);
        assert_eq!(table.bytes(), 0, "{}", table.bytes());
        assert_eq!(
            table.apply([upsert(r#"{"customer_id":"b","birth_year":1990}"#)]),
            Vec::<usize>::new(),
            "room again"
        );
    }

    #[test]
    fn latest_record_wins_and_tombstones_delete() {
        let mut table = KeyedTable::new(customers());
        table.apply([
            upsert(r#"{"customer_id":"b","birth_year":1990}"#),
            upsert(r#"{"customer_id":"a","birth_year":1980}"#),
            upsert(r#"{"customer_id":"b","birth_year":1991}"#),
            upsert(r#"{"customer_id":"c","birth_year":2000}"#),
            RowChange::Delete("c".to_owned()),
        ]);
        assert_eq!(table.len(), 2);
        let batch = table.snapshot().expect("snapshot");
        let ids = batch.column(0).as_string::<i32>();
        let years = batch.column(1).as_primitive::<Int64Type>();
        assert_eq!((ids.value(0), years.value(0)), ("a", 1980));
        assert_eq!((ids.value(1), years.value(1)), ("b", 1991));
    }
}
