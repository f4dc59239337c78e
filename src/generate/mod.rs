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
//! malformed, so that the dead-letter path shows.

mod population;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;

pub use population::{Behaviour, CATEGORIES, Customer, population};

use crate::schema::SourceKind;
use crate::sink::format_timestamp_millis;

const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;

/// One record to publish.
#[derive(Debug, Clone, PartialEq)]
pub struct Generated {
    /// Source it belongs to.
    pub kind: SourceKind,
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
    /// Simulated days.
    pub days: u32,
    /// Share of events moved up to 2 minutes back in time (out of order).
    pub out_of_order: f64,
    /// Share of events replaced by a malformed record.
    pub malformed: f64,
}

impl Generator {
    /// A clean generator: no out-of-order or malformed events.
    pub fn new(seed: u64, customers: usize, start_ms: i64, days: u32) -> Self {
        Self {
            seed,
            customers,
            start_ms,
            days,
            out_of_order: 0.0,
            malformed: 0.0,
        }
    }

    /// The same, with 2 % of events out of order and 0.5 % malformed.
    pub fn with_noise(self) -> Self {
        Self {
            out_of_order: 0.02,
            malformed: 0.005,
            ..self
        }
    }

    /// Every record: the profiles, then the events in event-time order
    /// (apart from the deliberately out-of-order ones).
    pub fn records(&self) -> Vec<Generated> {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        let people = population(&mut rng, self.customers, self.start_ms);
        let mut records: Vec<Generated> = people
            .iter()
            .map(|c| Generated {
                kind: SourceKind::Customers,
                key: c.id.clone(),
                value: c.profile_json(),
                ts: self.start_ms,
            })
            .collect();
        let end = self.start_ms + i64::from(self.days) * DAY;
        let mut events = Vec::new();
        for customer in &people {
            self.customer_events(&mut rng, customer, end, &mut events);
        }
        events.sort_by_key(|e: &Generated| (e.ts, e.kind, e.key.clone()));
        for event in &mut events {
            if rng.random_bool(self.out_of_order) {
                let shift = rng.random_range(1..120_000);
                event.ts -= shift;
                event.value = retimed(&event.value, event.ts);
            }
            if rng.random_bool(self.malformed) {
                event.value = malformed(&mut rng, &event.value);
            }
        }
        records.extend(events);
        records
    }

    fn customer_events(
        &self,
        rng: &mut ChaCha8Rng,
        customer: &Customer,
        end: i64,
        out: &mut Vec<Generated>,
    ) {
        let (first, last) = customer.active_between(self.start_ms, end);
        let mut t = first + rng.random_range(0..customer.mean_gap_ms().max(1));
        let mut complaint_open_until = i64::MIN;
        let mut n = 0;
        while t < last {
            n += 1;
            let category = customer.pick_category(rng);
            let amount = category_amount(rng, category);
            let items = rng.random_range(1..=4);
            let order_id = format!("{}-o{n}", customer.id);
            let channel = ["web", "app", "store"][rng.random_range(0..3)];
            out.push(event(
                SourceKind::Transactions,
                customer,
                t,
                json!({"event_id": format!("{order_id}-tx"), "customer_id": customer.id,
                       "ts": format_timestamp_millis(t), "amount": amount, "category": category,
                       "currency": "EUR", "channel": channel, "items": items, "order_id": order_id}),
            ));
            let late_delivery = rng.random_bool(0.15);
            if rng.random_bool(if late_delivery { 0.3 } else { 0.04 }) {
                let opened = t + rng.random_range(HOUR..2 * DAY);
                let severity = ["low", "medium", "high", "critical"][rng.random_range(0..4)];
                let reason = if late_delivery { "delivery" } else { "billing" };
                let id = format!("{order_id}-k");
                let mut lifecycle = vec![(opened, "opened")];
                if rng.random_bool(0.2) {
                    lifecycle.push((opened + rng.random_range(HOUR..DAY), "escalated"));
                }
                let resolved = opened + rng.random_range(2 * HOUR..10 * DAY);
                lifecycle.push((resolved, "resolved"));
                complaint_open_until = complaint_open_until.max(resolved);
                for (at, status) in lifecycle.into_iter().filter(|(at, _)| *at < end) {
                    out.push(event(
                        SourceKind::Complaints,
                        customer,
                        at,
                        json!({"event_id": format!("{id}-{status}"), "customer_id": customer.id,
                               "ts": format_timestamp_millis(at), "complaint_id": id,
                               "status": status, "category": reason, "severity": severity,
                               "channel": channel}),
                    ));
                }
            }
            if rng.random_bool(0.35) {
                let at = t + rng.random_range(DAY..3 * DAY);
                if at < end {
                    let mut score: f64 = 4.3 + rng.random_range(-0.8..0.7);
                    if late_delivery {
                        score -= 1.5;
                    }
                    if at < complaint_open_until {
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
                    out.push(event(
                        SourceKind::Feedback,
                        customer,
                        at,
                        json!({"event_id": format!("{order_id}-fb"), "customer_id": customer.id,
                               "ts": format_timestamp_millis(at), "rating": rating, "nps": nps,
                               "effort": effort, "channel": channel, "topic": topic}),
                    ));
                }
            }
            t += customer.next_gap(rng);
        }
    }
}

fn event(kind: SourceKind, customer: &Customer, ts: i64, value: serde_json::Value) -> Generated {
    Generated {
        kind,
        key: customer.id.clone(),
        value: value.to_string(),
        ts,
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
