use std::collections::BTreeSet;

use super::*;
use crate::decode::parse_record;
use crate::decode::parse_rfc3339_millis;

const START: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

#[test]
fn the_same_seed_gives_the_same_events() {
    let a = Generator::new(7, 50, START).records(10);
    let b = Generator::new(7, 50, START).records(10);
    let c = Generator::new(8, 50, START).records(10);
    assert_eq!(a, b);
    assert_ne!(a, c);
}

#[test]
fn clean_events_are_valid_in_time_order_after_the_profiles() {
    let records = Generator::new(1, 200, START).records(30);
    let profiles = records
        .iter()
        .take_while(|r| r.kind == crate::config::default_source("customers"))
        .count();
    assert_eq!(profiles, 200);
    let events = &records[profiles..];
    assert!(events.windows(2).all(|w| w[0].ts <= w[1].ts), "time order");
    for record in &records {
        if let Err(rejection) = parse_record(record.kind, record.value.as_bytes()) {
            panic!("{:?} {}: {rejection:?}", record.kind, record.value);
        }
    }
    // The event time inside the record is the record's `ts`, within the period.
    for event in events {
        let value: serde_json::Value = serde_json::from_str(&event.value).expect("json");
        let ts = parse_rfc3339_millis(value["ts"].as_str().expect("ts")).expect("rfc3339");
        assert_eq!(ts, event.ts);
        assert!((START..START + 30 * DAY).contains(&ts));
    }
    let kinds: BTreeSet<Source> = events.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        BTreeSet::from([
            crate::config::default_source("transactions"),
            crate::config::default_source("feedback"),
            crate::config::default_source("complaints")
        ])
    );
}

#[test]
fn the_population_has_every_behaviour_and_preferences_follow_age() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let people = population(&mut rng, 2_000, START);
    for behaviour in [
        Behaviour::Loyal,
        Behaviour::Occasional,
        Behaviour::Churning,
        Behaviour::New,
    ] {
        assert!(
            people.iter().any(|c| c.behaviour == behaviour),
            "{behaviour:?}"
        );
    }
    // Electronics weigh more for the under-30s than for the over-60s, on average.
    let share = |keep: &dyn Fn(&Customer) -> bool| {
        let group: Vec<&Customer> = people.iter().filter(|c| keep(c)).collect();
        group
            .iter()
            .map(|c| c.preferences[1] / c.preferences.iter().sum::<f64>())
            .sum::<f64>()
            / group.len() as f64
    };
    assert!(share(&|c| 2026 - c.birth_year < 30) > share(&|c| 2026 - c.birth_year > 60));
}

#[test]
fn noise_adds_out_of_order_and_malformed_events() {
    let records = Generator::new(1, 300, START).with_noise().records(30);
    let events: Vec<&Generated> = records
        .iter()
        .filter(|r| r.kind != crate::config::default_source("customers"))
        .collect();
    let backwards = events.windows(2).filter(|w| w[1].ts < w[0].ts).count();
    let invalid = events
        .iter()
        .filter(|e| parse_record(e.kind, e.value.as_bytes()).is_err())
        .count();
    assert!(backwards > 0, "some events are out of order");
    // With events seconds apart, every moved event steps back: most by less
    // than 2 minutes, some (offline devices) by more than an hour.
    let dense = Generator::new(1, 5_000, START).with_noise().records(3);
    let jumps: Vec<i64> = dense
        .windows(2)
        .filter(|w| w[0].kind != crate::config::default_source("customers"))
        .map(|w| w[0].ts - w[1].ts)
        .filter(|back| *back > 0)
        .collect();
    let short = jumps.iter().filter(|back| **back < 120_000).count();
    let long = jumps.iter().filter(|back| **back > HOUR).count();
    assert!(long > 0 && short > 3 * long, "{short} short, {long} long");
    // 0.5 % malformed: between 0.1 % and 1.5 % of the events.
    assert!(
        invalid * 1000 > events.len() && invalid * 1000 < 15 * events.len(),
        "{invalid} of {}",
        events.len()
    );
}

#[test]
fn a_shorter_period_is_a_prefix_of_a_longer_one() {
    let short = Generator::new(5, 100, START).with_noise().records(10);
    let long = Generator::new(5, 100, START).with_noise().records(20);
    assert!(long.len() > short.len());
    assert_eq!(short[..], long[..short.len()]);
}

#[test]
fn customers_buy_only_while_active_and_the_simulation_runs_on() {
    let generator = Generator::new(9, 300, START);
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let people = population(&mut rng, 300, START);
    // 90 days, far beyond any churn or sign-up date.
    let records = generator.records(90);
    let mut last_purchase = std::collections::HashMap::new();
    for r in records
        .iter()
        .filter(|r| r.kind == crate::config::default_source("transactions"))
    {
        let customer = people
            .iter()
            .find(|c| c.id == r.key)
            .expect("known customer");
        assert!(customer.active_at(r.ts), "{} buys at {}", customer.id, r.ts);
        last_purchase.insert(r.key.clone(), r.ts);
    }
    let last_day = START + 89 * DAY;
    // Loyal customers still buy in the last 10 days; churners stopped long before.
    let buying_late = |b: Behaviour| {
        people
            .iter()
            .filter(|c| c.behaviour == b)
            .filter(|c| {
                last_purchase
                    .get(&c.id)
                    .is_some_and(|t| *t >= last_day - 10 * DAY)
            })
            .count()
    };
    assert!(buying_late(Behaviour::Loyal) > 0);
    assert_eq!(buying_late(Behaviour::Churning), 0);
    assert!(
        people
            .iter()
            .filter(|c| c.behaviour == Behaviour::Churning)
            .all(|c| c.active_until.is_some_and(|u| u <= START + 15 * DAY))
    );
}
