//! `model`: resolves an architecture (`config.json`); weights come from training.

use serde::{Deserialize, Serialize};

use super::context::StageContext;
use super::kind::{Kind, Neighbours, Role};
use crate::artifacts::write_json;
use crate::error::StageResult;
use crate::nn::models::mlp::{Embedding, MlpConfig};
use crate::nn::models::network::NetworkConfig;
use crate::nn::models::unet::{Condition, UNetConfig};

/// The `model` kind: an architecture, resolved; weights come from training.
pub struct Model;

impl Kind for Model {
    const NAME: &'static str = "model";
    const VERSION: u32 = 1;
    const ROLES: &'static [Role] = &[];
    const WRITES: &'static str = "`config.json`";
    type Params = ModelParams;

    fn validate(params: &ModelParams, _: &Neighbours) -> Result<(), String> {
        params.validate()
    }

    fn run(params: &ModelParams, ctx: &StageContext) -> StageResult<()> {
        write_json(&ctx.path("config.json"), params)
    }
}

/// A network architecture, chosen by `arch`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(tag = "arch", rename_all = "snake_case", deny_unknown_fields)]
pub enum ModelParams {
    /// MLP on [x, embedding(t)] with SiLU activations.
    Mlp(MlpConfig),
    /// DDPM's U-Net for images (residual blocks, GroupNorm, self-attention).
    Unet(UNetConfig),
    /// No network: the dataset's exact score under the schedule's process (Gaussian
    /// mixtures only). Training it is free; samplers can be validated against it.
    Exact {},
}

impl ModelParams {
    pub fn validate(&self) -> Result<(), String> {
        match self {
            ModelParams::Mlp(cfg) => cfg.validate(),
            ModelParams::Unet(cfg) => {
                cfg.validate()?;
                if cfg.condition == Condition::LogStd && cfg.embedding != Embedding::Fourier {
                    return Err("`condition: log_std` needs `embedding: fourier` (sinusoidal features assume t in [0, 1])".into());
                }
                Ok(())
            }
            ModelParams::Exact {} => Ok(()),
        }
    }

    /// The network to build, or `None` for the exact score.
    pub fn network(&self) -> Option<NetworkConfig> {
        match self {
            ModelParams::Mlp(cfg) => Some(NetworkConfig::Mlp(cfg.clone())),
            ModelParams::Unet(cfg) => Some(NetworkConfig::UNet(cfg.clone())),
            ModelParams::Exact {} => None,
        }
    }
}
