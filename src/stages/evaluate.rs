//! `evaluate`: compares sample sets with the held-out data and plots them.

use polars::prelude::*;
use serde::{Deserialize, Serialize};

use super::StageContext;
use super::artifacts::{load_f32, read_json, write_csv};
use super::dataset::DatasetMeta;
use super::sample::SamplingRecord;
use crate::error::{StageError, StageResult};
use crate::metrics::{Metric, Points, mmd, modes, sliced_wasserstein};
use crate::pipeline::spec::StageSpec;
use crate::report::plots;
use crate::rng::stream;

pub const VERSION: u32 = 1;

/// Which metrics and figures, and how much work to spend on them.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EvaluateParams {
    #[serde(default = "metrics")]
    pub metrics: Vec<Metric>,
    #[serde(default = "plots_default")]
    pub plots: Vec<Plot>,
    /// Random directions for the sliced Wasserstein distance.
    #[serde(default = "projections")]
    pub projections: usize,
    /// Points per set for MMD (its cost is quadratic).
    #[serde(default = "mmd_points")]
    pub mmd_points: usize,
    #[serde(default)]
    pub seed: u64,
}

/// Figures an evaluate stage can draw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Plot {
    /// Samples over the held-out data, one panel per sample stage.
    Scatter,
}

fn metrics() -> Vec<Metric> {
    vec![Metric::SlicedWasserstein, Metric::Mmd]
}
fn plots_default() -> Vec<Plot> {
    vec![Plot::Scatter]
}
fn projections() -> usize {
    256
}
fn mmd_points() -> usize {
    2000
}

impl Default for EvaluateParams {
    fn default() -> Self {
        EvaluateParams {
            metrics: metrics(),
            plots: plots_default(),
            projections: projections(),
            mmd_points: mmd_points(),
            seed: 0,
        }
    }
}

impl EvaluateParams {
    pub fn validate(&self, reference: Option<&StageSpec>) -> Result<(), String> {
        if self.projections == 0 || self.mmd_points < 2 {
            return Err("need projections >= 1 and mmd_points >= 2".into());
        }
        if self.metrics.contains(&Metric::ModeWeights)
            && let Some(StageSpec::Dataset { params }) = reference
            && params.distribution.mixture().is_none()
        {
            return Err("metric `mode_weights` needs a Gaussian-mixture reference (gmm or two_gaussians)".into());
        }
        Ok(())
    }
}

pub fn run(params: &EvaluateParams, ctx: &StageContext) -> StageResult<()> {
    let reference = ctx.input("reference")?;
    let meta: DatasetMeta = read_json(&reference.dir.join("meta.json"))?;
    let (test, _) = load_f32(&reference.dir.join("data.safetensors"), "test")?;
    let dim = meta.dim;
    let (mut stages, mut names, mut values) = (Vec::new(), Vec::new(), Vec::new());
    let mut push = |stage: &str, metric: String, value: f64| {
        stages.push(stage.to_string());
        names.push(metric);
        values.push(value);
    };
    let sample_inputs = ctx.inputs("samples");
    for (done, input) in sample_inputs.iter().enumerate() {
        let path = input.dir.join("samples.safetensors");
        let (samples, shape) = load_f32(&path, "samples")?;
        if shape.get(1) != Some(&dim) {
            return Err(StageError::BadInput {
                path,
                message: format!("samples of `{}` have shape {shape:?} but the reference has dimension {dim}", input.id),
            });
        }
        let (a, b) = (Points::new(&samples, dim), Points::new(&test, dim));
        for metric in &params.metrics {
            match metric {
                Metric::SlicedWasserstein => {
                    let mut rng = stream(params.seed, "evaluate/sliced_wasserstein");
                    push(&input.id, metric.name().into(), sliced_wasserstein::sliced_wasserstein(a, b, params.projections, &mut rng));
                }
                Metric::Mmd => {
                    let m = params.mmd_points;
                    let (sa, sb) = (subsample(&samples, dim, m), subsample(&test, dim, m));
                    let (pa, pb) = (Points::new(&sa, dim), Points::new(&sb, dim));
                    let h = mmd::median_bandwidth(pa, pb);
                    push(&input.id, "mmd2".into(), mmd::mmd2_unbiased(pa, pb, h));
                }
                Metric::ModeWeights => {
                    let mixture = meta.mixture.as_ref().ok_or_else(|| StageError::BadInput {
                        path: reference.dir.join("meta.json"),
                        message: "mode_weights needs a Gaussian-mixture reference".into(),
                    })?;
                    let weights = modes::mode_weights(a, mixture);
                    for (k, w) in weights.iter().enumerate() {
                        push(&input.id, format!("mode_weight_{k}"), *w);
                    }
                    push(&input.id, "mode_weight_tv".into(), modes::weight_error(&weights, &mixture.weights));
                }
            }
        }
        let record: SamplingRecord = read_json(&input.dir.join("sampling.json"))?;
        push(&input.id, "nfe".into(), record.nfe as f64);
        push(&input.id, "sample_seconds".into(), record.seconds);
        if params.plots.contains(&Plot::Scatter) {
            plots::scatter(
                &ctx.path(&format!("scatter_{}.png", input.id)),
                &format!("{} ({})", input.id, record.sampler),
                Points::new(&test, dim),
                Points::new(&samples, dim),
            )?;
        }
        ctx.progress.update(done + 1, sample_inputs.len(), "evaluating");
    }
    let mut df = DataFrame::new_infer_height(vec![
        Column::new("stage".into(), stages),
        Column::new("metric".into(), names),
        Column::new("value".into(), values),
    ])
    .map_err(|e| StageError::Failed(e.to_string()))?;
    write_csv(&ctx.path("metrics.csv"), &mut df)
}

/// The first `m` rows (sets are already i.i.d. draws in random order).
fn subsample(data: &[f32], dim: usize, m: usize) -> Vec<f32> {
    data[..(m * dim).min(data.len())].to_vec()
}
