//! State that survives anything: the changelog topic.
//!
//! Every change to window state, the watermarks, the kept tables and
//! the lookup positions is written as a record of a compacted Kafka topic,
//! in the same transaction as the outputs and the consumer offsets it goes
//! with. After a crash, any instance reads it back and carries on exactly
//! where the last committed epoch left off.
//!
//! | module | job |
//! |---|---|
//! | [`key`] | what a record holds, as a stable JSON key |
//! | [`error`] | what can be wrong with a record's bytes (one error for the protocol) |
//! | [`value`] | Arrow IPC frames, checksummed, split into parts that fit a Kafka message |
//! | [`record`] | what a record means: its key and its typed value, encoded and decoded; a job's state changes as records |
//! | [`codec`] | the bytes of each kind of value: pane batches, sessions, kept events |
//! | [`writer`] | state changes → records; live keys; when a checkpoint is due |
//! | [`reader`] | the changelog from the latest checkpoint to its end → the latest value per key |
//! | [`reset`] | `cxpulse reset JOB`: tombstones for one job's state |

pub mod codec;
pub mod error;
pub mod key;
pub mod reader;
pub mod record;
pub mod reset;
pub mod value;
pub mod writer;
