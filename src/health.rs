//! Whether the engine is ready: what it waits for while it starts,
//! restores and runs, as `/readyz` reports it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};

/// Readiness conditions, set by the engine as it starts, restores and runs.
#[derive(Debug)]
pub struct Health {
    partitions_assigned: AtomicBool,
    /// What keeps the engine from running, if anything.
    blocker: Mutex<Option<String>>,
    /// Why the table sources cannot be read, while they cannot.
    tables: Mutex<Option<String>>,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            partitions_assigned: AtomicBool::new(false),
            blocker: Mutex::new(Some("starting".to_owned())),
            tables: Mutex::new(None),
        }
    }
}

impl Health {
    /// Records whether the consumer currently holds partitions.
    pub fn set_partitions_assigned(&self, assigned: bool) {
        self.partitions_assigned.store(assigned, Ordering::Relaxed);
    }

    /// Records what keeps the engine from running (connecting to Kafka,
    /// restoring state), or `None` once it runs.
    pub fn set_blocker(&self, why: Option<String>) {
        *self.blocker.lock().unwrap_or_else(PoisonError::into_inner) = why;
    }

    /// Records why the table sources have not been read for a while, or
    /// `None` once they are read again.
    pub fn set_tables_failing(&self, why: Option<String>) {
        *self.tables.lock().unwrap_or_else(PoisonError::into_inner) = why;
    }

    /// `Ok` when ready, otherwise what is still missing.
    pub fn readiness(&self) -> Result<(), NotReady> {
        if let Some(why) = &*self.blocker.lock().unwrap_or_else(PoisonError::into_inner) {
            Err(NotReady::Blocked(why.clone()))
        } else if let Some(why) = &*self.tables.lock().unwrap_or_else(PoisonError::into_inner) {
            Err(NotReady::TablesFailing(why.clone()))
        } else if !self.partitions_assigned.load(Ordering::Relaxed) {
            Err(NotReady::NoPartitions)
        } else {
            Ok(())
        }
    }
}

/// Why the engine is not ready, as `/readyz` says it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotReady {
    /// Something keeps it from running: starting, connecting to Kafka,
    /// restoring state, recovering.
    #[error("{0}")]
    Blocked(String),
    /// The table sources have not been read for a while.
    #[error("{0}")]
    TablesFailing(String),
    /// The consumer group has assigned it no partition yet.
    #[error("no partitions assigned yet")]
    NoPartitions,
}
