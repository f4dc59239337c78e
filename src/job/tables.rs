//! How queries see the sources: DataFusion tables whose contents are set
//! before each execution of a job's (once-planned) physical plan.

use std::sync::{Arc, Mutex, PoisonError};

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use datafusion::catalog::streaming::StreamingTable;
use datafusion::error::DataFusionError;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::{PartitionStream, StreamingTableExec};

use crate::lookup::Snapshot;

/// The micro-batch a stream source table yields on the next execution.
#[derive(Debug)]
pub struct BatchSlot {
    schema: SchemaRef,
    batches: Mutex<Vec<RecordBatch>>,
}

impl BatchSlot {
    /// An empty slot for tables of `schema`.
    pub fn new(schema: SchemaRef) -> Arc<Self> {
        Arc::new(Self {
            schema,
            batches: Mutex::new(Vec::new()),
        })
    }

    /// Sets the batches the next execution reads.
    pub fn set(&self, batches: Vec<RecordBatch>) {
        *self.batches.lock().unwrap_or_else(PoisonError::into_inner) = batches;
    }

    /// A plan node reading this slot.
    pub fn exec(self: &Arc<Self>) -> Result<Arc<dyn ExecutionPlan>, DataFusionError> {
        Ok(Arc::new(StreamingTableExec::try_new(
            Arc::clone(&self.schema),
            vec![Arc::clone(self) as _],
            None,
            [],
            false,
            None,
        )?))
    }

    /// A DataFusion table reading this slot.
    pub fn table(self: &Arc<Self>) -> Result<StreamingTable, DataFusionError> {
        StreamingTable::try_new(Arc::clone(&self.schema), vec![Arc::clone(self) as _])
    }
}

impl PartitionStream for BatchSlot {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let batches = self
            .batches
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            futures::stream::iter(batches.into_iter().map(Ok)),
        ))
    }
}

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
