//! Dead letters: rejected records, republished unchanged with headers saying
//! where they came from and why they were rejected.

use super::OutRecord;
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
    /// The job that rejected the record (`late`, `job_error`).
    pub const JOB: &str = "cxpulse.job";
}

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
}

impl DeadLetter {
    /// The record to publish on `deadletter_topic`: original key, value and
    /// headers, followed by the cxpulse headers.
    pub fn into_record(self, deadletter_topic: &str) -> OutRecord {
        let mut headers = self.headers;
        headers.extend([
            (headers::TOPIC.to_owned(), self.topic.into_bytes()),
            (
                headers::PARTITION.to_owned(),
                self.partition.to_string().into_bytes(),
            ),
            (
                headers::OFFSET.to_owned(),
                self.offset.to_string().into_bytes(),
            ),
            (
                headers::REASON.to_owned(),
                self.rejection.kind.as_str().as_bytes().to_vec(),
            ),
            (
                headers::DETAIL.to_owned(),
                self.rejection.reason.into_bytes(),
            ),
        ]);
        if let Some(job) = self.job {
            headers.push((headers::JOB.to_owned(), job.into_bytes()));
        }
        OutRecord {
            topic: deadletter_topic.to_owned(),
            partition: None,
            key: self.key,
            payload: self.payload,
            headers,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::RejectKind;

    #[test]
    fn keeps_the_record_and_appends_provenance_headers() {
        let letter = DeadLetter {
            topic: "cx.feedback".into(),
            partition: 2,
            offset: 17,
            key: Some(b"k".to_vec()),
            payload: Some(b"{bad".to_vec()),
            headers: vec![("trace".into(), b"t1".to_vec())],
            rejection: Rejection::new(RejectKind::InvalidJson, "payload is not valid JSON"),
            job: None,
        };
        let record = letter.into_record("cx.deadletter");
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
}
