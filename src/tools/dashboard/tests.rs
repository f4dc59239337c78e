use prometheus::{GaugeVec, IntCounterVec, Opts, Registry};

use super::*;
use crate::config::Config;

fn registry() -> Registry {
    let registry = Registry::new();
    let counter = |name: &str, labels: &[&str]| {
        let c = IntCounterVec::new(Opts::new(name, "help"), labels).expect("counter");
        registry.register(Box::new(c.clone())).expect("register");
        c
    };
    let gauge = |name: &str, labels: &[&str]| {
        let g = GaugeVec::new(Opts::new(name, "help"), labels).expect("gauge");
        registry.register(Box::new(g.clone())).expect("register");
        g
    };
    let consumed = counter(RECORDS_CONSUMED, &["topic"]);
    consumed.with_label_values(&["cx.transactions"]).inc_by(120);
    consumed.with_label_values(&["cx.feedback"]).inc_by(40);
    consumed.with_label_values(&["cx.customers"]).inc_by(500);
    let invalid = counter(RECORDS_INVALID, &["topic", "reason"]);
    invalid
        .with_label_values(&["cx.transactions", "missing_field"])
        .inc_by(3);
    invalid
        .with_label_values(&["cx.transactions", "invalid_json"])
        .inc_by(2);
    invalid
        .with_label_values(&["cx.transactions", "late"])
        .inc_by(7);
    invalid
        .with_label_values(&["cx.transactions", "job_error"])
        .inc_by(100);
    let watermark = gauge(WATERMARK, &["source"]);
    watermark
        .with_label_values(&["transactions"])
        .set(1_767_232_800.0); // 2026-01-01 02:00
    watermark
        .with_label_values(&["feedback"])
        .set(1_767_229_200.0); // 2026-01-01 01:00
    counter(OUTPUT_RECORDS, &["job"])
        .with_label_values(&["need_by_category"])
        .inc_by(16);
    let nps = gauge(NPS, &["channel", "topic"]);
    nps.with_label_values(&["web", "price"]).set(-12.5);
    gauge(CSAT, &["channel", "topic"])
        .with_label_values(&["web", "price"])
        .set(3.75);
    let revenue = gauge(REVENUE, &["category"]);
    revenue.with_label_values(&["books"]).set(90.0);
    revenue.with_label_values(&["home"]).set(410.5);
    revenue.with_label_values(&["toys"]).set(120.0);
    gauge(SEGMENT_CUSTOMERS, &["segment"])
        .with_label_values(&["Champions"])
        .set(42.0);
    registry
}

fn snapshot() -> Snapshot {
    let config = Config::load(None).expect("default config");
    Snapshot::read(&registry().gather(), &config.topics, config.declared)
}

#[test]
fn a_snapshot_reads_sources_jobs_and_exported_gauges() {
    let s = snapshot();
    assert_eq!(
        s.sources["transactions"],
        SourceLine {
            consumed: 120.0,
            invalid: 5.0,
            late: 7.0,
            watermark: Some(1_767_232_800.0),
        }
    );
    assert_eq!(s.sources["feedback"].consumed, 40.0);
    assert!(
        !s.sources.contains_key("customers"),
        "profiles are not events"
    );
    assert_eq!(s.job_rows["need_by_category"], 16.0);
    assert_eq!(
        s.satisfaction[&("web".to_owned(), "price".to_owned())],
        (Some(-12.5), Some(3.75))
    );
    assert_eq!(s.top_categories(2), vec![("home", 410.5), ("toys", 120.0)]);
    assert_eq!(s.segments["Champions"], 42.0);
    // The slowest source's watermark.
    assert_eq!(s.event_time().as_deref(), Some("2026-01-01 01:00"));
}

#[test]
fn rates_are_the_growth_per_second() {
    let now = snapshot();
    let mut earlier = now.clone();
    earlier
        .sources
        .get_mut("transactions")
        .expect("tx")
        .consumed = 20.0;
    let rates = now.rates(&earlier, Duration::from_secs(2));
    assert_eq!(rates["transactions"], 50.0);
    assert_eq!(rates["feedback"], 0.0);
    let line = plain::status_line(
        &now,
        &earlier,
        Duration::from_secs(2),
        Duration::from_secs(9),
    );
    assert_eq!(
        line,
        "[   9s] event time 2026-01-01 01:00 | feedback 0/s (40 read, 0 invalid, 0 late) \
         | transactions 50/s (120 read, 5 invalid, 7 late)"
    );
}

#[test]
fn the_summary_and_the_terminal_show_jobs_and_metrics() {
    let s = snapshot();
    let summary = plain::summary(&s);
    assert!(
        summary.contains("  need_by_category                 16\n"),
        "{summary}"
    );
    assert!(
        summary.contains("  web    price     NPS  -12.5  CSAT  3.75\n"),
        "{summary}"
    );
    assert!(summary.contains("  home             410.50\n"), "{summary}");
    assert!(
        summary.contains("  Champions                42\n"),
        "{summary}"
    );

    let backend = ratatui::backend::TestBackend::new(120, 40);
    let mut terminal = ratatui::Terminal::new(backend).expect("terminal");
    terminal
        .draw(|frame| {
            terminal::draw(
                frame,
                &["metrics: http://127.0.0.1:9464/metrics".to_owned()],
                &s,
                &s,
                Duration::from_secs(1),
            );
        })
        .expect("draw");
    let screen: String = terminal
        .backend()
        .buffer()
        .content()
        .iter()
        .map(|cell| cell.symbol())
        .collect();
    for expected in [
        "event time 2026-01-01 01:00",
        "http://127.0.0.1:9464/metrics",
        "need_by_category",
        "-12.5",
        "410.50",
        "Champions",
    ] {
        assert!(screen.contains(expected), "{expected} missing");
    }
}
