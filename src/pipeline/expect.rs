//! The `expect:` section: what a pipeline claims to reproduce, as checks on the values
//! of its metrics table. Checked against the pipeline when it is planned (stages,
//! metrics and sweep coordinates must exist); judged by `report::claims` after a run.
//!
//! ```yaml
//! expect:
//!   - { stage: annealed, metric: mode_weight_tv, below: 0.05, note: "annealing recovers the weights" }
//!   - { stage: ddpm_samples, metric: fid, below_stage: smld_samples }
//!   - { stage: samples, metric: sliced_wasserstein, below: 0.1, at: { sampler: ode } }
//!   - { stage: ddpm_samples, metric: confidence, above: 0.8, profiles: [laptop] }
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::sweep::{Sweep, show};
use crate::metrics;

/// One claim: a metric of an evaluated stage, bounded by a number or by the same
/// metric of another stage.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Expectation {
    /// The evaluated stage, as `metrics.csv` names it (a sample stage, or a train
    /// stage for model metrics).
    pub stage: String,
    /// A value of `metrics.csv`'s `metric` column, e.g. `mode_weight_tv` or `fid`.
    pub metric: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub below: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub above: Option<f64>,
    /// Another evaluated stage, compared at the same sweep point and evaluate stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub below_stage: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub above_stage: Option<String>,
    /// Only the values of this evaluate stage (when several evaluate `stage`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evaluate: Option<String>,
    /// Only the sweep points with these coordinates, by axis name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(with = "BTreeMap<String, serde_json::Value>")]
    pub at: BTreeMap<String, serde_norway::Value>,
    /// The claim in the documents' words, shown in the report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Only under these `--profile`s (a claim of a run long enough to make it, not of
    /// a smoke test); every run when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub profiles: Vec<String>,
    /// Its place in the file's `expect:` list, for error locations once claims of
    /// other profiles are left out.
    #[serde(skip)]
    pub position: usize,
}

/// The bound an expectation sets.
#[derive(Debug, Clone, PartialEq)]
pub enum Bound {
    Below(f64),
    Above(f64),
    BelowStage(String),
    AboveStage(String),
}

impl Expectation {
    /// The one bound it sets (checked when the pipeline is planned).
    pub fn bound(&self) -> Bound {
        match (
            &self.below,
            &self.above,
            &self.below_stage,
            &self.above_stage,
        ) {
            (Some(v), ..) => Bound::Below(*v),
            (_, Some(v), ..) => Bound::Above(*v),
            (_, _, Some(s), _) => Bound::BelowStage(s.clone()),
            (.., Some(s)) => Bound::AboveStage(s.clone()),
            _ => unreachable!("validated: every expectation sets one bound"),
        }
    }

    /// The claim in a few words, e.g. `fid of ddpm_samples below smld_samples`.
    pub fn describe(&self) -> String {
        let bound = match self.bound() {
            Bound::Below(v) => format!("below {v}"),
            Bound::Above(v) => format!("above {v}"),
            Bound::BelowStage(s) => format!("below that of {s}"),
            Bound::AboveStage(s) => format!("above that of {s}"),
        };
        let mut text = format!("{} of {} {bound}", self.metric, self.stage);
        if !self.at.is_empty() {
            let at: Vec<String> = self
                .at
                .iter()
                .map(|(k, v)| format!("{k}={}", show(v)))
                .collect();
            text.push_str(&format!(" at {}", at.join(",")));
        }
        if let Some(e) = &self.evaluate {
            text.push_str(&format!(" (by {e})"));
        }
        text
    }

    /// Checks the expectation against the pipeline: `evaluated` are the stages some
    /// evaluate stage judges, `evaluates` the evaluate stages. Errors are (key, message).
    pub fn validate(
        &self,
        evaluated: &[String],
        evaluates: &[String],
        sweep: &Sweep,
    ) -> Result<(), (&'static str, String)> {
        let bounds = [
            self.below.is_some(),
            self.above.is_some(),
            self.below_stage.is_some(),
            self.above_stage.is_some(),
        ];
        if bounds.iter().filter(|&&b| b).count() != 1 {
            return Err((
                "metric",
                "set exactly one of `below`, `above`, `below_stage`, `above_stage`".into(),
            ));
        }
        let known = |key: &'static str, stage: &str| {
            if evaluated.iter().any(|s| s == stage) {
                Ok(())
            } else {
                Err((
                    key,
                    format!(
                        "`{stage}` is not a stage an evaluate stage judges; those are: {}",
                        evaluated.join(", ")
                    ),
                ))
            }
        };
        known("stage", &self.stage)?;
        for other in self.below_stage.iter().chain(&self.above_stage) {
            let key = if self.below_stage.is_some() {
                "below_stage"
            } else {
                "above_stage"
            };
            known(key, other)?;
        }
        if !metrics::is_column(&self.metric) {
            return Err((
                "metric",
                format!(
                    "`{}` is not a metric; metrics are: {}",
                    self.metric,
                    metrics::choices()
                ),
            ));
        }
        if let Some(e) = &self.evaluate
            && !evaluates.contains(e)
        {
            return Err((
                "evaluate",
                format!(
                    "`{e}` is not an evaluate stage; those are: {}",
                    evaluates.join(", ")
                ),
            ));
        }
        for (name, value) in &self.at {
            let Some(axis) = sweep.axis_index(name).map(|a| &sweep.axes[a]) else {
                let names: Vec<&str> = sweep.axes.iter().map(|a| a.name.as_str()).collect();
                return Err((
                    "at",
                    if names.is_empty() {
                        "`at` names sweep coordinates, but the pipeline has no `sweep:`".into()
                    } else {
                        format!(
                            "`{name}` is not a sweep axis; axes are: {}",
                            names.join(", ")
                        )
                    },
                ));
            };
            if !axis.values.contains(value) {
                return Err((
                    "at",
                    format!(
                        "axis `{name}` never takes {}; its values are: {}",
                        show(value),
                        axis.shown.join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }
}
