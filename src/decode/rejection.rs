//! Why a record was rejected: a small fixed set of kinds (metric label) plus
//! a human-readable reason naming the field (dead-letter header).

use std::fmt;

/// The kind of problem, used as the `reason` metric label and dead-letter header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RejectKind {
    /// The payload is not valid JSON (or not UTF-8).
    InvalidJson,
    /// The payload is JSON but not an object.
    NotObject,
    /// A required field is absent or `null`.
    MissingField,
    /// A field has the wrong JSON type.
    WrongType,
    /// A field's value is outside its allowed range or set.
    OutOfRange,
    /// A timestamp string is not RFC 3339.
    BadTimestamp,
    /// A customers tombstone (null value) without a message key.
    MissingKey,
    /// The event is late for every window of a job.
    Late,
    /// A job failed to execute on the micro-batch holding the event, or
    /// to fire a window (the dead letter names the job and the window).
    JobError,
    /// The record is larger than `engine.max_record_bytes` (never
    /// decoded), or a job's output row is larger than its topic accepts.
    TooLarge,
    /// The event time is further ahead of the wall clock than the source
    /// allows (`max_future_ms`).
    Future,
    /// A new key of a table source beyond `engine.table_memory_limit`.
    TableFull,
    /// Decoding the record failed inside cxpulse (a bug, contained).
    DecodeError,
}

impl RejectKind {
    /// Every kind, for pre-registering metric series.
    pub const ALL: [RejectKind; 13] = [
        RejectKind::InvalidJson,
        RejectKind::NotObject,
        RejectKind::MissingField,
        RejectKind::WrongType,
        RejectKind::OutOfRange,
        RejectKind::BadTimestamp,
        RejectKind::MissingKey,
        RejectKind::Late,
        RejectKind::JobError,
        RejectKind::TooLarge,
        RejectKind::Future,
        RejectKind::TableFull,
        RejectKind::DecodeError,
    ];

    /// The stable snake_case label of this kind.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectKind::InvalidJson => "invalid_json",
            RejectKind::NotObject => "not_object",
            RejectKind::MissingField => "missing_field",
            RejectKind::WrongType => "wrong_type",
            RejectKind::OutOfRange => "out_of_range",
            RejectKind::BadTimestamp => "bad_timestamp",
            RejectKind::MissingKey => "missing_key",
            RejectKind::Late => "late",
            RejectKind::JobError => "job_error",
            RejectKind::TooLarge => "too_large",
            RejectKind::Future => "future",
            RejectKind::TableFull => "table_full",
            RejectKind::DecodeError => "decode_error",
        }
    }
}

impl fmt::Display for RejectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A rejected record's kind and human-readable reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The kind of problem.
    pub kind: RejectKind,
    /// What is wrong, naming the field where there is one.
    pub reason: String,
}

impl Rejection {
    /// A rejection of `kind` with `reason`.
    pub fn new(kind: RejectKind, reason: impl Into<String>) -> Self {
        Self {
            kind,
            reason: reason.into(),
        }
    }
}

/// Characters of a bad value a reason quotes at most.
const QUOTED_CHARS: usize = 64;

/// `text` quoted for a reason: at most its first [`QUOTED_CHARS`]
/// characters, and its size when it is longer, so that a reason never
/// copies a large bad value.
pub fn quote(text: &str) -> String {
    match text.char_indices().nth(QUOTED_CHARS) {
        None => format!("{text:?}"),
        Some((cut, _)) => format!("{:?}… ({} bytes)", &text[..cut], text.len()),
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_value_is_quoted_by_its_prefix_and_size() {
        assert_eq!(quote("2026-01-01"), "\"2026-01-01\"");
        let long = "é".repeat(100);
        let quoted = quote(&long);
        assert_eq!(quoted, format!("{:?}… (200 bytes)", "é".repeat(64)));
    }
}
