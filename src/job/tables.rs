//! How queries see the lookup tables: DataFusion tables that read the
//! current snapshot at each execution of a job's (once-planned) plan, or
//! the one a [`TableOverrides`] of the execution's task context puts in its
//! place. The streams are read through [`crate::batch_slot::BatchSlot`].

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use datafusion::catalog::streaming::StreamingTable;
use datafusion::error::DataFusionError;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::PartitionStream;

use crate::lookup::{Snapshot, TableOverrides};

/// A lookup table (`customers`, `complaint_status`, `complaint_history`) as
/// a DataFusion table: each execution reads the current snapshot.
pub struct LookupStream {
    name: &'static str,
    schema: SchemaRef,
    snapshot: Snapshot,
}

impl std::fmt::Debug for LookupStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LookupStream")
            .field("name", &self.name)
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

impl LookupStream {
    /// The DataFusion table `name` of `schema`, whose rows `snapshot` reads.
    pub fn table(
        name: &'static str,
        schema: SchemaRef,
        snapshot: Snapshot,
    ) -> Result<StreamingTable, DataFusionError> {
        let stream = Arc::new(Self {
            name,
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

    fn execute(&self, ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let overridden = ctx
            .session_config()
            .get_extension::<TableOverrides>()
            .and_then(|o| o.0.get(self.name).cloned());
        let snapshot = overridden.as_ref().unwrap_or(&self.snapshot);
        let snapshot = snapshot().map_err(DataFusionError::from);
        Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            futures::stream::iter([snapshot]),
        ))
    }
}
