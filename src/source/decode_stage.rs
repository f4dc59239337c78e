//! Decoding on threads of their own, pipelined with the engine: the engine
//! copies consumed records out of the consumer and hands them over in
//! chunks; the stage decodes them into micro-batches and hands those back.
//! Each partition's records go to one of several decoding threads (one per
//! core, at most [`MAX_WORKERS`]), so partitions decode in parallel and each
//! partition's records stay in order. Every channel is bounded, so a slow
//! engine stops the stage, and a busy stage stops the engine from reading
//! further (backpressure, no unbounded queue). The engine decides where a
//! micro-batch ends ([`DecodeStage::cut`]); each thread then hands back its
//! part, and the parts are put together.

use arrow::error::ArrowError;
use rdkafka::message::Message;
use tokio::sync::mpsc::{self, OwnedPermit};

use super::Admission;
use super::batcher::{Batcher, Consumed, MicroBatch};
use crate::config::TopicsConfig;
use crate::schema::Sources;

/// Records per chunk handed to a thread.
const CHUNK: usize = 1_000;
/// Chunks waiting for each thread, at most.
const CHUNKS_QUEUED: usize = 8;
/// Decoded parts waiting for the engine, per thread, at most.
const BATCHES_QUEUED: usize = 2;
/// Most decoding threads.
pub const MAX_WORKERS: usize = 4;

/// Records for a thread; `cut` closes the micro-batch after them.
pub struct Chunk {
    records: Vec<Consumed>,
    cut: bool,
}

/// The engine's end of one decoding thread.
struct Worker {
    chunks: mpsc::Sender<Chunk>,
    batches: mpsc::Receiver<Result<MicroBatch, ArrowError>>,
    /// Records not handed over yet.
    pending: Vec<Consumed>,
    /// Whether the pending records close the micro-batch.
    cut: bool,
    /// Parts of closed micro-batches not yet received back.
    owed: usize,
    /// This thread's part of the micro-batch being put together.
    part: Option<Result<MicroBatch, ArrowError>>,
}

/// Where the stage has room for a chunk: a thread and its permit.
pub type Room = (usize, Option<OwnedPermit<Chunk>>);

/// The engine's end of the decoding threads.
pub struct DecodeStage {
    topics: TopicsConfig,
    sources: Sources,
    max_record_bytes: usize,
    workers: Vec<Worker>,
    /// Records of the open micro-batch (handed over or pending).
    open: usize,
    /// Their bytes (key, value and headers, as consumed).
    open_bytes: usize,
    /// A decoding thread is gone (it panicked).
    stopped: bool,
}

impl DecodeStage {
    /// Starts `threads` decoding threads (at least one, at most
    /// [`MAX_WORKERS`]) for the configured source topics, making the
    /// `admission` checks. They end when the stage is dropped.
    pub fn start(
        topics: TopicsConfig,
        sources: Sources,
        admission: Admission,
        threads: usize,
    ) -> std::io::Result<Self> {
        let max_record_bytes = admission.max_record_bytes();
        let workers = (0..threads.clamp(1, MAX_WORKERS))
            .map(|index| {
                let (chunks, mut chunks_in) = mpsc::channel::<Chunk>(CHUNKS_QUEUED);
                let (batches_out, batches) = mpsc::channel(BATCHES_QUEUED);
                let mut batcher = Batcher::new(topics.clone(), sources, admission.clone());
                std::thread::Builder::new()
                    .name(format!("cxpulse-decode-{index}"))
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
                Ok(Worker {
                    chunks,
                    batches,
                    pending: Vec::with_capacity(CHUNK),
                    cut: false,
                    owed: 0,
                    part: None,
                })
            })
            .collect::<std::io::Result<_>>()?;
        Ok(Self {
            topics,
            sources,
            max_record_bytes,
            workers,
            open: 0,
            open_bytes: 0,
            stopped: false,
        })
    }

    /// Copies one consumed message for decoding, by the thread of its
    /// partition.
    pub fn push<M: Message>(&mut self, message: &M) {
        if let Some(consumed) =
            Consumed::of(message, &self.topics, self.sources, self.max_record_bytes)
        {
            let n = self.workers.len() as i32;
            self.open_bytes += consumed.bytes();
            let worker = &mut self.workers[consumed.partition.rem_euclid(n) as usize];
            worker.pending.push(consumed);
            self.open += 1;
        }
    }

    /// Records in the open micro-batch.
    pub fn open_len(&self) -> usize {
        self.open
    }

    /// Bytes of the records in the open micro-batch, as consumed.
    pub fn open_bytes(&self) -> usize {
        self.open_bytes
    }

    /// Closes the open micro-batch (if it has records): every thread hands
    /// its part back once it has decoded it.
    pub fn cut(&mut self) {
        if self.open > 0 {
            for worker in &mut self.workers {
                worker.cut = true;
            }
            self.open = 0;
            self.open_bytes = 0;
        }
    }

    /// Whether records wait to be handed over (a full chunk, or the end of
    /// a micro-batch): the engine reads no further until they are.
    pub fn has_chunk(&self) -> bool {
        !self.stopped && self.workers.iter().any(Worker::has_chunk)
    }

    /// Whether micro-batches are still to come back (closed, or waiting).
    pub fn busy(&self) -> bool {
        self.stopped || self.workers.iter().any(|w| w.owed > 0) || self.has_chunk()
    }

    /// Resolves when a thread with records waiting has room for a chunk
    /// (it borrows nothing, so the engine can wait for room and for a batch
    /// at once).
    pub fn room(&self) -> impl Future<Output = Room> + use<> {
        let waiting = self
            .workers
            .iter()
            .position(Worker::has_chunk)
            .map(|index| (index, self.workers[index].chunks.clone()));
        async move {
            match waiting {
                Some((index, chunks)) => (index, chunks.reserve_owned().await.ok()),
                None => std::future::pending().await,
            }
        }
    }

    /// Hands a thread's pending records over into the room
    /// [`DecodeStage::room`] found.
    pub fn hand_over(&mut self, (index, room): Room) {
        let Some(permit) = room else {
            self.stopped = true;
            return;
        };
        let worker = &mut self.workers[index];
        let records = std::mem::replace(&mut worker.pending, Vec::with_capacity(CHUNK));
        permit.send(Chunk {
            records,
            cut: worker.cut,
        });
        if std::mem::take(&mut worker.cut) {
            worker.owed += 1;
        }
    }

    /// The next decoded micro-batch; never resolves while one is not due
    /// from every thread. Cancel-safe: parts received before it is
    /// cancelled are kept for the next call.
    pub async fn next_batch(&mut self) -> Result<MicroBatch, ArrowError> {
        if self.stopped {
            return Err(stopped());
        }
        if self.workers.iter().any(|w| w.owed == 0) {
            return std::future::pending().await;
        }
        for worker in &mut self.workers {
            if worker.part.is_none() {
                worker.part = Some(
                    worker
                        .batches
                        .recv()
                        .await
                        .unwrap_or_else(|| Err(stopped())),
                );
            }
        }
        let mut whole = MicroBatch::default();
        for worker in &mut self.workers {
            worker.owed -= 1;
            whole.absorb(worker.part.take().unwrap_or_else(|| Err(stopped()))?);
        }
        Ok(whole)
    }
}

impl Worker {
    fn has_chunk(&self) -> bool {
        self.cut || self.pending.len() >= CHUNK
    }
}

fn stopped() -> ArrowError {
    ArrowError::ExternalError("a decoding thread stopped".into())
}

#[cfg(test)]
mod tests {
    use rdkafka::Timestamp;
    use rdkafka::message::OwnedMessage;

    use super::*;
    use crate::config::Config;

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
        // Two threads: partition 0 decodes on one, partition 1 on the other.
        let config = Config::load(None).expect("config");
        let mut stage = DecodeStage::start(
            config.topics.clone(),
            config.declared,
            Admission::new(&config),
            2,
        )
        .expect("threads");
        // 2,500 records: three chunks, then a cut; then 2 more and a cut.
        for offset in 0..2_500 {
            stage.push(&transaction(offset as i32 % 2, offset));
            if stage.has_chunk() {
                let room = stage.room().await;
                stage.hand_over(room);
            }
        }
        assert_eq!(stage.open_len(), 2_500);
        let one = transaction(0, 0).payload().map_or(0, <[u8]>::len);
        assert!(
            stage.open_bytes() >= 2_500 * one && stage.open_bytes() < 2_600 * one,
            "the open micro-batch's bytes: {}",
            stage.open_bytes()
        );
        stage.cut();
        assert_eq!((stage.open_len(), stage.open_bytes()), (0, 0));
        while stage.has_chunk() {
            let room = stage.room().await;
            stage.hand_over(room);
        }
        stage.push(&transaction(0, 2_500));
        stage.push(&transaction(1, 2_501));
        stage.cut();
        // Both threads hand their part of each micro-batch back.
        while stage.has_chunk() {
            let room = stage.room().await;
            stage.hand_over(room);
        }
        assert!(stage.busy());

        let first = stage.next_batch().await.expect("first batch");
        let source = crate::config::default_source("transactions");
        let rows: usize = first.events[&source]
            .iter()
            .map(|b| b.rows.num_rows())
            .sum();
        assert_eq!(rows, 2_500);
        let partitions: Vec<i32> = first.events[&source].iter().map(|b| b.partition).collect();
        assert_eq!(partitions, [0, 1], "put together in partition order");
        let offsets: Vec<i64> = first.events[&source]
            .iter()
            .flat_map(|b| b.raw.iter().map(|r| r.offset))
            .collect();
        let mut expected: Vec<i64> = (0..2_500).filter(|o| o % 2 == 0).collect();
        expected.extend((0..2_500).filter(|o| o % 2 == 1));
        assert_eq!(offsets, expected, "each partition's records in order");
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
