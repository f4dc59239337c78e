//! The bundled metric jobs against an independent reference: a month of
//! generated events for 2,000 customers goes through the real broker and the
//! engine, and every final row read back must match what plain Rust
//! iterators compute from the same events (exact for counts, 1e-9 relative
//! for ratios). No DataFusion, no SQL on the reference side.
//!
//! Covered so far: `need_by_category`, `satisfaction_hourly`,
//! `need_by_segment`, `need_correlation`, `satisfaction_correlation`,
//! `need_trend`, `satisfaction_trend`, `loyalty_rfm`, `loyalty_summary` and
//! `complaints_hourly`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use common::{
    RunningEngine, TestBroker, consumer_from_beginning, create_source_topics, http_get, producer,
    test_config, unique_prefix, wait_for_metric,
};
use cxpulse::schema::Source;
use cxpulse::tools::generate::{Generated, Generator};
use rdkafka::producer::FutureRecord;
use serde_json::Value;

const START: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z
const HOUR: i64 = 3_600_000;

fn hour_of(ts: i64) -> i64 {
    ts.div_euclid(HOUR) * HOUR
}

fn iso(ms: i64) -> String {
    cxpulse::sink::format_timestamp_millis(ms)
}

/// Field `name` of every generated event of `kind`, parsed.
fn events(records: &[Generated], kind: Source) -> Vec<(i64, Value)> {
    records
        .iter()
        .filter(|r| r.kind == kind)
        .map(|r| (r.ts, serde_json::from_str(&r.value).expect("json")))
        .collect()
}

/// Equal within 1e-9 relative; values within 1e-12 of each other count as
/// equal too (a relative error means nothing at zero: r = 0 against 2e-17).
fn assert_close(what: &str, actual: &Value, expected: Option<f64>) {
    match (actual.as_f64(), expected) {
        (None, None) => {}
        (Some(a), Some(e)) if (a - e).abs() <= (1e-9 * e.abs()).max(1e-12) => {}
        _ => panic!("{what}: engine {actual}, reference {expected:?}"),
    }
}

/// need_by_category: per hour and category.
fn need_by_category(records: &[Generated]) -> BTreeMap<(String, String), [f64; 6]> {
    let mut groups: BTreeMap<(i64, String), (u64, BTreeSet<String>, f64)> = BTreeMap::new();
    for (ts, tx) in events(
        records,
        cxpulse::config::default_sources()
            .named("transactions")
            .expect("declared"),
    ) {
        let g = groups
            .entry((
                hour_of(ts),
                tx["category"].as_str().unwrap_or_default().to_owned(),
            ))
            .or_default();
        g.0 += 1;
        g.1.insert(tx["customer_id"].as_str().unwrap_or_default().to_owned());
        g.2 += tx["amount"].as_f64().unwrap_or_default();
    }
    let mut per_hour: BTreeMap<i64, (u64, f64)> = BTreeMap::new();
    for ((hour, _), (orders, _, revenue)) in &groups {
        let t = per_hour.entry(*hour).or_default();
        t.0 += orders;
        t.1 += revenue;
    }
    groups
        .into_iter()
        .map(|((hour, category), (orders, customers, revenue))| {
            let (all_orders, all_revenue) = per_hour[&hour];
            (
                (iso(hour), category),
                [
                    orders as f64,
                    customers.len() as f64,
                    revenue,
                    revenue / orders as f64,
                    orders as f64 / all_orders as f64,
                    revenue / all_revenue,
                ],
            )
        })
        .collect()
}

/// satisfaction_hourly: per hour, channel and topic.
fn satisfaction_hourly(
    records: &[Generated],
) -> BTreeMap<(String, String, String), [Option<f64>; 5]> {
    let mut groups: BTreeMap<(i64, String, String), Vec<Value>> = BTreeMap::new();
    for (ts, fb) in events(
        records,
        cxpulse::config::default_sources()
            .named("feedback")
            .expect("declared"),
    ) {
        let key = (
            hour_of(ts),
            fb["channel"].as_str().unwrap_or_default().to_owned(),
            fb["topic"].as_str().unwrap_or_default().to_owned(),
        );
        groups.entry(key).or_default().push(fb);
    }
    groups
        .into_iter()
        .map(|((hour, channel, topic), answers)| {
            let values = |field: &str| -> Vec<f64> {
                answers.iter().filter_map(|a| a[field].as_f64()).collect()
            };
            let mean = |v: &[f64]| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
            let ratings = values("rating");
            let nps = values("nps");
            let share = |v: &[f64], keep: &dyn Fn(f64) -> bool| {
                (!v.is_empty())
                    .then(|| 100.0 * v.iter().filter(|x| keep(**x)).count() as f64 / v.len() as f64)
            };
            let promoters = nps.iter().filter(|x| **x >= 9.0).count() as f64;
            let detractors = nps.iter().filter(|x| **x <= 6.0).count() as f64;
            (
                (iso(hour), channel, topic),
                [
                    Some(answers.len() as f64),
                    mean(&ratings),
                    share(&ratings, &|r| r >= 4.0),
                    (!nps.is_empty()).then(|| 100.0 * (promoters - detractors) / nps.len() as f64),
                    mean(&values("effort")),
                ],
            )
        })
        .collect()
}

const DAY: i64 = 24 * HOUR;

/// Birth year and gender per customer, from the generated profiles.
fn profiles(records: &[Generated]) -> BTreeMap<String, (i64, String)> {
    events(
        records,
        cxpulse::config::default_sources()
            .named("customers")
            .expect("declared"),
    )
    .into_iter()
    .map(|(_, p)| {
        (
            p["customer_id"].as_str().unwrap_or_default().to_owned(),
            (
                p["birth_year"].as_i64().unwrap_or_default(),
                p["gender"].as_str().unwrap_or_default().to_owned(),
            ),
        )
    })
    .collect()
}

/// The year of the end of the daily window that holds `ts`.
fn end_year(ts: i64) -> i64 {
    let end = ts.div_euclid(DAY) * DAY + DAY;
    chrono::DateTime::from_timestamp_millis(end)
        .map_or(0, |d| i64::from(chrono::Datelike::year(&d)))
}

fn age_band(age: i64) -> &'static str {
    match age {
        ..25 => "18-24",
        25..35 => "25-34",
        35..45 => "35-44",
        45..55 => "45-54",
        55..65 => "55-64",
        _ => "65+",
    }
}

/// need_by_segment: per day, category, age band and gender.
fn need_by_segment(records: &[Generated]) -> BTreeMap<(String, String, String, String), [f64; 4]> {
    let people = profiles(records);
    let mut groups: BTreeMap<(i64, String, String, String), (f64, f64)> = BTreeMap::new();
    for (ts, tx) in events(
        records,
        cxpulse::config::default_sources()
            .named("transactions")
            .expect("declared"),
    ) {
        let (birth, gender) = &people[tx["customer_id"].as_str().unwrap_or_default()];
        let key = (
            ts.div_euclid(DAY) * DAY,
            tx["category"].as_str().unwrap_or_default().to_owned(),
            age_band(end_year(ts) - birth).to_owned(),
            gender.clone(),
        );
        let g = groups.entry(key).or_default();
        g.0 += 1.0;
        g.1 += tx["amount"].as_f64().unwrap_or_default();
    }
    let mut segments: BTreeMap<(i64, String, String), (f64, f64)> = BTreeMap::new();
    for ((day, _, band, gender), (orders, revenue)) in &groups {
        let s = segments
            .entry((*day, band.clone(), gender.clone()))
            .or_default();
        s.0 += orders;
        s.1 += revenue;
    }
    groups
        .into_iter()
        .map(|((day, category, band, gender), (orders, revenue))| {
            let (all_orders, all_revenue) = segments[&(day, band.clone(), gender.clone())];
            (
                (iso(day), category, band, gender),
                [orders, revenue, orders / all_orders, revenue / all_revenue],
            )
        })
        .collect()
}

/// The point-biserial coding of gender: 1 for "f", 0 for "m", else left out.
fn female(gender: &str) -> Option<f64> {
    match gender {
        "f" => Some(1.0),
        "m" => Some(0.0),
        _ => None,
    }
}

/// A day's start as days since the epoch, as the queries compute it.
fn day_number(day_ms: i64) -> f64 {
    (day_ms / 1000) as f64 / 86_400.0
}

/// Ends of the daily windows that hold data (from the first day) and have
/// closed at watermark `last`.
fn daily_window_ends(last: i64) -> impl Iterator<Item = i64> {
    (1..)
        .map(|k| START + k * DAY)
        .take_while(move |end| *end <= last)
}

/// Pearson's r, or None under 30 pairs.
fn corr(pairs: &[(f64, f64)]) -> Option<f64> {
    if pairs.len() < 30 {
        return None;
    }
    let n = pairs.len() as f64;
    let (mx, my) = (
        pairs.iter().map(|p| p.0).sum::<f64>() / n,
        pairs.iter().map(|p| p.1).sum::<f64>() / n,
    );
    let sxy: f64 = pairs.iter().map(|(x, y)| (x - mx) * (y - my)).sum();
    let sxx: f64 = pairs.iter().map(|(x, _)| (x - mx).powi(2)).sum();
    let syy: f64 = pairs.iter().map(|(_, y)| (y - my).powi(2)).sum();
    Some(sxy / (sxx * syy).sqrt())
}

/// One transaction for need_correlation: age, amount, items, 1 for "f" / 0 for "m".
type Observation = (f64, f64, f64, Option<f64>);

/// need_correlation: per day and category.
fn need_correlation(records: &[Generated]) -> BTreeMap<(String, String), [Option<f64>; 4]> {
    let people = profiles(records);
    let mut groups: BTreeMap<(i64, String), Vec<Observation>> = BTreeMap::new();
    for (ts, tx) in events(
        records,
        cxpulse::config::default_sources()
            .named("transactions")
            .expect("declared"),
    ) {
        let (birth, gender) = &people[tx["customer_id"].as_str().unwrap_or_default()];
        let female = female(gender);
        groups
            .entry((
                ts.div_euclid(DAY) * DAY,
                tx["category"].as_str().unwrap_or_default().to_owned(),
            ))
            .or_default()
            .push((
                (end_year(ts) - birth) as f64,
                tx["amount"].as_f64().unwrap_or_default(),
                tx["items"].as_f64().unwrap_or_default(),
                female,
            ));
    }
    groups
        .into_iter()
        .map(|((day, category), rows)| {
            let age_amount: Vec<(f64, f64)> = rows.iter().map(|r| (r.0, r.1)).collect();
            let age_items: Vec<(f64, f64)> = rows.iter().map(|r| (r.0, r.2)).collect();
            let female_amount: Vec<(f64, f64)> =
                rows.iter().filter_map(|r| r.3.map(|f| (f, r.1))).collect();
            (
                (iso(day), category),
                [
                    Some(rows.len() as f64),
                    corr(&age_amount),
                    corr(&age_items),
                    corr(&female_amount),
                ],
            )
        })
        .collect()
}

/// One answer for satisfaction_correlation: age, rating, nps, 1 for "f" / 0 for "m".
type Answer = (f64, Option<f64>, Option<f64>, Option<f64>);

/// A value taken from an [`Answer`].
type Pick = dyn Fn(&Answer) -> Option<f64>;

/// satisfaction_correlation: per day and channel; a pair needs both values.
fn satisfaction_correlation(records: &[Generated]) -> BTreeMap<(String, String), [Option<f64>; 4]> {
    let people = profiles(records);
    let mut groups: BTreeMap<(i64, String), Vec<Answer>> = BTreeMap::new();
    for (ts, fb) in events(
        records,
        cxpulse::config::default_sources()
            .named("feedback")
            .expect("declared"),
    ) {
        let (birth, gender) = &people[fb["customer_id"].as_str().unwrap_or_default()];
        let female = female(gender);
        groups
            .entry((
                ts.div_euclid(DAY) * DAY,
                fb["channel"].as_str().unwrap_or_default().to_owned(),
            ))
            .or_default()
            .push((
                (end_year(ts) - birth) as f64,
                fb["rating"].as_f64(),
                fb["nps"].as_f64(),
                female,
            ));
    }
    groups
        .into_iter()
        .map(|((day, channel), rows)| {
            let pairs = |x: &Pick, y: &Pick| {
                rows.iter()
                    .filter_map(|r| Some((x(r)?, y(r)?)))
                    .collect::<Vec<(f64, f64)>>()
            };
            (
                (iso(day), channel),
                [
                    corr(&pairs(&|r| Some(r.0), &|r| r.1)),
                    corr(&pairs(&|r| Some(r.0), &|r| r.2)),
                    corr(&pairs(&|r| r.3, &|r| r.1)),
                    corr(&pairs(&|r| r.3, &|r| r.2)),
                ],
            )
        })
        .collect()
}

/// need_trend: 28-day windows every day, per category, over daily orders.
fn need_trend(records: &[Generated], last: i64) -> BTreeMap<(String, String), [Option<f64>; 5]> {
    let mut daily: BTreeMap<(String, i64), f64> = BTreeMap::new();
    for (ts, tx) in events(
        records,
        cxpulse::config::default_sources()
            .named("transactions")
            .expect("declared"),
    ) {
        let category = tx["category"].as_str().unwrap_or_default().to_owned();
        *daily
            .entry((category, ts.div_euclid(DAY) * DAY))
            .or_default() += 1.0;
    }
    let categories: BTreeSet<String> = daily.keys().map(|(c, _)| c.clone()).collect();
    let mut out = BTreeMap::new();
    // Every window that holds data and has closed: ends from START + 1 day.
    for end in daily_window_ends(last) {
        let start = end - 28 * DAY;
        for category in &categories {
            let days: Vec<(i64, f64)> = daily
                .range((category.clone(), start)..(category.clone(), end))
                .map(|((_, day), n)| (*day, *n))
                .collect();
            if days.is_empty() {
                continue;
            }
            let sum = |from: i64, to: i64| {
                let v: Vec<f64> = days
                    .iter()
                    .filter(|(d, _)| (from..to).contains(d))
                    .map(|(_, n)| *n)
                    .collect();
                (!v.is_empty()).then(|| v.iter().sum::<f64>())
            };
            let points: Vec<(f64, f64)> = days.iter().map(|(d, n)| (day_number(*d), *n)).collect();
            let daily_slope = slope(&points);
            let last_7d = sum(end - 7 * DAY, end);
            let prior_7d = sum(end - 14 * DAY, end - 7 * DAY);
            let change = match (last_7d, prior_7d) {
                (Some(l), Some(p)) if p != 0.0 => Some(l / p - 1.0),
                _ => None,
            };
            out.insert(
                (iso(start), category.clone()),
                [sum(start, end), daily_slope, last_7d, prior_7d, change],
            );
        }
    }
    out
}

/// The least-squares slope of `points`, or None (fewer than 2, or one x).
fn slope(points: &[(f64, f64)]) -> Option<f64> {
    let n = points.len() as f64;
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    (points.len() >= 2 && sxx > 0.0).then(|| sxy / sxx)
}

/// One day of one channel: promoters, detractors, nps answers, rating sum, ratings.
#[derive(Default, Clone, Copy)]
struct DaySatisfaction {
    promoters: f64,
    detractors: f64,
    answers: f64,
    rating_sum: f64,
    ratings: f64,
}

/// satisfaction_trend: 28-day windows every day, per channel.
fn satisfaction_trend(
    records: &[Generated],
    last: i64,
) -> BTreeMap<(String, String), [Option<f64>; 4]> {
    let mut daily: BTreeMap<(String, i64), DaySatisfaction> = BTreeMap::new();
    for (ts, fb) in events(
        records,
        cxpulse::config::default_sources()
            .named("feedback")
            .expect("declared"),
    ) {
        let channel = fb["channel"].as_str().unwrap_or_default().to_owned();
        let d = daily
            .entry((channel, ts.div_euclid(DAY) * DAY))
            .or_default();
        if let Some(nps) = fb["nps"].as_f64() {
            d.answers += 1.0;
            d.promoters += f64::from(u8::from(nps >= 9.0));
            d.detractors += f64::from(u8::from(nps <= 6.0));
        }
        if let Some(rating) = fb["rating"].as_f64() {
            d.ratings += 1.0;
            d.rating_sum += rating;
        }
    }
    let channels: BTreeSet<String> = daily.keys().map(|(c, _)| c.clone()).collect();
    let mut out = BTreeMap::new();
    for end in daily_window_ends(last) {
        let start = end - 28 * DAY;
        for channel in &channels {
            let days: Vec<(i64, DaySatisfaction)> = daily
                .range((channel.clone(), start)..(channel.clone(), end))
                .map(|((_, day), d)| (*day, *d))
                .collect();
            if days.is_empty() {
                continue;
            }
            let nps_points: Vec<(f64, f64)> = days
                .iter()
                .filter(|(_, d)| d.answers > 0.0)
                .map(|(day, d)| {
                    (
                        day_number(*day),
                        100.0 * (d.promoters - d.detractors) / d.answers,
                    )
                })
                .collect();
            let csat_points: Vec<(f64, f64)> = days
                .iter()
                .filter(|(_, d)| d.ratings > 0.0)
                .map(|(day, d)| (day_number(*day), d.rating_sum / d.ratings))
                .collect();
            let period = |from: i64, to: i64| {
                let picked: Vec<&DaySatisfaction> = days
                    .iter()
                    .filter(|(d, _)| (from..to).contains(d))
                    .map(|(_, d)| d)
                    .collect();
                let total = |f: &dyn Fn(&DaySatisfaction) -> f64| {
                    (!picked.is_empty()).then(|| picked.iter().map(|d| f(d)).sum::<f64>())
                };
                let nps = match (
                    total(&|d| d.promoters - d.detractors),
                    total(&|d| d.answers),
                ) {
                    (Some(net), Some(answers)) if answers > 0.0 => Some(100.0 * net / answers),
                    _ => None,
                };
                let csat = match (total(&|d| d.rating_sum), total(&|d| d.ratings)) {
                    (Some(sum), Some(n)) if n > 0.0 => Some(sum / n),
                    _ => None,
                };
                (nps, csat)
            };
            let (nps_recent, csat_recent) = period(end - 7 * DAY, end);
            let (nps_prior, csat_prior) = period(end - 14 * DAY, end - 7 * DAY);
            let diff = |a: Option<f64>, b: Option<f64>| Some(a? - b?);
            out.insert(
                (iso(start), channel.clone()),
                [
                    slope(&nps_points),
                    slope(&csat_points),
                    diff(nps_recent, nps_prior),
                    diff(csat_recent, csat_prior),
                ],
            );
        }
    }
    out
}

/// loyalty_rfm row: recency, frequency, monetary, R, F, M, segment, repeat.
type Rfm = (i64, i64, f64, i64, i64, i64, &'static str, bool);

/// loyalty_rfm: 365-day windows every day, per customer.
fn loyalty_rfm(records: &[Generated], last: i64) -> BTreeMap<(String, String), Rfm> {
    let purchases = events(
        records,
        cxpulse::config::default_sources()
            .named("transactions")
            .expect("declared"),
    );
    let mut out = BTreeMap::new();
    for end in daily_window_ends(last) {
        let start = end - 365 * DAY;
        let mut per_customer: BTreeMap<String, (i64, i64, f64)> = BTreeMap::new();
        for (ts, tx) in purchases.iter().filter(|(ts, _)| (start..end).contains(ts)) {
            let c = per_customer
                .entry(tx["customer_id"].as_str().unwrap_or_default().to_owned())
                .or_insert((i64::MIN, 0, 0.0));
            c.0 = c.0.max(*ts);
            c.1 += 1;
            c.2 += tx["amount"].as_f64().unwrap_or_default();
        }
        // The query rounds the amount spent to the cent, as SQL round(x, 2).
        for c in per_customer.values_mut() {
            c.2 = (c.2 * 100.0).round() / 100.0;
        }
        let n = per_customer.len() as f64;
        let stats: Vec<(i64, i64, f64)> = per_customer
            .values()
            .map(|(latest, f, m)| ((end - latest) / DAY, *f, *m))
            .collect();
        // ceil(5 × cume_dist): the share of customers at or below this one.
        let score = |at_or_below: usize| (5.0 * (at_or_below as f64 / n)).ceil() as i64;
        for (id, (latest, frequency, monetary)) in &per_customer {
            let recency = (end - latest) / DAY;
            let r = score(stats.iter().filter(|s| s.0 >= recency).count());
            let f = score(stats.iter().filter(|s| s.1 <= *frequency).count());
            let m = score(stats.iter().filter(|s| s.2 <= *monetary).count());
            let segment = if r >= 4 && f >= 4 && m >= 4 {
                "Champions"
            } else if r >= 3 && f >= 4 {
                "Loyal"
            } else if r >= 4 && *frequency == 1 {
                "New"
            } else if r >= 3 {
                "Potential loyalist"
            } else if r <= 2 && f >= 3 {
                "At risk"
            } else if r == 2 {
                "Hibernating"
            } else {
                "Lost"
            };
            out.insert(
                (iso(start), id.clone()),
                (
                    recency,
                    *frequency,
                    *monetary,
                    r,
                    f,
                    m,
                    segment,
                    *frequency > 1,
                ),
            );
        }
    }
    out
}

/// One complaints event: time, rank at equal times (opened, escalated,
/// resolved), status.
type StatusEvent = (i64, u8, String);

/// The median and 90th percentile as `percentile_cont`: linear interpolation
/// between the ranks around `p × (n − 1)`.
fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    let last = sorted.len().checked_sub(1)?;
    let rank = p * last as f64;
    let (low, high) = (rank.floor() as usize, rank.ceil() as usize);
    Some(sorted[low] + (rank - low as f64) * (sorted[high] - sorted[low]))
}

/// One hour and group of complaints_hourly: opened, resolved and escalated
/// events, and the hours each resolution took.
#[derive(Default)]
struct HourTally {
    counts: [f64; 3],
    resolution_hours: Vec<f64>,
}

/// complaints_hourly: per hour, category and severity.
fn complaints_hourly(
    records: &[Generated],
) -> BTreeMap<(String, String, String), [Option<f64>; 7]> {
    let complaints = events(
        records,
        cxpulse::config::default_sources()
            .named("complaints")
            .expect("declared"),
    );
    let mut transactions: BTreeMap<i64, f64> = BTreeMap::new();
    for (ts, _) in events(
        records,
        cxpulse::config::default_sources()
            .named("transactions")
            .expect("declared"),
    ) {
        *transactions.entry(hour_of(ts)).or_default() += 1.0;
    }
    // Per complaint: its group and its events in time order.
    let mut lives: BTreeMap<String, ((String, String), Vec<StatusEvent>)> = BTreeMap::new();
    for (ts, k) in &complaints {
        let status = text(k, "status");
        let rank = ["opened", "escalated", "resolved"]
            .iter()
            .position(|s| *s == status)
            .unwrap_or(2) as u8;
        let life = lives
            .entry(text(k, "complaint_id"))
            .or_insert_with(|| ((text(k, "category"), text(k, "severity")), Vec::new()));
        life.1.push((*ts, rank, status));
    }
    lives.values_mut().for_each(|(_, events)| events.sort());
    let opened_at = |id: &str| {
        lives[id]
            .1
            .iter()
            .filter(|e| e.2 == "opened")
            .map(|e| e.0)
            .min()
    };
    // Per hour and group: opened, resolved, escalated, resolution hours.
    let mut groups: BTreeMap<(i64, String, String), HourTally> = BTreeMap::new();
    for (ts, k) in &complaints {
        let g = groups
            .entry((hour_of(*ts), text(k, "category"), text(k, "severity")))
            .or_default();
        match k["status"].as_str() {
            Some("opened") => g.counts[0] += 1.0,
            Some("resolved") => {
                g.counts[1] += 1.0;
                if let Some(opened) = opened_at(&text(k, "complaint_id"))
                    .filter(|o| (*o..=*o + 30 * DAY).contains(ts))
                {
                    g.resolution_hours.push((ts - opened) as f64 / 3_600_000.0);
                }
            }
            _ => g.counts[2] += 1.0,
        }
    }
    groups
        .into_iter()
        .map(|((hour, category, severity), tally)| {
            let HourTally {
                counts,
                resolution_hours: mut hours,
            } = tally;
            let end = hour + HOUR;
            // Open at the window end: opened before it, and its last event
            // before it is not a resolution and at most 30 days old.
            let still_open = lives
                .values()
                .filter(|((c, s), _)| *c == category && *s == severity)
                .filter(|(_, events)| {
                    let before: Vec<&StatusEvent> = events.iter().filter(|e| e.0 < end).collect();
                    let opened = before.iter().any(|e| e.2 == "opened");
                    before
                        .last()
                        .is_some_and(|e| opened && e.2 != "resolved" && e.0 >= end - 30 * DAY)
                })
                .count();
            hours.sort_by(f64::total_cmp);
            let window_transactions = transactions.get(&hour).copied().unwrap_or(0.0);
            (
                (iso(hour), category, severity),
                [
                    Some(counts[0]),
                    Some(counts[1]),
                    Some(counts[2]),
                    Some(still_open as f64),
                    (window_transactions > 0.0).then(|| 1000.0 * counts[0] / window_transactions),
                    percentile(&hours, 0.5),
                    percentile(&hours, 0.9),
                ],
            )
        })
        .collect()
}

/// A text field of an output row.
fn text(row: &Value, field: &str) -> String {
    row[field].as_str().unwrap_or_default().to_owned()
}

/// The reference values of one row, in field order.
trait Expected {
    fn values(&self) -> Vec<Option<f64>>;
}

impl<const N: usize> Expected for [f64; N] {
    fn values(&self) -> Vec<Option<f64>> {
        self.iter().copied().map(Some).collect()
    }
}

impl<const N: usize> Expected for [Option<f64>; N] {
    fn values(&self) -> Vec<Option<f64>> {
        self.to_vec()
    }
}

/// Checks a job's final rows against the reference: exactly one row per
/// expected key; the first `exact` fields equal, the others close.
fn check_rows<K: Ord + std::fmt::Debug, V: Expected>(
    job: &str,
    rows: &[Value],
    want: &BTreeMap<K, V>,
    key: impl Fn(&Value) -> K,
    fields: &[&str],
    exact: usize,
) {
    let got: BTreeSet<K> = rows.iter().map(&key).collect();
    let missing: Vec<&K> = want.keys().filter(|k| !got.contains(*k)).collect();
    let extra: Vec<&K> = got.iter().filter(|k| !want.contains_key(*k)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{job}: {} final rows missing, e.g. {:?}; {} unexpected, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)],
        extra.len(),
        &extra[..extra.len().min(5)]
    );
    assert_eq!(rows.len(), want.len(), "{job}: no duplicate final rows");
    for row in rows {
        let k = key(row);
        let values = want[&k].values();
        assert_eq!(
            values.len(),
            fields.len(),
            "{job}: one field per reference value"
        );
        for (i, (field, value)) in fields.iter().zip(values).enumerate() {
            if i < exact {
                assert_eq!(row[*field].as_f64(), value, "{job} {k:?} {field}");
            } else {
                assert_close(&format!("{job} {k:?} {field}"), &row[*field], value);
            }
        }
    }
}

/// Reads `topic` from the start until it holds `expected` final rows (early
/// rows are skipped), then 2 s more to catch any extra row; 120 s at most.
fn final_rows(bootstrap: &str, topic: &str, expected: usize) -> Vec<Value> {
    use rdkafka::message::Message;
    let consumer = consumer_from_beginning(bootstrap, topic);
    let started = std::time::Instant::now();
    let mut rows = Vec::new();
    let mut complete_at: Option<std::time::Instant> = None;
    while started.elapsed() < Duration::from_secs(120) {
        if complete_at.is_some_and(|at| at.elapsed() > Duration::from_secs(2)) {
            break;
        }
        if let Some(message) = consumer.poll(Duration::from_millis(100)) {
            let message = message.expect("read");
            let row: Value =
                serde_json::from_slice(message.payload().unwrap_or_default()).expect("json");
            if row["final"] == Value::Bool(true) {
                rows.push(row);
                if rows.len() >= expected && complete_at.is_none() {
                    complete_at = Some(std::time::Instant::now());
                }
            }
        }
    }
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bundled_job_matches_the_reference() {
    let records = Generator::new(2026, 2_000, START).records(30);
    let broker = TestBroker::start();
    let prefix = unique_prefix("reference");
    let queries = tempfile::tempdir().expect("tempdir");
    for job in [
        "need_by_category",
        "satisfaction_hourly",
        "need_by_segment",
        "need_correlation",
        "satisfaction_correlation",
        "need_trend",
        "satisfaction_trend",
        "loyalty_rfm",
        "loyalty_summary",
        "complaints_hourly",
    ] {
        std::fs::copy(
            Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("queries/{job}.sql")),
            queries.path().join(format!("{job}.sql")),
        )
        .expect("copy query");
    }
    cxpulse::tools::bundled::write_views(queries.path()).expect("views");
    let mut config = test_config(&broker, &prefix, queries.path());
    config.engine.max_out_of_orderness_ms = 0;
    // Long enough that no partition counts as idle while the events are being
    // produced (which would make later events late: with 10 s, complaints,
    // the sparsest topic, once went idle on a loaded machine and 30 of them
    // were late); the last windows close this long after the last event.
    config.engine.idle_timeout_ms = 30_000;
    config.engine.batch_max_rows = 5_000;
    create_source_topics(&config, 1).await;
    let engine = RunningEngine::start(config.clone()).await;
    wait_for_metric(
        engine.addr,
        "cxpulse_assigned_partitions",
        3.0,
        Duration::from_secs(30),
    )
    .await;

    // The profiles first, and only once the engine has read them all, the
    // events: a lookup join sees the profiles as they are when its event is
    // processed, and the reference assumes they are all known.
    let kafka = producer(broker.bootstrap());
    let (profiles, stream_events): (Vec<&Generated>, Vec<&Generated>) =
        records.iter().partition(|r| {
            r.kind
                == cxpulse::config::default_sources()
                    .named("customers")
                    .expect("declared")
        });
    for (part, consumed) in [(profiles, "profiles"), (stream_events, "events")] {
        let mut acks = Vec::with_capacity(part.len());
        for record in &part {
            let future = kafka
                .send_result(
                    FutureRecord::to(config.topics.source_topic(record.kind))
                        .partition(0)
                        .key(&record.key)
                        .payload(&record.value),
                )
                .map_err(|(e, _)| e)
                .expect("queue record");
            acks.push(future);
        }
        for ack in futures::future::join_all(acks).await {
            ack.expect("delivery").expect("acknowledged");
        }
        if consumed == "profiles" {
            let series = format!(
                "cxpulse_records_consumed_total{{topic=\"{}\"}}",
                config.topics.customers
            );
            wait_for_metric(
                engine.addr,
                &series,
                part.len() as f64,
                Duration::from_secs(30),
            )
            .await;
        }
    }

    // Windows close once the watermark (the latest event time, with no
    // out-of-orderness allowed) reaches their end: the last one stays open.
    let last_event = |kind: Source| {
        records
            .iter()
            .filter(|r| r.kind == kind)
            .map(|r| r.ts)
            .max()
            .unwrap_or(0)
    };
    let (last_tx, last_fb) = (
        last_event(
            cxpulse::config::default_sources()
                .named("transactions")
                .expect("declared"),
        ),
        last_event(
            cxpulse::config::default_sources()
                .named("feedback")
                .expect("declared"),
        ),
    );
    let closed = |start: &str, width: i64, last: i64| {
        cxpulse::decode::parse_rfc3339_millis(start).unwrap_or(i64::MAX) + width <= last
    };
    let mut need = need_by_category(&records);
    need.retain(|(start, _), _| closed(start, HOUR, last_tx));
    let mut satisfaction = satisfaction_hourly(&records);
    satisfaction.retain(|(start, _, _), _| closed(start, HOUR, last_fb));
    let finals = |job: &str, expected: usize| -> Vec<Value> {
        tokio::task::block_in_place(|| {
            final_rows(
                broker.bootstrap(),
                &format!("{}{job}", config.topics.output_prefix),
                expected,
            )
        })
    };
    check_rows(
        "need_by_category",
        &finals("need_by_category", need.len()),
        &need,
        |r| (text(r, "window_start"), text(r, "category")),
        &[
            "orders",
            "customers",
            "revenue",
            "avg_basket",
            "order_share",
            "revenue_share",
        ],
        2,
    );

    check_rows(
        "satisfaction_hourly",
        &finals("satisfaction_hourly", satisfaction.len()),
        &satisfaction,
        |r| {
            (
                text(r, "window_start"),
                text(r, "channel"),
                text(r, "topic"),
            )
        },
        &["responses", "csat", "csat_pct", "nps", "ces"],
        0,
    );

    let mut segments = need_by_segment(&records);
    segments.retain(|(start, ..), _| closed(start, DAY, last_tx));
    check_rows(
        "need_by_segment",
        &finals("need_by_segment", segments.len()),
        &segments,
        |r| {
            (
                text(r, "window_start"),
                text(r, "category"),
                text(r, "age_band"),
                text(r, "gender"),
            )
        },
        &["orders", "revenue", "order_share", "revenue_share"],
        1,
    );

    let mut correlations = need_correlation(&records);
    correlations.retain(|(start, _), _| closed(start, DAY, last_tx));
    assert!(
        correlations.values().filter(|v| v[1].is_some()).count() >= 10,
        "the month has days and categories with 30 pairs or more"
    );
    check_rows(
        "need_correlation",
        &finals("need_correlation", correlations.len()),
        &correlations,
        |r| (text(r, "window_start"), text(r, "category")),
        &[
            "age_pairs",
            "corr_age_amount",
            "corr_age_items",
            "corr_female_amount",
        ],
        0,
    );

    let mut satisfied = satisfaction_correlation(&records);
    satisfied.retain(|(start, _), _| closed(start, DAY, last_fb));
    assert!(
        satisfied.values().any(|v| v[0].is_some()),
        "some days have 30 pairs"
    );
    check_rows(
        "satisfaction_correlation",
        &finals("satisfaction_correlation", satisfied.len()),
        &satisfied,
        |r| (text(r, "window_start"), text(r, "channel")),
        &[
            "corr_age_rating",
            "corr_age_nps",
            "corr_female_rating",
            "corr_female_nps",
        ],
        0,
    );

    let trends = need_trend(&records, last_tx);
    check_rows(
        "need_trend",
        &finals("need_trend", trends.len()),
        &trends,
        |r| (text(r, "window_start"), text(r, "category")),
        &[
            "orders",
            "daily_orders_slope",
            "last_7d",
            "prior_7d",
            "change_7d",
        ],
        0,
    );

    let satisfaction_trends = satisfaction_trend(&records, last_fb);
    check_rows(
        "satisfaction_trend",
        &finals("satisfaction_trend", satisfaction_trends.len()),
        &satisfaction_trends,
        |r| (text(r, "window_start"), text(r, "channel")),
        &["nps_slope", "csat_slope", "nps_change_7d", "csat_change_7d"],
        0,
    );

    let rfm = loyalty_rfm(&records, last_tx);
    let segments_seen: BTreeSet<&str> = rfm.values().map(|v| v.6).collect();
    assert_eq!(
        segments_seen.len(),
        7,
        "every RFM segment is populated: {segments_seen:?}"
    );
    let rows = finals("loyalty_rfm", rfm.len());
    assert_eq!(
        rows.len(),
        rfm.len(),
        "one final row per window and customer"
    );
    for row in &rows {
        let key = (text(row, "window_start"), text(row, "customer_id"));
        let want = rfm
            .get(&key)
            .unwrap_or_else(|| panic!("unexpected row {row}"));
        let got = (
            row["recency_days"].as_i64(),
            row["frequency"].as_i64(),
            row["r_score"].as_i64(),
            row["f_score"].as_i64(),
            row["m_score"].as_i64(),
            row["segment"].as_str(),
            row["repeat_customer"].as_bool(),
        );
        assert_eq!(
            got,
            (
                Some(want.0),
                Some(want.1),
                Some(want.3),
                Some(want.4),
                Some(want.5),
                Some(want.6),
                Some(want.7)
            ),
            "{key:?}"
        );
        assert_close(&format!("{key:?} monetary"), &row["monetary"], Some(want.2));
    }

    // loyalty_summary: the same RFM rows, counted per window and segment.
    let mut summary: BTreeMap<(String, String), [f64; 4]> = BTreeMap::new();
    let mut windows: BTreeMap<String, (f64, f64, f64)> = BTreeMap::new();
    for ((start, _), v) in &rfm {
        let w = windows.entry(start.clone()).or_default();
        w.0 += 1.0;
        w.1 += f64::from(u8::from(v.7));
        w.2 += f64::from(u8::from(v.6 == "At risk"));
        summary.entry((start.clone(), v.6.to_owned())).or_default()[0] += 1.0;
    }
    for ((start, _), v) in summary.iter_mut() {
        let (customers, repeat, at_risk) = windows[start];
        v[1] = v[0] / customers;
        v[2] = repeat / customers;
        v[3] = at_risk / customers;
    }
    check_rows(
        "loyalty_summary",
        &finals("loyalty_summary", summary.len()),
        &summary,
        |r| (text(r, "window_start"), text(r, "segment")),
        &[
            "customers",
            "customer_share",
            "repeat_rate",
            "at_risk_share",
        ],
        0,
    );

    // Escalations after a resolution make "still open" depend on the status
    // at the window end, not the latest one: the month must hold some.
    let mut resolved_at: BTreeMap<String, i64> = BTreeMap::new();
    let mut reopened = 0;
    for (ts, k) in events(
        &records,
        cxpulse::config::default_sources()
            .named("complaints")
            .expect("declared"),
    ) {
        match k["status"].as_str() {
            Some("resolved") => {
                resolved_at.insert(text(&k, "complaint_id"), ts);
            }
            Some("escalated") if resolved_at.contains_key(&text(&k, "complaint_id")) => {
                reopened += 1;
            }
            _ => {}
        }
    }
    assert!(
        reopened > 0,
        "some complaints are escalated after their resolution"
    );
    // Every partition is in time order, so no event may count as late.
    let (_, exposition) = http_get(engine.addr, "/metrics");
    let late: f64 = exposition
        .lines()
        .filter(|l| l.starts_with("cxpulse_late_records_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(late, 0.0, "late events:\n{exposition}");
    let last_complaint = last_event(
        cxpulse::config::default_sources()
            .named("complaints")
            .expect("declared"),
    );
    let mut complaints = complaints_hourly(&records);
    complaints.retain(|(start, ..), _| closed(start, HOUR, last_tx.min(last_complaint)));
    assert!(
        complaints.values().any(|v| v[3] > Some(0.0))
            && complaints.values().any(|v| v[6].is_some()),
        "some hours have open complaints and resolution times"
    );
    check_rows(
        "complaints_hourly",
        &finals("complaints_hourly", complaints.len()),
        &complaints,
        |r| {
            (
                text(r, "window_start"),
                text(r, "category"),
                text(r, "severity"),
            )
        },
        &[
            "opened",
            "resolved",
            "escalated",
            "still_open",
            "opened_per_1000_tx",
            "median_resolution_hours",
            "p90_resolution_hours",
        ],
        4,
    );
    engine.stop().await;
}
