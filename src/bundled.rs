//! The query files of `queries/`, built into the binary so that `cxpulse
//! demo` runs them from any directory.

use std::path::Path;

/// Every bundled query: `(job name, SQL file text)`.
pub const QUERIES: [(&str, &str); 11] = [
    (
        "complaint_alerts",
        include_str!("../queries/complaint_alerts.sql"),
    ),
    (
        "complaints_hourly",
        include_str!("../queries/complaints_hourly.sql"),
    ),
    ("loyalty_rfm", include_str!("../queries/loyalty_rfm.sql")),
    (
        "loyalty_summary",
        include_str!("../queries/loyalty_summary.sql"),
    ),
    (
        "need_by_category",
        include_str!("../queries/need_by_category.sql"),
    ),
    (
        "need_by_segment",
        include_str!("../queries/need_by_segment.sql"),
    ),
    (
        "need_correlation",
        include_str!("../queries/need_correlation.sql"),
    ),
    ("need_trend", include_str!("../queries/need_trend.sql")),
    (
        "satisfaction_correlation",
        include_str!("../queries/satisfaction_correlation.sql"),
    ),
    (
        "satisfaction_hourly",
        include_str!("../queries/satisfaction_hourly.sql"),
    ),
    (
        "satisfaction_trend",
        include_str!("../queries/satisfaction_trend.sql"),
    ),
];

/// Writes every bundled query into `dir` as `<job>.sql`.
pub fn write_queries(dir: &Path) -> std::io::Result<()> {
    for (job, sql) in QUERIES {
        std::fs::write(dir.join(format!("{job}.sql")), sql)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn the_bundle_is_exactly_the_queries_directory() {
        let on_disk: BTreeSet<String> =
            std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("queries"))
                .expect("queries/")
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter_map(|name| name.strip_suffix(".sql").map(str::to_owned))
                .collect();
        let bundled: BTreeSet<String> = QUERIES.iter().map(|(j, _)| (*j).to_owned()).collect();
        assert_eq!(bundled, on_disk);
        for (job, sql) in QUERIES {
            let file = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("queries/{job}.sql"));
            assert_eq!(std::fs::read_to_string(file).expect("read"), sql, "{job}");
        }
    }
}
