//! The declared sources are a value of each configuration, not of the
//! process: two configurations with different `[[sources]]` are used side by
//! side in one process (the scale-out tests run several engines in one).

use std::path::Path;

use cxpulse::config::Config;
use cxpulse::decode::{BatchBuilder, parse_record};
use cxpulse::job::Job;
use cxpulse::lookup::Lookups;
use cxpulse::query::QueryFile;

fn nexmark() -> Config {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/nexmark/config.toml");
    Config::load(Some(&file)).expect("the Nexmark configuration")
}

#[tokio::test]
async fn two_configurations_keep_their_own_sources_in_one_process() {
    let cx = Config::load(None).expect("the default configuration");
    let auction = nexmark();
    let names =
        |config: &Config| -> Vec<&str> { config.declared.all().map(|s| s.name()).collect() };
    assert_eq!(
        names(&cx),
        ["customers", "transactions", "feedback", "complaints"]
    );
    assert_eq!(names(&auction), ["person", "auction", "bid"]);

    // Records of each decode against their own configuration's sources,
    // interleaved, and not against the other's.
    let transactions = cx.declared.named("transactions").expect("declared");
    let bid = auction.declared.named("bid").expect("declared");
    assert!(auction.declared.named("transactions").is_none());
    assert!(cx.declared.named("bid").is_none());
    let tx = br#"{"event_id":"t1","customer_id":"c1","ts":"2026-03-01T10:00:00Z","amount":5,"category":"books"}"#;
    let offer = br#"{"auction":1000,"bidder":2001,"price":750,"channel":"web","url":"u","date_time":1700000000000,"extra":""}"#;
    let mut tx_rows = BatchBuilder::new(transactions);
    let mut bid_rows = BatchBuilder::new(bid);
    for _ in 0..2 {
        tx_rows.append(&parse_record(transactions, tx).expect("a transaction"));
        bid_rows.append(&parse_record(bid, offer).expect("a bid"));
    }
    assert!(parse_record(bid, tx).is_err(), "a transaction is not a bid");
    let (tx_rows, bid_rows) = (
        tx_rows.finish().expect("rows"),
        bid_rows.finish().expect("rows"),
    );
    assert_eq!((tx_rows.num_rows(), bid_rows.num_rows()), (2, 2));
    assert_eq!(tx_rows.schema().field(0).name(), "event_id");
    assert_eq!(bid_rows.schema().field(0).name(), "auction");

    // A query plans against the sources it is given, and only those.
    let plan = |config: &Config, sql: &str| {
        let query = QueryFile::parse(Path::new("q.sql"), sql.to_owned()).expect("parses");
        let lookups = Lookups::new(config.declared);
        async move {
            Job::plan(query, &lookups, "out.")
                .await
                .map(|job| job.sources())
        }
    };
    let bids = "SELECT auction, price FROM bid";
    let orders = "SELECT event_id, amount FROM transactions";
    assert_eq!(plan(&auction, bids).await.expect("plans"), [bid]);
    assert_eq!(plan(&cx, orders).await.expect("plans"), [transactions]);
    assert!(
        plan(&cx, bids).await.is_err(),
        "bid is not a source of the default configuration"
    );
    assert!(
        plan(&auction, orders).await.is_err(),
        "transactions is not a Nexmark source"
    );
}
