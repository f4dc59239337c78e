//! A DataFusion table whose batches are set before each run of a plan that
//! was planned once: how a job's plans read each micro-batch (its source
//! tables) and how a window's plans read panes and sessions.

use std::sync::{Arc, Mutex, PoisonError};

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use datafusion::catalog::streaming::StreamingTable;
use datafusion::error::DataFusionError;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::{PartitionStream, StreamingTableExec};

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
