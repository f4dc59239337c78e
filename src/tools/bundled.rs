//! The query files of `queries/`, built into the binary so that `cxpulse
//! demo` runs them from any directory.

use std::path::Path;

/// Every bundled query: `(job name, SQL file text)`.
pub const QUERIES: [(&str, &str); 11] = [
    (
        "complaint_alerts",
        include_str!("../../queries/complaint_alerts.sql"),
    ),
    (
        "complaints_hourly",
        include_str!("../../queries/complaints_hourly.sql"),
    ),
    ("loyalty_rfm", include_str!("../../queries/loyalty_rfm.sql")),
    (
        "loyalty_summary",
        include_str!("../../queries/loyalty_summary.sql"),
    ),
    (
        "need_by_category",
        include_str!("../../queries/need_by_category.sql"),
    ),
    (
        "need_by_segment",
        include_str!("../../queries/need_by_segment.sql"),
    ),
    (
        "need_correlation",
        include_str!("../../queries/need_correlation.sql"),
    ),
    ("need_trend", include_str!("../../queries/need_trend.sql")),
    (
        "satisfaction_correlation",
        include_str!("../../queries/satisfaction_correlation.sql"),
    ),
    (
        "satisfaction_hourly",
        include_str!("../../queries/satisfaction_hourly.sql"),
    ),
    (
        "satisfaction_trend",
        include_str!("../../queries/satisfaction_trend.sql"),
    ),
];

/// Every bundled shared view: `(view name, SQL file text)`.
pub const VIEWS: [(&str, &str); 1] = [(
    "rfm_segments",
    include_str!("../../queries/views/rfm_segments.sql"),
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

    /// Asserts that `bundle` holds exactly the `.sql` files of `folder`
    /// (relative to the crate), by name and content.
    fn assert_bundles(folder: &str, bundle: &[(&str, &str)]) {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(folder);
        let on_disk: BTreeSet<String> = std::fs::read_dir(&dir)
            .expect(folder)
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter_map(|name| name.strip_suffix(".sql").map(str::to_owned))
            .collect();
        let bundled: BTreeSet<String> = bundle.iter().map(|(n, _)| (*n).to_owned()).collect();
        assert_eq!(bundled, on_disk, "{folder}");
        for (name, sql) in bundle {
            let file = dir.join(format!("{name}.sql"));
            assert_eq!(&std::fs::read_to_string(file).expect("read"), sql, "{name}");
        }
    }

    #[test]
    fn the_bundle_is_exactly_the_queries_directory() {
        assert_bundles("queries", &QUERIES);
        assert_bundles("queries/views", &VIEWS);
    }
}
