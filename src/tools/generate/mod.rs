//! A deterministic generator of realistic customer events: a population of
//! customers, and what they buy, say and complain about over simulated time.
//!
//! The same seed gives the same events, byte for byte. The population has
//! the structure the metric pack looks for:
//!
//! * birth years, genders, segments and regions, published as `customers`
//!   profiles first;
//! * category preferences that depend on age and gender, so that the
//!   correlations and segment shares find something;
//! * loyal, occasional, churning and new customers, so that every RFM
//!   segment is populated;
//! * late deliveries, which lower ratings and raise complaints; a customer
//!   with an open complaint rates lower until it is resolved;
//! * complaints that are opened, sometimes escalated, and resolved hours or
//!   days later.
//!
//! [`Generator::with_noise`] also makes some events out of order and some
//! malformed, so that the dead-letter path shows. [`Generator::simulation`]
//! runs for ever (the demo and `cxpulse generate` pace it);
//! [`Generator::records`] collects a bounded period (the tests).

mod population;
pub mod publish;

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;

pub use population::{Behaviour, CATEGORIES, Customer, population};

use crate::schema::{Source, Sources};
use crate::sink::format_timestamp_millis;

const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;

/// The CX sources the generator writes, in the order it writes them.
pub const CX_SOURCES: [&str; 4] = ["customers", "transactions", "feedback", "complaints"];

/// Whether the generator applies: the four CX sources are declared (a
/// configuration may disable or replace them; the generator writes only
/// their shapes).
pub fn check_sources(sources: Sources) -> Result<(), MissingCxSource> {
    match CX_SOURCES.iter().find(|name| sources.named(name).is_none()) {
        Some(missing) => Err(MissingCxSource(missing)),
        None => Ok(()),
    }
}

/// A CX source the configuration does not declare (or disables).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "the event generator writes the CX sources, and source {0} is not declared \
     (or is disabled): produce your own events with `cxpulse produce`"
)]
pub struct MissingCxSource(pub &'static str);

/// The CX source `name` as the embedded default declares it: the shape
/// the generator writes ([`check_sources`] makes sure a configuration
/// declares it too).
pub(crate) fn cx(name: &str) -> Source {
    crate::config::default_sources()
        .named(name)
        .unwrap_or_else(|| panic!("source {name} is not declared"))
}

/// One record to publish.
#[derive(Debug, Clone, PartialEq)]
pub struct Generated {
    /// Source it belongs to.
    pub kind: Source,
    /// Kafka key (the customer id).
    pub key: String,
    /// JSON value.
    pub value: String,
    /// Event time (ms); profiles carry the start time.
    pub ts: i64,
}

/// What to generate.
#[derive(Debug, Clone, Copy)]
pub struct Generator {
    /// Seed of every random choice.
    pub seed: u64,
    /// Customers in the population.
    pub customers: usize,
    /// First instant of simulated time (ms since the epoch).
    pub start_ms: i64,
    /// Share of events moved back in time (out of order): nine in ten by up
    /// to 2 minutes, one in ten by 1 to 6 hours (a device that was offline).
    pub out_of_order: f64,
    /// Share of events replaced by a malformed record.
    pub malformed: f64,
}

impl Generator {
    /// A clean generator: no out-of-order or malformed events.
    pub fn new(seed: u64, customers: usize, start_ms: i64) -> Self {
        Self {
            seed,
            customers,
            start_ms,
            out_of_order: 0.0,
            malformed: 0.0,
        }
    }

    /// The same, with 2 % of events out of order (see [`Self::out_of_order`])
    /// and 0.5 % malformed.
    pub fn with_noise(self) -> Self {
        Self {
            out_of_order: 0.02,
            malformed: 0.005,
            ..self
        }
    }

    /// The endless simulation: the profiles, then the events in event-time
    /// order (apart from the deliberately out-of-order ones).
    pub fn simulation(&self) -> Simulation {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        let people = population(&mut rng, self.customers, self.start_ms);
        let profiles: Vec<Generated> = people
            .iter()
            .map(|c| Generated {
                kind: cx("customers"),
                key: c.id.clone(),
                value: c.profile_json(),
                ts: self.start_ms,
            })
            .collect();
        let mut purchases = BinaryHeap::new();
        for (i, customer) in people.iter().enumerate() {
            let first = customer.active_from + rng.random_range(0..customer.mean_gap_ms().max(1));
            if customer.active_at(first) {
                purchases.push(Reverse((first, i)));
            }
        }
        Simulation {
            orders: vec![0; people.len()],
            complaint_open_until: vec![i64::MIN; people.len()],
            rng,
            people,
            profiles: profiles.into_iter(),
            purchases,
            pending: BinaryHeap::new(),
            next_seq: 0,
            end: None,
            out_of_order: self.out_of_order,
            malformed: self.malformed,
        }
    }

    /// Every record of the first `days` simulated days.
    pub fn records(&self, days: u32) -> Vec<Generated> {
        self.simulation()
            .until(self.start_ms + i64::from(days) * DAY)
            .collect()
    }
}

/// The running simulation: an iterator over the profiles, then the events in
/// event-time order. Each customer's next purchase waits in a queue; a
/// purchase schedules its transaction and any later feedback and complaint
/// events, which are released in time order.
pub struct Simulation {
    rng: ChaCha8Rng,
    people: Vec<Customer>,
    profiles: std::vec::IntoIter<Generated>,
    /// (time, customer index) of each active customer's next purchase.
    purchases: BinaryHeap<Reverse<(i64, usize)>>,
    /// Events scheduled but not yet released.
    pending: BinaryHeap<Reverse<Pending>>,
    next_seq: u64,
    orders: Vec<u32>,
    /// Per customer: until when a complaint of theirs is open.
    complaint_open_until: Vec<i64>,
    end: Option<i64>,
    out_of_order: f64,
    malformed: f64,
}

/// An event waiting for its time; ties keep the order they were scheduled in.
struct Pending {
    ts: i64,
    seq: u64,
    record: Generated,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        (self.ts, self.seq) == (other.ts, other.seq)
    }
}

impl Eq for Pending {}

impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Pending {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.ts, self.seq).cmp(&(other.ts, other.seq))
    }
}

impl Simulation {
    /// Stops the simulation before simulated time `end_ms`.
    pub fn until(self, end_ms: i64) -> Self {
        Self {
            end: Some(end_ms),
            ..self
        }
    }

    fn schedule(&mut self, kind: Source, customer: usize, ts: i64, value: serde_json::Value) {
        let record = Generated {
            kind,
            key: self.people[customer].id.clone(),
            value: value.to_string(),
            ts,
        };
        self.pending.push(Reverse(Pending {
            ts,
            seq: self.next_seq,
            record,
        }));
        self.next_seq += 1;
    }

    /// One purchase of customer `i` at `t`, with the feedback and complaint
    /// events it leads to; then the customer's next purchase is queued.
    fn purchase(&mut self, i: usize, t: i64) {
        let rng = &mut self.rng;
        let customer = &self.people[i];
        let id = customer.id.clone();
        self.orders[i] += 1;
        let category = customer.pick_category(rng);
        let amount = category_amount(rng, category);
        let items = rng.random_range(1..=4);
        let order_id = format!("{id}-o{}", self.orders[i]);
        let channel = ["web", "app", "store"][rng.random_range(0..3)];
        let next = t + customer.next_gap(rng);
        let next_active = customer.active_at(next);
        self.schedule(
            cx("transactions"),
            i,
            t,
            json!({"event_id": format!("{order_id}-tx"), "customer_id": id,
                   "ts": format_timestamp_millis(t), "amount": amount, "category": category,
                   "currency": "EUR", "channel": channel, "items": items, "order_id": order_id}),
        );
        let late_delivery = self.rng.random_bool(0.15);
        if self.rng.random_bool(if late_delivery { 0.3 } else { 0.04 }) {
            let rng = &mut self.rng;
            let opened = t + rng.random_range(HOUR..2 * DAY);
            let severity = ["low", "medium", "high", "critical"][rng.random_range(0..4)];
            let reason = if late_delivery { "delivery" } else { "billing" };
            let complaint_id = format!("{order_id}-k");
            let mut lifecycle = vec![(opened, "opened")];
            if rng.random_bool(0.2) {
                lifecycle.push((opened + rng.random_range(HOUR..DAY), "escalated"));
            }
            let resolved = opened + rng.random_range(2 * HOUR..10 * DAY);
            lifecycle.push((resolved, "resolved"));
            self.complaint_open_until[i] = self.complaint_open_until[i].max(resolved);
            for (at, status) in lifecycle {
                self.schedule(
                    cx("complaints"),
                    i,
                    at,
                    json!({"event_id": format!("{complaint_id}-{status}"), "customer_id": id,
                           "ts": format_timestamp_millis(at), "complaint_id": complaint_id,
                           "status": status, "category": reason, "severity": severity,
                           "channel": channel}),
                );
            }
        }
        if self.rng.random_bool(0.35) {
            let rng = &mut self.rng;
            let at = t + rng.random_range(DAY..3 * DAY);
            let mut score: f64 = 4.3 + rng.random_range(-0.8..0.7);
            if late_delivery {
                score -= 1.5;
            }
            if at < self.complaint_open_until[i] {
                score -= 1.2;
            }
            let rating = score.round().clamp(1.0, 5.0) as i64;
            let nps = ((score - 1.0) * 2.5 + rng.random_range(-1.0..1.0))
                .round()
                .clamp(0.0, 10.0) as i64;
            let effort = (8.0 - score + rng.random_range(-1.0..1.0))
                .round()
                .clamp(1.0, 7.0) as i64;
            let topic = if late_delivery {
                "delivery"
            } else {
                ["product", "price", "service"][rng.random_range(0..3)]
            };
            self.schedule(
                cx("feedback"),
                i,
                at,
                json!({"event_id": format!("{order_id}-fb"), "customer_id": id,
                       "ts": format_timestamp_millis(at), "rating": rating, "nps": nps,
                       "effort": effort, "channel": channel, "topic": topic}),
            );
        }
        if next_active {
            self.purchases.push(Reverse((next, i)));
        }
    }

    /// Moves an event back in time or breaks it, as the noise settings say.
    fn add_noise(&mut self, mut record: Generated) -> Generated {
        if self.rng.random_bool(self.out_of_order) {
            record.ts -= if self.rng.random_bool(0.1) {
                self.rng.random_range(HOUR..6 * HOUR)
            } else {
                self.rng.random_range(1..120_000)
            };
            record.value = retimed(&record.value, record.ts);
        }
        if self.rng.random_bool(self.malformed) {
            record.value = malformed(&mut self.rng, &record.value);
        }
        record
    }
}

impl Iterator for Simulation {
    type Item = Generated;

    fn next(&mut self) -> Option<Generated> {
        if let Some(profile) = self.profiles.next() {
            return Some(profile);
        }
        loop {
            let purchase = self.purchases.peek().map(|Reverse(p)| *p);
            let due = self.pending.peek().map(|Reverse(p)| p.ts);
            let now = match (due, purchase) {
                (Some(due), Some((t, _))) => due.min(t),
                (Some(due), None) => due,
                (None, Some((t, _))) => t,
                (None, None) => return None,
            };
            if self.end.is_some_and(|end| now >= end) {
                return None;
            }
            match purchase {
                // A purchase comes first; at equal times, earlier-scheduled events go first.
                Some((t, i)) if due.is_none_or(|due| t < due) => {
                    self.purchases.pop();
                    self.purchase(i, t);
                }
                _ => {
                    let Reverse(pending) = self.pending.pop()?;
                    return Some(self.add_noise(pending.record));
                }
            }
        }
    }
}

/// Typical basket per category, with a long tail.
fn category_amount(rng: &mut ChaCha8Rng, category: &str) -> f64 {
    let typical = match category {
        "electronics" => 180.0,
        "home" => 75.0,
        "fashion" => 55.0,
        "sports" => 60.0,
        "beauty" => 30.0,
        "toys" => 35.0,
        "books" => 18.0,
        _ => 40.0,
    };
    let factor: f64 = rng.random_range(0.3..1.2) + rng.random_range(0.0..1.0f64).powi(4) * 3.0;
    (typical * factor * 100.0).round() / 100.0
}

fn retimed(value: &str, ts: i64) -> String {
    let mut v: serde_json::Value = serde_json::from_str(value).unwrap_or_default();
    v["ts"] = json!(format_timestamp_millis(ts));
    v.to_string()
}

/// A record the decoder must reject, of one of several kinds.
fn malformed(rng: &mut ChaCha8Rng, value: &str) -> String {
    match rng.random_range(0..4) {
        0 => value[..value.len() / 2].to_owned(),
        1 => value.replace("\"customer_id\"", "\"client\""),
        2 => value.replace("\"ts\":\"", "\"ts\":\"yesterday "),
        _ => {
            let mut v: serde_json::Value = serde_json::from_str(value).unwrap_or_default();
            if v.get("amount").is_some() {
                v["amount"] = json!(-1);
            } else if v.get("rating").is_some() {
                v["rating"] = json!(9);
            } else {
                v["status"] = json!("lost");
            }
            v.to_string()
        }
    }
}

#[cfg(test)]
mod tests;
