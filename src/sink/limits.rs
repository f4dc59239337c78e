//! What the topics the sink writes to accept: their `max.message.bytes`
//! and compaction, as the cluster describes them and as refusals taught.

use std::collections::BTreeMap;

/// What a topic accepts, as its configuration says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicLimit {
    /// `max.message.bytes`: the largest record batch, so the largest record.
    pub max_message_bytes: usize,
    /// `cleanup.policy` includes `compact`: a record without a key is refused.
    pub compacted: bool,
}

impl Default for TopicLimit {
    /// Kafka's default topic: 1 MiB plus batch framing, not compacted.
    fn default() -> Self {
        Self {
            max_message_bytes: 1_048_588,
            compacted: false,
        }
    }
}

/// What refusals by the broker taught about topics whose configuration
/// could not be read: a smaller `max.message.bytes`, or compaction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Learned {
    /// Per topic, the smallest record size the broker refused as too large.
    pub too_large: BTreeMap<String, usize>,
    /// Topics that refused a record without a key (compacted).
    pub needs_key: Vec<String>,
}

impl Learned {
    /// Adds what `other` taught.
    pub fn absorb(&mut self, other: Learned) {
        for (topic, bytes) in other.too_large {
            let at = self.too_large.entry(topic).or_insert(bytes);
            *at = (*at).min(bytes);
        }
        for topic in other.needs_key {
            if !self.needs_key.contains(&topic) {
                self.needs_key.push(topic);
            }
        }
    }

    /// Whether nothing was learned.
    pub fn is_empty(&self) -> bool {
        self.too_large.is_empty() && self.needs_key.is_empty()
    }
}

/// The limits of the topics the sink writes to.
#[derive(Debug, Clone, Default)]
pub struct Limits {
    topics: BTreeMap<String, TopicLimit>,
    learned: Learned,
}

impl Limits {
    /// Limits as described by the cluster ([`crate::admin::topic_limits`]),
    /// corrected by what refusals taught.
    pub fn new(topics: BTreeMap<String, TopicLimit>, learned: &Learned) -> Self {
        let mut limits = Self {
            topics,
            learned: learned.clone(),
        };
        limits.learn();
        limits
    }

    /// Adds the limits of more topics (described again, or outputs of jobs
    /// added later), still corrected by what refusals taught.
    pub fn extend(&mut self, topics: BTreeMap<String, TopicLimit>) {
        self.topics.extend(topics);
        self.learn();
    }

    fn learn(&mut self) {
        let learned = &self.learned;
        for (topic, &bytes) in &learned.too_large {
            let limit = self.topics.entry(topic.clone()).or_default();
            let refused_below = bytes.saturating_sub(1).max(LEARNED_FLOOR);
            limit.max_message_bytes = limit.max_message_bytes.min(refused_below);
        }
        for topic in &learned.needs_key {
            self.topics.entry(topic.clone()).or_default().compacted = true;
        }
    }

    /// What `topic` accepts.
    #[inline]
    pub fn of(&self, topic: &str) -> TopicLimit {
        self.topics.get(topic).copied().unwrap_or_default()
    }

    /// The largest record (key, value and headers, as
    /// `record_bytes` counts them) sent to `topic`: its
    /// `max.message.bytes`, less room for batch framing and compression.
    pub fn record_bytes(&self, topic: &str) -> usize {
        record_room(self.of(topic).max_message_bytes)
    }

    /// Why a record of `bytes` (with a key or not) cannot be sent to
    /// `topic`, if it cannot.
    #[inline]
    pub fn refusal(&self, topic: &str, bytes: usize, keyed: bool) -> Option<String> {
        let limit = self.of(topic);
        let room = record_room(limit.max_message_bytes);
        if bytes > room {
            return Some(format!(
                "the record is {bytes} bytes; topic {topic} takes at most {room} (max.message.bytes {})",
                limit.max_message_bytes
            ));
        }
        if limit.compacted && !keyed {
            return Some(format!(
                "topic {topic} is compacted and takes only records with a key; give the job a @key"
            ));
        }
        None
    }

    /// The producer's `message.max.bytes` (the largest record of any topic
    /// it writes) and `batch.size` (the smallest topic's limit, so that a
    /// batch of small records fits every topic), within librdkafka's range.
    pub fn producer_sizes(&self) -> (usize, usize) {
        let sizes = self
            .topics
            .values()
            .map(|l| l.max_message_bytes)
            .chain([TopicLimit::default().max_message_bytes]);
        let largest = sizes.clone().max().unwrap_or(1_000_000);
        let smallest = sizes.min().unwrap_or(1_000_000);
        (
            largest.clamp(1_000, 1_000_000_000),
            record_room(smallest).clamp(1_000, 1_000_000_000),
        )
    }
}

/// The smallest `max.message.bytes` a refusal can teach. The broker judges
/// a whole batch, so a small record refused with its batch must not shrink
/// its topic's limit to its own size, which would refuse every later row.
const LEARNED_FLOOR: usize = 16 * 1024;

/// Room for one record in a batch of at most `max_message_bytes`: less the
/// batch's framing and what compression can add to data that does not
/// compress.
#[inline]
fn record_room(max_message_bytes: usize) -> usize {
    max_message_bytes.saturating_sub(max_message_bytes / 100 + 512)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_record_teaches_its_topic_a_limit_below_its_size() {
        let mut learned = Learned::default();
        learned.too_large.insert("out".into(), 500_001);
        let limits = Limits::new(BTreeMap::new(), &learned);
        assert_eq!(limits.of("out").max_message_bytes, 500_000);
        assert_eq!(limits.of("other").max_message_bytes, 1_048_588);
    }

    #[test]
    fn a_small_record_refused_with_its_batch_leaves_room_for_rows() {
        // 300 bytes refused: the topic still takes records of 16 KiB less
        // the batch's framing (16,384 - 163 - 512 = 15,709 bytes).
        let mut learned = Learned::default();
        learned.too_large.insert("out".into(), 300);
        let limits = Limits::new(BTreeMap::new(), &learned);
        assert_eq!(limits.of("out").max_message_bytes, 16_384);
        assert_eq!(limits.record_bytes("out"), 15_709);
        assert!(limits.refusal("out", 10_000, true).is_none());
        assert!(limits.refusal("out", 16_000, true).is_some());
    }
}
