//! `sample`: draws samples from a trained model with a chosen sampler, recording the
//! number of score evaluations (NFE), wall time and a trajectory of snapshots.

use std::time::Instant;

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use super::StageContext;
use super::artifacts::{save_tensors, write_json};
use super::train::{TrainedModel, WeightsKind};
use crate::diffusion::sample::{SampleRequest, SamplerParams, run as run_sampler};
use crate::error::StageResult;
use crate::pipeline::spec::StageSpec;
use crate::rng::stream;

/// Bumped whenever the bytes this stage writes change (3: Winograd convolutions, and
/// the MLP's inference pass, which rounds differently from the training ops).
pub const VERSION: u32 = 3;

/// Parameters of a sample stage: the sampler (`sampler` and its settings) plus how
/// many samples and which weights.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
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

impl SampleParams {
    /// What the key hashes: settings the sampler ignores are reset.
    pub fn canonical(&self) -> SampleParams {
        SampleParams {
            sampler: self.sampler.canonical(),
            ..self.clone()
        }
    }

    pub fn validate<'s>(
        &self,
        train: Option<&StageSpec>,
        lookup: &dyn Fn(&str) -> Option<&'s StageSpec>,
    ) -> Result<(), String> {
        if self.n == 0 {
            return Err("`n` must be at least 1".into());
        }
        if let Some(StageSpec::Train { needs, .. }) = train
            && let Some(StageSpec::Schedule { params }) = lookup(&needs.schedule)
        {
            self.sampler.check(&params.build())?;
        }
        Ok(())
    }
}

pub fn run(params: &SampleParams, ctx: &StageContext) -> StageResult<()> {
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
    };
    let started = Instant::now();
    let mut rng = stream(params.seed, "sample");
    let out = run_sampler(
        &params.sampler,
        score.as_ref(),
        &process,
        &request,
        &mut rng,
        &mut |done, total| ctx.progress.update(done, total, "sampling"),
    )?;
    let seconds = started.elapsed().as_secs_f64();

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
