//! `runner show`: a run's metrics as terminal tables, one per evaluate stage with
//! sample metrics and model metrics apart (they measure different things and share
//! few columns), a column per metric and a row per evaluated stage and sweep point;
//! or the same as JSON or CSV for scripts.

use comfy_table::{CellAlignment, ContentArrangement, LineStyle, Table as Grid, TableStyle};
use serde::Serialize;

use super::RunRecord;
use crate::report::table::MetricRecord;

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

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    /// Values of `axes`, in order (empty where the row's stage is not swept on it).
    pub point: Vec<String>,
    pub stage: String,
    /// One per metric; `None` where the stage has no value for it.
    pub values: Vec<Option<f64>>,
}

/// A line under the header and nothing else: dense, and pastes into a text file as is.
const STYLE: TableStyle =
    TableStyle::new().header_separator(LineStyle::none().fill('─').junction('─'));

/// An empty terminal table with `header`, numbers right-aligned from column
/// `first_number` on: the look of every table runner prints.
pub fn grid(header: Vec<String>, first_number: usize, width: Option<u16>) -> Grid {
    let mut grid = Grid::new();
    grid.load_style(STYLE)
        .set_content_arrangement(ContentArrangement::Dynamic);
    if let Some(w) = width {
        grid.set_width(w);
    }
    let columns = header.len();
    grid.set_header(header);
    for column in first_number..columns {
        if let Some(c) = grid.column_mut(column) {
            c.set_cell_alignment(CellAlignment::Right);
        }
    }
    grid
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
        for (axis, _) in &m.point {
            if !table.axes.contains(axis) {
                table.axes.push(axis.clone());
            }
        }
        if !table.metrics.contains(&m.metric) {
            table.metrics.push(m.metric.clone());
        }
    }
    for m in metrics {
        let table = tables
            .iter_mut()
            .find(|t| t.evaluate == id_of(&m.evaluate) && t.of == m.of)
            .expect("made above");
        let point: Vec<String> = table
            .axes
            .iter()
            .map(|a| {
                m.point
                    .iter()
                    .find(|(name, _)| name == a)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default()
            })
            .collect();
        let column = table
            .metrics
            .iter()
            .position(|x| *x == m.metric)
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

/// The tables as aligned text, headed by the run.
pub fn text(run: &RunRecord, width: Option<u16>) -> String {
    let mut out = format!(
        "run {} of {} ({}, {}): {}\n",
        run.id,
        run.pipeline,
        run.started,
        run.status,
        run.command_line()
    );
    let tables = tables(&run.metrics);
    if tables.is_empty() {
        out.push_str("no metrics: no evaluate stage completed in this run\n");
    }
    for table in tables {
        let mut header: Vec<String> = table.axes.clone();
        header.push(
            if table.of == "models" {
                "model"
            } else {
                "samples"
            }
            .into(),
        );
        header.extend(table.metrics.iter().cloned());
        let mut grid = grid(header, table.axes.len() + 1, width);
        for row in &table.rows {
            let mut cells = row.point.clone();
            cells.push(row.stage.clone());
            cells.extend(row.values.iter().map(|v| v.map(number).unwrap_or_default()));
            grid.add_row(cells);
        }
        out.push_str(&format!("\n{} ({})\n{grid}\n", table.evaluate, table.of));
    }
    out
}

/// The tables as JSON: the run's id and pipeline, and each table with its rows.
pub fn json(run: &RunRecord) -> String {
    serde_json::to_string_pretty(&serde_json::json!({
        "run": run.id,
        "pipeline": run.pipeline,
        "status": run.status,
        "tables": tables(&run.metrics),
    }))
    .expect("tables serialize")
}

/// The metrics in long form, one row per value: `evaluate,of,point,stage,metric,value`
/// (`point` is `axis=value;...`), the shape pandas and R read best.
pub fn csv(run: &RunRecord) -> String {
    let field = |s: &str| {
        if s.contains([',', '"', '\n']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_string()
        }
    };
    let mut out = String::from("evaluate,of,point,stage,metric,value\n");
    for m in &run.metrics {
        let point: Vec<String> = m.point.iter().map(|(a, v)| format!("{a}={v}")).collect();
        out.push_str(&format!(
            "{},{},{},{},{},{}\n",
            field(&m.evaluate),
            m.of,
            field(&point.join(";")),
            field(&m.stage),
            field(&m.metric),
            m.value
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(
        evaluate: &str,
        stage: &str,
        of: &str,
        point: &[(&str, &str)],
        metric: &str,
        value: f64,
    ) -> MetricRecord {
        MetricRecord {
            evaluate: evaluate.into(),
            stage: stage.into(),
            of: of.into(),
            point: point
                .iter()
                .map(|(a, v)| (a.to_string(), v.to_string()))
                .collect(),
            metric: metric.into(),
            value,
        }
    }

    /// Samples and models apart; a row per stage and point; a stage no axis reaches
    /// appears once; a metric a row lacks is an empty cell.
    #[test]
    fn metrics_group_into_one_table_per_evaluate_stage_and_kind() {
        let metrics = vec![
            record(
                "compare[lr=0.1]",
                "ddpm_samples",
                "samples",
                &[("lr", "0.1")],
                "mmd2",
                0.5,
            ),
            record(
                "compare[lr=0.1]",
                "sde_samples",
                "samples",
                &[],
                "mmd2",
                0.25,
            ),
            record(
                "compare[lr=0.1]",
                "ddpm",
                "models",
                &[("lr", "0.1")],
                "nll",
                1.5,
            ),
            record(
                "compare[lr=0.2]",
                "ddpm_samples",
                "samples",
                &[("lr", "0.2")],
                "mmd2",
                0.125,
            ),
            record(
                "compare[lr=0.2]",
                "ddpm_samples",
                "samples",
                &[("lr", "0.2")],
                "nfe",
                100.0,
            ),
        ];
        let tables = tables(&metrics);
        assert_eq!(tables.len(), 2);
        let samples = &tables[0];
        assert_eq!(
            (samples.of.as_str(), samples.axes.clone()),
            ("samples", vec!["lr".to_string()])
        );
        assert_eq!(samples.metrics, ["mmd2", "nfe"]);
        assert_eq!(
            samples.rows,
            vec![
                Row {
                    point: vec!["0.1".into()],
                    stage: "ddpm_samples".into(),
                    values: vec![Some(0.5), None]
                },
                Row {
                    point: vec!["".into()],
                    stage: "sde_samples".into(),
                    values: vec![Some(0.25), None]
                },
                Row {
                    point: vec!["0.2".into()],
                    stage: "ddpm_samples".into(),
                    values: vec![Some(0.125), Some(100.0)]
                },
            ]
        );
        assert_eq!(tables[1].of, "models");
        assert_eq!(tables[1].rows.len(), 1);
    }

    #[test]
    fn numbers_keep_six_significant_digits() {
        assert_eq!(number(0.118939430640), "0.118939");
        assert_eq!(number(1.5), "1.5");
        assert_eq!(number(100.0), "100");
        assert_eq!(number(0.000123456), "1.2346e-4");
        assert_eq!(number(12345678.0), "1.2346e7");
    }
}
