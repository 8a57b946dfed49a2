//! `train`: fits a score network with the objective its schedule calls for, keeping
//! an exponential moving average of the weights.

use std::time::Instant;

use candle_core::{Device, Tensor, Var};
use polars::prelude::*;
use rand::RngExt;
use serde::{Deserialize, Serialize};

use super::checkpoint::{TrainState, restore, save};
use super::cost::{CALL_OVERHEAD_FLOPS, Cost, Extent, count, network_size};
use super::dataset::{Dataset, DatasetMeta};
use super::model::{Model, ModelParams};
use super::schedule::Schedule;
use super::context::{InputEntry, StageContext};
use super::kind::{Kind, Neighbours, Role};
use crate::artifacts::{load_f32, load_tensors, read_json, save_tensors_with, write_csv, write_json};
use crate::data::images::ImageShape;
use crate::data::toy::Mixture;
use crate::diffusion::loss::Objective;
use crate::diffusion::process::{Process, noise_batch};
use crate::diffusion::schedule::ScheduleParams;
use crate::diffusion::score::{MixtureScore, NetworkScore, ScoreFn};
use crate::error::{StageError, StageResult};
use crate::nn::kernels::adamw::{AdamW, AdamWConfig};
use crate::nn::models::network::{DataShape, Network, NetworkSize};
use crate::plot;
use crate::rng::{normals, stream};

/// The `train` kind.
pub struct Train;

impl Kind for Train {
    const NAME: &'static str = "train";
    /// Bumped whenever the bytes this stage writes change (4: 3x3 convolutions by
    /// Winograd's F(2x2, 3x3), whose rounding differs from the direct product's; 5:
    /// weights carry model.json in their metadata and the Fourier frequencies; 6: the
    /// loss figure also as SVG; 7: F(4x4, 3x3) Winograd convolutions on images of 12
    /// pixels and more; 8: the MLP's sigmoids computed by the product's epilogue, with
    /// its rounding).
    const VERSION: u32 = 8;
    const ROLES: &'static [Role] = &[
        Role::one("data", super::dataset::Dataset::NAME),
        Role::one("schedule", Schedule::NAME),
        Role::one("model", Model::NAME),
    ];
    const WRITES: &'static str = "`weights.safetensors`, `ema.safetensors`, `model.json`, `loss.csv`, `loss.png`";
    const FIGURES: &'static [(&'static str, &'static str)] = &[("loss.png", "Training losses")];
    type Params = TrainParams;

    fn resolved(params: &TrainParams, _: &Neighbours) -> Result<serde_json::Value, String> {
        Ok(serde_json::to_value(params.canonical())
            .expect("stage parameters always serialize to JSON"))
    }

    fn validate(params: &TrainParams, stages: &Neighbours) -> Result<(), String> {
        params.validate(
            stages.input::<Schedule>("schedule"),
            stages.input::<Model>("model"),
        )
    }

    /// The training set, the weights with their gradients, Adam's moments and the
    /// EMA, and one batch's activations through the forward and backward passes.
    fn cost(params: &TrainParams, stages: &Neighbours) -> Cost {
        let Some((data, net)) = sized(stages, stages.needs) else {
            return Cost::default();
        };
        let batch = params.batch as f64;
        let steps = params.total_steps(data.train as usize) as f64;
        let values = data.train * data.dim() * 2.0
            + net.parameters * 6.0
            + batch * (net.activations * 3.0 + data.dim() * 4.0);
        Cost::holding(
            values,
            1.0,
            format!(
                "the {} training rows, {} parameters with their optimiser state and batches of {}",
                count(data.train),
                count(net.parameters),
                count(batch)
            ),
        )
        .working(
            steps * (batch * 3.0 * net.flops.max(10.0 * data.dim()) + CALL_OVERHEAD_FLOPS),
            format!("{} steps of {} examples", count(steps), count(batch)),
        )
    }

    fn run(params: &TrainParams, ctx: &StageContext) -> StageResult<()> {
        run(params, ctx)
    }
}

/// The data a train stage (whose inputs are `needs`) fits and the size of its
/// network, for the cost of the stages that read it.
pub fn sized(stages: &Neighbours, needs: &super::kind::Needs) -> Option<(Extent, NetworkSize)> {
    let data = stages.params::<Dataset>(needs.ids("data").first()?)?.extent();
    let model = stages.params::<Model>(needs.ids("model").first()?)?;
    let net = network_size(model.network().as_ref(), &data);
    Some((data, net))
}

/// Optimisation settings of a train stage.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TrainParams {
    /// `eps` (DDPM's L_simple) or `dsm` (denoising score matching); both work with
    /// every schedule. Required for networks; an exact model fits nothing.
    #[serde(default)]
    pub objective: Option<Objective>,
    /// Weighting of `dsm` across noise levels: `sigma2` (lambda = sigma^2, NCSN and
    /// score_sde) or `likelihood` (lambda = g^2, Song et al. 2021b).
    #[serde(default)]
    pub weighting: Weighting,
    /// `objective: edm`'s noise levels, ln sigma ~ N(p_mean, p_std^2) (Karras et al.:
    /// -1.2 and 1.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p_mean: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p_std: Option<f64>,
    /// Optimiser steps (4,000 unless `epochs` is set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<usize>,
    /// Passes over the training set instead of `steps`: epochs x n / batch steps, the
    /// batches drawn at random.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epochs: Option<f64>,
    #[serde(default = "batch")]
    pub batch: usize,
    #[serde(default = "lr")]
    pub lr: f64,
    #[serde(default)]
    pub optimizer: OptimizerKind,
    /// Decoupled weight decay; only `adamw` has it.
    #[serde(default)]
    pub weight_decay: f64,
    /// Steps of linear learning-rate warm-up from 0 (DDPM: 5,000).
    #[serde(default)]
    pub warmup: usize,
    /// Largest global gradient norm; larger gradients are scaled down (DDPM: 1).
    #[serde(default)]
    pub grad_clip: Option<f64>,
    /// Steps between checkpoints, from which an interrupted run resumes (0: none).
    #[serde(default = "checkpoint_every")]
    pub checkpoint_every: usize,
    /// EMA of the weights, as in DDPM (0.9999 there, for much longer runs).
    #[serde(default = "ema_decay")]
    pub ema_decay: f64,
    #[serde(default)]
    pub seed: u64,
}

const DEFAULT_STEPS: usize = 4000;

fn checkpoint_every() -> usize {
    500
}
fn batch() -> usize {
    512
}
fn lr() -> f64 {
    1e-3
}
fn ema_decay() -> f64 {
    0.999
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Weighting {
    #[default]
    Sigma2,
    Likelihood,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OptimizerKind {
    #[default]
    Adam,
    Adamw,
}

impl TrainParams {
    /// Defaults filled in, for the key.
    pub fn canonical(&self) -> TrainParams {
        let mut out = self.clone();
        if out.epochs.is_none() {
            out.steps.get_or_insert(DEFAULT_STEPS);
        }
        out
    }

    /// Optimiser steps for a training set of `n` rows.
    pub fn total_steps(&self, n: usize) -> usize {
        match (self.steps, self.epochs) {
            (Some(steps), _) => steps,
            (None, Some(epochs)) => {
                ((epochs * n as f64 / self.batch as f64).ceil() as usize).max(1)
            }
            (None, None) => DEFAULT_STEPS,
        }
    }

    pub fn validate(
        &self,
        schedule: Option<&ScheduleParams>,
        model: Option<&ModelParams>,
    ) -> Result<(), String> {
        if self.steps == Some(0) || self.batch == 0 {
            return Err("`steps` and `batch` must be at least 1".into());
        }
        if self.steps.is_some() && self.epochs.is_some() {
            return Err("set `steps` or `epochs`, not both".into());
        }
        if self.epochs.is_some_and(|e| !(e > 0.0 && e.is_finite())) {
            return Err("`epochs` must be a positive number".into());
        }
        if self.grad_clip.is_some_and(|c| !(c > 0.0)) {
            return Err("`grad_clip` must be positive".into());
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return Err(format!("`lr` must be a positive number, got {}", self.lr));
        }
        if !(0.0..1.0).contains(&self.ema_decay) {
            return Err(format!(
                "`ema_decay` must be in [0, 1), got {}",
                self.ema_decay
            ));
        }
        if self.optimizer == OptimizerKind::Adam && self.weight_decay != 0.0 {
            return Err(
                "`adam` has no weight decay; use `optimizer: adamw` to set `weight_decay`".into(),
            );
        }
        let exact = matches!(model, Some(ModelParams::Exact {}));
        if self.objective.is_none() && !exact {
            return Err("`objective` is required: `eps` (DDPM's L_simple) or `dsm` (denoising score matching)".into());
        }
        if matches!(self.objective, Some(Objective::Eps | Objective::Edm))
            && self.weighting != Weighting::Sigma2
        {
            return Err(
                "`weighting` applies to `objective: dsm`; `eps` is DDPM's unweighted L_simple and `edm` has its own"
                    .into(),
            );
        }
        if self.objective != Some(Objective::Edm) && (self.p_mean.is_some() || self.p_std.is_some()) {
            return Err("`p_mean` and `p_std` are the noise levels of `objective: edm`".into());
        }
        if self.p_std.is_some_and(|s| !(s > 0.0 && s.is_finite()))
            || self.p_mean.is_some_and(|m| !m.is_finite())
        {
            return Err("`p_std` must be positive and `p_mean` a number".into());
        }
        if self.objective == Some(Objective::Edm)
            && let Some(params) = schedule
            && params.build().sigma_data().is_none()
        {
            return Err(
                "`objective: edm` preconditions with the data's std: give the train stage a schedule of `type: edm` (with `sigma_data`)"
                    .into(),
            );
        }
        if let Some(params) = schedule
            && params.build().levels() == Some(1)
        {
            return Err("training needs a schedule with more than one noise level".into());
        }
        Ok(())
    }
}

/// `model.json`: everything a sampler needs to rebuild the trained model.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainedModel {
    pub model: ModelParams,
    pub schedule: ScheduleParams,
    pub objective: Objective,
    pub dim: usize,
    /// The image shape, when rows are images.
    #[serde(default)]
    pub image: Option<ImageShape>,
    /// The dataset's mixture, for `arch: exact`.
    #[serde(default)]
    pub mixture: Option<Mixture>,
}

/// Which weights a trained network is read with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WeightsKind {
    /// The exponential moving average, as DDPM samples with.
    #[default]
    Ema,
    Raw,
}

impl TrainedModel {
    /// Reads a train stage's `model.json` (the model, process and objective it fitted).
    pub fn load(train: &InputEntry) -> StageResult<TrainedModel> {
        read_json(&train.dir.join("model.json"))
    }

    pub fn shape(&self) -> DataShape {
        DataShape {
            dim: self.dim,
            image: self.image,
        }
    }

    /// The fitted score function under `process` (the model's own, built once by the
    /// caller so the score can borrow it).
    pub fn score<'p>(
        &self,
        train: &InputEntry,
        weights: WeightsKind,
        process: &'p Process,
        device: &Device,
    ) -> StageResult<Box<dyn ScoreFn + 'p>> {
        match self.model.network() {
            Some(config) => {
                let file = match weights {
                    WeightsKind::Ema => "ema.safetensors",
                    WeightsKind::Raw => "weights.safetensors",
                };
                let tensors = load_tensors(&train.dir.join(file), device)?;
                Ok(Box::new(NetworkScore {
                    net: Network::load(&config, self.shape(), &process.noise_std(), tensors, device)?,
                    prediction: self.objective.prediction(),
                    process,
                }))
            }
            None => {
                let mixture = self.mixture.clone().ok_or_else(|| StageError::BadInput {
                    path: train.dir.join("model.json"),
                    message: "an exact model without its mixture".into(),
                })?;
                Ok(Box::new(MixtureScore { mixture, process }))
            }
        }
    }
}

fn run(params: &TrainParams, ctx: &StageContext) -> StageResult<()> {
    let data = ctx.input("data")?;
    let meta: DatasetMeta = read_json(&data.dir.join("meta.json"))?;
    let (train, _) = load_f32(&data.dir.join("data.safetensors"), "train")?;
    let schedule: ScheduleParams = ctx.input("schedule")?.params()?;
    let model: ModelParams = read_json(&ctx.input("model")?.dir.join("config.json"))?;
    let dim = meta.dim;
    let mut trained = TrainedModel {
        model: model.clone(),
        schedule: schedule.clone(),
        objective: params.objective.unwrap_or(Objective::Dsm),
        dim,
        image: meta.image,
        mixture: None,
    };
    let Some(config) = model.network() else {
        // Nothing to fit: record what the exact score needs.
        trained.mixture = Some(meta.mixture.clone().ok_or_else(|| {
            StageError::Failed(
                "`arch: exact` needs a dataset with a known density (gmm or two_gaussians)".into(),
            )
        })?);
        return write_json(&ctx.path("model.json"), &trained);
    };
    let objective = params
        .objective
        .ok_or_else(|| StageError::Failed("a network needs an `objective`".into()))?;
    let process = schedule.build();
    let (p_mean, p_std) = (
        params.p_mean.unwrap_or(crate::diffusion::loss::EDM_P_MEAN),
        params.p_std.unwrap_or(crate::diffusion::loss::EDM_P_STD),
    );
    let sigma_range = (process.std(process.t_min()), process.std(1.0));
    let n = train.len() / dim;
    let total = params.total_steps(n);

    let (net, named) = Network::fresh(
        &config,
        trained.shape(),
        &process.noise_std(),
        &mut stream(params.seed, "train/init"),
        ctx.device,
    )?;
    let (names, vars): (Vec<String>, Vec<Var>) = named.into_iter().unzip();
    let mut ema: Vec<Tensor> = vars
        .iter()
        .map(|v| v.as_tensor().copy())
        .collect::<candle_core::Result<_>>()?;
    let weight_decay = match params.optimizer {
        OptimizerKind::Adam => 0.0,
        OptimizerKind::Adamw => params.weight_decay,
    };
    let mut opt = AdamW::new(vars.clone(), AdamWConfig::new(params.lr, weight_decay))?;
    let mut rng = stream(params.seed, "train/batches");
    let mut losses = Vec::with_capacity(total);
    let start = restore(
        &ctx.checkpoints,
        &mut TrainState {
            names: &names,
            opt: &mut opt,
            ema: &mut ema,
            losses: &mut losses,
            rng: &mut rng,
        },
        ctx.device,
    )?;
    if start > 0 {
        ctx.progress.warn(&format!(
            "resuming from the checkpoint at step {start} of {total}"
        ));
    }

    let batch = params.batch;
    let mut x0 = vec![0f32; batch * dim];
    let started = Instant::now();
    for step in start + 1..=total {
        for row in 0..batch {
            let i = rng.random_range(0..n);
            x0[row * dim..(row + 1) * dim].copy_from_slice(&train[i * dim..(i + 1) * dim]);
        }
        // Discrete processes train at their levels; SDEs at t ~ U(t_min, 1); EDM at
        // ln sigma ~ N(p_mean, p_std^2), within the process's range of sigma.
        let t: Vec<f64> = (0..batch)
            .map(|_| match (objective, process.levels()) {
                (Objective::Edm, _) => {
                    let z: f64 = rng.sample(rand_distr::StandardNormal);
                    let sigma = (p_mean + p_std * z).exp().clamp(sigma_range.0, sigma_range.1);
                    process.time_of_log_snr(-sigma.ln())
                }
                (_, Some(levels)) => process.level_time(rng.random_range(1..=levels)),
                (_, None) => process.t_min() + (1.0 - process.t_min()) * rng.random::<f64>(),
            })
            .collect();
        let eps = normals(&mut rng, batch * dim);
        let xt = noise_batch(&process, &x0, &t, &eps, dim);
        let xt = Tensor::from_vec(xt, (batch, dim), ctx.device)?;
        let cond = Tensor::from_vec(
            t.iter().map(|&t| t as f32).collect::<Vec<f32>>(),
            batch,
            ctx.device,
        )?;
        let eps = Tensor::from_vec(eps, (batch, dim), ctx.device)?;
        let stds: Vec<f64> = t.iter().map(|&t| process.std(t)).collect();
        let clean = Tensor::from_vec(x0.clone(), (batch, dim), ctx.device)?;
        let (input, target) =
            objective.regression(&xt, &clean, &eps, &stds, process.sigma_data())?;
        let weights = match params.weighting {
            Weighting::Sigma2 => None,
            Weighting::Likelihood => {
                let w: Vec<f32> = t
                    .iter()
                    .map(|&t| (process.diffusion(t) / process.std(t)).powi(2) as f32)
                    .collect();
                Some(Tensor::from_vec(w, batch, ctx.device)?)
            }
        };
        let out = net.forward(&input, &cond)?;
        let loss = objective.loss(&out, &target, weights.as_ref())?;
        let value = loss.to_scalar::<f32>()?;
        if !value.is_finite() {
            return Err(StageError::Failed(format!(
                "loss became {value} at step {step} of {total}; lower the learning rate (lr = {}) or set `grad_clip`",
                params.lr
            )));
        }
        if let Some(why) = exploded(value, &losses) {
            return Err(StageError::Failed(format!(
                "loss {value:.3e} at step {step} of {total} {why}: nothing useful can be learned from here; lower the learning rate (lr = {}), set `grad_clip`, or check the schedule (a sigma_max far above the data's scale makes the loss this large)",
                params.lr
            )));
        }
        let grads = loss.backward()?;
        let scale = match params.grad_clip {
            Some(clip) => (clip / (opt.grad_norm(&grads)? + 1e-6)).min(1.0),
            None => 1.0,
        };
        let lr = params.lr * (step as f64 / params.warmup.max(1) as f64).min(1.0);
        opt.step(&grads, lr, scale)?;
        for (avg, var) in ema.iter_mut().zip(&vars) {
            // Detached, or each average would hold the previous one through the graph.
            *avg = ((&*avg * params.ema_decay)? + (var.as_tensor() * (1.0 - params.ema_decay))?)?
                .detach();
        }
        losses.push(value);
        // Asked to stop: a checkpoint at this very step, so no work is lost.
        let stop = crate::interrupt::requested() && step < total;
        if stop || (params.checkpoint_every > 0 && step % params.checkpoint_every == 0 && step < total) {
            let state = TrainState {
                names: &names,
                opt: &mut opt,
                ema: &mut ema,
                losses: &mut losses,
                rng: &mut rng,
            };
            save(&ctx.checkpoints, step, &state)?;
            if stop {
                return Err(StageError::Failed(format!(
                    "{} at step {step} of {total}: checkpoint saved, the next run resumes from it",
                    crate::interrupt::STOPPED
                )));
            }
        }
        let rate = ((step - start) * batch) as f64 / started.elapsed().as_secs_f64().max(1e-9);
        let unit = if meta.is_image() { "img/s" } else { "pts/s" };
        ctx.progress
            .update(step, total, &format!("loss {value:.4}, {rate:.0} {unit}"));
    }

    trained.objective = objective;
    // Each weights file stands alone: the fixed tensors and, in its header, model.json.
    let fixed: Vec<(&str, Tensor)> = config
        .fixed_tensors()
        .into_iter()
        .map(|(name, values)| {
            let n = values.len();
            Ok((name, Tensor::from_vec(values, n, &candle_core::Device::Cpu)?))
        })
        .collect::<candle_core::Result<_>>()?;
    let metadata = std::collections::BTreeMap::from([
        ("format".to_string(), "pt".to_string()),
        (
            "runner.model".to_string(),
            serde_json::to_string(&trained).expect("model.json serializes"),
        ),
        ("runner.version".to_string(), env!("CARGO_PKG_VERSION").to_string()),
    ]);
    let raw: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    for (file, tensors) in [("weights.safetensors", &raw), ("ema.safetensors", &ema)] {
        let mut all: Vec<(&str, Tensor)> = names
            .iter()
            .zip(tensors.iter())
            .map(|(n, t)| (n.as_str(), t.clone()))
            .collect();
        all.extend(fixed.iter().cloned());
        save_tensors_with(&ctx.path(file), &all, &metadata)?;
    }
    write_json(&ctx.path("model.json"), &trained)?;

    let mut df = DataFrame::new_infer_height(vec![
        Column::new(
            "step".into(),
            (1..=losses.len() as u64).collect::<Vec<u64>>(),
        ),
        Column::new("loss".into(), losses.clone()),
    ])
    .map_err(|e| StageError::Failed(e.to_string()))?;
    write_csv(&ctx.path("loss.csv"), &mut df)?;
    plot::lines(
        &ctx.path("loss.png"),
        &format!("training loss `{}`", ctx.id),
        "step",
        "loss (moving average of 50)",
        &[("loss", moving_average(&losses, 50))],
    )
}

/// Both objectives are means over coordinates, O(1) per coordinate at the start (eps)
/// or O(dimension) at most (sigma^2-weighted score matching): a loss beyond this has
/// blown up, whatever the data.
const LOSS_LIMIT: f32 = 1e10;

/// Why a finite loss counts as exploded: above [`LOSS_LIMIT`], or, after the first
/// ten steps, ten thousand times their mean (the first ten are in `before`).
fn exploded(value: f32, before: &[f32]) -> Option<String> {
    if value > LOSS_LIMIT {
        return Some(format!("is above {LOSS_LIMIT:.0e}"));
    }
    if before.len() >= 10 {
        let start = before[..10].iter().map(|v| *v as f64).sum::<f64>() / 10.0;
        if value as f64 > 1e4 * start {
            return Some(format!("is 10,000 times the first ten steps' mean ({start:.3e})"));
        }
    }
    None
}

/// (step, mean of the last `window` losses), for a readable loss curve.
fn moving_average(losses: &[f32], window: usize) -> Vec<(f64, f64)> {
    let mut sum = 0.0f64;
    losses
        .iter()
        .enumerate()
        .map(|(i, &l)| {
            sum += l as f64;
            if i >= window {
                sum -= losses[i - window] as f64;
            }
            ((i + 1) as f64, sum / (i + 1).min(window) as f64)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loss_explodes_above_the_limit_or_far_above_its_start() {
        assert!(exploded(3.5e32, &[]).is_some_and(|w| w.contains("above 1e10")));
        assert!(exploded(900.0, &[]).is_none(), "a large first loss (images, dsm) is fine");
        let start = [0.5f32; 10];
        assert!(exploded(4000.0, &start).is_none());
        assert!(exploded(6000.0, &start).is_some_and(|w| w.contains("10,000 times")));
        // Before ten steps there is no start to compare with.
        assert!(exploded(6000.0, &start[..9]).is_none());
    }

    #[test]
    fn moving_average_is_a_trailing_mean() {
        let m = moving_average(&[1.0, 3.0, 5.0, 7.0], 2);
        assert_eq!(m, vec![(1.0, 1.0), (2.0, 2.0), (3.0, 4.0), (4.0, 6.0)]);
    }
}
