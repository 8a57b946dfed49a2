//! `runner show`: a run's metrics as terminal tables, one per evaluate stage with
//! sample metrics and model metrics apart (they measure different things and share
//! few columns), a column per metric and a row per evaluated stage and sweep point;
//! or the same as JSON or CSV for scripts.

use comfy_table::{CellAlignment, ContentArrangement, LineStyle, Table as Grid, TableStyle};

use super::RunRecord;
pub use crate::report::table::number;
use crate::report::table::tables;

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
        header.push(table.subject().into());
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

/// The metrics in long form, one row per value, exactly as the run's `metrics.csv`
/// (see [`crate::report::table::frame`]): the shape pandas and R read best.
pub fn csv(run: &RunRecord) -> Result<String, String> {
    crate::report::table::csv(&run.metrics)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::table::{MetricRecord, Row};

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
