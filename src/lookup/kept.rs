//! Tables kept from an event stream, declared by its `[[sources]]`
//! entry's `keep` (by default the complaints' `complaint_status` and
//! `complaint_history`):
//!
//! * the **latest** table: per key, its state column's latest value in
//!   event time (not arrival order) and that event's time (`<state>_ts`),
//!   the first time each `since` state was reached, and the latest non-null
//!   value of each `carry` column;
//! * the **history** table: per key, one row per event, valid from its time
//!   (`valid_from`) until the next event's (`valid_until`, null for the
//!   current one), so that a job can ask which state a key was in at a
//!   given instant, such as a window end, whatever events after that
//!   instant have already arrived.
//!
//! Both are fed by the engine from the stream's valid events of each
//! micro-batch before the jobs run. A key without any event for
//! `retention_ms` of event time before every window that has yet to fire
//! (of the jobs reading the tables) is forgotten.
//!
//! The table remembers which keys changed since the changelog last recorded
//! them ([`KeptTable::drain_changes`]); each is recorded as the batch of
//! its events ([`KeptTable::events_of`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, RecordBatch, StringArray, StringBuilder, TimestampMillisecondBuilder,
};
use arrow::error::ArrowError;

use crate::schema::KeepSpec;
use crate::window::epoch_millis;

/// One event, as kept in a key's history.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct StateEvent {
    ts: i64,
    /// Orders events at the same instant ([`KeepSpec::order`]).
    rank: usize,
    state: String,
    carried: Vec<Option<String>>,
}

/// Where a key stands after some of its events.
#[derive(Debug, Clone)]
struct Standing<'a> {
    since: Vec<Option<i64>>,
    carried: Vec<Option<&'a str>>,
}

impl<'a> Standing<'a> {
    fn new(spec: &KeepSpec) -> Self {
        Self {
            since: vec![None; spec.since.len()],
            carried: vec![None; spec.carry.len()],
        }
    }

    fn after(&mut self, spec: &KeepSpec, event: &'a StateEvent) {
        for (first, (_, state)) in self.since.iter_mut().zip(&spec.since) {
            if event.state == *state {
                *first = Some(first.map_or(event.ts, |t| t.min(event.ts)));
            }
        }
        for (kept, value) in self.carried.iter_mut().zip(&event.carried) {
            *kept = value.as_deref().or(*kept);
        }
    }
}

impl StateEvent {
    /// Memory held by this event's strings.
    fn heap_bytes(&self) -> usize {
        self.state.capacity()
            + self.carried.capacity() * std::mem::size_of::<Option<String>>()
            + self
                .carried
                .iter()
                .map(|c| c.as_ref().map_or(0, String::capacity))
                .sum::<usize>()
    }
}

/// One key's events, and the source partition they come from.
#[derive(Debug, Default)]
struct Keyed {
    /// The source partition of the key's first event: where its state is
    /// kept (the changelog partition of that number), so that it moves
    /// with the partition when instances are rescaled. `None` for a key
    /// restored from a record of a release before scale-out.
    home: Option<i32>,
    history: Vec<StateEvent>,
}

/// Memory a key's entry holds: the key, its share of the map's nodes, and
/// its events' list and strings (measured: `tests/memory.rs`).
fn entry_bytes(key: &str, keyed: &Keyed) -> usize {
    const MAP_ENTRY: usize = 64;
    let history = &keyed.history;
    MAP_ENTRY
        + std::mem::size_of::<String>()
        + key.len()
        + std::mem::size_of::<Keyed>()
        + history.capacity() * std::mem::size_of::<StateEvent>()
        + history.iter().map(StateEvent::heap_bytes).sum::<usize>()
}

/// Every key's events, in event-time order, with cached snapshots of both
/// tables.
#[derive(Debug)]
pub struct KeptTable {
    spec: KeepSpec,
    events: BTreeMap<String, Keyed>,
    latest_snapshot: Option<RecordBatch>,
    history_snapshot: Option<RecordBatch>,
    /// Keys added, changed or forgotten since the last drain, with their
    /// homes.
    changed: BTreeMap<String, Option<i32>>,
    /// Memory held by the keys and their events.
    event_bytes: usize,
}

fn text<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a StringArray, ArrowError> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_string_opt::<i32>())
        .ok_or_else(|| ArrowError::SchemaError(format!("events without a text column `{name}`")))
}

fn optional(column: &StringArray, row: usize) -> Option<String> {
    (!column.is_null(row)).then(|| column.value(row).to_owned())
}

/// Builders for the columns both tables share.
struct CommonColumns {
    keys: StringBuilder,
    since: Vec<TimestampMillisecondBuilder>,
    states: StringBuilder,
    carried: Vec<StringBuilder>,
}

impl CommonColumns {
    fn new(spec: &KeepSpec, n: usize) -> Self {
        let timestamps = || TimestampMillisecondBuilder::with_capacity(n).with_timezone("UTC");
        Self {
            keys: StringBuilder::with_capacity(n, n * 8),
            since: spec.since.iter().map(|_| timestamps()).collect(),
            states: StringBuilder::with_capacity(n, n * 8),
            carried: spec
                .carry
                .iter()
                .map(|_| StringBuilder::with_capacity(n, n * 8))
                .collect(),
        }
    }

    fn append(&mut self, key: &str, standing: &Standing<'_>, state: &str) {
        self.keys.append_value(key);
        for (builder, first) in self.since.iter_mut().zip(&standing.since) {
            builder.append_option(*first);
        }
        self.states.append_value(state);
        for (builder, value) in self.carried.iter_mut().zip(&standing.carried) {
            builder.append_option(*value);
        }
    }

    /// The columns in schema order, with `middle` after the state.
    fn finish(mut self, middle: Vec<ArrayRef>) -> Vec<ArrayRef> {
        let mut columns: Vec<ArrayRef> = vec![Arc::new(self.keys.finish())];
        columns.extend(
            self.since
                .iter_mut()
                .map(|b| Arc::new(b.finish()) as ArrayRef),
        );
        columns.push(Arc::new(self.states.finish()));
        columns.extend(middle);
        columns.extend(
            self.carried
                .iter_mut()
                .map(|b| Arc::new(b.finish()) as ArrayRef),
        );
        columns
    }
}

impl KeptTable {
    /// An empty table for `spec`.
    pub fn new(spec: KeepSpec) -> Self {
        Self {
            spec,
            events: BTreeMap::new(),
            latest_snapshot: None,
            history_snapshot: None,
            changed: BTreeMap::new(),
            event_bytes: 0,
        }
    }

    /// Memory held by the table: its keys and events, and the snapshots
    /// jobs read.
    pub fn bytes(&self) -> usize {
        let snapshot =
            |b: &Option<RecordBatch>| b.as_ref().map_or(0, RecordBatch::get_array_memory_size);
        self.event_bytes + snapshot(&self.latest_snapshot) + snapshot(&self.history_snapshot)
    }

    /// What this table keeps.
    pub fn spec(&self) -> &KeepSpec {
        &self.spec
    }

    fn forget_snapshots(&mut self) {
        self.latest_snapshot = None;
        self.history_snapshot = None;
    }

    /// The state column and the carried columns of `events`.
    fn state_columns<'b>(
        &self,
        events: &'b RecordBatch,
    ) -> Result<(&'b StringArray, Vec<&'b StringArray>), ArrowError> {
        let carried = self
            .spec
            .carry
            .iter()
            .map(|c| text(events, c))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((text(events, &self.spec.state)?, carried))
    }

    /// The event at `row` (whose state is set), at time `ts`.
    fn event(
        &self,
        ts: i64,
        states: &StringArray,
        carried: &[&StringArray],
        row: usize,
    ) -> StateEvent {
        let state = states.value(row);
        StateEvent {
            ts,
            rank: self.spec.rank(state),
            state: state.to_owned(),
            carried: carried.iter().map(|c| optional(c, row)).collect(),
        }
    }

    /// Applies a batch of the stream's events, in any order; an event
    /// already known (same time and state) is ignored. `home` is the source
    /// partition they come from (a new key's home).
    pub fn apply(&mut self, events: &RecordBatch, home: Option<i32>) -> Result<(), ArrowError> {
        let keys = text(events, &self.spec.key)?;
        let (states, carried) = self.state_columns(events)?;
        let times = epoch_millis(events.column_by_name(&self.spec.time).ok_or_else(|| {
            ArrowError::SchemaError(format!("events without `{}`", self.spec.time))
        })?)?;
        for row in 0..events.num_rows() {
            if keys.is_null(row) || states.is_null(row) || times.is_null(row) {
                continue;
            }
            let event = self.event(times.value(row), states, &carried, row);
            let key = keys.value(row);
            let before = self.events.get(key).map_or(0, |h| entry_bytes(key, h));
            // Most keys have one or two events: no room for four.
            let keyed = self.events.entry(key.to_owned()).or_insert_with(|| Keyed {
                home,
                history: Vec::with_capacity(1),
            });
            let history = &mut keyed.history;
            let at = history.partition_point(|e| (e.ts, e.rank) < (event.ts, event.rank));
            if history
                .get(at)
                .is_none_or(|e| (e.ts, e.rank) != (event.ts, event.rank))
            {
                history.insert(at, event);
                self.event_bytes = self.event_bytes + entry_bytes(key, keyed) - before;
                self.changed.insert(key.to_owned(), keyed.home);
                self.forget_snapshots();
            }
        }
        Ok(())
    }

    /// Forgets keys whose last event is more than the retention before
    /// `now` (in event time).
    pub fn expire(&mut self, now: i64) {
        let before = self.events.len();
        let horizon = now.saturating_sub(self.spec.retention_ms);
        let changed = &mut self.changed;
        let mut freed = 0;
        self.events.retain(|key, keyed| {
            let keep = keyed.history.last().is_some_and(|e| e.ts > horizon);
            if !keep {
                changed.insert(key.clone(), keyed.home);
                freed += entry_bytes(key, keyed);
            }
            keep
        });
        self.event_bytes = self.event_bytes.saturating_sub(freed);
        if self.events.len() != before {
            self.forget_snapshots();
        }
    }

    /// Marks `key` as changed, so that the changelog records it again (it
    /// was restored from a record under a key written differently now).
    pub fn rewrite(&mut self, key: &str) {
        self.changed.insert(key.to_owned(), self.home_of(key));
    }

    /// The keys added, changed or forgotten since the last call, with their
    /// homes.
    pub fn drain_changes(&mut self) -> BTreeMap<String, Option<i32>> {
        std::mem::take(&mut self.changed)
    }

    /// Every key known, with its home.
    pub fn keys(&self) -> BTreeMap<String, Option<i32>> {
        self.events
            .iter()
            .map(|(key, keyed)| (key.clone(), keyed.home))
            .collect()
    }

    /// One key's events in event-time order, or `None` if it is not (or no
    /// longer) known.
    pub fn events_of(&self, key: &str) -> Option<Result<RecordBatch, ArrowError>> {
        let history = &self.events.get(key)?.history;
        let mut ts = arrow::array::Int64Builder::with_capacity(history.len());
        let mut state = StringBuilder::new();
        let mut carried: Vec<StringBuilder> = self
            .spec
            .carry
            .iter()
            .map(|_| StringBuilder::new())
            .collect();
        for event in history {
            ts.append_value(event.ts);
            state.append_value(&event.state);
            for (builder, value) in carried.iter_mut().zip(&event.carried) {
                builder.append_option(value.as_deref());
            }
        }
        let mut columns: Vec<ArrayRef> = vec![Arc::new(ts.finish()), Arc::new(state.finish())];
        columns.extend(carried.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef));
        Some(RecordBatch::try_new(self.spec.events_schema(), columns))
    }

    /// The source partition a known key's events come from, if known.
    pub fn home_of(&self, key: &str) -> Option<i32> {
        self.events.get(key)?.home
    }

    /// Puts back one key's events read from the changelog, with the
    /// partition they were kept in (`None`: a record of a release before
    /// scale-out).
    pub fn restore(
        &mut self,
        key: &str,
        events: &RecordBatch,
        home: Option<i32>,
    ) -> Result<(), ArrowError> {
        let ts = events
            .column_by_name("ts")
            .and_then(|c| c.as_primitive_opt::<arrow::datatypes::Int64Type>())
            .ok_or_else(|| ArrowError::SchemaError("kept events without an Int64 `ts`".into()))?;
        let (state, carried) = self.state_columns(events)?;
        let mut history: Vec<StateEvent> = (0..events.num_rows())
            .filter(|&row| ts.is_valid(row) && state.is_valid(row))
            .map(|row| self.event(ts.value(row), state, &carried, row))
            .collect();
        history.sort();
        history.shrink_to_fit();
        let keyed = Keyed { home, history };
        let added = entry_bytes(key, &keyed);
        if let Some(old) = self.events.insert(key.to_owned(), keyed) {
            self.event_bytes = self.event_bytes.saturating_sub(entry_bytes(key, &old));
        }
        self.event_bytes += added;
        self.forget_snapshots();
        Ok(())
    }

    /// Number of keys known.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Whether no key is known.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// The latest table as one batch, sorted by key.
    pub fn latest_snapshot(&mut self) -> Result<RecordBatch, ArrowError> {
        if let Some(batch) = &self.latest_snapshot {
            return Ok(batch.clone());
        }
        let n = self.events.len();
        let mut common = CommonColumns::new(&self.spec, n);
        let mut state_ts = TimestampMillisecondBuilder::with_capacity(n).with_timezone("UTC");
        for (key, Keyed { history, .. }) in &self.events {
            let Some(last) = history.last() else { continue };
            let mut standing = Standing::new(&self.spec);
            history.iter().for_each(|e| standing.after(&self.spec, e));
            common.append(key, &standing, &last.state);
            state_ts.append_value(last.ts);
        }
        let columns = common.finish(vec![Arc::new(state_ts.finish())]);
        let batch = RecordBatch::try_new(self.spec.latest_schema(), columns)?;
        self.latest_snapshot = Some(batch.clone());
        Ok(batch)
    }

    /// The history table as one batch, by key then time: a row per event,
    /// valid from its time until the next event's; `since` and `carry`
    /// columns as known at that event.
    pub fn history_snapshot(&mut self) -> Result<RecordBatch, ArrowError> {
        if let Some(batch) = &self.history_snapshot {
            return Ok(batch.clone());
        }
        let n = self.events.values().map(|k| k.history.len()).sum();
        let mut common = CommonColumns::new(&self.spec, n);
        let mut from = TimestampMillisecondBuilder::with_capacity(n).with_timezone("UTC");
        let mut until = TimestampMillisecondBuilder::with_capacity(n).with_timezone("UTC");
        for (key, Keyed { history, .. }) in &self.events {
            let mut standing = Standing::new(&self.spec);
            for (i, event) in history.iter().enumerate() {
                standing.after(&self.spec, event);
                common.append(key, &standing, &event.state);
                from.append_value(event.ts);
                until.append_option(history.get(i + 1).map(|next| next.ts));
            }
        }
        let columns = common.finish(vec![Arc::new(from.finish()), Arc::new(until.finish())]);
        let batch = RecordBatch::try_new(self.spec.history_schema(), columns)?;
        self.history_snapshot = Some(batch.clone());
        Ok(batch)
    }
}

#[cfg(test)]
mod tests {
    use arrow::datatypes::TimestampMillisecondType;

    use super::*;

    const THIRTY_DAYS: i64 = 30 * 86_400_000;
    use crate::decode::{BatchBuilder, parse_record};
    use crate::schema::Source;

    fn events(rows: &[(&str, &str, i64, Option<&str>)]) -> RecordBatch {
        let mut builder = BatchBuilder::new(crate::config::default_source("complaints"));
        for (id, status, ts, category) in rows {
            let mut json = format!(
                r#"{{"event_id":"e","customer_id":"c","ts":{ts},"complaint_id":"{id}","status":"{status}""#
            );
            if let Some(c) = category {
                json.push_str(&format!(r#","category":"{c}""#));
            }
            json.push('}');
            builder.append(
                &parse_record(crate::config::default_source("complaints"), json.as_bytes())
                    .expect("valid"),
            );
        }
        builder.finish().expect("batch")
    }

    fn times(batch: &RecordBatch, column: &str) -> Vec<Option<i64>> {
        let array = batch
            .column_by_name(column)
            .expect("column")
            .as_primitive::<TimestampMillisecondType>();
        array.iter().collect()
    }

    fn texts(batch: &RecordBatch, column: &str) -> Vec<Option<String>> {
        let array = batch
            .column_by_name(column)
            .expect("column")
            .as_string::<i32>();
        array.iter().map(|v| v.map(str::to_owned)).collect()
    }

    fn some(values: &[&str]) -> Vec<Option<String>> {
        values.iter().map(|v| Some((*v).to_owned())).collect()
    }

    /// The complaints' declaration, as the default configuration makes it.
    fn complaints_spec() -> KeepSpec {
        crate::config::default_sources()
            .named("complaints")
            .and_then(Source::keep)
            .expect("complaints keep tables")
            .clone()
    }

    /// k1: resolved at 500 arrives before its opening at 200; k2: opened
    /// at 100, resolved at 250, then escalated (reopened) at 300.
    fn table() -> KeptTable {
        let mut table = KeptTable::new(complaints_spec());
        table
            .apply(
                &events(&[
                    ("k1", "resolved", 500, None),
                    ("k2", "opened", 100, Some("billing")),
                    ("k2", "escalated", 300, None),
                ]),
                Some(3),
            )
            .expect("apply");
        table
            .apply(
                &events(&[
                    ("k1", "opened", 200, Some("delivery")),
                    ("k2", "resolved", 250, None),
                    ("k2", "resolved", 250, None),
                ]),
                Some(4),
            )
            .expect("apply");
        table
    }

    #[test]
    fn status_has_the_first_opening_and_the_latest_event() {
        let batch = table().latest_snapshot().expect("snapshot");
        assert_eq!(texts(&batch, "complaint_id"), some(&["k1", "k2"]));
        assert_eq!(times(&batch, "opened_ts"), [Some(200), Some(100)]);
        assert_eq!(texts(&batch, "status"), some(&["resolved", "escalated"]));
        assert_eq!(times(&batch, "status_ts"), [Some(500), Some(300)]);
        assert_eq!(texts(&batch, "category"), some(&["delivery", "billing"]));
    }

    #[test]
    fn history_has_one_period_per_event_in_time_order() {
        let batch = table().history_snapshot().expect("snapshot");
        assert_eq!(
            texts(&batch, "complaint_id"),
            some(&["k1", "k1", "k2", "k2", "k2"])
        );
        assert_eq!(
            texts(&batch, "status"),
            some(&["opened", "resolved", "opened", "resolved", "escalated"])
        );
        assert_eq!(
            times(&batch, "valid_from"),
            [Some(200), Some(500), Some(100), Some(250), Some(300)]
        );
        assert_eq!(
            times(&batch, "valid_until"),
            [Some(500), None, Some(250), Some(300), None]
        );
        assert_eq!(
            times(&batch, "opened_ts"),
            [Some(200), Some(200), Some(100), Some(100), Some(100)]
        );
    }

    #[test]
    fn changes_are_tracked_and_a_restored_table_is_the_same() {
        let mut live = table();
        assert_eq!(
            live.drain_changes().into_keys().collect::<Vec<_>>(),
            ["k1", "k2"]
        );
        let mut restored = KeptTable::new(complaints_spec());
        for id in live.keys().into_keys() {
            let events = live.events_of(&id).expect("known").expect("batch");
            restored
                .restore(&id, &events, live.home_of(&id))
                .expect("restore");
            assert_eq!(
                restored.home_of(&id),
                Some(3),
                "the first batch's partition"
            );
        }
        assert_eq!(
            restored.history_snapshot().expect("snapshot"),
            live.history_snapshot().expect("snapshot")
        );
        assert_eq!(
            restored.latest_snapshot().expect("snapshot"),
            live.latest_snapshot().expect("snapshot")
        );
        live.expire(300 + THIRTY_DAYS);
        assert_eq!(
            live.drain_changes().into_iter().collect::<Vec<_>>(),
            [("k2".to_owned(), Some(3))],
            "forgotten, with the home its tombstone goes to"
        );
        assert!(live.events_of("k2").is_none(), "forgotten: a tombstone");
    }

    #[test]
    fn the_memory_held_follows_the_keys_kept() {
        let mut table = table();
        let two_keys = table.bytes();
        assert!(
            two_keys > 2 * entry_bytes("k1", &Keyed::default()),
            "{two_keys}"
        );
        let with_snapshot = {
            table.history_snapshot().expect("snapshot");
            table.bytes()
        };
        assert!(with_snapshot > two_keys, "the snapshot counts");
        table.expire(300 + THIRTY_DAYS);
        assert!(table.bytes() < two_keys, "k2 forgotten, snapshots dropped");
        table.expire(500 + THIRTY_DAYS);
        assert_eq!(table.bytes(), 0);
    }

    #[test]
    fn forgets_a_complaint_30_days_after_its_last_event() {
        let mut table = table();
        table.expire(300 + THIRTY_DAYS);
        assert_eq!(table.len(), 1, "k2 (last event 300) is forgotten");
        let batch = table.history_snapshot().expect("snapshot");
        assert_eq!(texts(&batch, "complaint_id"), some(&["k1", "k1"]));
    }
}
