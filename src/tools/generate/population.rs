//! The simulated customers: who they are and how they shop.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde_json::json;

use super::{DAY, HOUR};

/// Product categories, in a fixed order.
pub const CATEGORIES: [&str; 8] = [
    "books",
    "electronics",
    "fashion",
    "groceries",
    "home",
    "sports",
    "toys",
    "beauty",
];

/// How often, and over which part of the period, a customer buys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Every couple of days, all period long.
    Loyal,
    /// Every two weeks or so.
    Occasional,
    /// Often at first, then never again after 5 to 15 days.
    Churning,
    /// Starts buying 7 to 30 days in, and keeps buying.
    New,
}

/// One simulated customer.
#[derive(Debug, Clone)]
pub struct Customer {
    /// `customer_id`.
    pub id: String,
    /// Birth year (ages 18 to 80).
    pub birth_year: i64,
    /// `f`, `m` or `x`.
    pub gender: &'static str,
    /// Marketing segment.
    pub segment: &'static str,
    /// Region.
    pub region: &'static str,
    /// How the customer buys.
    pub behaviour: Behaviour,
    /// First instant the customer may buy.
    pub active_from: i64,
    /// The customer buys no more from this instant on (churners only).
    pub active_until: Option<i64>,
    /// Relative preference per [`CATEGORIES`] entry.
    pub preferences: [f64; CATEGORIES.len()],
}

/// `n` customers, drawn with `rng`; the period starts at `start_ms`.
pub fn population(rng: &mut ChaCha8Rng, n: usize, start_ms: i64) -> Vec<Customer> {
    let start_year = chrono::DateTime::from_timestamp_millis(start_ms)
        .map_or(2026, |d| i64::from(chrono::Datelike::year(&d)));
    (0..n)
        .map(|i| {
            let age = 18 + (rng.random_range(0.0..1.0f64).powf(1.4) * 62.0) as i64;
            let gender = match rng.random_range(0..100) {
                0..48 => "f",
                48..96 => "m",
                _ => "x",
            };
            let behaviour = match rng.random_range(0..100) {
                0..25 => Behaviour::Loyal,
                25..65 => Behaviour::Occasional,
                65..85 => Behaviour::Churning,
                _ => Behaviour::New,
            };
            let segment = match (behaviour, rng.random_range(0..10)) {
                (Behaviour::Loyal, 0..6) => "gold",
                (Behaviour::Loyal | Behaviour::Occasional, _) => "silver",
                _ => "bronze",
            };
            let region = ["north", "south", "east", "west"][rng.random_range(0..4)];
            let (active_from, active_until) = match behaviour {
                Behaviour::Churning => (
                    start_ms,
                    Some(start_ms + rng.random_range(5 * DAY..15 * DAY)),
                ),
                Behaviour::New => (start_ms + rng.random_range(7 * DAY..30 * DAY), None),
                Behaviour::Loyal | Behaviour::Occasional => (start_ms, None),
            };
            Customer {
                id: format!("c{i:05}"),
                birth_year: start_year - age,
                gender,
                segment,
                region,
                behaviour,
                active_from,
                active_until,
                preferences: preferences(rng, age, gender),
            }
        })
        .collect()
}

/// Category weights: the young buy electronics and fashion, older customers
/// home and books, women more beauty and fashion, men more sports and
/// electronics; plus individual taste.
fn preferences(rng: &mut ChaCha8Rng, age: i64, gender: &str) -> [f64; CATEGORIES.len()] {
    let young = ((45 - age) as f64 / 27.0).clamp(0.0, 1.0);
    let old = ((age - 40) as f64 / 40.0).clamp(0.0, 1.0);
    let (f, m) = match gender {
        "f" => (1.0, 0.0),
        "m" => (0.0, 1.0),
        _ => (0.5, 0.5),
    };
    let base = [
        1.0 + 1.5 * old,                          // books
        1.0 + 2.0 * young + 1.0 * m,              // electronics
        1.0 + 1.5 * young + 1.5 * f,              // fashion
        2.0,                                      // groceries
        0.8 + 2.0 * old,                          // home
        0.8 + 1.5 * m + young,                    // sports
        0.5 + 1.5 * (1.0 - young - old).max(0.0), // toys: parents
        0.6 + 2.0 * f,                            // beauty
    ];
    base.map(|w| w * rng.random_range(0.5..1.5))
}

impl Customer {
    /// The `customers` record.
    pub fn profile_json(&self) -> String {
        json!({"customer_id": self.id, "birth_year": self.birth_year, "gender": self.gender,
               "segment": self.segment, "region": self.region})
        .to_string()
    }

    /// Whether the customer still buys at `t`.
    pub fn active_at(&self, t: i64) -> bool {
        t >= self.active_from && self.active_until.is_none_or(|until| t < until)
    }

    /// Mean time between two purchases.
    pub fn mean_gap_ms(&self) -> i64 {
        match self.behaviour {
            Behaviour::Loyal => 2 * DAY,
            Behaviour::Occasional => 14 * DAY,
            Behaviour::Churning => 3 * DAY,
            Behaviour::New => 4 * DAY,
        }
    }

    /// Time to the next purchase: exponential around the mean.
    pub fn next_gap(&self, rng: &mut ChaCha8Rng) -> i64 {
        let u: f64 = rng.random_range(f64::EPSILON..1.0);
        ((-u.ln()) * self.mean_gap_ms() as f64) as i64 + HOUR
    }

    /// A category drawn by preference.
    pub fn pick_category(&self, rng: &mut ChaCha8Rng) -> &'static str {
        let total: f64 = self.preferences.iter().sum();
        let mut x = rng.random_range(0.0..total);
        for (category, weight) in CATEGORIES.iter().zip(self.preferences) {
            if x < weight {
                return category;
            }
            x -= weight;
        }
        CATEGORIES[CATEGORIES.len() - 1]
    }
}
