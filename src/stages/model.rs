//! `model`: resolves an architecture (`config.json`); weights come from training.

use serde::{Deserialize, Serialize};

use super::StageContext;
use super::artifacts::write_json;
use crate::error::StageResult;
use crate::nn::mlp::MlpConfig;

pub const VERSION: u32 = 1;

/// A network architecture, chosen by `arch`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(tag = "arch", rename_all = "snake_case")]
pub enum ModelParams {
    /// MLP on [x, embedding(t)] with SiLU activations.
    Mlp(MlpConfig),
    /// No network: the dataset's exact score under the schedule's process (Gaussian
    /// mixtures only). Training it is free; samplers can be validated against it.
    Exact {},
}

impl ModelParams {
    pub fn validate(&self) -> Result<(), String> {
        match self {
            ModelParams::Mlp(cfg) => cfg.validate(),
            ModelParams::Exact {} => Ok(()),
        }
    }
}

pub fn run(params: &ModelParams, ctx: &StageContext) -> StageResult<()> {
    write_json(&ctx.path("config.json"), params)
}
