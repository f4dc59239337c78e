//! A configuration's `[[sources]]` entries built into the engine's
//! [`Sources`]: the enabled entries, tables first, each with its fields,
//! their checks and its JSON layout.

use crate::schema::{
    FieldSpec, FieldType, KeepSpec, Layout, Pattern, Role, SourceSpec, Sources, SourcesError,
    path_keys,
};

use super::sources::{ColumnEntry, ColumnError, ColumnType, SourceEntry, decimal_units};

/// Why `[[sources]]` entries (already checked by `Config::load`) cannot be
/// built into the engine's sources.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DeclareError {
    /// A stream without its event-time column, or a table without its key.
    #[error("source {name}: {what} is not set")]
    NotSet {
        /// The source.
        name: String,
        /// The missing setting.
        what: &'static str,
    },
    /// A kind other than `stream` or `table`.
    #[error("source {name}: unknown kind {kind:?}")]
    UnknownKind {
        /// The source.
        name: String,
        /// Its kind as written.
        kind: String,
    },
    /// A column whose type or checks cannot be used.
    #[error("column {column}: {problem}")]
    Column {
        /// The column.
        column: String,
        /// What is wrong.
        problem: ColumnError,
    },
    /// More sources than a handle can index.
    #[error(transparent)]
    Sources(#[from] SourcesError),
}

/// The sources of `entries` (checked by `Config::load`): the enabled ones,
/// tables first, then streams, each in declaration order.
pub fn declare(entries: &[SourceEntry]) -> Result<Sources, DeclareError> {
    let enabled = entries.iter().filter(|e| e.enabled);
    let (tables, streams): (Vec<&SourceEntry>, Vec<&SourceEntry>) =
        enabled.partition(|e| e.kind == "table");
    let specs = tables
        .into_iter()
        .chain(streams)
        .map(source_spec)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Sources::new(specs)?)
}

/// One entry as the engine sees it.
fn source_spec(entry: &SourceEntry) -> Result<SourceSpec, DeclareError> {
    let named = |column: &Option<String>, what: &'static str| {
        column.clone().ok_or_else(|| DeclareError::NotSet {
            name: entry.name.clone(),
            what,
        })
    };
    let role = match entry.kind.as_str() {
        "stream" => Role::Stream {
            event_time: named(&entry.event_time, "event_time")?,
            max_out_of_orderness_ms: entry.max_out_of_orderness_ms,
            idle_timeout_ms: entry.idle_timeout_ms,
            max_future_ms: entry.max_future_ms,
            partition_key: entry.partition_key.clone(),
        },
        "table" => Role::Table {
            key: named(&entry.key, "key")?,
        },
        other => {
            return Err(DeclareError::UnknownKind {
                name: entry.name.clone(),
                kind: other.to_owned(),
            });
        }
    };
    let fields: Vec<FieldSpec> = entry
        .columns
        .iter()
        .map(field_spec)
        .collect::<Result<_, _>>()?;
    let paths: Vec<Vec<String>> = entry
        .columns
        .iter()
        .map(|c| path_keys(&c.name, c.path.as_deref()))
        .collect();
    Ok(SourceSpec {
        name: entry.name.clone(),
        role,
        fields,
        layout: Layout::new(&paths),
        one_of: entry.one_of.clone(),
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
/// validated with the configuration ([`super::sources::problems`]).
fn field_spec(column: &ColumnEntry) -> Result<FieldSpec, DeclareError> {
    Ok(FieldSpec {
        name: column.name.clone(),
        ty: ColumnType::parse(&column.ty)
            .and_then(|ty| checked_type(&ty, column))
            .map_err(|problem| DeclareError::Column {
                column: column.name.clone(),
                problem,
            })?,
        required: column.required,
    })
}

/// `ty` with the column's checks; what is wrong with them, if anything.
fn checked_type(ty: &ColumnType, column: &ColumnEntry) -> Result<FieldType, ColumnError> {
    Ok(match ty {
        ColumnType::List(item) => FieldType::List(Box::new(checked_type(item, column)?)),
        ColumnType::String => match (&column.values, &column.regex) {
            (Some(values), _) => FieldType::Enum(values.clone()),
            (None, Some(pattern)) => regex::Regex::new(pattern)
                .map(|re| FieldType::Matching(Pattern(re)))
                .map_err(|e| ColumnError::Pattern(e.to_string()))?,
            (None, None) if column.lowercase => FieldType::Coded,
            (None, None) => FieldType::Text,
        },
        ColumnType::Id => FieldType::Id,
        ColumnType::Timestamp => FieldType::Timestamp,
        ColumnType::Bool => FieldType::Bool,
        &ColumnType::Decimal { precision, scale } => {
            let bound = |b: Option<f64>| b.map(|v| decimal_units(v, scale)).transpose();
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
