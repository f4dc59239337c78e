//! Decoding on a thread of its own, pipelined with the engine: the engine
//! copies consumed records out of the consumer and hands them over in
//! chunks; the stage decodes them into micro-batches and hands those back.
//! Both channels are bounded, so a slow engine stops the stage, and a busy
//! stage stops the engine from reading further (backpressure, no unbounded
//! queue). The engine decides where a micro-batch ends ([`DecodeStage::cut`]).

use arrow::error::ArrowError;
use rdkafka::message::Message;
use tokio::sync::mpsc::{self, OwnedPermit};

use super::batcher::{Batcher, Consumed, MicroBatch};
use crate::config::TopicsConfig;

/// Records per chunk handed to the stage.
const CHUNK: usize = 1_000;
/// Chunks waiting for the stage, at most.
const CHUNKS_QUEUED: usize = 8;
/// Decoded micro-batches waiting for the engine, at most.
const BATCHES_QUEUED: usize = 2;

/// Records for the stage; `cut` closes the micro-batch after them.
pub struct Chunk {
    records: Vec<Consumed>,
    cut: bool,
}

/// The engine's end of the decoding thread.
pub struct DecodeStage {
    topics: TopicsConfig,
    chunks: mpsc::Sender<Chunk>,
    batches: mpsc::Receiver<Result<MicroBatch, ArrowError>>,
    /// Records not handed over yet.
    pending: Vec<Consumed>,
    /// Whether the pending records close the micro-batch.
    cut: bool,
    /// Records of the open micro-batch (handed over or pending).
    open: usize,
    /// Micro-batches closed but not yet received back.
    closed: usize,
    /// The decoding thread is gone (it panicked).
    stopped: bool,
}

impl DecodeStage {
    /// Starts the decoding thread for the configured source topics. It
    /// ends when the stage is dropped.
    pub fn start(topics: TopicsConfig) -> std::io::Result<Self> {
        let (chunks, mut chunks_in) = mpsc::channel::<Chunk>(CHUNKS_QUEUED);
        let (batches_out, batches) = mpsc::channel(BATCHES_QUEUED);
        let mut batcher = Batcher::new(topics.clone());
        std::thread::Builder::new()
            .name("cxpulse-decode".to_owned())
            .spawn(move || {
                while let Some(chunk) = chunks_in.blocking_recv() {
                    for record in chunk.records {
                        batcher.add(record);
                    }
                    if chunk.cut && batches_out.blocking_send(batcher.take()).is_err() {
                        break;
                    }
                }
            })?;
        Ok(Self {
            topics,
            chunks,
            batches,
            pending: Vec::with_capacity(CHUNK),
            cut: false,
            open: 0,
            closed: 0,
            stopped: false,
        })
    }

    /// Copies one consumed message for decoding.
    pub fn push<M: Message>(&mut self, message: &M) {
        if let Some(consumed) = Consumed::of(message, &self.topics) {
            self.pending.push(consumed);
            self.open += 1;
        }
    }

    /// Records in the open micro-batch.
    pub fn open_len(&self) -> usize {
        self.open
    }

    /// Closes the open micro-batch (if it has records): the stage hands it
    /// back once it has decoded it.
    pub fn cut(&mut self) {
        if self.open > 0 {
            self.cut = true;
            self.open = 0;
        }
    }

    /// Whether records wait to be handed over (a full chunk, or the end of
    /// a micro-batch): the engine reads no further until they are.
    pub fn has_chunk(&self) -> bool {
        !self.stopped && (self.cut || self.pending.len() >= CHUNK)
    }

    /// Whether micro-batches are still to come back (closed, or waiting).
    pub fn busy(&self) -> bool {
        self.stopped || self.closed > 0 || self.has_chunk()
    }

    /// Resolves when the stage has room for a chunk (it borrows nothing,
    /// so the engine can wait for room and for a batch at once).
    pub fn room(&self) -> impl Future<Output = Option<OwnedPermit<Chunk>>> + use<> {
        let chunks = self.chunks.clone();
        async move { chunks.reserve_owned().await.ok() }
    }

    /// Hands the pending records over into the room [`DecodeStage::room`]
    /// found.
    pub fn hand_over(&mut self, room: Option<OwnedPermit<Chunk>>) {
        let Some(permit) = room else {
            self.stopped = true;
            return;
        };
        let records = std::mem::replace(&mut self.pending, Vec::with_capacity(CHUNK));
        permit.send(Chunk {
            records,
            cut: self.cut,
        });
        if std::mem::take(&mut self.cut) {
            self.closed += 1;
        }
    }

    /// The next decoded micro-batch; never resolves while none is due.
    pub async fn next_batch(&mut self) -> Result<MicroBatch, ArrowError> {
        if self.stopped {
            return Err(ArrowError::ExternalError(
                "the decoding thread stopped".into(),
            ));
        }
        if self.closed == 0 {
            return std::future::pending().await;
        }
        match self.batches.recv().await {
            Some(batch) => {
                self.closed -= 1;
                batch
            }
            None => Err(ArrowError::ExternalError(
                "the decoding thread stopped".into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::Timestamp;
    use rdkafka::message::OwnedMessage;

    use super::*;
    use crate::config::Config;
    use crate::schema::Source;

    fn transaction(partition: i32, offset: i64) -> OwnedMessage {
        let payload = format!(
            r#"{{"event_id":"e{offset}","customer_id":"c","ts":1,"amount":3,"category":"x"}}"#
        );
        OwnedMessage::new(
            Some(payload.into_bytes()),
            None,
            "cx.transactions".to_owned(),
            Timestamp::NotAvailable,
            partition,
            offset,
            None,
        )
    }

    #[tokio::test]
    async fn micro_batches_end_where_the_engine_cuts_them_across_chunks() {
        let mut stage =
            DecodeStage::start(Config::load(None).expect("config").topics).expect("thread");
        // 2,500 records: three chunks, then a cut; then 2 more and a cut.
        for offset in 0..2_500 {
            stage.push(&transaction(offset as i32 % 2, offset));
            if stage.has_chunk() {
                let room = stage.room().await;
                stage.hand_over(room);
            }
        }
        assert_eq!(stage.open_len(), 2_500);
        stage.cut();
        assert_eq!(stage.open_len(), 0);
        while stage.has_chunk() {
            let room = stage.room().await;
            stage.hand_over(room);
        }
        stage.push(&transaction(0, 2_500));
        stage.push(&transaction(1, 2_501));
        stage.cut();
        let room = stage.room().await;
        stage.hand_over(room);
        assert!(stage.busy());

        let first = stage.next_batch().await.expect("first batch");
        let source = Source::named("transactions").expect("declared");
        let rows: usize = first.events[&source]
            .iter()
            .map(|b| b.rows.num_rows())
            .sum();
        assert_eq!(rows, 2_500);
        assert_eq!(
            first.next_offsets[&("cx.transactions".to_owned(), 0)],
            2_499
        );
        assert_eq!(
            first.next_offsets[&("cx.transactions".to_owned(), 1)],
            2_500
        );
        let second = stage.next_batch().await.expect("second batch");
        assert_eq!(second.consumed["cx.transactions"], 2);
        assert_eq!(
            second.next_offsets[&("cx.transactions".to_owned(), 1)],
            2_502
        );
        assert!(!stage.busy());
    }
}
