//! `dataset`: draws a seeded training set and a held-out set.

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::StageContext;
use super::artifacts::{save_tensors, write_json};
use crate::data::toy::{Distribution, Mixture};
use crate::error::StageResult;
use crate::rng::stream;

pub const VERSION: u32 = 1;

/// Parameters of a dataset stage: the distribution (`name` and its shape
/// parameters) plus sizes and seed.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct DatasetParams {
    #[serde(flatten)]
    pub distribution: Distribution,
    /// Training points.
    #[serde(default = "n")]
    pub n: usize,
    /// Held-out points, drawn independently, used as the evaluation reference.
    #[serde(default = "holdout")]
    pub holdout: usize,
    #[serde(default)]
    pub seed: u64,
}

fn n() -> usize {
    50_000
}
fn holdout() -> usize {
    10_000
}

impl DatasetParams {
    pub fn validate(&self) -> Result<(), String> {
        if self.n == 0 || self.holdout == 0 {
            return Err("`n` and `holdout` must be at least 1".into());
        }
        self.distribution.validate()
    }
}

/// `meta.json`: what downstream stages need to know about the data.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DatasetMeta {
    pub dim: usize,
    pub n_train: usize,
    pub n_test: usize,
    /// Per-coordinate minimum and maximum of the training set.
    pub min: Vec<f32>,
    pub max: Vec<f32>,
    /// The analytic density when the distribution is a Gaussian mixture.
    pub mixture: Option<Mixture>,
    pub distribution: Distribution,
}

pub fn run(params: &DatasetParams, ctx: &StageContext) -> StageResult<()> {
    let dist = &params.distribution;
    let dim = dist.dim();
    let train = dist.sample(params.n, &mut stream(params.seed, "dataset/train"));
    let test = dist.sample(params.holdout, &mut stream(params.seed, "dataset/test"));
    let mut min = vec![f32::INFINITY; dim];
    let mut max = vec![f32::NEG_INFINITY; dim];
    for row in train.chunks(dim) {
        for j in 0..dim {
            min[j] = min[j].min(row[j]);
            max[j] = max[j].max(row[j]);
        }
    }
    save_tensors(
        &ctx.path("data.safetensors"),
        &[
            (
                "train",
                Tensor::from_vec(train, (params.n, dim), &Device::Cpu)?,
            ),
            (
                "test",
                Tensor::from_vec(test, (params.holdout, dim), &Device::Cpu)?,
            ),
        ],
    )?;
    let meta = DatasetMeta {
        dim,
        n_train: params.n,
        n_test: params.holdout,
        min,
        max,
        mixture: dist.mixture(),
        distribution: dist.clone(),
    };
    write_json(&ctx.path("meta.json"), &meta)
}
