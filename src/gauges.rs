//! `@gauge` export: a job's result columns as Prometheus gauges.
//!
//! `-- @gauge nps, csat BY channel` in job `satisfaction_hourly` exports
//! `cxpulse_satisfaction_hourly_nps{channel="web"}` (the latest final value)
//! and `cxpulse_satisfaction_hourly_nps_early{channel="web"}` (the latest
//! early value, windowed jobs with `@emit every`). Each job may create at
//! most a configured number of series; updates that would need more are
//! counted in `cxpulse_exported_updates_dropped_total{job}`, not exported.

use std::collections::HashSet;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Float64Type, SchemaRef};
use arrow::util::display::array_value_to_string;
use prometheus::{GaugeVec, Opts};

use crate::metrics::Metrics;
use crate::query::{FINAL_COLUMN, GaugeSpec};

/// Columns that identify one customer or one event: never a label, since
/// every value would be a new series.
const PER_ENTITY_COLUMNS: &[&str] = &["customer_id", "event_id", "order_id", "complaint_id"];

/// What is wrong with a `@gauge` line for a query returning `schema`, if anything.
pub fn problem(spec: &GaugeSpec, schema: &SchemaRef) -> Option<String> {
    for column in &spec.columns {
        let field = schema.field_with_name(column).ok()?;
        if !field.data_type().is_numeric() && *field.data_type() != DataType::Boolean {
            return Some(format!(
                "@gauge column `{column}` is {}, not a number",
                field.data_type()
            ));
        }
    }
    spec.by
        .iter()
        .find(|by| PER_ENTITY_COLUMNS.contains(&by.as_str()))
        .map(|by| {
            format!(
                "@gauge … BY {by}: a label per customer or event would create one series each; \
                 export an aggregate instead (the Kafka output keeps the per-key rows)"
            )
        })
}

/// One exported column: its final and early gauge families.
struct Family {
    column: String,
    by: Vec<String>,
    latest: GaugeVec,
    early: GaugeVec,
}

/// The gauges of one job.
pub struct JobGauges {
    job: String,
    families: Vec<Family>,
    series: HashSet<(usize, bool, Vec<String>)>,
    limit: usize,
}

/// The name of the gauge of `column` of `job`'s results (its early values'
/// gauge adds `_early`).
pub fn gauge_name(job: &str, column: &str) -> String {
    format!("cxpulse_{job}_{column}")
}

impl JobGauges {
    /// Registers the gauge families of `job`'s `@gauge` lines.
    pub fn register(
        job: &str,
        specs: &[GaugeSpec],
        limit: usize,
        metrics: &Metrics,
    ) -> Result<Self, prometheus::Error> {
        let mut families = Vec::new();
        for spec in specs {
            for column in &spec.columns {
                let labels: Vec<&str> = spec.by.iter().map(String::as_str).collect();
                let name = gauge_name(job, column);
                let latest = GaugeVec::new(
                    Opts::new(&name, format!("Latest final `{column}` of job {job}.")),
                    &labels,
                )?;
                let early = GaugeVec::new(
                    Opts::new(
                        format!("{name}_early"),
                        format!("Latest early (non-final) `{column}` of job {job}."),
                    ),
                    &labels,
                )?;
                metrics.register(Box::new(latest.clone()))?;
                metrics.register(Box::new(early.clone()))?;
                families.push(Family {
                    column: column.clone(),
                    by: spec.by.clone(),
                    latest,
                    early,
                });
            }
        }
        metrics.gauge_series_dropped.with_label_values(&[job]);
        Ok(Self {
            job: job.to_owned(),
            families,
            series: HashSet::new(),
            limit,
        })
    }

    /// Sets the gauges from published result rows (the last row of a label
    /// set wins). Rows without a `final` column count as final.
    pub fn update(&mut self, batches: &[RecordBatch], metrics: &Metrics) {
        let mut dropped = 0;
        for batch in batches {
            let finals = batch
                .column_by_name(FINAL_COLUMN)
                .map(|c| c.as_boolean().clone());
            for (index, family) in self.families.iter().enumerate() {
                let Some(values) = batch
                    .column_by_name(&family.column)
                    .and_then(|c| cast(c, &DataType::Float64).ok())
                else {
                    continue;
                };
                let values = values.as_primitive::<Float64Type>();
                let labels: Vec<_> = family
                    .by
                    .iter()
                    .filter_map(|b| batch.column_by_name(b))
                    .collect();
                for row in 0..batch.num_rows() {
                    if values.is_null(row) {
                        continue;
                    }
                    let is_final = finals.as_ref().is_none_or(|f| f.value(row));
                    let label_values: Vec<String> = labels
                        .iter()
                        .map(|c| array_value_to_string(c, row).unwrap_or_default())
                        .collect();
                    let key = (index, is_final, label_values);
                    if !self.series.contains(&key) {
                        if self.series.len() >= self.limit {
                            dropped += 1;
                            continue;
                        }
                        self.series.insert(key.clone());
                    }
                    let refs: Vec<&str> = key.2.iter().map(String::as_str).collect();
                    let gauge = if is_final {
                        &family.latest
                    } else {
                        &family.early
                    };
                    gauge.with_label_values(&refs).set(values.value(row));
                }
            }
        }
        if dropped > 0 {
            metrics
                .gauge_series_dropped
                .with_label_values(&[self.job.as_str()])
                .inc_by(dropped);
        }
    }

    /// Removes this job's gauges from the registry (the job stopped).
    pub fn unregister(&self, metrics: &Metrics) {
        for family in &self.families {
            metrics.unregister(Box::new(family.latest.clone()));
            metrics.unregister(Box::new(family.early.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{BooleanArray, Float64Array, StringArray};
    use arrow::datatypes::{Field, Schema};

    use super::*;

    fn spec(columns: &[&str], by: &[&str]) -> GaugeSpec {
        GaugeSpec {
            columns: columns.iter().map(|c| (*c).to_owned()).collect(),
            by: by.iter().map(|c| (*c).to_owned()).collect(),
            line: 1,
        }
    }

    fn rows(channels: &[&str], nps: &[f64], finals: &[bool]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("channel", DataType::Utf8, true),
            Field::new("nps", DataType::Float64, true),
            Field::new("final", DataType::Boolean, false),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(channels.to_vec())),
                Arc::new(Float64Array::from(nps.to_vec())),
                Arc::new(BooleanArray::from(finals.to_vec())),
            ],
        )
        .expect("batch")
    }

    #[test]
    fn latest_final_and_early_values_per_label_set_within_the_cap() {
        let metrics = Metrics::new().expect("metrics");
        let mut gauges = JobGauges::register("sat", &[spec(&["nps"], &["channel"])], 3, &metrics)
            .expect("register");
        gauges.update(
            &[rows(
                &["web", "app", "web"],
                &[10.0, 20.0, 30.0],
                &[true, true, false],
            )],
            &metrics,
        );
        gauges.update(
            &[rows(&["web", "shop"], &[40.0, 50.0], &[true, true])],
            &metrics,
        );
        let text = metrics.encode();
        assert!(
            text.contains("cxpulse_sat_nps{channel=\"web\"} 40\n"),
            "{text}"
        );
        assert!(
            text.contains("cxpulse_sat_nps{channel=\"app\"} 20\n"),
            "{text}"
        );
        assert!(
            text.contains("cxpulse_sat_nps_early{channel=\"web\"} 30\n"),
            "{text}"
        );
        // web, app, web-early fill the cap of 3: shop is counted, not exported.
        assert!(!text.contains("channel=\"shop\""), "{text}");
        assert!(
            text.contains("cxpulse_exported_updates_dropped_total{job=\"sat\"} 1\n"),
            "{text}"
        );
        gauges.unregister(&metrics);
        assert!(!metrics.encode().contains("cxpulse_sat_nps"));
    }

    #[test]
    fn text_columns_and_per_customer_labels_are_refused() {
        let schema: SchemaRef = Arc::new(Schema::new(vec![
            Field::new("customer_id", DataType::Utf8, true),
            Field::new("nps", DataType::Float64, true),
        ]));
        assert_eq!(problem(&spec(&["nps"], &[]), &schema), None);
        assert!(
            problem(&spec(&["customer_id"], &[]), &schema)
                .is_some_and(|p| p.contains("not a number"))
        );
        assert!(
            problem(&spec(&["nps"], &["customer_id"]), &schema)
                .is_some_and(|p| p.contains("BY customer_id"))
        );
    }
}
