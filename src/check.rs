//! `cxpulse check`: validates the configuration and plans every query.

use std::fmt;
use std::path::Path;

use crate::config::Config;
use crate::job;

/// The outcome of a check: jobs that planned and every problem found.
#[derive(Debug, Default)]
pub struct CheckReport {
    /// `(job, output topic)` of every query that planned.
    pub jobs: Vec<(String, String)>,
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
    if let Err(e) = crate::schema::declare(&config.sources) {
        report.problems = vec![format!("[[sources]]: {e}")];
        return report;
    }
    let (jobs, problems) = job::plan_configured(&config).await;
    report.jobs = jobs.into_iter().map(|j| (j.name, j.output_topic)).collect();
    report.problems = problems.iter().map(ToString::to_string).collect();
    report
}
