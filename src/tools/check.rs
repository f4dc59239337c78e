//! `cxpulse check`: validates the configuration and plans every query.

use std::fmt;
use std::path::Path;

use crate::config::Config;
use crate::job::{self, Job};
use crate::lookup::Lookups;
use crate::query::views;
use crate::query::{QueryError, QueryFile};

/// The outcome of a check: jobs that planned and every problem found.
#[derive(Debug, Default)]
pub struct CheckReport {
    /// `(job, output topic)` of every query that planned.
    pub jobs: Vec<(String, String)>,
    /// Shared views that planned.
    pub views: Vec<String>,
    /// Every problem, each prefixed with where it is (file:line or env var).
    pub problems: Vec<String>,
}

impl CheckReport {
    /// Whether no problem was found.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for view in &self.views {
            writeln!(f, "ok      view {view}")?;
        }
        for (job, topic) in &self.jobs {
            writeln!(f, "ok      {job} -> {topic}")?;
        }
        for problem in &self.problems {
            writeln!(f, "error   {}", problem.replace('\n', "\n        "))?;
        }
        Ok(())
    }
}

/// Loads the configuration and plans every query of its queries directory.
pub async fn check(config_file: Option<&Path>) -> CheckReport {
    let mut report = CheckReport::default();
    let config = match Config::load(config_file) {
        Ok(config) => config,
        Err(e) => {
            report.problems = e.0.iter().map(ToString::to_string).collect();
            return report;
        }
    };
    let (views, view_problems) = check_views(&config).await;
    let (jobs, problems) = job::plan_configured(&config).await;
    report.views = views;
    report.jobs = jobs.into_iter().map(|j| (j.name, j.output_topic)).collect();
    report.problems = view_problems
        .iter()
        .chain(&problems)
        .map(ToString::to_string)
        .collect();
    report
}

/// Plans each shared view on its own, as a query reading it would, so that
/// a problem in a view is reported at the view file's line; returns the
/// views that planned and the problems.
async fn check_views(config: &Config) -> (Vec<String>, Vec<QueryError>) {
    let (all, mut problems) = views::load(&config.views_dir());
    let mut planned = Vec::new();
    for view in &all {
        if let Some(problem) = view.source_name_problem(config.declared) {
            problems.push(problem);
            continue;
        }
        let checked = async {
            let text = views::as_query_text(view, &all).map_err(|e| QueryError {
                file: view.path.clone(),
                line: crate::query::first_sql_line(&view.text),
                message: e.to_string(),
            })?;
            let query = QueryFile::parse(&view.path, text)?;
            Job::plan(
                query,
                &Lookups::new(config.declared),
                &config.topics.output_prefix,
            )
            .await
        };
        match checked.await {
            Ok(_) => planned.push(view.name.clone()),
            Err(e) => problems.push(e),
        }
    }
    (planned, problems)
}
