//! `evaluate`: compares sample sets with the held-out data, judges models' scores
//! directly (error against the exact score, likelihood through the probability-flow
//! ODE), and draws the figures that go with them.

mod images;
mod inputs;
mod params;

use candle_core::{Device, Tensor};
use polars::prelude::*;

pub use params::{EvaluateParams, Given, Plot};

use inputs::{Reference, Rows, density_curve, snap};
use super::classifier::Classifier;
use super::context::{InputEntry, StageContext};
use super::cost::{Cost, count};
use super::dataset::{Dataset, DatasetMeta};
use super::kind::{Kind, Neighbours, Role};
use super::sample::{Sample, SamplingRecord, Trajectory};
use super::train::{Train, TrainedModel, WeightsKind};
use crate::artifacts::{load_f32, load_tensors, read_json, tensor_f32, write_csv};
use crate::diffusion::likelihood::{NllOptions, negative_log_likelihood_batched};
use crate::diffusion::ode::Tolerance;
use crate::diffusion::process::{Process, noise_batch};
use crate::diffusion::score::{MixtureScore, ScoreFn};
use crate::error::{StageError, StageResult};
use crate::metrics::{Metric, Points, mmd, modes, shell, sliced_wasserstein};
use crate::plot::density::DensityPanel;
use crate::plot::panels::{self, Field, Frame};
use crate::plot::{self, LineChart};
use crate::rng::{normals, stream};

/// The `evaluate` kind.
pub struct Evaluate;

impl Kind for Evaluate {
    const NAME: &'static str = "evaluate";
    /// Bumped whenever the bytes this stage writes change (5: Winograd convolutions
    /// and the MLP's inference pass in the networks it evaluates; 7: score errors
    /// named by the time asked for, with the level's noise std, and every figure also
    /// as SVG; 8: F(4x4, 3x3) Winograd convolutions in the networks it evaluates).
    const VERSION: u32 = 8;
    const ROLES: &'static [Role] = &[
        Role::one("reference", Dataset::NAME),
        Role::list("samples", Sample::NAME),
        Role::list("models", Train::NAME),
        Role::optional("classifier", Classifier::NAME),
    ];
    const WRITES: &'static str = "`metrics.csv`, `scatter_<stage>.png`, `grid_<stage>.png`, `timeline_<stage>.png`, `forward_<model>.png`, `interpolation_<model>.png`, `mix_<model>.png`, `score_field_<model>.png`, `score_error.png`, `recognizability.png`";
    /// Figures go by file-name prefix, each titled by what follows the prefix.
    const FIGURES: &'static [(&'static str, &'static str)] = &[
        ("scatter_", "Samples over held-out data"),
        ("grid_", "Image samples"),
        ("forward_", "Forward noising of held-out images"),
        (
            "interpolation_",
            "Spherical interpolation of initial noises (deterministic sampler)",
        ),
        (
            "mix_",
            "Two held-out images noised, mixed and decoded (one row per noise level)",
        ),
        ("timeline_", "Sampling timelines"),
        ("score_field_", "Score fields, learned against exact"),
        ("score_error", "Score error per noise level"),
        (
            "recognizability",
            "Classifier confidence of the snapshots along the reverse process",
        ),
    ];
    type Params = EvaluateParams;

    fn validate(params: &EvaluateParams, stages: &Neighbours) -> Result<(), String> {
        params.validate(
            stages.input::<Dataset>("reference"),
            stages.count("samples"),
            stages.count("models"),
            stages.count("classifier") > 0,
        )
    }

    /// Every sample set and the reference, with sliced Wasserstein's projections, MMD's
    /// pairs, the likelihood's ODE solves and the score errors as the arithmetic.
    fn cost(params: &EvaluateParams, stages: &Neighbours) -> Cost {
        let Some(reference) = stages.input::<Dataset>("reference").map(|d| d.extent()) else {
            return Cost::default();
        };
        let dim = reference.dim();
        let samples: f64 = stages
            .needs
            .ids("samples")
            .iter()
            .filter_map(|id| stages.params::<Sample>(id))
            .map(|s| s.n as f64)
            .sum();
        let sets = stages.needs.ids("samples").len() as f64;
        let network = stages
            .needs
            .ids("models")
            .iter()
            .filter_map(|id| stages.needs_of(id))
            .filter_map(|needs| super::train::sized(stages, needs))
            .map(|(_, net)| net.flops.max(10.0 * dim))
            .fold(0.0, f64::max);
        let models = stages.needs.ids("models").len() as f64;
        let rows = samples + reference.test + reference.train;
        let projections = params.projections as f64;
        let mmd = params.mmd_points as f64;
        let flops = projections * (samples + reference.test) * (2.0 * dim + 30.0)
            + sets * 3.0 * mmd * mmd * dim
            + models * network
                * (params.nll_points as f64 * 300.0 * 2.0
                    + params.score_points as f64 * params.score_times.len() as f64);
        Cost::holding(
            rows * dim * 2.0,
            1.0,
            format!("{} samples and reference rows of {dim} values", count(rows)),
        )
        .working(
            flops,
            format!(
                "{} projections of {} points, MMD on {} points, likelihoods of {} points",
                count(projections),
                count(samples + reference.test),
                count(mmd),
                count(params.nll_points as f64)
            ),
        )
    }

    fn run(params: &EvaluateParams, ctx: &StageContext) -> StageResult<()> {
        run(params, ctx)
    }
}

fn run(params: &EvaluateParams, ctx: &StageContext) -> StageResult<()> {
    let entry = ctx.input("reference")?;
    let meta: DatasetMeta = read_json(&entry.dir.join("meta.json"))?;
    let given = Given {
        models: !ctx.inputs("models").is_empty(),
        classifier: !ctx.inputs("classifier").is_empty(),
        images: meta.is_image(),
    };
    let metrics = params.metrics(given);
    let plots = params.plots(given, meta.dim);
    // One read of the data: the held-out rows, and the training rows the FID floor needs.
    let path = entry.dir.join("data.safetensors");
    let tensors = load_tensors(&path, &Device::Cpu)?;
    let (test, _) = tensor_f32(&tensors, &path, "test")?;
    let train_sample = if metrics.contains(&Metric::FidFloor) {
        let (train, _) = tensor_f32(&tensors, &path, "train")?;
        train[..(params.feature_points * meta.dim).min(train.len())].to_vec()
    } else {
        Vec::new()
    };
    drop(tensors);
    let reference = Reference {
        entry,
        meta,
        test,
        train_sample,
    };
    let mut rows = Rows::default();
    let features = match ctx.inputs("classifier").first() {
        Some(entry) if metrics.iter().any(|m| m.needs_classifier()) => Some(
            images::FeatureSpace::new(params, ctx, entry, &reference, &metrics, &mut rows)?,
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
    let mut curves = Vec::new();
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
                Metric::ShellOutliers => {
                    let (radius, width) = reference.shell("shell_outliers")?;
                    rows.push(
                        &input.id,
                        "outlier_fraction",
                        shell::outlier_fraction(a, radius, width, 3.0),
                    );
                }
                Metric::ScoreError | Metric::Nll => unreachable!("model metrics are filtered out"),
                Metric::Fid
                | Metric::Kid
                | Metric::InceptionScore
                | Metric::PrecisionRecall
                | Metric::Confidence
                | Metric::ClassFractions
                | Metric::FidFloor
                | Metric::RecognizableAt => {}
            }
        }
        if let Some(space) = features {
            space.judge(params, ctx, &input.id, &samples, dim, metrics, rows)?;
            if metrics.contains(&Metric::RecognizableAt) {
                let curve = space.confidence_along(ctx, input)?;
                rows.push(&input.id, "recognizable_at", images::recognizable_at(&curve));
                curves.push((input.id.clone(), curve));
            }
        }
        let record: SamplingRecord = read_json(&input.dir.join("sampling.json"))?;
        rows.push(&input.id, "nfe", record.nfe as f64);
        rows.push(&input.id, "sample_seconds", record.seconds);
        if let (true, Some(shape)) = (plots.contains(&Plot::Grid), reference.meta.image) {
            images::draw_grid(ctx, &input.id, &samples, shape)?;
        }
        if plots.contains(&Plot::Scatter) && !reference.meta.is_image() {
            let path = ctx.path(&format!("scatter_{}.png", input.id));
            let title = format!("{} ({})", input.id, record.sampler);
            match dim {
                1 => plot::density::densities(
                    &path,
                    &title,
                    reference.line_range(),
                    &[reference.density_panel("samples over the data's density", &samples)],
                )?,
                2 => plot::scatter(&path, &title, b, a)?,
                _ => panels::projections(&path, &title, b, a)?,
            }
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
    if !curves.is_empty() {
        images::draw_recognizability(ctx, &curves)?;
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
    let trajectory = Trajectory::load(input)?;
    let caption = |i: usize| {
        format!(
            "step {}",
            trajectory.steps.get(i).copied().unwrap_or(i as f32)
        )
    };
    let path = ctx.path(&format!("timeline_{}.png", input.id));
    if trajectory.dim == 1 {
        let panels: Vec<DensityPanel> = (0..trajectory.count)
            .map(|i| reference.density_panel(&caption(i), trajectory.frame(i)))
            .collect();
        let title = format!(
            "{} ({}): from the prior to the data, over the data's density",
            input.id, record.sampler
        );
        return plot::density::densities(&path, &title, reference.line_range(), &panels);
    }
    let frames: Vec<Frame> = (0..trajectory.count)
        .map(|i| Frame {
            caption: caption(i),
            points: Points::new(trajectory.frame(i), trajectory.dim),
        })
        .collect();
    let projection = if trajectory.dim > 2 { " (x-y)" } else { "" };
    let title = format!(
        "{} ({}): from the prior to the data{projection}",
        input.id, record.sampler
    );
    panels::timeline(&path, &title, reference.points(), &frames)
}

/// `forward_<model>.png` for points: held-out data noised by the model's process at
/// t = 0, 1/4, ..., 1; in 1D as densities over the exact noised density when the data
/// is a mixture (the marginal of a mixture stays a mixture), otherwise as scatters.
fn draw_forward_points(
    ctx: &StageContext,
    model: &str,
    process: &Process,
    reference: &Reference,
    seed: u64,
) -> StageResult<()> {
    let dim = reference.meta.dim;
    let n = (reference.test.len() / dim).min(5000);
    let x0 = &reference.test[..n * dim];
    let eps = normals(&mut stream(seed, "evaluate/forward"), n * dim);
    let times: [f64; 5] = [0.0, 0.25, 0.5, 0.75, 1.0];
    let noised: Vec<(f64, Vec<f32>)> = times
        .iter()
        .map(|&t| {
            let t = t.max(process.t_min());
            (t, noise_batch(process, x0, &vec![t; n], &eps, dim))
        })
        .collect();
    let path = ctx.path(&format!("forward_{model}.png"));
    let title = format!("{model}: the forward process noising the data");
    if dim == 1 {
        let range = reference.line_range();
        let panels: Vec<DensityPanel> = noised
            .iter()
            .map(|(t, x)| DensityPanel {
                caption: format!("t = {t:.2}"),
                points: x,
                curve: reference.meta.mixture.as_ref().map(|m| {
                    density_curve(&m.noised(process.mean_coef(*t), process.std(*t)), range)
                }),
            })
            .collect();
        return plot::density::densities(&path, &title, range, &panels);
    }
    let frames: Vec<Frame> = noised
        .iter()
        .map(|(t, x)| Frame {
            caption: format!("t = {t:.2}"),
            points: Points::new(x, dim),
        })
        .collect();
    panels::timeline(&path, &title, reference.points(), &frames)
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
            // Rows are named by the time asked for, so every model's line up; the
            // level actually used (a discrete process snaps t to its nearest level)
            // is recorded by its noise std, and each level is measured once.
            let mut measured: Vec<(f64, f64)> = Vec::new();
            for &asked in &params.score_times {
                let t = snap(&process, asked);
                let mse = match measured.iter().find(|(level, _)| *level == t) {
                    Some(&(_, mse)) => mse,
                    None => {
                        let mse =
                            score_error(params, ctx, reference, score.as_ref(), &exact, &process, t)?;
                        measured.push((t, mse));
                        mse
                    }
                };
                rows.push(&input.id, format!("score_mse_t{asked:.3}"), mse);
                rows.push(&input.id, format!("score_sigma_t{asked:.3}"), process.std(t));
            }
            measured.sort_by(|a, b| a.0.total_cmp(&b.0));
            // std^2 |s - s*|^2 is the noise-prediction error: comparable across times
            // and processes, so it summarises the curve.
            let weighted: f64 = measured
                .iter()
                .map(|&(t, mse)| process.std(t).powi(2) * mse)
                .sum();
            rows.push(&input.id, "eps_mse", weighted / measured.len().max(1) as f64);
            let curve = measured
                .iter()
                .map(|&(t, mse)| (process.std(t), mse))
                .collect();
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
        if reference.meta.image.is_none() && plots.contains(&Plot::ForwardNoising) {
            draw_forward_points(ctx, &input.id, &process, reference, params.seed)?;
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
        plot::line_chart(
            &ctx.path("score_error.png"),
            &LineChart {
                title: "score error against the exact score",
                x_label: "noise std(t)",
                y_label: "mean squared error",
                series: &series,
                errors: &[],
                log_x: true,
                log_y: true,
            },
        )?;
    }
    Ok(())
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
