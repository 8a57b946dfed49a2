//! A pipeline's metrics: as records (each measured value once, with the sweep values
//! that reach it) for `metrics.csv`, the report's tables, `show` and `diff`; and one
//! row per sweep point for the comparison plots and claims, which read along axes.

use std::path::Path;

use polars::prelude::*;
use serde::Serialize;

use crate::artifacts::{csv_bytes, replace};
use crate::error::RunnerError;

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
    /// `samples`, `models` or [`NOISE_LEVELS`]: which table the metric belongs to.
    pub of: String,
    /// The swept values that reach the evaluate stage, in axis order.
    pub point: Vec<(String, String)>,
    pub metric: String,
    pub value: f64,
}

/// One table: an evaluate stage's metrics of one kind (`samples` or `models`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Table {
    /// The evaluate stage's id (its sweep forks are rows of the same table).
    pub evaluate: String,
    pub of: String,
    /// Sweep axes that vary between the rows.
    pub axes: Vec<String>,
    pub metrics: Vec<String>,
    pub rows: Vec<Row>,
}

impl Table {
    /// The header of the stage column: what a row is (samples, or a model for model
    /// metrics and noise levels).
    pub fn subject(&self) -> &'static str {
        if self.of == "samples" {
            "samples"
        } else {
            "model"
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    /// Values of `axes`, in order (empty where the row's stage is not swept on it).
    pub point: Vec<String>,
    pub stage: String,
    /// One per metric; `None` where the stage has no value for it.
    pub values: Vec<Option<f64>>,
}

/// The `of` of a model's metrics measured per noise level (`score_mse_t0.100`): their
/// own table, a row per model and time, a column per family, so levels line up.
pub const NOISE_LEVELS: &str = "noise levels";

/// Where a record sits in its table: its sweep values (and, per noise level, the time
/// `t` as one more) and its column.
fn placed(m: &MetricRecord) -> (Vec<(String, String)>, String) {
    let level = (m.of == NOISE_LEVELS)
        .then(|| crate::metrics::per_noise_level(&m.metric))
        .flatten();
    match level {
        Some((family, t)) => {
            let mut point = m.point.clone();
            point.push(("t".into(), t.into()));
            (point, family.into())
        }
        None => (m.point.clone(), m.metric.clone()),
    }
}

/// The stage id of a node name (`compare[lr=0.1]` -> `compare`).
fn id_of(name: &str) -> &str {
    name.split('[').next().unwrap_or(name)
}

/// Groups a run's metrics into tables, in the order they were measured.
pub fn tables(metrics: &[MetricRecord]) -> Vec<Table> {
    let mut tables: Vec<Table> = Vec::new();
    for m in metrics {
        let evaluate = id_of(&m.evaluate);
        let t = match tables
            .iter()
            .position(|t| t.evaluate == evaluate && t.of == m.of)
        {
            Some(t) => t,
            None => {
                tables.push(Table {
                    evaluate: evaluate.into(),
                    of: m.of.clone(),
                    axes: Vec::new(),
                    metrics: Vec::new(),
                    rows: Vec::new(),
                });
                tables.len() - 1
            }
        };
        let table = &mut tables[t];
        let (point, metric) = placed(m);
        for (axis, _) in &point {
            if !table.axes.contains(axis) {
                table.axes.push(axis.clone());
            }
        }
        if !table.metrics.contains(&metric) {
            table.metrics.push(metric);
        }
    }
    for m in metrics {
        let table = tables
            .iter_mut()
            .find(|t| t.evaluate == id_of(&m.evaluate) && t.of == m.of)
            .expect("made above");
        let (placed_point, metric) = placed(m);
        let point: Vec<String> = table
            .axes
            .iter()
            .map(|a| {
                placed_point
                    .iter()
                    .find(|(name, _)| name == a)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default()
            })
            .collect();
        let column = table
            .metrics
            .iter()
            .position(|x| *x == metric)
            .expect("listed");
        let width = table.metrics.len();
        let row = match table
            .rows
            .iter()
            .position(|r| r.point == point && r.stage == m.stage)
        {
            Some(r) => r,
            None => {
                table.rows.push(Row {
                    point,
                    stage: m.stage.clone(),
                    values: vec![None; width],
                });
                table.rows.len() - 1
            }
        };
        let values = &mut table.rows[row].values;
        values.resize(width, None);
        values[column] = Some(m.value);
    }
    for table in &mut tables {
        let width = table.metrics.len();
        for row in &mut table.rows {
            row.values.resize(width, None);
        }
    }
    tables
}

/// A number as tables show it: six significant digits, powers of ten when large or
/// small.
pub fn number(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    let magnitude = v.abs().log10().floor();
    if !(-3.0..6.0).contains(&magnitude) {
        format!("{v:.4e}")
    } else {
        let decimals = (5.0 - magnitude).max(0.0) as usize;
        let text = format!("{v:.decimals$}");
        if text.contains('.') {
            text.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            text
        }
    }
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
}

/// `metrics.csv`, and `runner show --csv`: a row per metric of an evaluated stage as
/// an evaluate stage measured it (each once), a column per sweep axis holding the
/// values that reach the row and empty where none does (so a group-by over an axis
/// does not count an unswept stage once per value), then `evaluate`, `stage`,
/// `metric`, `value` and `of` (`samples` or `models`: which table it belongs to).
pub fn frame(records: &[MetricRecord]) -> PolarsResult<DataFrame> {
    let mut axes: Vec<&str> = Vec::new();
    for (axis, _) in records.iter().flat_map(|r| &r.point) {
        if !axes.contains(&axis.as_str()) {
            axes.push(axis);
        }
    }
    let mut columns: Vec<Column> = axes
        .iter()
        .map(|&axis| {
            let values: Vec<Option<&str>> = records
                .iter()
                .map(|r| {
                    r.point
                        .iter()
                        .find(|(a, _)| a == axis)
                        .map(|(_, v)| v.as_str())
                })
                .collect();
            Column::new(axis.into(), values)
        })
        .collect();
    let text = |name: &str, f: &dyn Fn(&MetricRecord) -> &str| {
        Column::new(name.into(), records.iter().map(f).collect::<Vec<&str>>())
    };
    columns.push(text("evaluate", &|r| &r.evaluate));
    columns.push(text("stage", &|r| &r.stage));
    columns.push(text("metric", &|r| &r.metric));
    columns.push(Column::new(
        "value".into(),
        records.iter().map(|r| r.value).collect::<Vec<f64>>(),
    ));
    columns.push(text("of", &|r| &r.of));
    DataFrame::new_infer_height(columns)
}

/// [`frame`] as CSV text.
pub fn csv(records: &[MetricRecord]) -> Result<String, String> {
    let mut df = frame(records).map_err(|e| e.to_string())?;
    let bytes = csv_bytes(&mut df).map_err(|e| e.to_string())?;
    String::from_utf8(bytes).map_err(|e| e.to_string())
}

/// Writes [`csv`] to `path` atomically.
pub fn write_csv(records: &[MetricRecord], path: &Path) -> Result<(), RunnerError> {
    let fail =
        |e: &dyn std::fmt::Display| RunnerError::Report(format!("writing {}: {e}", path.display()));
    let text = csv(records).map_err(|e| fail(&e))?;
    replace(path, text.as_bytes()).map_err(|e| fail(&e))
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
