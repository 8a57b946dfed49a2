//! `model`: resolves an architecture (`config.json`); weights come from training.


use super::context::StageContext;
use super::cost::count;
use super::kind::{Kind, Neighbours, Role};
use crate::artifacts::write_json;
use crate::data::images::ImageShape;
use crate::error::StageResult;
use crate::nn::models::mlp::{Embedding, MlpConfig};
use crate::nn::models::network::{DataShape, NetworkConfig};
use crate::nn::models::unet::{Condition, UNetConfig};
use crate::tagged::tagged_enum;

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

tagged_enum! {
#[tag = "arch", remote = "ModelParams"]
/// A network architecture, chosen by `arch`.
#[derive(Debug, Clone, PartialEq)]
#[schemars(deny_unknown_fields)]
pub enum ModelParams {
    /// MLP on [x, embedding(t)] with SiLU activations.
    Mlp(MlpConfig),
    /// DDPM's U-Net for images (residual blocks, GroupNorm, self-attention).
    Unet(UNetConfig),
    /// No network: the dataset's exact score under the schedule's process (Gaussian
    /// mixtures only). Training it is free; samplers can be validated against it.
    Exact {},
}
}

/// The largest network a model stage may describe: far past what diffusion models of
/// this tool's data use (DDPM's CIFAR-10 U-Net has 36 million), and below the point
/// where counts stop fitting the 32-bit indices some kernels use.
const MAX_PARAMETERS: f64 = 2e9;

impl ModelParams {
    /// Every `arch:` (a test holds it to the variants).
    pub const NAMES: &'static [&'static str] = &["mlp", "unet", "exact"];

    pub fn validate(&self) -> Result<(), String> {
        // Before the architecture's own checks, whose arithmetic a hostile size
        // overflows. Points have at least one coordinate; images are at least 28x28.
        let smallest = DataShape {
            dim: 1,
            image: Some(ImageShape {
                channels: 1,
                height: 28,
                width: 28,
            }),
        };
        if let Some(network) = self.network() {
            let parameters = network.size(smallest).parameters;
            if parameters > MAX_PARAMETERS {
                return Err(format!(
                    "a network of {} parameters or more; at most {} (a 2-billion-parameter network needs 40 GB to train): use smaller `hidden`, `embedding_dim` or `channels`",
                    count(parameters),
                    count(MAX_PARAMETERS)
                ));
            }
        }
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
