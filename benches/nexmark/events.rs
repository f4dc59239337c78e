//! Nexmark events from the `nexmark` crate's generator (the one RisingWave
//! uses), as the JSON records the `person`, `auction` and `bid` sources of
//! `benches/nexmark/config.toml` read. Shared by the Nexmark bench and
//! `tests/nexmark.rs`.

use nexmark::EventGenerator;
use nexmark::config::{NexmarkConfig, RateShape};
use nexmark::event::Event;
use serde_json::json;

/// 2026-01-01T00:00:00Z: the first event's time. The generator's default
/// is the wall clock, which would make every run different.
pub const BASE_TIME_MS: u64 = 1_767_225_600_000;

/// One event as a Kafka record.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// The source (`person`, `auction` or `bid`), which names its topic.
    pub source: &'static str,
    /// The JSON value.
    pub payload: String,
    /// Event time, epoch milliseconds.
    pub date_time: i64,
}

/// The first `events` events of the standard generator, `rate` events per
/// second of event time (the standard mix: 1 person, 3 auctions and 46
/// bids in every 50 events).
pub fn generate(events: usize, rate: usize) -> impl Iterator<Item = Record> {
    let config = NexmarkConfig {
        base_time: BASE_TIME_MS,
        rate_shape: RateShape::Square,
        first_rate: rate,
        next_rate: rate,
        ..NexmarkConfig::default()
    };
    EventGenerator::new(config).take(events).map(record)
}

fn record(event: Event) -> Record {
    let (source, date_time, payload) = match event {
        Event::Person(p) => (
            "person",
            p.date_time,
            json!({
                "id": p.id, "name": p.name, "email_address": p.email_address,
                "credit_card": p.credit_card, "city": p.city, "state": p.state,
                "date_time": p.date_time, "extra": p.extra,
            }),
        ),
        Event::Auction(a) => (
            "auction",
            a.date_time,
            json!({
                "id": a.id, "item_name": a.item_name, "description": a.description,
                "initial_bid": a.initial_bid, "reserve": a.reserve,
                "date_time": a.date_time, "expires": a.expires, "seller": a.seller,
                "category": a.category, "extra": a.extra,
            }),
        ),
        Event::Bid(b) => (
            "bid",
            b.date_time,
            json!({
                "auction": b.auction, "bidder": b.bidder, "price": b.price,
                "channel": b.channel, "url": b.url, "date_time": b.date_time,
                "extra": b.extra,
            }),
        ),
    };
    Record {
        source,
        payload: payload.to_string(),
        date_time: date_time as i64,
    }
}
