//! Dead letters: rejected records, republished with headers saying where
//! they came from and why they were rejected; and the failures of jobs
//! (a window that could not fire, a row too large for its topic), published
//! with headers naming the job.
//!
//! A dead letter always fits its topic: the reason is cut to
//! [`MAX_DETAIL_BYTES`], a payload too large for the topic is cut (headers
//! give its original size), and at worst only the metadata is kept.

use super::OutRecord;
use super::format_timestamp_millis;
use crate::decode::Rejection;

/// Header names on dead-letter records.
pub mod headers {
    /// Source topic.
    pub const TOPIC: &str = "cxpulse.source.topic";
    /// Source partition (decimal).
    pub const PARTITION: &str = "cxpulse.source.partition";
    /// Source offset (decimal).
    pub const OFFSET: &str = "cxpulse.source.offset";
    /// Reason code: `invalid_json`, `missing_field`, … (the metric label).
    pub const REASON: &str = "cxpulse.reason";
    /// Human-readable reason naming the field.
    pub const DETAIL: &str = "cxpulse.reason.detail";
    /// The job that rejected the record or failed (`late`, `job_error`,
    /// `too_large` for a row).
    pub const JOB: &str = "cxpulse.job";
    /// The topic a job's row was meant for.
    pub const OUTPUT_TOPIC: &str = "cxpulse.output.topic";
    /// Start of the window a failure concerns (RFC 3339).
    pub const WINDOW_START: &str = "cxpulse.window.start";
    /// End of the window a failure concerns (RFC 3339).
    pub const WINDOW_END: &str = "cxpulse.window.end";
    /// Size of the original record (key, value and headers) when the dead
    /// letter holds only part of it.
    pub const ORIGINAL_BYTES: &str = "cxpulse.original.bytes";
    /// `payload` when the value was cut to fit, `metadata` when only the
    /// metadata was kept (no key, value or original headers).
    pub const TRUNCATED: &str = "cxpulse.truncated";
}

/// Most bytes of a reason's detail kept in its header.
pub const MAX_DETAIL_BYTES: usize = 1_024;

/// Room left in a record for what the size of its parts does not count
/// (record framing, varints), per header and in all.
const PER_HEADER_OVERHEAD: usize = 8;
const RECORD_OVERHEAD: usize = 128;

/// A rejected record and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    /// Source topic.
    pub topic: String,
    /// Source partition.
    pub partition: i32,
    /// Source offset.
    pub offset: i64,
    /// Original key.
    pub key: Option<Vec<u8>>,
    /// Original value.
    pub payload: Option<Vec<u8>>,
    /// Original headers.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Why it was rejected.
    pub rejection: Rejection,
    /// The job that rejected it, for rejections made by a job.
    pub job: Option<String>,
    /// The record's size when only part of it was kept at intake (it was
    /// over `engine.max_record_bytes`).
    pub original_bytes: Option<usize>,
    /// The window the rejection concerns, if any (start, end ms).
    pub window: Option<(i64, i64)>,
}

impl DeadLetter {
    /// The record to publish on `deadletter_topic`, at most `limit` bytes:
    /// original key, value and headers, followed by the cxpulse headers.
    pub fn into_record(self, deadletter_topic: &str, limit: usize) -> OutRecord {
        let mut meta = vec![
            (headers::TOPIC, self.topic.into_bytes()),
            (headers::PARTITION, self.partition.to_string().into_bytes()),
            (headers::OFFSET, self.offset.to_string().into_bytes()),
        ];
        meta.extend(reason_headers(&self.rejection));
        if let Some(job) = self.job {
            meta.push((headers::JOB, job.into_bytes()));
        }
        meta.extend(window_headers(self.window));
        fit(
            deadletter_topic,
            limit,
            Parts {
                key: self.key,
                payload: self.payload,
                headers: self.headers,
                original_bytes: self.original_bytes,
            },
            meta,
        )
    }
}

/// A job's failure that holds no input record: a window whose firing
/// failed, or a result row its output topic cannot take.
#[derive(Debug, Clone, PartialEq)]
pub struct JobFailure {
    /// The job.
    pub job: String,
    /// Where its rows go.
    pub output_topic: String,
    /// What failed (`job_error`, `too_large`).
    pub rejection: Rejection,
    /// The window concerned, if any (start, end ms).
    pub window: Option<(i64, i64)>,
    /// The row's Kafka key, for a row that could not be published.
    pub key: Option<Vec<u8>>,
    /// The row, for a row that could not be published.
    pub payload: Option<Vec<u8>>,
}

impl JobFailure {
    /// The record to publish on `deadletter_topic`, at most `limit` bytes.
    pub fn into_record(self, deadletter_topic: &str, limit: usize) -> OutRecord {
        let mut meta = vec![(headers::JOB, self.job.into_bytes())];
        meta.push((headers::OUTPUT_TOPIC, self.output_topic.into_bytes()));
        meta.extend(reason_headers(&self.rejection));
        meta.extend(window_headers(self.window));
        fit(
            deadletter_topic,
            limit,
            Parts {
                key: self.key,
                payload: self.payload,
                headers: Vec::new(),
                original_bytes: None,
            },
            meta,
        )
    }
}

/// The reason code and its detail, cut to [`MAX_DETAIL_BYTES`].
fn reason_headers(rejection: &Rejection) -> [(&'static str, Vec<u8>); 2] {
    let detail = &rejection.reason;
    let mut cut = detail.len().min(MAX_DETAIL_BYTES);
    while !detail.is_char_boundary(cut) {
        cut -= 1;
    }
    let detail = if cut < detail.len() {
        format!("{}…", &detail[..cut])
    } else {
        detail.clone()
    };
    [
        (headers::REASON, rejection.kind.as_str().as_bytes().to_vec()),
        (headers::DETAIL, detail.into_bytes()),
    ]
}

fn window_headers(window: Option<(i64, i64)>) -> Vec<(&'static str, Vec<u8>)> {
    window
        .map(|(start, end)| {
            vec![
                (
                    headers::WINDOW_START,
                    format_timestamp_millis(start).into_bytes(),
                ),
                (
                    headers::WINDOW_END,
                    format_timestamp_millis(end).into_bytes(),
                ),
            ]
        })
        .unwrap_or_default()
}

/// What a dead letter carries of the original record.
struct Parts {
    key: Option<Vec<u8>>,
    payload: Option<Vec<u8>>,
    headers: Vec<(String, Vec<u8>)>,
    original_bytes: Option<usize>,
}

fn header_bytes<'a>(headers: impl Iterator<Item = (&'a str, &'a [u8])>) -> usize {
    headers
        .map(|(k, v)| k.len() + v.len() + PER_HEADER_OVERHEAD)
        .sum()
}

/// A record of the original parts and the cxpulse headers (`meta`) that
/// fits in `limit` bytes: whole if it can, else with its payload cut, else
/// the metadata alone.
fn fit(topic: &str, limit: usize, parts: Parts, meta: Vec<(&'static str, Vec<u8>)>) -> OutRecord {
    let Parts {
        key,
        payload,
        headers,
        original_bytes,
    } = parts;
    let meta_bytes = header_bytes(meta.iter().map(|(k, v)| (*k, v.as_slice())));
    let original_header_bytes =
        header_bytes(headers.iter().map(|(k, v)| (k.as_str(), v.as_slice())));
    let key_bytes = key.as_ref().map_or(0, Vec::len);
    let payload_bytes = payload.as_ref().map_or(0, Vec::len);
    let budget = limit.saturating_sub(RECORD_OVERHEAD);
    // The two headers a cut record adds, with room for their values.
    let cut_headers = header_bytes(
        [
            (headers::ORIGINAL_BYTES, &[0u8; 20][..]),
            (headers::TRUNCATED, &[0u8; 8][..]),
        ]
        .into_iter(),
    );
    let whole = meta_bytes + original_header_bytes + key_bytes + payload_bytes;
    let original_size = original_bytes.unwrap_or_else(|| {
        key_bytes
            + payload_bytes
            + headers
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>()
    });
    let mut record = OutRecord {
        topic: topic.to_owned(),
        partition: None,
        key: None,
        payload: None,
        headers: Vec::new(),
        job: None,
    };
    let with_meta = |record: &mut OutRecord| {
        record
            .headers
            .extend(meta.into_iter().map(|(k, v)| (k.to_owned(), v)));
    };
    if whole <= budget && original_bytes.is_none() {
        record.key = key;
        record.payload = payload;
        record.headers = headers;
        with_meta(&mut record);
        return record;
    }
    let kept = meta_bytes + cut_headers + original_header_bytes + key_bytes;
    let truncated = if kept < budget {
        let room = budget - kept;
        record.key = key;
        record.headers = headers;
        record.payload = payload.map(|mut p| {
            p.truncate(room.min(p.len()));
            p
        });
        "payload"
    } else {
        "metadata"
    };
    with_meta(&mut record);
    record.headers.push((
        headers::ORIGINAL_BYTES.to_owned(),
        original_size.to_string().into_bytes(),
    ));
    record
        .headers
        .push((headers::TRUNCATED.to_owned(), truncated.as_bytes().to_vec()));
    record
}

/// The size of `record` as the limits count it: key, value and headers.
pub fn record_bytes(record: &OutRecord) -> usize {
    record.key.as_ref().map_or(0, Vec::len)
        + record.payload.as_ref().map_or(0, Vec::len)
        + header_bytes(
            record
                .headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_slice())),
        )
        + RECORD_OVERHEAD
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::RejectKind;

    fn letter(payload: Vec<u8>, reason: String) -> DeadLetter {
        DeadLetter {
            topic: "cx.feedback".into(),
            partition: 2,
            offset: 17,
            key: Some(b"k".to_vec()),
            payload: Some(payload),
            headers: vec![("trace".into(), b"t1".to_vec())],
            rejection: Rejection::new(RejectKind::InvalidJson, reason),
            job: None,
            original_bytes: None,
            window: None,
        }
    }

    fn header<'a>(record: &'a OutRecord, name: &str) -> Option<&'a str> {
        record
            .headers
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }

    #[test]
    fn keeps_the_record_and_appends_provenance_headers() {
        let record = letter(b"{bad".to_vec(), "payload is not valid JSON".into())
            .into_record("cx.deadletter", 1_000_000);
        assert_eq!(record.topic, "cx.deadletter");
        assert_eq!(record.key.as_deref(), Some(&b"k"[..]));
        assert_eq!(record.payload.as_deref(), Some(&b"{bad"[..]));
        let h: Vec<(&str, &[u8])> = record
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_slice()))
            .collect();
        assert_eq!(
            h,
            vec![
                ("trace", &b"t1"[..]),
                (headers::TOPIC, b"cx.feedback"),
                (headers::PARTITION, b"2"),
                (headers::OFFSET, b"17"),
                (headers::REASON, b"invalid_json"),
                (headers::DETAIL, b"payload is not valid JSON"),
            ]
        );
    }

    #[test]
    fn a_dead_letter_over_its_topic_limit_is_cut_to_fit() {
        let payload = vec![b'x'; 700_000];
        let reason = "y".repeat(690_000);
        let record = letter(payload, reason).into_record("cx.deadletter", 100_000);
        assert!(
            record_bytes(&record) <= 100_000,
            "{}",
            record_bytes(&record)
        );
        let detail = header(&record, headers::DETAIL).expect("detail");
        assert_eq!(detail.len(), MAX_DETAIL_BYTES + "…".len());
        assert_eq!(header(&record, headers::TRUNCATED), Some("payload"));
        assert_eq!(
            header(&record, headers::ORIGINAL_BYTES),
            Some((700_000 + 1 + "trace".len() + 2).to_string().as_str())
        );
        let kept = record.payload.as_ref().map_or(0, Vec::len);
        assert!(kept > 90_000 && kept < 100_000, "{kept}");
        assert_eq!(record.key.as_deref(), Some(&b"k"[..]));
        assert_eq!(header(&record, headers::OFFSET), Some("17"));
    }

    #[test]
    fn at_worst_only_the_metadata_is_kept() {
        let mut big = letter(vec![b'x'; 10], "bad".into());
        big.key = Some(vec![b'k'; 5_000]);
        let record = big.into_record("cx.deadletter", 4_000);
        assert!(record_bytes(&record) <= 4_000);
        assert_eq!(record.key, None);
        assert_eq!(record.payload, None);
        assert_eq!(header(&record, headers::TRUNCATED), Some("metadata"));
        assert_eq!(header(&record, headers::REASON), Some("invalid_json"));
        assert_eq!(header(&record, headers::TOPIC), Some("cx.feedback"));
        assert_eq!(header(&record, "trace"), None);
    }

    #[test]
    fn a_record_cut_at_intake_says_its_original_size() {
        let mut cut = letter(vec![b'x'; 100], "too large".into());
        cut.original_bytes = Some(2_000_000);
        let record = cut.into_record("cx.deadletter", 1_000_000);
        assert_eq!(header(&record, headers::ORIGINAL_BYTES), Some("2000000"));
        assert_eq!(header(&record, headers::TRUNCATED), Some("payload"));
        assert_eq!(record.payload.as_ref().map(Vec::len), Some(100));
    }

    #[test]
    fn a_job_failure_names_the_job_and_the_window() {
        let failure = JobFailure {
            job: "revenue".into(),
            output_topic: "cx.metrics.revenue".into(),
            rejection: Rejection::new(RejectKind::JobError, "Divide by zero error"),
            window: Some((0, 3_600_000)),
            key: None,
            payload: None,
        };
        let record = failure.into_record("cx.deadletter", 1_000_000);
        assert_eq!(header(&record, headers::JOB), Some("revenue"));
        assert_eq!(
            header(&record, headers::OUTPUT_TOPIC),
            Some("cx.metrics.revenue")
        );
        assert_eq!(header(&record, headers::REASON), Some("job_error"));
        assert_eq!(
            header(&record, headers::WINDOW_START),
            Some("1970-01-01T00:00:00.000Z")
        );
        assert_eq!(
            header(&record, headers::WINDOW_END),
            Some("1970-01-01T01:00:00.000Z")
        );
        assert_eq!(header(&record, headers::TOPIC), None);
    }
}
