//! How queries see the lookup tables: DataFusion tables that read the
//! current snapshot at each execution of a job's (once-planned) plan. The
//! streams are read through [`crate::batch_slot::BatchSlot`].

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use datafusion::catalog::streaming::StreamingTable;
use datafusion::error::DataFusionError;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::PartitionStream;

use crate::lookup::Snapshot;

/// A lookup table (`customers`, `complaint_status`, `complaint_history`) as
/// a DataFusion table: each execution reads the current snapshot.
pub struct LookupStream {
    schema: SchemaRef,
    snapshot: Snapshot,
}

impl std::fmt::Debug for LookupStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LookupStream")
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

impl LookupStream {
    /// A DataFusion table of `schema` whose rows `snapshot` reads.
    pub fn table(schema: SchemaRef, snapshot: Snapshot) -> Result<StreamingTable, DataFusionError> {
        let stream = Arc::new(Self {
            schema: Arc::clone(&schema),
            snapshot,
        });
        StreamingTable::try_new(schema, vec![stream])
    }
}

impl PartitionStream for LookupStream {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let snapshot = (self.snapshot)().map_err(DataFusionError::from);
        Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            futures::stream::iter([snapshot]),
        ))
    }
}
