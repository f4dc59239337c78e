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
    /// A job failed to execute on the micro-batch holding the event.
    JobError,
}

impl RejectKind {
    /// Every kind, for pre-registering metric series.
    pub const ALL: [RejectKind; 9] = [
        RejectKind::InvalidJson,
        RejectKind::NotObject,
        RejectKind::MissingField,
        RejectKind::WrongType,
        RejectKind::OutOfRange,
        RejectKind::BadTimestamp,
        RejectKind::MissingKey,
        RejectKind::Late,
        RejectKind::JobError,
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

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.reason)
    }
}
