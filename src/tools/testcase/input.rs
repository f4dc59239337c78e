//! A case's files: its settings, its source records in arrival order, and
//! NDJSON rows.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::decode::{Cell, parse_record};
use crate::schema::{Source, Sources};
use crate::source::{Consumed, RawRecord};

/// Relative tolerance for floats when a case does not set one.
pub const DEFAULT_TOLERANCE: f64 = 1e-9;

/// Why a case could not run: a file with its line where one applies.
#[derive(Debug, thiserror::Error)]
#[error("{}{}: {message}", file.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct CaseError {
    /// The file at fault.
    pub file: PathBuf,
    /// Its line, 1-based.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl CaseError {
    /// A problem of `file`, at `line` where one applies.
    pub fn new(file: &Path, line: Option<usize>, message: impl Into<String>) -> Self {
        Self {
            file: file.to_path_buf(),
            line,
            message: message.into(),
        }
    }
}

/// `case.toml`: all optional.
#[derive(Debug)]
pub struct Settings {
    /// Relative tolerance for floats.
    pub tolerance: f64,
}

/// The case's settings, defaults where it has no `case.toml`. Known keys:
/// `description` (text for the reader) and `tolerance`.
pub fn settings(dir: &Path) -> Result<Settings, CaseError> {
    let path = dir.join("case.toml");
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(CaseError::new(&path, None, format!("cannot read: {e}"))),
    };
    let line_of = |span: Option<std::ops::Range<usize>>| {
        span.map(|s| text[..s.start.min(text.len())].lines().count().max(1))
    };
    let document: toml_edit::DocumentMut = text.parse().map_err(|e: toml_edit::TomlError| {
        CaseError::new(&path, line_of(e.span()), e.message().to_owned())
    })?;
    let mut settings = Settings {
        tolerance: DEFAULT_TOLERANCE,
    };
    for (key, item) in document.iter() {
        let line = line_of(item.span());
        match key {
            "description" if item.is_str() => {}
            "tolerance" => {
                settings.tolerance = item
                    .as_float()
                    .filter(|t| (0.0..1.0).contains(t))
                    .ok_or_else(|| {
                        CaseError::new(
                            &path,
                            line,
                            "tolerance must be a number from 0 to 1, e.g. 1e-6",
                        )
                    })?;
            }
            "description" => {
                return Err(CaseError::new(&path, line, "description must be a string"));
            }
            other => {
                return Err(CaseError::new(
                    &path,
                    line,
                    format!("unknown setting {other} (known: description, tolerance)"),
                ));
            }
        }
    }
    Ok(settings)
}

/// A case's source records: table sources' first, then the streams'.
pub struct CaseInput {
    /// Table-source records.
    pub tables: Vec<Consumed>,
    /// Stream records in arrival order.
    pub events: Vec<Consumed>,
}

/// Reads every `<source>.ndjson` of `dir`. A record's offset is its line
/// number, so dead letters point back at it. Stream files are merged into
/// one arrival order: the file whose next record has the earliest event
/// time goes next (ties in source order), each file keeping its own order;
/// a record that does not decode goes with the record before it.
pub fn read(dir: &Path, sources: Sources) -> Result<CaseInput, CaseError> {
    let mut tables = Vec::new();
    let mut streams: BTreeMap<Source, VecDeque<(i64, Consumed)>> = BTreeMap::new();
    let entries = std::fs::read_dir(dir)
        .map_err(|e| CaseError::new(dir, None, format!("cannot list: {e}")))?;
    let mut files: Vec<_> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
    files.sort();
    for path in files {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let Some(stem) = name.strip_suffix(".ndjson") else {
            continue;
        };
        if stem.starts_with("expected") {
            continue;
        }
        let source = sources.named(stem).ok_or_else(|| {
            let declared: Vec<&str> = sources.all().map(Source::name).collect();
            CaseError::new(
                &path,
                None,
                format!(
                    "no source is named {stem} (declared: {})",
                    declared.join(", ")
                ),
            )
        })?;
        let records = records(&path, source)?;
        if source.is_stream() {
            let mut last = i64::MIN;
            let timed = records
                .into_iter()
                .map(|record| {
                    last = event_time(&record).unwrap_or(last);
                    (last, record)
                })
                .collect();
            streams.insert(source, timed);
        } else {
            tables.extend(records);
        }
    }
    let mut events = Vec::new();
    loop {
        let next = streams
            .iter()
            .filter_map(|(source, queue)| queue.front().map(|(t, _)| (*t, *source)))
            .min();
        let Some((_, source)) = next else {
            break;
        };
        if let Some((_, record)) = streams.get_mut(&source).and_then(VecDeque::pop_front) {
            events.push(record);
        }
    }
    Ok(CaseInput { tables, events })
}

/// The records of one source file, `_partition` taken out of each.
fn records(path: &Path, source: Source) -> Result<Vec<Consumed>, CaseError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CaseError::new(path, None, format!("cannot read: {e}")))?;
    let mut out = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let number = index + 1;
        let mut partition = 0;
        let mut payload = line.as_bytes().to_vec();
        if let Ok(Value::Object(mut fields)) = serde_json::from_str::<Value>(line)
            && let Some(p) = fields.remove("_partition")
        {
            partition = p
                .as_i64()
                .and_then(|p| i32::try_from(p).ok())
                .filter(|p| *p >= 0)
                .ok_or_else(|| {
                    CaseError::new(
                        path,
                        Some(number),
                        format!("_partition must be a partition number, got {p}"),
                    )
                })?;
            payload = Value::Object(fields).to_string().into_bytes();
        }
        out.push(Consumed {
            source,
            partition,
            raw: RawRecord {
                offset: i64::try_from(number).unwrap_or(i64::MAX),
                key: None,
                payload: Some(payload),
                headers: Vec::new(),
                oversized: None,
            },
        });
    }
    Ok(out)
}

/// A stream record's event time, if it decodes.
fn event_time(record: &Consumed) -> Option<i64> {
    let source = record.source;
    let column = source
        .fields()
        .iter()
        .position(|f| f.name == source.time_or_key())?;
    let cells = parse_record(source, record.raw.payload.as_deref()?).ok()?;
    match cells.get(column) {
        Some(Cell::Ts(ms)) => Some(*ms),
        _ => None,
    }
}

/// The JSON objects of an NDJSON file, `emitted_at` left out.
pub fn rows(path: &Path) -> Result<Vec<Value>, CaseError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CaseError::new(path, None, format!("cannot read: {e}")))?;
    let mut rows = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let mut row: Value = serde_json::from_str(line)
            .map_err(|e| CaseError::new(path, Some(index + 1), format!("not JSON: {e}")))?;
        if let Some(fields) = row.as_object_mut() {
            fields.remove("emitted_at");
        }
        rows.push(row);
    }
    Ok(rows)
}
