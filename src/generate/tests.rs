use std::collections::BTreeSet;

use super::*;
use crate::decode::parse_record;
use crate::decode::parse_rfc3339_millis;

const START: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

#[test]
fn the_same_seed_gives_the_same_events() {
    let a = Generator::new(7, 50, START, 10).records();
    let b = Generator::new(7, 50, START, 10).records();
    let c = Generator::new(8, 50, START, 10).records();
    assert_eq!(a, b);
    assert_ne!(a, c);
}

#[test]
fn clean_events_are_valid_in_time_order_after_the_profiles() {
    let records = Generator::new(1, 200, START, 30).records();
    let profiles = records
        .iter()
        .take_while(|r| r.kind == SourceKind::Customers)
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
    let kinds: BTreeSet<SourceKind> = events.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        BTreeSet::from([
            SourceKind::Transactions,
            SourceKind::Feedback,
            SourceKind::Complaints
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
    let records = Generator::new(1, 300, START, 30).with_noise().records();
    let events: Vec<&Generated> = records
        .iter()
        .filter(|r| r.kind != SourceKind::Customers)
        .collect();
    let backwards = events.windows(2).filter(|w| w[1].ts < w[0].ts).count();
    let invalid = events
        .iter()
        .filter(|e| parse_record(e.kind, e.value.as_bytes()).is_err())
        .count();
    assert!(backwards > 0, "some events are out of order");
    // 0.5 % malformed: between 0.1 % and 1.5 % of the events.
    assert!(
        invalid * 1000 > events.len() && invalid * 1000 < 15 * events.len(),
        "{invalid} of {}",
        events.len()
    );
}
