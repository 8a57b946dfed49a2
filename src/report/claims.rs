//! Judging a pipeline's claims (`expect:`) against its metrics table: each is
//! reproduced, not reproduced, or not measured (its values are missing, e.g. a stage
//! failed), with the values it was judged on.

use serde::Serialize;

use super::table::{MetricRow, MetricsTable, format_value};
use crate::pipeline::Plan;
use crate::pipeline::expect::{Bound, Expectation};

/// How a claim came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Reproduced,
    NotReproduced,
    NotMeasured,
}

impl Outcome {
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Reproduced => "reproduced",
            Outcome::NotReproduced => "not reproduced",
            Outcome::NotMeasured => "not measured",
        }
    }

    /// The report's CSS class for it (`status-<state>`).
    pub fn state(self) -> &'static str {
        match self {
            Outcome::Reproduced => "ok",
            Outcome::NotReproduced => "failed",
            Outcome::NotMeasured => "missing",
        }
    }
}

/// One claim's verdict, as the report and the run's summary show it.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub claim: String,
    pub note: Option<String>,
    pub outcome: Outcome,
    /// `outcome`'s CSS class and words, for the template.
    pub state: &'static str,
    pub label: &'static str,
    /// The values judged, e.g. `0.012` or `0.31 vs 0.52 at steps=40`.
    pub measured: Vec<String>,
}

/// Every claim of the plan, judged against `table`.
pub fn judge(plan: &Plan, table: &MetricsTable) -> Vec<Verdict> {
    plan.expect
        .iter()
        .map(|e| verdict(plan, table, e))
        .collect()
}

fn verdict(plan: &Plan, table: &MetricsTable, e: &Expectation) -> Verdict {
    let at_point = |row: &MetricRow| {
        e.at.iter().all(|(name, value)| {
            plan.sweep
                .axis_index(name)
                .is_some_and(|a| &plan.sweep.axes[a].values[row.coords[a]] == value)
        })
    };
    let rows: Vec<&MetricRow> = table
        .rows
        .iter()
        .filter(|r| r.stage == e.stage && r.metric == e.metric)
        .filter(|r| e.evaluate.as_ref().is_none_or(|ev| &r.evaluate == ev))
        .filter(|r| at_point(r))
        .collect();
    let bound = e.bound();
    let mut measured = Vec::new();
    let mut outcome = if rows.is_empty() {
        Outcome::NotMeasured
    } else {
        Outcome::Reproduced
    };
    for row in rows {
        let (holds, text) = match &bound {
            Bound::Below(v) => (row.value < *v, format_value(row.value)),
            Bound::Above(v) => (row.value > *v, format_value(row.value)),
            Bound::BelowStage(other) | Bound::AboveStage(other) => {
                let Some(theirs) = table.rows.iter().find(|r| {
                    r.point == row.point
                        && r.evaluate == row.evaluate
                        && &r.stage == other
                        && r.metric == row.metric
                }) else {
                    outcome = Outcome::NotMeasured;
                    measured.push(format!("{} (no value of {other})", format_value(row.value)));
                    continue;
                };
                let holds = match bound {
                    Bound::BelowStage(_) => row.value < theirs.value,
                    _ => row.value > theirs.value,
                };
                (
                    holds,
                    format!(
                        "{} vs {}",
                        format_value(row.value),
                        format_value(theirs.value)
                    ),
                )
            }
        };
        if !holds && outcome == Outcome::Reproduced {
            outcome = Outcome::NotReproduced;
        }
        let text = if plan.sweep.is_empty() {
            text
        } else {
            format!("{text} at {}", plan.point_label(&plan.points[row.point]))
        };
        measured.push(text);
    }
    Verdict {
        claim: e.describe(),
        note: e.note.clone(),
        outcome,
        state: outcome.state(),
        label: outcome.label(),
        measured,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::graph::plan_of_text;

    const PIPELINE: &str = "name: k
stages:
  data: { kind: dataset, params: { name: gmm } }
  lin: { kind: schedule, params: { type: linear } }
  mlp: { kind: model, params: { arch: mlp } }
  tr: { kind: train, needs: { data: data, schedule: lin, model: mlp }, params: { objective: eps } }
  a: { kind: sample, needs: { train: tr }, params: { sampler: ancestral } }
  b: { kind: sample, needs: { train: tr }, params: { sampler: ddim } }
  ev: { kind: evaluate, needs: { reference: data, samples: [a, b] } }
expect:
  - { stage: a, metric: mmd2, below: 0.1, note: the claim }
  - { stage: a, metric: mmd2, below_stage: b }
  - { stage: b, metric: sliced_wasserstein, above: 1.0 }
  - { stage: b, metric: mode_weight_tv, below: 1.0 }
";

    fn row(stage: &str, metric: &str, value: f64) -> MetricRow {
        MetricRow {
            point: 0,
            coords: vec![],
            evaluate: "ev".into(),
            stage: stage.into(),
            metric: metric.into(),
            value,
        }
    }

    #[test]
    fn claims_are_judged_by_number_and_against_another_stage() {
        let plan = plan_of_text(PIPELINE);
        let table = MetricsTable {
            rows: vec![
                row("a", "mmd2", 0.05),
                row("b", "mmd2", 0.02),
                row("b", "sliced_wasserstein", 2.5),
            ],
        };
        let v = judge(&plan, &table);
        let outcomes: Vec<Outcome> = v.iter().map(|v| v.outcome).collect();
        assert_eq!(
            outcomes,
            vec![
                Outcome::Reproduced,
                Outcome::NotReproduced,
                Outcome::Reproduced,
                Outcome::NotMeasured
            ]
        );
        assert_eq!(v[0].measured, vec!["0.05000"]);
        assert_eq!(v[0].note.as_deref(), Some("the claim"));
        assert_eq!(v[1].measured, vec!["0.05000 vs 0.02000"]);
        assert_eq!(v[1].claim, "mmd2 of a below that of b");
    }
}
