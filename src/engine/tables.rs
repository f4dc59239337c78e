//! Following the table sources (by default `cx.customers`) while the engine
//! runs: what arrived is applied like any micro-batch, and a reader that
//! keeps failing is said, not hidden. After [`STALE_AFTER`] of failures the
//! engine is not ready (`/readyz` says why) and
//! `cxpulse_table_read_errors_total` counts every failure; the tables are
//! stale meanwhile, so lookups may miss new rows.

use std::time::{Duration, Instant};

use super::{Engine, EngineError};
use crate::source::Batcher;

/// How long reads of the table sources may keep failing before the engine
/// says it is not ready.
pub const STALE_AFTER: Duration = Duration::from_secs(30);

/// Since when the table sources' reader has been failing, if it is.
#[derive(Debug, Default)]
pub(super) struct TableReads {
    failing_since: Option<Instant>,
    /// When the reader last read without error.
    last_ok: Option<Instant>,
    reported: bool,
}

impl Engine {
    /// Takes what arrived on the table sources' topics and applies it.
    pub(super) async fn follow_tables(&mut self, batcher: &mut Batcher) -> Result<(), EngineError> {
        let now = Instant::now();
        match self.lookup.take(batcher, now) {
            Ok(n) => {
                if self.table_reads.reported {
                    tracing::info!("the table sources are read again");
                    self.health.set_tables_failing(None);
                }
                self.table_reads = TableReads {
                    last_ok: Some(now),
                    ..TableReads::default()
                };
                if n > 0 {
                    self.process(batcher.take()?).await?;
                }
            }
            Err(e) => {
                self.metrics.table_read_errors.inc();
                let since = *self.table_reads.failing_since.get_or_insert(now);
                tracing::warn!(error = %e, "reading the table sources failed");
                if now.duration_since(since) >= STALE_AFTER && !self.table_reads.reported {
                    let why = format!(
                        "reading the table sources has failed for {} s ({e}); lookups miss their new rows",
                        now.duration_since(since).as_secs()
                    );
                    tracing::error!(error = %e, "{why}");
                    self.health.set_tables_failing(Some(why));
                    self.table_reads.reported = true;
                }
            }
        }
        if let Some(ok) = self.table_reads.last_ok {
            self.metrics
                .table_read_age
                .set(now.duration_since(ok).as_secs_f64());
        }
        Ok(())
    }
}
