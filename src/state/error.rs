//! What can be wrong with a changelog record's bytes: the one error of
//! the state protocol.

/// A key or value cxpulse cannot have written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// Fewer bytes than a checksum.
    #[error("a value shorter than its checksum")]
    NoChecksum,
    /// The bytes changed since they were written.
    #[error("the value does not match its checksum (corrupt)")]
    Checksum,
    /// A frame's length is cut off.
    #[error("a frame length is cut short")]
    FrameLength,
    /// A frame is cut off.
    #[error("a frame of {len} bytes has only {left} bytes left")]
    FrameCut {
        /// Its length.
        len: usize,
        /// The bytes left.
        left: usize,
    },
    /// A frame that is not an Arrow IPC stream.
    #[error("not an Arrow IPC stream: {0}")]
    NotIpc(String),
    /// An Arrow IPC batch that does not read.
    #[error("unreadable Arrow IPC batch: {0}")]
    Batch(String),
    /// Fewer bytes than a stored part's header.
    #[error("a value shorter than its header")]
    NoHeader,
    /// Not a part cxpulse wrote.
    #[error("not a cxpulse state value (bad magic)")]
    BadMagic,
    /// A part of a value of no parts.
    #[error("a value of 0 parts")]
    NoParts,
    /// Parts of values of different lengths.
    #[error("part {part} belongs to a value of {count} parts, {found} found")]
    PartCount {
        /// The part.
        part: usize,
        /// The parts it says its value has.
        count: usize,
        /// The parts found.
        found: usize,
    },
    /// A part that does not follow the parts read before it.
    #[error("part {part} of a value of {count} parts, after {after} of them")]
    PartOutOfOrder {
        /// The part.
        part: u32,
        /// The parts its value has.
        count: u32,
        /// The parts read before it.
        after: usize,
    },
    /// An integer value without its column.
    #[error("no `{0}` in the value")]
    MissingInt(String),
    /// An integer value whose column is not one integer.
    #[error("`{0}` is not one 64-bit integer")]
    NotInt(String),
    /// A record key that does not read.
    #[error("unreadable changelog key: {0}")]
    Key(String),
    /// A kept table's value whose long-key frame holds no key.
    #[error("a kept table's long key frame without its key")]
    KeptKey,
    /// State rows of another schema than the job's.
    #[error("its rows do not have the job's state schema")]
    Schema,
    /// A session value without its two frames.
    #[error("a session value is two frames")]
    SessionFrames,
    /// A session value without its key and bounds.
    #[error("a session without its key and bounds")]
    SessionMeta,
    /// A session bound that is not an integer.
    #[error("a session bound is not an integer")]
    SessionBound,
    /// A session key that does not read.
    #[error("a session key: {0}")]
    SessionKey(String),
    /// A frame the value's kind needs is missing.
    #[error("no frame {0}")]
    MissingFrame(usize),
    /// A key whose records hold no value of their own.
    #[error("a {0} record holds no state value")]
    NoValue(&'static str),
    /// Arrow could not encode or decode the rows.
    #[error("{0}")]
    Arrow(String),
}

impl From<arrow::error::ArrowError> for FormatError {
    fn from(e: arrow::error::ArrowError) -> Self {
        FormatError::Arrow(e.to_string())
    }
}
