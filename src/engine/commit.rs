//! The engine's side of an epoch: outputs handed to the producer as they
//! are made, the epoch's state changes written to the changelog, and the
//! commit of one Kafka transaction with the consumer offsets (the epoch's
//! own bookkeeping is [`super::epoch::Epoch`]).

use std::time::Instant;

use rdkafka::{Offset, TopicPartitionList};
use tracing::Instrument;

use super::changelog::Scope;
use super::{Engine, EngineError, JobOutput};
use crate::decode::RejectKind;
use crate::decode::Rejection;
use crate::sink::transaction::TxnFailure;
use crate::sink::{JobFailure, OutRecord, deadletter_headers};

/// A dead letter cut to its cxpulse headers: no key, value or original
/// headers.
fn metadata_only(mut record: OutRecord) -> OutRecord {
    // A letter already cut says how large the original record was.
    let original = record
        .headers
        .iter()
        .find(|(name, _)| name == deadletter_headers::ORIGINAL_BYTES)
        .and_then(|(_, v)| std::str::from_utf8(v).ok()?.parse::<usize>().ok())
        .unwrap_or_else(|| crate::sink::record_bytes(&record));
    record.key = None;
    record.payload = None;
    record.headers.retain(|(name, _)| {
        name.starts_with("cxpulse.")
            && name != deadletter_headers::ORIGINAL_BYTES
            && name != deadletter_headers::TRUNCATED
    });
    record.headers.push((
        deadletter_headers::ORIGINAL_BYTES.to_owned(),
        original.to_string().into_bytes(),
    ));
    record.headers.push((
        deadletter_headers::TRUNCATED.to_owned(),
        b"metadata".to_vec(),
    ));
    record
}

impl Engine {
    /// Sends job rows, dead letters and job failures in the open
    /// transaction (opening one if needed); they are counted when the
    /// epoch commits.
    pub(super) async fn publish(&mut self, output: JobOutput) -> Result<(), EngineError> {
        let JobOutput {
            mut records,
            dead_letters,
            failures,
            rows,
            early: _,
        } = output;
        for letter in &dead_letters {
            self.epoch
                .count_invalid(&letter.topic, letter.rejection.kind);
        }
        for (job, n) in rows {
            self.epoch.count_rows(job, n);
        }
        let topic = self.config.topics.deadletter.clone();
        let limit = self.sink.limits().record_bytes(&topic);
        records.extend(
            dead_letters
                .into_iter()
                .map(|d| d.into_record(&topic, limit)),
        );
        records.extend(failures.into_iter().map(|f| f.into_record(&topic, limit)));
        self.send(records).await
    }

    /// Hands records to the producer in the open transaction (opening one
    /// if needed); their acknowledgements are awaited when the epoch
    /// commits, so the engine reads on meanwhile. A row its topic cannot
    /// take becomes a dead letter naming its job; a dead letter the
    /// dead-letter topic cannot take keeps only its metadata.
    async fn send(&mut self, records: Vec<OutRecord>) -> Result<(), EngineError> {
        if records.is_empty() {
            return Ok(());
        }
        self.open_transaction().await?;
        let refused = self.sink.enqueue(records, self.epoch.in_flight()).await?;
        if refused.is_empty() {
            return Ok(());
        }
        let letters = self.refused_as_dead_letters(refused)?;
        let still = self.sink.enqueue(letters, self.epoch.in_flight()).await?;
        for lost in still {
            // Not even the metadata fits the dead-letter topic (its
            // max.message.bytes is tiny): said, counted, and dropped.
            tracing::error!(topic = %lost.record.topic, reason = %lost.reason, "a dead letter cannot be published, even cut to its metadata");
        }
        Ok(())
    }

    /// The dead letters of records the sink refused: a job's row becomes a
    /// `too_large` failure of its job (no longer counted as published), a
    /// dead letter keeps only its metadata. A refused state record is an
    /// error: state cannot be dropped.
    fn refused_as_dead_letters(
        &mut self,
        refused: Vec<crate::sink::Refused>,
    ) -> Result<Vec<OutRecord>, EngineError> {
        let topic = self.config.topics.deadletter.clone();
        let limit = self.sink.limits().record_bytes(&topic);
        let mut letters = Vec::with_capacity(refused.len());
        for crate::sink::Refused { record, reason } in refused {
            if let Some(job) = &record.job {
                tracing::error!(job = %job, topic = %record.topic, %reason, "a result row cannot be published; it goes to the dead-letter topic");
                self.metrics.job_errors.with_label_values(&[job]).inc();
                self.epoch.uncount_row(job);
                let failure = JobFailure {
                    job: job.to_string(),
                    output_topic: record.topic,
                    rejection: Rejection::new(
                        RejectKind::TooLarge,
                        format!("a result row of job {job} cannot be published: {reason}"),
                    ),
                    window: None,
                    key: record.key,
                    payload: record.payload,
                };
                letters.push(failure.into_record(&topic, limit));
            } else if record.topic == topic {
                letters.push(metadata_only(record));
            } else {
                return Err(EngineError::Sink(Box::new(crate::sink::SinkError {
                    count: 1,
                    topic: record.topic,
                    cause: rdkafka::error::KafkaError::MessageProduction(
                        rdkafka::types::RDKafkaErrorCode::MessageSizeTooLarge,
                    ),
                    learned: Default::default(),
                })));
            }
        }
        Ok(letters)
    }

    /// Sends records in the open transaction and waits until they are
    /// delivered; returns where each one landed.
    async fn send_delivered(
        &mut self,
        records: Vec<OutRecord>,
    ) -> Result<Vec<(i32, i64)>, EngineError> {
        self.open_transaction().await?;
        Ok(self.sink.send_all(records).await?)
    }

    async fn open_transaction(&mut self) -> Result<(), EngineError> {
        if !self.epoch.is_open() {
            self.sink.begin().await?;
            self.epoch.opened();
        }
        Ok(())
    }

    /// Commits the epoch: its state changes go to the changelog (or, when
    /// one is due, a checkpoint of all state), then its consumer offsets and
    /// everything sent join one transaction, which commits. An epoch that
    /// consumed, produced and changed nothing commits nothing.
    pub(super) async fn commit(&mut self) -> Result<(), EngineError> {
        let span = tracing::info_span!(
            "epoch",
            epoch = self.epoch.number(),
            records = tracing::field::Empty,
            bytes = tracing::field::Empty,
        );
        self.commit_epoch().instrument(span).await
    }

    async fn commit_epoch(&mut self) -> Result<(), EngineError> {
        let started = Instant::now();
        // After the epoch's partial aggregates, in each repartition
        // partition: how far this instance's partitions have got.
        let marks = self.shuffle_marks()?;
        self.send(marks).await?;
        let mut offsets = TopicPartitionList::new();
        if self.changelog.checkpoint_due() {
            let markers = self.changelog.begin_checkpoint();
            let positions = self.send_delivered(markers).await?;
            let topic = self.changelog.topic().to_owned();
            for (partition, offset) in positions {
                offsets
                    .add_partition_offset(&topic, partition, Offset::Offset(offset))
                    .map_err(EngineError::kafka("recording a checkpoint offset"))?;
            }
            let state = self.state_records(Scope::Everything)?;
            tracing::info!(
                records = state.len(),
                bytes = self.changelog.live_bytes(),
                "writing a changelog checkpoint"
            );
            self.send_state(state).await?;
            self.metrics.checkpoints.inc();
        } else {
            let state = self.state_records(Scope::Changes)?;
            self.send_state(state).await?;
        }
        if self.epoch.is_empty() {
            return Ok(());
        }
        self.open_transaction().await?;
        let in_flight = self.epoch.take_in_flight();
        let span = tracing::Span::current();
        span.record("records", in_flight.records());
        span.record("bytes", in_flight.bytes());
        self.sink.delivered(in_flight).await?;
        for ((topic, partition), next) in self.epoch.offsets() {
            offsets
                .add_partition_offset(topic, *partition, Offset::Offset(*next))
                .map_err(EngineError::kafka("recording an offset to commit"))?;
        }
        tracing::trace!(offsets = ?self.epoch.offsets(), times = ?self.event_time.partition_times(), "committing");
        let group = self
            .inputs
            .group_metadata()
            .ok_or(EngineError::Transaction(TxnFailure::Abortable(
                rdkafka::error::KafkaError::Canceled,
            )))?;
        if let Err(failure) = self.sink.commit(offsets, group).await {
            self.metrics
                .transactions
                .with_label_values(&["aborted"])
                .inc();
            if !failure.is_fatal() && !self.inputs.lost() {
                // The next instance's init would abort it too; say so now.
                let _ = self.sink.abort().await;
            }
            return Err(failure.into());
        }
        let epoch = self.epoch.finish();
        self.metrics
            .transactions
            .with_label_values(&["committed"])
            .inc();
        for ((topic, kind), n) in epoch.invalid {
            self.metrics
                .records_invalid
                .with_label_values(&[topic.as_str(), kind.as_str()])
                .inc_by(n);
        }
        let now = chrono::Utc::now().timestamp_millis() as f64 / 1000.0;
        for (job, n) in epoch.rows {
            self.metrics
                .output_records
                .with_label_values(&[job.as_str()])
                .inc_by(n);
            if n > 0 {
                self.metrics
                    .last_output
                    .with_label_values(&[job.as_str()])
                    .set(now);
            }
        }
        self.metrics
            .commit_duration
            .observe(started.elapsed().as_secs_f64());
        Ok(())
    }

    async fn send_state(&mut self, records: Vec<OutRecord>) -> Result<(), EngineError> {
        if records.is_empty() {
            return Ok(());
        }
        let bytes: usize = records
            .iter()
            .map(|r| r.key.as_ref().map_or(0, Vec::len) + r.payload.as_ref().map_or(0, Vec::len))
            .sum();
        let n = records.len() as u64;
        self.send(records).await?;
        self.metrics.changelog_records.inc_by(n);
        self.metrics.changelog_bytes.inc_by(bytes as u64);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_letter_cut_to_its_metadata_keeps_the_size_of_the_original_record() {
        let letter = |headers: Vec<(&str, &[u8])>| OutRecord {
            topic: "cx.deadletter".into(),
            partition: None,
            key: Some(b"key".to_vec()),
            payload: Some(vec![b'x'; 100]),
            headers: headers
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_vec()))
                .collect(),
            job: None,
        };
        let header = |record: &OutRecord, name: &str| {
            record
                .headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        };
        // Never cut: its size as the sink's limits count it.
        let whole = metadata_only(letter(vec![("cxpulse.reason", b"large")]));
        assert_eq!(whole.key, None);
        assert_eq!(whole.payload, None);
        assert_eq!(
            header(&whole, "cxpulse.original.bytes").as_deref(),
            Some(
                crate::sink::record_bytes(&letter(vec![("cxpulse.reason", b"large")]))
                    .to_string()
                    .as_str()
            )
        );
        // Cut before: the size it gave stays.
        let cut = metadata_only(letter(vec![
            ("cxpulse.reason", b"large"),
            ("trace", b"t"),
            ("cxpulse.original.bytes", b"2000000"),
            ("cxpulse.truncated", b"payload"),
        ]));
        assert_eq!(
            cut.headers,
            [
                ("cxpulse.reason".to_owned(), b"large".to_vec()),
                ("cxpulse.original.bytes".to_owned(), b"2000000".to_vec()),
                ("cxpulse.truncated".to_owned(), b"metadata".to_vec()),
            ]
        );
    }
}
