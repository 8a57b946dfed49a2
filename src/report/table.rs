//! The metrics table of a pipeline: one row per (sweep point, evaluate stage, evaluated
//! stage, metric), one column per sweep axis, written with polars.

use std::collections::BTreeMap;
use std::path::Path;

use polars::prelude::*;
use serde::Serialize;

use crate::artifacts::{csv_bytes, replace};
use crate::error::RunnerError;
use crate::pipeline::Plan;
use crate::pipeline::sweep::Sweep;

/// One metric value at one sweep point.
#[derive(Debug, Clone)]
pub struct MetricRow {
    /// Index into `Plan::points`.
    pub point: usize,
    /// Value index of every sweep axis at this point.
    pub coords: Vec<usize>,
    pub evaluate: String,
    /// The evaluated (sample) stage.
    pub stage: String,
    pub metric: String,
    pub value: f64,
}

/// One metric of one evaluated stage, as an evaluate stage (a node: sweep points that
/// share it share the row) measured it: what a run records and `show`/`diff` read.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct MetricRecord {
    /// The evaluate stage, with its sweep label.
    pub evaluate: String,
    /// The evaluated stage (a sample or a train stage).
    pub stage: String,
    /// `samples` or `models`: which table the metric belongs to.
    pub of: String,
    /// The swept values that reach the evaluate stage, in axis order.
    pub point: Vec<(String, String)>,
    pub metric: String,
    pub value: f64,
}

/// All metric rows of a plan.
#[derive(Debug, Clone, Default)]
pub struct MetricsTable {
    pub rows: Vec<MetricRow>,
}

impl MetricsTable {
    /// Metric names in order of first appearance.
    pub fn metrics(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for row in &self.rows {
            if !names.contains(&row.metric) {
                names.push(row.metric.clone());
            }
        }
        names
    }

    /// The table as a polars frame; sweep axes become typed columns (integers, floats
    /// or text) so that the CSV reads back as numbers where the values are numbers.
    pub fn frame(&self, plan: &Plan) -> PolarsResult<DataFrame> {
        let sweep = &plan.sweep;
        let mut columns = Vec::new();
        if !sweep.is_empty() {
            let labels: Vec<String> = self
                .rows
                .iter()
                .map(|r| plan.point_label(&plan.points[r.point]))
                .collect();
            columns.push(Column::new("point".into(), labels));
            for (a, axis) in sweep.axes.iter().enumerate() {
                let name: PlSmallStr = axis.name.as_str().into();
                let column = if axis.values.iter().all(|v| v.is_i64() || v.is_u64()) {
                    Column::new(
                        name,
                        self.rows
                            .iter()
                            .map(|r| axis.values[r.coords[a]].as_i64())
                            .collect::<Vec<_>>(),
                    )
                } else if axis.is_numeric() {
                    Column::new(
                        name,
                        self.rows
                            .iter()
                            .map(|r| axis.number(r.coords[a]))
                            .collect::<Vec<_>>(),
                    )
                } else {
                    Column::new(
                        name,
                        self.rows
                            .iter()
                            .map(|r| axis.shown[r.coords[a]].clone())
                            .collect::<Vec<_>>(),
                    )
                };
                columns.push(column);
            }
        }
        let text = |name: &str, f: &dyn Fn(&MetricRow) -> String| {
            Column::new(
                name.into(),
                self.rows.iter().map(f).collect::<Vec<String>>(),
            )
        };
        columns.push(text("evaluate", &|r| r.evaluate.clone()));
        columns.push(text("stage", &|r| r.stage.clone()));
        columns.push(text("metric", &|r| r.metric.clone()));
        columns.push(Column::new(
            "value".into(),
            self.rows.iter().map(|r| r.value).collect::<Vec<f64>>(),
        ));
        DataFrame::new_infer_height(columns)
    }

    /// Writes `metrics.csv` atomically.
    pub fn write_csv(&self, plan: &Plan, path: &Path) -> Result<(), RunnerError> {
        let fail = |e: &dyn std::fmt::Display| {
            RunnerError::Report(format!("writing {}: {e}", path.display()))
        };
        let mut df = self.frame(plan).map_err(|e| fail(&e))?;
        let bytes = csv_bytes(&mut df).map_err(|e| fail(&e))?;
        replace(path, &bytes).map_err(|e| fail(&e))
    }

    /// One row per (point, evaluate, stage) with a column per metric: what the report's
    /// table shows.
    pub fn pivot(&self, plan: &Plan) -> PivotTable {
        let metrics = self.metrics();
        let mut rows: BTreeMap<(usize, String, String), Vec<Option<f64>>> = BTreeMap::new();
        for r in &self.rows {
            let slot = rows
                .entry((r.point, r.evaluate.clone(), r.stage.clone()))
                .or_insert_with(|| vec![None; metrics.len()]);
            let m = metrics
                .iter()
                .position(|n| *n == r.metric)
                .expect("listed above");
            slot[m] = Some(r.value);
        }
        let rows = rows
            .into_iter()
            .map(|((p, evaluate, stage), values)| {
                let point = &plan.points[p];
                let link = |id: &str| plan.node_at(point, id).map(|n| plan.link(n));
                PivotRow {
                    coords: plan
                        .sweep
                        .coords(&point.groups)
                        .iter()
                        .map(|&(a, v)| plan.sweep.axes[a].shown[v].clone())
                        .collect(),
                    sort_keys: sort_keys(&plan.sweep, &point.groups),
                    evaluate_link: link(&evaluate),
                    stage_link: link(&stage),
                    evaluate,
                    stage,
                    values: values
                        .iter()
                        .map(|v| v.map(format_value).unwrap_or_default())
                        .collect(),
                }
            })
            .collect();
        PivotTable {
            axes: plan.sweep.axes.iter().map(|a| a.name.clone()).collect(),
            metrics,
            rows,
        }
    }
}

/// Numbers where an axis is numeric, so the report's table sorts them as numbers.
fn sort_keys(sweep: &Sweep, groups: &[usize]) -> Vec<String> {
    sweep
        .coords(groups)
        .iter()
        .map(|&(a, v)| {
            sweep.axes[a]
                .number(v)
                .map(|x| x.to_string())
                .unwrap_or_else(|| sweep.axes[a].shown[v].clone())
        })
        .collect()
}

/// The report's metrics table.
#[derive(Debug, Serialize)]
pub struct PivotTable {
    pub axes: Vec<String>,
    pub metrics: Vec<String>,
    pub rows: Vec<PivotRow>,
}

#[derive(Debug, Serialize)]
pub struct PivotRow {
    pub coords: Vec<String>,
    pub sort_keys: Vec<String>,
    pub evaluate: String,
    pub evaluate_link: Option<String>,
    pub stage: String,
    pub stage_link: Option<String>,
    pub values: Vec<String>,
}

/// Short, exact enough for a table.
pub fn format_value(v: f64) -> String {
    if v == v.trunc() && v.abs() < 1e9 {
        format!("{v:.0}")
    } else if v != 0.0 && v.abs() < 1e-3 {
        format!("{v:.4e}")
    } else {
        format!("{v:.5}")
    }
}
