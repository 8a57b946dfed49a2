//! `evaluate`: compares sample sets with the held-out data, judges models' scores
//! directly (error against the exact score, likelihood through the probability-flow
//! ODE), and draws the figures that go with them.

mod images;

use candle_core::Tensor;
use polars::prelude::*;
use serde::{Deserialize, Serialize};

use super::artifacts::{load_f32, read_json, write_csv};
use super::dataset::DatasetMeta;
use super::sample::SamplingRecord;
use super::train::{TrainedModel, WeightsKind};
use super::{InputEntry, StageContext};
use crate::data::toy::Mixture;
use crate::diffusion::likelihood::{Divergence, NllOptions, negative_log_likelihood_batched};
use crate::diffusion::ode::Tolerance;
use crate::diffusion::process::{Process, noise_batch};
use crate::diffusion::sample::SamplerParams;
use crate::diffusion::score::{MixtureScore, ScoreFn};
use crate::error::{StageError, StageResult};
use crate::metrics::{Metric, Points, mmd, modes, sliced_wasserstein};
use crate::pipeline::spec::StageSpec;
use crate::report::panels::{self, Field, Frame};
use crate::report::plots::{self, LineChart};
use crate::rng::{normals, stream};
use crate::stages::dataset::Source;

/// Bumped whenever the bytes this stage writes change (5: Winograd convolutions and
/// the MLP's inference pass in the networks it evaluates).
pub const VERSION: u32 = 5;

/// Which metrics and figures, and how much work to spend on them.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EvaluateParams {
    /// Sample metrics apply to every `samples` input, model metrics to every `models`
    /// input; the default is the sample metrics, plus the model metrics when models
    /// are given.
    #[serde(default)]
    pub metrics: Option<Vec<Metric>>,
    /// Figures; default: a scatter per sample set, and a score field per model of 2D
    /// data.
    #[serde(default)]
    pub plots: Option<Vec<Plot>>,
    /// Random directions for the sliced Wasserstein distance.
    #[serde(default = "projections")]
    pub projections: usize,
    /// Points per set for MMD (its cost is quadratic).
    #[serde(default = "mmd_points")]
    pub mmd_points: usize,
    /// Times t in (0, 1] at which the score error is measured (snapped to the nearest
    /// level of a discrete process).
    #[serde(default = "score_times")]
    pub score_times: Vec<f64>,
    /// Held-out points noised to each time for the score error.
    #[serde(default = "score_points")]
    pub score_points: usize,
    /// Times of the score-field panels.
    #[serde(default = "field_times")]
    pub field_times: Vec<f64>,
    /// Held-out points whose likelihood is computed (each costs an ODE solve).
    #[serde(default = "nll_points")]
    pub nll_points: usize,
    /// `auto` (exact up to 16 dimensions), `exact` or `hutchinson`.
    #[serde(default = "divergence")]
    pub divergence: Divergence,
    /// Tolerances of the likelihood's RK45 solve (score_sde: 1e-5).
    #[serde(default = "tolerance")]
    pub nll_rtol: f64,
    #[serde(default = "tolerance")]
    pub nll_atol: f64,
    /// Images per set embedded for the feature-space metrics (FID, KID, IS, P/R).
    #[serde(default = "feature_points")]
    pub feature_points: usize,
    /// Images per KID subset (10 subsets are averaged).
    #[serde(default = "kid_subset")]
    pub kid_subset: usize,
    /// The deterministic sampler (`ddim` with eta 0, or `ode`) that decodes the
    /// spherical interpolations.
    #[serde(default = "interpolation_sampler")]
    pub interpolation_sampler: SamplerParams,
    /// Times to which the two images of `mix` are noised, one row each (0: the plain
    /// mix; Ho et al. show 0 to 1000 of 1000 steps).
    #[serde(default = "mix_times")]
    pub mix_times: Vec<f64>,
    /// Ancestral steps of the `mix` decoding from t = 1 (default: every level of a
    /// discrete process, 1000 for an SDE); a row starts at its own time.
    #[serde(default)]
    pub mix_steps: Option<usize>,
    #[serde(default)]
    pub seed: u64,
}

/// Figures an evaluate stage can draw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Plot {
    /// Samples over the held-out data, one figure per sample stage.
    Scatter,
    /// The sample stage's snapshots from prior to data, one panel each.
    Timeline,
    /// A model's score as arrows at `field_times`, beside the exact score when the
    /// reference is a mixture (2D data).
    ScoreField,
    /// Image samples, 8 by 8 (image data).
    Grid,
    /// Held-out images noised by a model's process from t = 0 to 1 (image data).
    ForwardNoising,
    /// Spherical interpolations between prior draws, decoded by
    /// `interpolation_sampler` (image data, models).
    Interpolation,
    /// Ho et al.'s interpolation: two held-out images noised to each of `mix_times`,
    /// mixed linearly and decoded by ancestral sampling (image data, models).
    Mix,
}

impl Plot {
    pub fn name(self) -> &'static str {
        match self {
            Plot::Scatter => "scatter",
            Plot::Timeline => "timeline",
            Plot::ScoreField => "score_field",
            Plot::Grid => "grid",
            Plot::ForwardNoising => "forward_noising",
            Plot::Interpolation => "interpolation",
            Plot::Mix => "mix",
        }
    }

    /// Whether the figure shows images (the others draw points).
    fn of_images(self) -> bool {
        matches!(
            self,
            Plot::Grid | Plot::ForwardNoising | Plot::Interpolation | Plot::Mix
        )
    }

    /// Whether the figure is drawn from `needs.models`.
    fn of_models(self) -> bool {
        matches!(
            self,
            Plot::ScoreField | Plot::ForwardNoising | Plot::Interpolation | Plot::Mix
        )
    }
}

fn projections() -> usize {
    256
}
fn mmd_points() -> usize {
    2000
}
fn score_times() -> Vec<f64> {
    vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0]
}
fn score_points() -> usize {
    2000
}
fn field_times() -> Vec<f64> {
    vec![0.02, 0.2, 0.5]
}
fn nll_points() -> usize {
    500
}
fn divergence() -> Divergence {
    Divergence::Auto
}
fn tolerance() -> f64 {
    1e-5
}
fn feature_points() -> usize {
    2000
}
fn kid_subset() -> usize {
    500
}
fn interpolation_sampler() -> SamplerParams {
    SamplerParams::Ddim {
        eta: 0.0,
        steps: 50,
    }
}
fn mix_times() -> Vec<f64> {
    vec![0.0, 0.25, 0.5, 0.75, 1.0]
}

/// What an evaluate stage is given, which decides its default metrics and figures.
#[derive(Debug, Clone, Copy, Default)]
pub struct Given {
    pub models: bool,
    pub classifier: bool,
    pub images: bool,
}

impl Default for EvaluateParams {
    fn default() -> Self {
        EvaluateParams {
            metrics: None,
            plots: None,
            projections: projections(),
            mmd_points: mmd_points(),
            score_times: score_times(),
            score_points: score_points(),
            field_times: field_times(),
            nll_points: nll_points(),
            divergence: divergence(),
            nll_rtol: tolerance(),
            nll_atol: tolerance(),
            feature_points: feature_points(),
            kid_subset: kid_subset(),
            interpolation_sampler: interpolation_sampler(),
            mix_times: mix_times(),
            mix_steps: None,
            seed: 0,
        }
    }
}

impl EvaluateParams {
    /// The metrics to compute, given the inputs.
    pub fn metrics(&self, given: Given) -> Vec<Metric> {
        if let Some(m) = &self.metrics {
            return m.clone();
        }
        let mut out = if given.images {
            if given.classifier {
                vec![
                    Metric::Fid,
                    Metric::Kid,
                    Metric::InceptionScore,
                    Metric::PrecisionRecall,
                ]
            } else {
                vec![]
            }
        } else {
            vec![Metric::SlicedWasserstein, Metric::Mmd]
        };
        if given.models {
            if !given.images {
                out.push(Metric::ScoreError);
            }
            out.push(Metric::Nll);
        }
        out
    }

    /// The figures to draw, given the inputs and the data's dimension.
    pub fn plots(&self, given: Given, dim: usize) -> Vec<Plot> {
        match &self.plots {
            Some(p) => p.clone(),
            None if given.images && given.models => vec![
                Plot::Grid,
                Plot::Timeline,
                Plot::ForwardNoising,
                Plot::Interpolation,
                Plot::Mix,
            ],
            None if given.images => vec![Plot::Grid, Plot::Timeline],
            None if dim == 2 => vec![Plot::Scatter, Plot::ScoreField],
            None => vec![Plot::Scatter],
        }
    }

    pub fn validate(
        &self,
        reference: Option<&StageSpec>,
        samples: &[&StageSpec],
        models: &[&StageSpec],
        classifier: Option<&StageSpec>,
    ) -> Result<(), String> {
        let images = matches!(reference, Some(StageSpec::Dataset { params }) if matches!(params.source, Source::Images(_)));
        let given = Given {
            models: !models.is_empty(),
            classifier: classifier.is_some(),
            images,
        };
        if self.feature_points < 2 || self.kid_subset < 2 {
            return Err("`feature_points` and `kid_subset` must be at least 2".into());
        }
        if self.projections == 0
            || self.mmd_points < 2
            || self.score_points == 0
            || self.nll_points == 0
        {
            return Err(
                "need projections >= 1, mmd_points >= 2, score_points >= 1 and nll_points >= 1"
                    .into(),
            );
        }
        if samples.is_empty() && models.is_empty() {
            return Err("nothing to evaluate: give `needs.samples` (sample stages) and/or `needs.models` (train stages)".into());
        }
        let bad_time = |t: &f64| !(*t > 0.0 && *t <= 1.0);
        if self
            .score_times
            .iter()
            .chain(&self.field_times)
            .any(bad_time)
            || self.score_times.is_empty()
        {
            return Err("`score_times` and `field_times` must be times in (0, 1]; `score_times` must not be empty".into());
        }
        if !(self.nll_rtol > 0.0 && self.nll_atol > 0.0) {
            return Err("`nll_rtol` and `nll_atol` must be positive".into());
        }
        match &self.interpolation_sampler {
            SamplerParams::Ddim { eta, .. } if *eta == 0.0 => {}
            SamplerParams::Ode { .. } => {}
            other => {
                return Err(format!(
                    "`interpolation_sampler` must be deterministic (`ddim` with eta 0, or `ode`), not `{}`",
                    other.name()
                ));
            }
        }
        if self.mix_times.iter().any(|t| !(0.0..=1.0).contains(t)) || self.mix_steps == Some(0) {
            return Err("`mix_times` must be times in [0, 1] and `mix_steps` at least 1".into());
        }
        let metrics = self.metrics(given);
        if let Some(m) = metrics.iter().find(|m| m.needs_classifier())
            && classifier.is_none()
        {
            return Err(format!(
                "metric `{}` works in a classifier's feature space: add a `kind: classifier` stage and name it in `needs.classifier`",
                m.name()
            ));
        }
        let is_mixture = |spec: Option<&StageSpec>| matches!(spec, Some(StageSpec::Dataset { params }) if params.mixture().is_some());
        for metric in &metrics {
            if metric.of_models() && models.is_empty() {
                return Err(format!(
                    "metric `{}` judges models: list train stages under `needs.models`",
                    metric.name()
                ));
            }
            if !metric.of_models() && samples.is_empty() && self.metrics.is_some() {
                return Err(format!(
                    "metric `{}` judges samples: list sample stages under `needs.samples`",
                    metric.name()
                ));
            }
            if matches!(metric, Metric::ModeWeights | Metric::ScoreError)
                && reference.is_some()
                && !is_mixture(reference)
            {
                return Err(format!(
                    "metric `{}` needs a Gaussian-mixture reference (gmm or two_gaussians)",
                    metric.name()
                ));
            }
        }
        let plots = self.plots.clone().unwrap_or_default();
        for plot in &plots {
            if plot.of_images() != images && !matches!(plot, Plot::Timeline) {
                return Err(if images {
                    format!(
                        "plot `{}` draws points; for images use `grid`, `timeline`, `forward_noising`, `interpolation` or `mix`",
                        plot.name()
                    )
                } else {
                    format!(
                        "plot `{}` draws images; the reference is not an image dataset",
                        plot.name()
                    )
                });
            }
        }
        if let Some(plot) = plots.iter().find(|p| p.of_models())
            && models.is_empty()
        {
            return Err(format!(
                "plot `{}` is drawn from a model: list train stages under `needs.models`",
                plot.name()
            ));
        }
        if plots
            .iter()
            .any(|p| matches!(p, Plot::Scatter | Plot::Timeline | Plot::Grid))
            && samples.is_empty()
        {
            return Err("plots `scatter`, `grid` and `timeline` draw samples: list sample stages under `needs.samples`".into());
        }
        if !models.is_empty()
            && !metrics.iter().any(|m| m.of_models())
            && !plots.iter().any(|p| p.of_models())
            && self.plots.is_some()
        {
            return Err("`needs.models` lists train stages but no metric or plot uses them; add `score_error`, `nll` or a plot drawn from models (`score_field`, `forward_noising`, `interpolation`, `mix`)".into());
        }
        Ok(())
    }
}

/// The long-format rows of `metrics.csv`: (evaluated stage, metric, value).
#[derive(Default)]
struct Rows {
    stages: Vec<String>,
    metrics: Vec<String>,
    values: Vec<f64>,
}

impl Rows {
    fn push(&mut self, stage: &str, metric: impl Into<String>, value: f64) {
        self.stages.push(stage.to_string());
        self.metrics.push(metric.into());
        self.values.push(value);
    }
}

/// The held-out split, as every evaluation sees it.
struct Reference<'a> {
    entry: &'a InputEntry,
    meta: DatasetMeta,
    test: Vec<f32>,
}

impl Reference<'_> {
    fn points(&self) -> Points<'_> {
        Points::new(&self.test, self.meta.dim)
    }

    fn mixture(&self, metric: &str) -> StageResult<&Mixture> {
        self.meta
            .mixture
            .as_ref()
            .ok_or_else(|| StageError::BadInput {
                path: self.entry.dir.join("meta.json"),
                message: format!("{metric} needs a Gaussian-mixture reference"),
            })
    }
}

pub fn run(params: &EvaluateParams, ctx: &StageContext) -> StageResult<()> {
    let entry = ctx.input("reference")?;
    let meta: DatasetMeta = read_json(&entry.dir.join("meta.json"))?;
    let (test, _) = load_f32(&entry.dir.join("data.safetensors"), "test")?;
    let reference = Reference { entry, meta, test };
    let given = Given {
        models: !ctx.inputs("models").is_empty(),
        classifier: !ctx.inputs("classifier").is_empty(),
        images: reference.meta.is_image(),
    };
    let metrics = params.metrics(given);
    let plots = params.plots(given, reference.meta.dim);
    let mut rows = Rows::default();
    let features = match ctx.inputs("classifier").first() {
        Some(entry) if metrics.iter().any(|m| m.needs_classifier()) => Some(
            images::FeatureSpace::new(params, ctx, entry, &reference, &mut rows)?,
        ),
        _ => None,
    };
    evaluate_samples(
        params,
        ctx,
        &reference,
        &metrics,
        &plots,
        features.as_ref(),
        &mut rows,
    )?;
    evaluate_models(params, ctx, &reference, &metrics, &plots, &mut rows)?;
    let mut df = DataFrame::new_infer_height(vec![
        Column::new("stage".into(), rows.stages),
        Column::new("metric".into(), rows.metrics),
        Column::new("value".into(), rows.values),
    ])
    .map_err(|e| StageError::Failed(e.to_string()))?;
    write_csv(&ctx.path("metrics.csv"), &mut df)
}

fn evaluate_samples(
    params: &EvaluateParams,
    ctx: &StageContext,
    reference: &Reference,
    metrics: &[Metric],
    plots: &[Plot],
    features: Option<&images::FeatureSpace>,
    rows: &mut Rows,
) -> StageResult<()> {
    let dim = reference.meta.dim;
    let sample_inputs = ctx.inputs("samples");
    for (done, input) in sample_inputs.iter().enumerate() {
        let path = input.dir.join("samples.safetensors");
        let (samples, shape) = load_f32(&path, "samples")?;
        if shape.get(1) != Some(&dim) {
            return Err(StageError::BadInput {
                path,
                message: format!(
                    "samples of `{}` have shape {shape:?} but the reference has dimension {dim}",
                    input.id
                ),
            });
        }
        let (a, b) = (Points::new(&samples, dim), reference.points());
        for metric in metrics.iter().filter(|m| !m.of_models()) {
            match metric {
                Metric::SlicedWasserstein => {
                    let mut rng = stream(params.seed, "evaluate/sliced_wasserstein");
                    rows.push(
                        &input.id,
                        metric.name(),
                        sliced_wasserstein::sliced_wasserstein(a, b, params.projections, &mut rng),
                    );
                }
                Metric::Mmd => {
                    let m = params.mmd_points;
                    let (sa, sb) = (
                        subsample(&samples, dim, m),
                        subsample(&reference.test, dim, m),
                    );
                    let (pa, pb) = (Points::new(&sa, dim), Points::new(&sb, dim));
                    let h = mmd::median_bandwidth(pa, pb);
                    rows.push(&input.id, "mmd2", mmd::mmd2_unbiased(pa, pb, h));
                }
                Metric::ModeWeights => {
                    let mixture = reference.mixture("mode_weights")?;
                    let weights = modes::mode_weights(a, mixture);
                    for (k, w) in weights.iter().enumerate() {
                        rows.push(&input.id, format!("mode_weight_{k}"), *w);
                    }
                    rows.push(
                        &input.id,
                        "mode_weight_tv",
                        modes::weight_error(&weights, &mixture.weights),
                    );
                }
                Metric::ScoreError | Metric::Nll => unreachable!("model metrics are filtered out"),
                Metric::Fid | Metric::Kid | Metric::InceptionScore | Metric::PrecisionRecall => {}
            }
        }
        if let Some(space) = features {
            space.judge(params, ctx, &input.id, &samples, dim, metrics, rows)?;
        }
        let record: SamplingRecord = read_json(&input.dir.join("sampling.json"))?;
        rows.push(&input.id, "nfe", record.nfe as f64);
        rows.push(&input.id, "sample_seconds", record.seconds);
        if let (true, Some(shape)) = (plots.contains(&Plot::Grid), reference.meta.image) {
            images::draw_grid(ctx, &input.id, &samples, shape)?;
        }
        if plots.contains(&Plot::Scatter) && !reference.meta.is_image() {
            plots::scatter(
                &ctx.path(&format!("scatter_{}.png", input.id)),
                &format!("{} ({})", input.id, record.sampler),
                b,
                a,
            )?;
        }
        if plots.contains(&Plot::Timeline) {
            match reference.meta.image {
                Some(shape) => images::draw_timeline(ctx, input, shape)?,
                None => draw_timeline(ctx, input, &record, reference)?,
            }
        }
        ctx.progress
            .update(done + 1, sample_inputs.len(), "evaluating samples");
    }
    Ok(())
}

/// `timeline_<stage>.png` from the sample stage's `trajectory.safetensors`.
fn draw_timeline(
    ctx: &StageContext,
    input: &InputEntry,
    record: &SamplingRecord,
    reference: &Reference,
) -> StageResult<()> {
    let path = input.dir.join("trajectory.safetensors");
    let (frames, shape) = load_f32(&path, "trajectory")?;
    let (steps, _) = load_f32(&path, "steps")?;
    let [count, keep, dim] = shape[..] else {
        return Err(StageError::BadInput {
            path,
            message: format!(
                "trajectory has shape {shape:?}, expected [snapshots, particles, dim]"
            ),
        });
    };
    let per_frame = keep * dim;
    let frames: Vec<Frame> = (0..count)
        .map(|i| Frame {
            caption: format!("step {}", steps.get(i).copied().unwrap_or(i as f32)),
            points: Points::new(&frames[i * per_frame..(i + 1) * per_frame], dim),
        })
        .collect();
    let title = format!(
        "{} ({}): from the prior to the data",
        input.id, record.sampler
    );
    panels::timeline(
        &ctx.path(&format!("timeline_{}.png", input.id)),
        &title,
        reference.points(),
        &frames,
    )
}

fn evaluate_models(
    params: &EvaluateParams,
    ctx: &StageContext,
    reference: &Reference,
    metrics: &[Metric],
    plots: &[Plot],
    rows: &mut Rows,
) -> StageResult<()> {
    let dim = reference.meta.dim;
    let models = ctx.inputs("models");
    let mut error_curves: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    for (done, input) in models.iter().enumerate() {
        let trained = TrainedModel::load(input)?;
        if trained.dim != dim {
            return Err(StageError::BadInput {
                path: input.dir.join("model.json"),
                message: format!(
                    "model `{}` was trained on {}-dimensional data but the reference has dimension {dim}",
                    input.id, trained.dim
                ),
            });
        }
        let process = trained.schedule.build();
        let score = trained.score(input, WeightsKind::Ema, &process, ctx.device)?;
        if metrics.contains(&Metric::ScoreError) {
            let exact = MixtureScore {
                mixture: reference.mixture("score_error")?.clone(),
                process: &process,
            };
            let mut times: Vec<f64> = params
                .score_times
                .iter()
                .map(|&t| snap(&process, t))
                .collect();
            times.sort_by(f64::total_cmp);
            times.dedup();
            let mut curve = Vec::new();
            let mut weighted = 0.0;
            for &t in &times {
                let mse = score_error(params, ctx, reference, score.as_ref(), &exact, &process, t)?;
                rows.push(&input.id, format!("score_mse_t{t:.3}"), mse);
                weighted += process.std(t).powi(2) * mse;
                curve.push((process.std(t), mse));
            }
            // std^2 |s - s*|^2 is the noise-prediction error: comparable across times
            // and processes, so it summarises the curve.
            rows.push(&input.id, "eps_mse", weighted / times.len() as f64);
            error_curves.push((input.id.clone(), curve));
        }
        if metrics.contains(&Metric::Nll) {
            let n = params.nll_points.min(reference.test.len() / dim);
            let mut rng = stream(params.seed, "evaluate/nll");
            let options = NllOptions {
                divergence: params.divergence,
                tolerance: Tolerance {
                    rtol: params.nll_rtol,
                    atol: params.nll_atol,
                },
                batch: 1000,
            };
            // 8-bit images are dequantised as in score_sde: pixel p becomes
            // (p + u) / 128 - 1 with u ~ U(0, 1), and the density is reported per
            // 8-bit value, which adds log2(128) = 7 bits per dimension.
            let (data, offset) = if reference.meta.is_image() {
                (dequantize(&reference.test[..n * dim], &mut rng), 7.0)
            } else {
                (reference.test[..n * dim].to_vec(), 0.0)
            };
            let likelihood = negative_log_likelihood_batched(
                score.as_ref(),
                &process,
                &data,
                dim,
                options,
                ctx.device,
                &mut rng,
            )?;
            rows.push(&input.id, "nll", likelihood.mean_nats());
            rows.push(
                &input.id,
                "bits_per_dim",
                likelihood.bits_per_dim(dim) + offset,
            );
            rows.push(&input.id, "nll_nfe", likelihood.nfe as f64);
        }
        if let Some(shape) = reference.meta.image {
            if plots.contains(&Plot::ForwardNoising) {
                images::draw_forward_noising(
                    ctx,
                    &input.id,
                    &process,
                    reference,
                    shape,
                    params.seed,
                )?;
            }
            if plots.contains(&Plot::Interpolation) {
                images::draw_interpolation(
                    params,
                    ctx,
                    &input.id,
                    score.as_ref(),
                    &process,
                    shape,
                )?;
            }
            if plots.contains(&Plot::Mix) {
                images::draw_mix(
                    params,
                    ctx,
                    &input.id,
                    score.as_ref(),
                    &process,
                    reference,
                    shape,
                )?;
            }
        }
        if plots.contains(&Plot::ScoreField) && dim == 2 {
            let exact = reference.meta.mixture.clone().map(|mixture| MixtureScore {
                mixture,
                process: &process,
            });
            draw_field(
                params,
                ctx,
                reference,
                input,
                score.as_ref(),
                exact.as_ref(),
                &process,
            )?;
        }
        ctx.progress
            .update(done + 1, models.len(), "evaluating models");
    }
    if !error_curves.is_empty() {
        let series: Vec<(&str, Vec<(f64, f64)>)> = error_curves
            .iter()
            .map(|(n, c)| (n.as_str(), c.clone()))
            .collect();
        plots::line_chart(
            &ctx.path("score_error.png"),
            &LineChart {
                title: "score error against the exact score",
                x_label: "noise std(t)",
                y_label: "mean squared error",
                series: &series,
                log_x: true,
                log_y: true,
            },
        )?;
    }
    Ok(())
}

/// The nearest level's time for a discrete process (its network only saw those).
fn snap(process: &Process, t: f64) -> f64 {
    match process.levels() {
        Some(n) => (1..=n)
            .map(|i| process.level_time(i))
            .min_by(|a, b| (a - t).abs().total_cmp(&(b - t).abs()))
            .unwrap_or(t),
        None => t.max(process.t_min()),
    }
}

/// Mean squared error per coordinate between the model's and the exact score, on
/// held-out points noised to time t.
fn score_error(
    params: &EvaluateParams,
    ctx: &StageContext,
    reference: &Reference,
    score: &dyn ScoreFn,
    exact: &MixtureScore,
    process: &Process,
    t: f64,
) -> StageResult<f64> {
    let dim = reference.meta.dim;
    let n = params.score_points.min(reference.test.len() / dim);
    let x0 = &reference.test[..n * dim];
    let eps = normals(&mut stream(params.seed, "evaluate/score_error"), n * dim);
    let xt = noise_batch(process, x0, &vec![t; n], &eps, dim);
    let (want, _) = exact.rows(&xt, dim, t);
    let got = score
        .score(&Tensor::from_vec(xt, (n, dim), ctx.device)?, t)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    Ok(got
        .iter()
        .zip(&want)
        .map(|(g, w)| ((g - w) as f64).powi(2))
        .sum::<f64>()
        / (n * dim) as f64)
}

/// `score_field_<model>.png`: a 21 x 21 grid over the data's range at each field time.
fn draw_field(
    params: &EvaluateParams,
    ctx: &StageContext,
    reference: &Reference,
    input: &InputEntry,
    score: &dyn ScoreFn,
    exact: Option<&MixtureScore>,
    process: &Process,
) -> StageResult<()> {
    const SIDE: usize = 21;
    let (lo, hi) = (&reference.meta.min, &reference.meta.max);
    let pad = |j: usize| (hi[j] - lo[j]) * 0.1;
    let axis = |j: usize, i: usize| {
        lo[j] - pad(j) + (hi[j] - lo[j] + 2.0 * pad(j)) * i as f32 / (SIDE - 1) as f32
    };
    let at: Vec<f32> = (0..SIDE * SIDE)
        .flat_map(|k| [axis(0, k % SIDE), axis(1, k / SIDE)])
        .collect();
    let cell = ((hi[0] - lo[0] + 2.0 * pad(0)) / (SIDE - 1) as f32) as f64;
    let range = |j: usize| (axis(j, 0) as f64, axis(j, SIDE - 1) as f64);
    let mut fields = Vec::new();
    for &t in &params.field_times {
        let t = snap(process, t);
        let grid = Tensor::from_slice(&at, (SIDE * SIDE, 2), ctx.device)?;
        let learned = score.score(&grid, t)?.flatten_all()?.to_vec1::<f32>()?;
        fields.push(Field {
            caption: format!("t = {t:.3}, std = {:.3}", process.std(t)),
            at: at.clone(),
            learned,
            exact: exact.map(|e| e.rows(&at, 2, t).0),
        });
    }
    let title = format!(
        "score of `{}` (blue){}",
        input.id,
        if exact.is_some() {
            " over the exact score (orange)"
        } else {
            ""
        }
    );
    panels::vector_fields(
        &ctx.path(&format!("score_field_{}.png", input.id)),
        &title,
        reference.points(),
        range(0),
        range(1),
        cell,
        &fields,
    )
}

/// Uniform dequantisation of pixels stored as p / 127.5 - 1.
fn dequantize(x: &[f32], rng: &mut rand_chacha::ChaCha8Rng) -> Vec<f32> {
    let u = crate::rng::uniforms(rng, x.len(), 0.0, 1.0);
    x.iter()
        .zip(u)
        .map(|(v, u)| (((v + 1.0) * 127.5).round() + u) / 128.0 - 1.0)
        .collect()
}

/// The first `m` rows (sets are already i.i.d. draws in random order).
fn subsample(data: &[f32], dim: usize, m: usize) -> Vec<f32> {
    data[..(m * dim).min(data.len())].to_vec()
}
