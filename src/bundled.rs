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

/// Every bundled shared view: `(view name, SQL file text)`.
pub const VIEWS: [(&str, &str); 1] = [(
    "rfm_segments",
    include_str!("../queries/views/rfm_segments.sql"),
)];

/// Writes every bundled query into `dir` as `<job>.sql`, and the shared
/// views they read into `dir/views/`.
pub fn write_queries(dir: &Path) -> std::io::Result<()> {
    for (job, sql) in QUERIES {
        std::fs::write(dir.join(format!("{job}.sql")), sql)?;
    }
    write_views(dir)
}

/// Writes the bundled shared views into `dir/views/` (for a queries
/// directory `dir` holding some of the bundled queries).
pub fn write_views(dir: &Path) -> std::io::Result<()> {
    let views = crate::query::views::views_dir(dir);
    std::fs::create_dir_all(&views)?;
    for (name, sql) in VIEWS {
        std::fs::write(views.join(format!("{name}.sql")), sql)?;
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
        let views: BTreeSet<String> =
            std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("queries/views"))
                .expect("queries/views/")
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter_map(|name| name.strip_suffix(".sql").map(str::to_owned))
                .collect();
        let bundled: BTreeSet<String> = VIEWS.iter().map(|(v, _)| (*v).to_owned()).collect();
        assert_eq!(bundled, views);
        for (view, sql) in VIEWS {
            let file =
                Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("queries/views/{view}.sql"));
            assert_eq!(std::fs::read_to_string(file).expect("read"), sql, "{view}");
        }
    }
}
