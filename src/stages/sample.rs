//! `sample`: draws samples from a trained model with a chosen sampler, recording the
//! number of score evaluations (NFE), wall time and a trajectory of snapshots.

use std::time::Instant;

use candle_core::Tensor;
use serde::de::MapAccess;
use serde::{Deserialize, Deserializer, Serialize};

use super::cost::{CALL_OVERHEAD_FLOPS, Cost, count};
use super::dataset::{Dataset, Source};
use super::schedule::Schedule;
use super::train::{Train, TrainedModel, WeightsKind};
use super::context::{InputEntry, StageContext};
use super::kind::{Kind, Neighbours, Role};
use crate::artifacts::{load_tensors, save_tensors, tensor_f32, write_json};
use crate::diffusion::samplers::{SampleRequest, SamplerParams, run as run_sampler};
use crate::error::{StageError, StageResult};
use crate::rng::stream;
use crate::tagged::{Shared, take_once};

/// The `sample` kind.
pub struct Sample;

impl Kind for Sample {
    const NAME: &'static str = "sample";
    /// Bumped whenever the bytes this stage writes change (3: Winograd convolutions,
    /// and the MLP's inference pass, which rounds differently from the training ops;
    /// 4: F(4x4, 3x3) Winograd convolutions on images of 12 pixels and more).
    const VERSION: u32 = 4;
    const ROLES: &'static [Role] = &[Role::one("train", Train::NAME)];
    const WRITES: &'static str =
        "`samples.safetensors`, `trajectory.safetensors`, `sampling.json` (NFE, seconds)";
    type Params = SampleParams;

    /// Clipping is decided here, from the data of the model sampled from.
    fn resolved(params: &SampleParams, stages: &Neighbours) -> Result<serde_json::Value, String> {
        let images = of_the_model::<Dataset>(stages, "data")
            .is_some_and(|data| matches!(data.source, Source::Images(_)));
        let canonical = SampleParams {
            clip_denoised: params.clips(images).then_some(true),
            ..params.canonical()
        };
        Ok(serde_json::to_value(canonical).expect("stage parameters always serialize to JSON"))
    }

    /// The sampler must fit the process its model was trained on.
    fn validate(params: &SampleParams, stages: &Neighbours) -> Result<(), String> {
        params.validate(of_the_model::<Schedule>(stages, "schedule"))
    }

    /// The particles with the sampler's working copies, the weights, one chunk of the
    /// network's activations and the snapshots (the time grid is bounded by the
    /// sampler's checks); `n` times the sampler's score evaluations through the network.
    fn cost(params: &SampleParams, stages: &Neighbours) -> Cost {
        let Some(train) = stages.needs.ids("train").first() else {
            return Cost::default();
        };
        let Some((data, net)) = stages
            .needs_of(train)
            .and_then(|needs| super::train::sized(stages, needs))
        else {
            return Cost::default();
        };
        let evaluations = of_the_model::<Schedule>(stages, "schedule")
            .map_or(1000.0, |s| params.sampler.evaluations(&s.build()));
        let n = params.n as f64;
        let snapshots = params.snapshots as f64 * (params.snapshot_particles as f64).min(n);
        let values = n * data.dim() * 6.0
            + net.parameters * 2.0
            + n.min(256.0) * net.activations
            + snapshots * data.dim();
        Cost::holding(
            values,
            1.0,
            format!("{} samples of {} values", count(n), data.dim()),
        )
        .working(
            evaluations * (n * net.flops.max(10.0 * data.dim()) + CALL_OVERHEAD_FLOPS),
            format!(
                "{} samples x {} score evaluations",
                count(n),
                count(evaluations)
            ),
        )
    }

    fn run(params: &SampleParams, ctx: &StageContext) -> StageResult<()> {
        run(params, ctx)
    }
}

/// Parameters of a sample stage: the sampler (`sampler` and its settings) plus how
/// many samples and which weights.
// The `default`s are what [`Common`] fills in, stated for the schema.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
#[schemars(extend("unevaluatedProperties" = false))]
pub struct SampleParams {
    #[serde(flatten)]
    pub sampler: SamplerParams,
    #[serde(default = "n")]
    pub n: usize,
    #[serde(default)]
    pub seed: u64,
    /// Number of evenly spaced snapshots kept in `trajectory.safetensors`.
    #[serde(default = "snapshots")]
    pub snapshots: usize,
    /// Particles kept per snapshot (for images at most 8: a timeline shows a few).
    #[serde(default = "snapshot_particles")]
    pub snapshot_particles: usize,
    /// `ema` (the averaged weights, as DDPM samples with) or `raw`.
    #[serde(default)]
    pub weights: WeightsKind,
    /// Clip each predicted x0 to the data range before it is used (Ho et al.'s
    /// sampler; the ancestral, DDIM and predictor-corrector steps and every final
    /// Tweedie step). Default: on for image data, whose range is [-1, 1], off for
    /// points. In the key only when on, so a key without it means no clipping.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clip_denoised: Option<bool>,
}

/// The keys every sampler takes beside its own settings.
#[derive(Default)]
struct Common {
    n: Option<usize>,
    seed: Option<u64>,
    snapshots: Option<usize>,
    snapshot_particles: Option<usize>,
    weights: Option<WeightsKind>,
    clip_denoised: Option<bool>,
}

impl<'de> Shared<'de> for Common {
    const FIELDS: &'static [&'static str] = &[
        "n",
        "seed",
        "snapshots",
        "snapshot_particles",
        "weights",
        "clip_denoised",
    ];
    fn take<A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<(), A::Error> {
        match key {
            "n" => take_once(&mut self.n, "n", map),
            "seed" => take_once(&mut self.seed, "seed", map),
            "snapshots" => take_once(&mut self.snapshots, "snapshots", map),
            "snapshot_particles" => {
                take_once(&mut self.snapshot_particles, "snapshot_particles", map)
            }
            "weights" => take_once(&mut self.weights, "weights", map),
            _ => take_once(&mut self.clip_denoised, "clip_denoised", map),
        }
    }
}

impl<'de> Deserialize<'de> for SampleParams {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<SampleParams, D::Error> {
        let (sampler, common) = crate::tagged::deserialize::<D, SamplerParams, Common>(d)?;
        Ok(SampleParams {
            sampler,
            n: common.n.unwrap_or_else(n),
            seed: common.seed.unwrap_or_default(),
            snapshots: common.snapshots.unwrap_or_else(snapshots),
            snapshot_particles: common.snapshot_particles.unwrap_or_else(snapshot_particles),
            weights: common.weights.unwrap_or_default(),
            clip_denoised: common.clip_denoised,
        })
    }
}

fn n() -> usize {
    10_000
}
fn snapshots() -> usize {
    10
}
fn snapshot_particles() -> usize {
    1000
}

/// `sampling.json`: cost of the run, for the report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SamplingRecord {
    pub sampler: String,
    pub n: usize,
    pub nfe: usize,
    pub seconds: f64,
}

/// The parameters of an input (`role`) of the train stage sampled from.
fn of_the_model<'a, K: Kind>(stages: &Neighbours<'a>, role: &str) -> Option<&'a K::Params> {
    let train = stages.needs.ids("train").first()?;
    let id = stages.needs_of(train)?.ids(role).first()?;
    stages.params::<K>(id)
}

/// `trajectory.safetensors`, read back: the particles kept at each snapshot.
pub struct Trajectory {
    /// [count, particles, dim], row-major.
    pub frames: Vec<f32>,
    pub count: usize,
    pub particles: usize,
    pub dim: usize,
    /// The sampler's step at each snapshot (0 is the prior).
    pub steps: Vec<f32>,
}

impl Trajectory {
    pub fn load(entry: &InputEntry) -> StageResult<Trajectory> {
        let path = entry.dir.join("trajectory.safetensors");
        let tensors = load_tensors(&path, &candle_core::Device::Cpu)?;
        let (frames, shape) = tensor_f32(&tensors, &path, "trajectory")?;
        let [count, particles, dim] = shape[..] else {
            return Err(StageError::BadInput {
                path,
                message: format!(
                    "trajectory has shape {shape:?}, expected [snapshots, particles, dim]"
                ),
            });
        };
        let (steps, _) = tensor_f32(&tensors, &path, "steps")?;
        Ok(Trajectory {
            frames,
            count,
            particles,
            dim,
            steps,
        })
    }

    /// The particles of snapshot `i`, [particles, dim].
    pub fn frame(&self, i: usize) -> &[f32] {
        let len = self.particles * self.dim;
        &self.frames[i * len..(i + 1) * len]
    }
}

impl SampleParams {
    /// Whether predicted x0 are clipped, for data that is (or is not) images.
    pub fn clips(&self, images: bool) -> bool {
        self.clip_denoised.unwrap_or(images)
    }

    /// What the key hashes: settings the sampler ignores are reset.
    pub fn canonical(&self) -> SampleParams {
        SampleParams {
            sampler: self.sampler.canonical(),
            ..self.clone()
        }
    }

    /// `schedule`: the schedule of the model sampled from.
    pub fn validate(
        &self,
        schedule: Option<&crate::diffusion::schedule::ScheduleParams>,
    ) -> Result<(), String> {
        if self.n == 0 {
            return Err("`n` must be at least 1".into());
        }
        if let Some(params) = schedule {
            self.sampler.check(&params.build())?;
        }
        Ok(())
    }
}

/// Samples that are NaN or infinite are a diverged sampler (or model), not results:
/// the stage fails rather than letting every metric downstream turn to NaN.
fn check_finite(samples: &[f32], dim: usize, params: &SampleParams) -> StageResult<()> {
    let bad = samples
        .chunks(dim.max(1))
        .filter(|row| row.iter().any(|v| !v.is_finite()))
        .count();
    if bad == 0 {
        return Ok(());
    }
    Err(StageError::Failed(format!(
        "{bad} of {} samples are NaN or infinite: sampler `{}` diverged; use smaller steps (a smaller `step_lr` or `step_size`, more `steps`), or check the model's training loss",
        params.n,
        params.sampler.name()
    )))
}

fn run(params: &SampleParams, ctx: &StageContext) -> StageResult<()> {
    let train = ctx.input("train")?;
    let trained = TrainedModel::load(train)?;
    let process = trained.schedule.build();
    let score = trained.score(train, params.weights, &process, ctx.device)?;
    let mut keep = params.snapshot_particles.min(params.n);
    if trained.image.is_some() {
        keep = keep.min(8);
    }
    let request = SampleRequest {
        n: params.n,
        dim: trained.dim,
        snapshots: params.snapshots,
        snapshot_particles: keep,
        device: ctx.device,
        start: None,
        clip: params
            .clips(trained.image.is_some())
            .then_some(crate::data::images::RANGE),
    };
    let started = Instant::now();
    let mut rng = stream(params.seed, "sample");
    let out = run_sampler(
        &params.sampler,
        score.as_ref(),
        &process,
        &request,
        &mut rng,
        &mut |done, total| {
            // Particles (or images) carried one step per second, all of them together.
            let rate = params.n as f64 * done as f64 / ctx.progress.seconds().max(1e-9);
            let unit = if trained.image.is_some() { "images" } else { "particles" };
            ctx.progress
                .update(done, total, &format!("sampling steps, {rate:.0} {unit}/s"))
        },
    )?;
    let seconds = started.elapsed().as_secs_f64();
    check_finite(&out.samples, trained.dim, params)?;

    let dim = trained.dim;
    let samples = Tensor::from_vec(out.samples, (params.n, dim), ctx.device)?;
    save_tensors(&ctx.path("samples.safetensors"), &[("samples", samples)])?;
    let steps: Vec<i64> = out.trajectory.iter().map(|(s, _)| *s as i64).collect();
    let frames: Vec<f32> = out.trajectory.into_iter().flat_map(|(_, x)| x).collect();
    let count = steps.len();
    save_tensors(
        &ctx.path("trajectory.safetensors"),
        &[
            (
                "trajectory",
                Tensor::from_vec(frames, (count, keep, dim), ctx.device)?,
            ),
            ("steps", Tensor::from_vec(steps, count, ctx.device)?),
        ],
    )?;
    write_json(
        &ctx.path("sampling.json"),
        &SamplingRecord {
            sampler: params.sampler.name().into(),
            n: params.n,
            nfe: out.nfe,
            seconds,
        },
    )
}
