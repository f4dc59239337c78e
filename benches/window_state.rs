//! Window state of the bundled `loyalty_rfm` job (HOP 365 days, sliding by
//! one day, one row per customer per window): its bytes once it holds 365
//! daily panes, the cost of reading that figure, and the time of one daily
//! firing, the window of the last 365 days.
//!
//! Customers `c-0 … c-{N-1}` (default 100,000) each buy on a given day with
//! probability 1/`share` (default 4: about 25,000 buyers per daily pane),
//! deterministically. The job is planned by the engine's planner and fed a
//! day at a time by the engine's own `accumulate`; windows ending before
//! the last day are marked closed (as if fired on earlier days), so each
//! firing closes exactly one window. Then `firings` more days (default 5)
//! are added and fired, one day at a time, as the engine does every day.
//!
//! Run: `cargo bench --bench window_state [-- --customers N --days D
//! --share S --firings F --json PATH]`; figures go to stdout and to
//! `target/window_state.json`.

use std::time::{Duration, Instant};

use cxpulse::decode::{BatchBuilder, parse_record};
use cxpulse::job::Job;
use cxpulse::lookup::Lookups;

/// 2026-01-01T00:00:00Z.
const START: i64 = 1_767_225_600_000;
const DAY: i64 = 86_400_000;

struct Options {
    customers: u64,
    days: i64,
    share: u64,
    firings: i64,
    json: std::path::PathBuf,
}

fn options() -> Options {
    let mut o = Options {
        customers: 100_000,
        days: 365,
        share: 4,
        firings: 5,
        json: std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/window_state.json"),
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let value = || args.get(i + 1).cloned().unwrap_or_default();
        let number = || value().parse::<i64>().expect("a number");
        match args[i].as_str() {
            "--customers" => o.customers = number() as u64,
            "--days" => o.days = number(),
            "--share" => o.share = number() as u64,
            "--firings" => o.firings = number(),
            "--json" => o.json = value().into(),
            // `cargo bench` passes `--bench`.
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    o
}

/// Whether customer `c` buys on `day` (a fixed hash, about 1 in `share`).
fn buys(c: u64, day: i64, share: u64) -> bool {
    let mut h =
        c.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (day as u64).wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    h ^= h >> 29;
    h = h.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    h ^= h >> 32;
    h.is_multiple_of(share)
}

/// One day's transactions, decoded as the engine decodes them.
fn day_batch(o: &Options, day: i64) -> arrow::array::RecordBatch {
    let source = cxpulse::config::default_sources()
        .named("transactions")
        .expect("declared");
    let mut builder = BatchBuilder::new(source);
    for c in (0..o.customers).filter(|c| buys(*c, day, o.share)) {
        let ts = START + day * DAY + (c as i64 % 86_400) * 1_000;
        let line = format!(
            r#"{{"event_id":"t-{day}-{c}","customer_id":"c-{c}","ts":{ts},"amount":{}.{:02},"category":"books"}}"#,
            1 + (c * 7 + day as u64) % 300,
            c % 100
        );
        let cells = parse_record(source, line.as_bytes()).expect("a valid transaction");
        builder.append(&cells);
    }
    builder.finish().expect("batch")
}

async fn add_day(job: &mut Job, o: &Options, day: i64) -> Duration {
    let batch = day_batch(o, day);
    let began = Instant::now();
    job.windowed_mut()
        .expect("windowed")
        .accumulate(
            cxpulse::config::default_sources()
                .named("transactions")
                .expect("declared"),
            0,
            batch,
        )
        .await
        .expect("accumulate");
    began.elapsed()
}

/// Fires the window ending at the end of `day`; its time and rows.
async fn fire_day(job: &mut Job, day: i64) -> (Duration, usize) {
    let windowed = job.windowed_mut().expect("windowed");
    let far = Instant::now() + Duration::from_secs(3_600);
    let began = Instant::now();
    let fired = windowed.fire(START + (day + 1) * DAY, far).await;
    let took = began.elapsed();
    assert!(fired.failures.is_empty(), "{:?}", fired.failures);
    let rows = fired.rows;
    (took, rows.iter().map(|b| b.num_rows()).sum())
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let o = options();
    let queries = tempfile::tempdir().expect("tempdir");
    let bundled = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("queries/loyalty_rfm.sql");
    std::fs::copy(&bundled, queries.path().join("loyalty_rfm.sql")).expect("copy the query");
    cxpulse::tools::bundled::write_views(queries.path()).expect("the views it reads");
    let (mut jobs, problems) = cxpulse::job::load_all(
        queries.path(),
        &cxpulse::query::views::views_dir(queries.path()),
        &Lookups::new(cxpulse::config::default_sources()),
        "bench.",
        None,
    )
    .await;
    assert!(problems.is_empty(), "{problems:?}");
    let mut job = jobs.pop().expect("loyalty_rfm");

    println!(
        "loyalty_rfm: {} customers, 1 in {} buying each day, {} days",
        o.customers, o.share, o.days
    );
    let mut accumulate = Duration::ZERO;
    for day in 0..o.days {
        accumulate += add_day(&mut job, &o, day).await;
    }
    let windowed = job.windowed_mut().expect("windowed");
    let began = Instant::now();
    let state_bytes = windowed.state_bytes();
    let read_bytes = began.elapsed();
    let state_rows = windowed.state_rows();
    println!(
        "state: {} rows, {:.1} MiB ({:.0} bytes per row); reading the figure took {:?}; accumulating took {:.2} s",
        state_rows,
        state_bytes as f64 / 1048576.0,
        state_bytes as f64 / state_rows.max(1) as f64,
        read_bytes,
        accumulate.as_secs_f64()
    );
    // Every window ending before the last day has fired already.
    windowed.restore_closed_through(START + (o.days - 1) * DAY);
    let mut firings = Vec::new();
    let (took, rows) = fire_day(&mut job, o.days - 1).await;
    println!(
        "firing the window of days 0–{}: {:.3} s, {rows} rows",
        o.days - 1,
        took.as_secs_f64()
    );
    firings.push((took.as_secs_f64(), rows));
    for day in o.days..o.days + o.firings {
        add_day(&mut job, &o, day).await;
        let (took, rows) = fire_day(&mut job, day).await;
        println!("day {day}: firing {:.3} s, {rows} rows", took.as_secs_f64());
        firings.push((took.as_secs_f64(), rows));
    }
    let windowed = job.windowed_mut().expect("windowed");
    let state_bytes_after = windowed.state_bytes();
    println!(
        "state after the firings (365 panes and their merged blocks): {:.1} MiB",
        state_bytes_after as f64 / 1048576.0
    );
    let mut times: Vec<f64> = firings.iter().map(|f| f.0).collect();
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    println!("median daily firing: {median:.3} s");
    let peak_rss = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024);
    println!(
        "peak RSS of this process: {:.0} MiB",
        peak_rss as f64 / 1048576.0
    );
    let report = serde_json::json!({
        "customers": o.customers,
        "share": o.share,
        "days": o.days,
        "state_rows": state_rows,
        "state_bytes": state_bytes,
        "state_bytes_read_seconds": read_bytes.as_secs_f64(),
        "state_bytes_after_firings": state_bytes_after,
        "accumulate_seconds": accumulate.as_secs_f64(),
        "firings": firings.iter().map(|(s, r)| serde_json::json!({"seconds": s, "rows": r})).collect::<Vec<_>>(),
        "median_firing_seconds": median,
        "peak_rss_bytes": peak_rss,
    });
    std::fs::write(
        &o.json,
        serde_json::to_string_pretty(&report).expect("json"),
    )
    .expect("write the report");
    println!("written to {}", o.json.display());
}
