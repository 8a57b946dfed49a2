//! The image side of evaluation: metrics in a classifier's feature space, and the
//! figures of image samples and models (grids, denoising timelines, forward noising,
//! interpolations).

use candle_core::Tensor;
use rand::seq::index::sample as pick_indices;

use super::inputs::{Reference, Rows, snap};
use super::params::EvaluateParams;
use crate::data::images::{ImageShape, RANGE};
use crate::diffusion::interpolate;
use crate::diffusion::process::{Process, noise_batch};
use crate::diffusion::score::ScoreFn;
use crate::error::{StageError, StageResult};
use crate::metrics::{Metric, Points, features};
use crate::nn::models::classifier::Classifier;
use crate::plot::images::write_grid;
use crate::rng::{normals, stream};
use crate::stages::classifier::TrainedClassifier;
use crate::stages::sample::Trajectory;
use crate::stages::context::{InputEntry, StageContext};

/// The classifier and the held-out set's features, computed once per evaluation.
pub struct FeatureSpace {
    net: Classifier,
    reference_features: Vec<f32>,
    width: usize,
}

impl FeatureSpace {
    /// Loads the classifier of `entry` and embeds up to `params.feature_points` held-out
    /// images; records the classifier's accuracy and, if asked, the FID floor.
    pub fn new(
        params: &EvaluateParams,
        ctx: &StageContext,
        entry: &InputEntry,
        reference: &Reference,
        metrics: &[Metric],
        rows: &mut Rows,
    ) -> StageResult<FeatureSpace> {
        let (info, net): (TrainedClassifier, Classifier) =
            TrainedClassifier::load(entry, ctx.device)?;
        if Some(info.shape) != reference.meta.image {
            return Err(StageError::BadInput {
                path: entry.dir.join("classifier.json"),
                message: format!(
                    "classifier `{}` was trained on images of shape {:?}, the reference has {:?}",
                    entry.id, info.shape, reference.meta.image
                ),
            });
        }
        rows.push(&entry.id, "classifier_accuracy", info.accuracy);
        let dim = reference.meta.dim;
        let n = params.feature_points.min(reference.test.len() / dim);
        let (feats, _) = embed(&net, &reference.test[..n * dim], dim, ctx)?;
        let width = feats.len() / n.max(1);
        if metrics.contains(&Metric::FidFloor) {
            let train = &reference.train_sample;
            let m = n.min(train.len() / dim);
            let (train_feats, _) = embed(&net, &train[..m * dim], dim, ctx)?;
            let floor = features::frechet_distance(
                Points::new(&train_feats, width),
                Points::new(&feats, width),
            );
            rows.push(&reference.entry.id, "fid_floor", floor);
        }
        Ok(FeatureSpace {
            net,
            reference_features: feats,
            width,
        })
    }

    /// The feature-space metrics of one sample set, as the metrics ask.
    pub fn judge(
        &self,
        params: &EvaluateParams,
        ctx: &StageContext,
        stage: &str,
        samples: &[f32],
        dim: usize,
        metrics: &[Metric],
        rows: &mut Rows,
    ) -> StageResult<()> {
        let n = params.feature_points.min(samples.len() / dim);
        let (feats, probs) = embed(&self.net, &samples[..n * dim], dim, ctx)?;
        let (a, b) = (
            Points::new(&feats, self.width),
            Points::new(&self.reference_features, self.width),
        );
        let probs = Points::new(&probs, probs.len() / n.max(1));
        for metric in metrics.iter().filter(|m| m.needs_classifier()) {
            match metric {
                Metric::Fid => rows.push(stage, "fid", features::frechet_distance(a, b)),
                Metric::Kid => {
                    let mut rng = stream(params.seed, "evaluate/kid");
                    let mut pick = |len: usize, m: usize| pick_indices(&mut rng, len, m).into_vec();
                    let (kid, std) =
                        features::kernel_inception_distance(a, b, 10, params.kid_subset, &mut pick);
                    rows.push(stage, "kid", kid);
                    rows.push(stage, "kid_std", std);
                }
                Metric::InceptionScore => {
                    rows.push(stage, "inception_score", features::inception_score(probs));
                }
                Metric::PrecisionRecall => {
                    let (p, r) = features::precision_recall(a, b, 3);
                    rows.push(stage, "precision", p);
                    rows.push(stage, "recall", r);
                }
                Metric::Confidence => {
                    rows.push(stage, "confidence", features::mean_top_probability(probs));
                }
                Metric::ClassFractions => {
                    let fractions = features::class_fractions(probs);
                    for (k, f) in fractions.iter().enumerate() {
                        rows.push(stage, format!("class_fraction_{k}"), *f);
                    }
                    let (lo, hi) = fractions
                        .iter()
                        .fold((f64::INFINITY, 0f64), |(lo, hi), f| (lo.min(*f), hi.max(*f)));
                    rows.push(stage, "class_fraction_min", lo);
                    rows.push(stage, "class_fraction_max", hi);
                }
                _ => {}
            }
        }
        Ok(())
    }
}

impl FeatureSpace {
    /// The classifier's mean top-class probability over a sample stage's snapshots,
    /// against the fraction of the reverse process done (the last snapshot is 1).
    /// Snapshots are clipped to the data range first, as a picture of them shows them:
    /// far outside it (a VE prior at sigma 50) the classifier's confidence means nothing.
    pub fn confidence_along(
        &self,
        ctx: &StageContext,
        input: &InputEntry,
    ) -> StageResult<Vec<(f64, f64)>> {
        let trajectory = Trajectory::load(input)?;
        let keep = trajectory.particles.max(1);
        let last = trajectory.steps.last().copied().unwrap_or(1.0).max(1.0) as f64;
        let (lo, hi) = RANGE;
        let mut curve = Vec::with_capacity(trajectory.count);
        for (i, step) in trajectory.steps.iter().enumerate().take(trajectory.count) {
            let frame = trajectory.frame(i);
            let clipped: Vec<f32> = frame.iter().map(|v| v.clamp(lo, hi)).collect();
            let (_, probs) = embed(&self.net, &clipped, trajectory.dim, ctx)?;
            let classes = (probs.len() / keep).max(1);
            let top = features::mean_top_probability(Points::new(&probs, classes));
            curve.push((*step as f64 / last, top));
        }
        Ok(curve)
    }
}

/// Where a confidence curve first exceeds 1/2: the `recognizable_at` metric.
pub fn recognizable_at(curve: &[(f64, f64)]) -> f64 {
    curve
        .iter()
        .find(|(_, confidence)| *confidence > 0.5)
        .map_or(f64::NAN, |(fraction, _)| *fraction)
}

/// `recognizability.png`: each sample stage's confidence curve.
pub fn draw_recognizability(
    ctx: &StageContext,
    curves: &[(String, Vec<(f64, f64)>)],
) -> StageResult<()> {
    let series: Vec<(&str, Vec<(f64, f64)>)> = curves
        .iter()
        .map(|(stage, curve)| (stage.as_str(), curve.clone()))
        .collect();
    crate::plot::lines(
        &ctx.path("recognizability.png"),
        &format!("{}: when the samples become recognizable", ctx.id),
        "fraction of the reverse process done",
        "mean top-class probability",
        &series,
    )
}

/// (features, class probabilities) of flattened images, as flat rows.
fn embed(
    net: &Classifier,
    images: &[f32],
    dim: usize,
    ctx: &StageContext,
) -> StageResult<(Vec<f32>, Vec<f32>)> {
    let x = Tensor::from_slice(images, (images.len() / dim, dim), ctx.device)?;
    let (f, p) = net.embed(&x, 256)?;
    Ok((
        f.flatten_all()?.to_vec1::<f32>()?,
        p.flatten_all()?.to_vec1::<f32>()?,
    ))
}

/// `grid_<stage>.png`: the first 64 samples, 8 by 8.
pub fn draw_grid(
    ctx: &StageContext,
    stage: &str,
    samples: &[f32],
    shape: ImageShape,
) -> StageResult<()> {
    let tiles: Vec<&[f32]> = samples.chunks(shape.dim()).take(64).collect();
    write_grid(&ctx.path(&format!("grid_{stage}.png")), &tiles, shape, 8)
}

/// `timeline_<stage>.png`: each kept particle's path from the prior to an image, one
/// row per particle (at most 4), one column per snapshot.
pub fn draw_timeline(ctx: &StageContext, input: &InputEntry, shape: ImageShape) -> StageResult<()> {
    let Trajectory {
        frames,
        count,
        particles: keep,
        dim,
        ..
    } = Trajectory::load(input)?;
    let rows = keep.min(4);
    let mut tiles: Vec<&[f32]> = Vec::with_capacity(rows * count);
    for particle in 0..rows {
        for frame in 0..count {
            let at = (frame * keep + particle) * dim;
            tiles.push(&frames[at..at + dim]);
        }
    }
    write_grid(
        &ctx.path(&format!("timeline_{}.png", input.id)),
        &tiles,
        shape,
        count,
    )
}

/// `forward_<model>.png`: held-out images noised by the model's process at ten evenly
/// spaced times from 0 to 1, one row per image.
pub fn draw_forward_noising(
    ctx: &StageContext,
    model: &str,
    process: &Process,
    reference: &Reference,
    shape: ImageShape,
    seed: u64,
) -> StageResult<()> {
    const COLUMNS: usize = 10;
    let dim = shape.dim();
    let images = (reference.test.len() / dim).min(4);
    let mut rows = Vec::with_capacity(images * COLUMNS);
    let mut rng = stream(seed, "evaluate/forward");
    for i in 0..images {
        let x0 = &reference.test[i * dim..(i + 1) * dim];
        let eps = normals(&mut rng, dim);
        for c in 0..COLUMNS {
            rows.push(if c == 0 {
                x0.to_vec()
            } else {
                let t = (c as f64 / (COLUMNS - 1) as f64).max(process.t_min());
                noise_batch(process, x0, &[t], &eps, dim)
            });
        }
    }
    let tiles: Vec<&[f32]> = rows.iter().map(|r| r.as_slice()).collect();
    write_grid(
        &ctx.path(&format!("forward_{model}.png")),
        &tiles,
        shape,
        COLUMNS,
    )
}

/// Columns of the interpolation figures: fractions 0, 1/7, ..., 1.
const INTERPOLATION_COLUMNS: usize = 8;

/// `interpolation_<model>.png`: four rows, each a spherical interpolation between two
/// prior draws decoded by the deterministic `interpolation_sampler`.
pub fn draw_interpolation(
    params: &EvaluateParams,
    ctx: &StageContext,
    model: &str,
    score: &dyn ScoreFn,
    process: &Process,
    shape: ImageShape,
) -> StageResult<()> {
    params
        .interpolation_sampler
        .check(process)
        .map_err(|e| StageError::Failed(format!("interpolation_sampler: {e}")))?;
    let mut rng = stream(params.seed, "evaluate/interpolation");
    let images = interpolate::spherical(
        &params.interpolation_sampler,
        score,
        process,
        4,
        INTERPOLATION_COLUMNS,
        shape.dim(),
        ctx.device,
        &mut rng,
    )?;
    let tiles: Vec<&[f32]> = images.chunks(shape.dim()).collect();
    write_grid(
        &ctx.path(&format!("interpolation_{model}.png")),
        &tiles,
        shape,
        INTERPOLATION_COLUMNS,
    )
}

/// `mix_<model>.png`: the first two held-out images at the ends of each row, and
/// between them their mix after noising to each of `mix_times` (snapped to the
/// process's levels), decoded by ancestral sampling.
pub fn draw_mix(
    params: &EvaluateParams,
    ctx: &StageContext,
    model: &str,
    score: &dyn ScoreFn,
    process: &Process,
    reference: &Reference,
    shape: ImageShape,
) -> StageResult<()> {
    let dim = shape.dim();
    if reference.test.len() < 2 * dim {
        return Err(StageError::Failed(
            "plot `mix` needs at least two held-out images".into(),
        ));
    }
    let (x, y) = (&reference.test[..dim], &reference.test[dim..2 * dim]);
    let mut rows: Vec<Vec<f32>> = Vec::with_capacity(params.mix_times.len());
    for (i, &t) in params.mix_times.iter().enumerate() {
        let t = if t > 0.0 { snap(process, t) } else { 0.0 };
        let mut rng = stream(params.seed, &format!("evaluate/mix/{i}"));
        let mut row = x.to_vec();
        row.extend(interpolate::noised_mix(
            score,
            process,
            x,
            y,
            t,
            INTERPOLATION_COLUMNS,
            params.mix_steps,
            ctx.device,
            &mut rng,
        )?);
        row.extend_from_slice(y);
        rows.push(row);
    }
    let tiles: Vec<&[f32]> = rows.iter().flat_map(|r| r.chunks(dim)).collect();
    write_grid(
        &ctx.path(&format!("mix_{model}.png")),
        &tiles,
        shape,
        INTERPOLATION_COLUMNS + 2,
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn recognizable_at_is_where_the_confidence_first_passes_one_half() {
        let curve = [(0.0, 0.9), (0.5, 0.2), (0.7, 0.6), (1.0, 0.95)];
        assert_eq!(super::recognizable_at(&curve[1..]), 0.7);
        assert_eq!(super::recognizable_at(&curve), 0.0);
        assert!(super::recognizable_at(&[(0.0, 0.1), (1.0, 0.5)]).is_nan());
    }
}
