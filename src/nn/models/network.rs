//! One handle on every score network, so training, sampling and evaluation do not care
//! which architecture a model stage chose. Networks see flattened rows [batch, dim];
//! the U-Net reshapes them into images itself.

use std::collections::HashMap;
use std::sync::Arc;

use candle_core::{DType, Device, Result, Tensor, Var};
use candle_nn::VarBuilder;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::init::{named_vars, seeded_varmap};
use super::mlp::{Mlp, MlpConfig};
use super::unet::{Condition, UNet, UNetConfig};
use crate::data::images::ImageShape;

/// The noise level std(t) of the process a network learns: a network conditioned on
/// log std (`condition: log_std`) sees log std(t) instead of t. A function, so that
/// the networks need nothing of the diffusion code.
pub type NoiseStd = Arc<dyn Fn(f64) -> f64 + Send + Sync>;

/// The architectures a network can have.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub enum NetworkConfig {
    Mlp(MlpConfig),
    UNet(UNetConfig),
}

/// What the data looks like to a network.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DataShape {
    pub dim: usize,
    pub image: Option<ImageShape>,
}

/// A network ready to run.
pub enum Network {
    Mlp(Mlp),
    UNet {
        net: UNet,
        condition: Condition,
        std: NoiseStd,
    },
}

impl Network {
    /// A freshly initialised network (seeded) and its trainable variables by name.
    pub fn fresh(
        config: &NetworkConfig,
        shape: DataShape,
        std: &NoiseStd,
        rng: &mut ChaCha8Rng,
        device: &Device,
    ) -> Result<(Network, Vec<(String, Var)>)> {
        match config {
            NetworkConfig::Mlp(cfg) => {
                let vars: Vec<(String, Var)> = cfg
                    .init_weights(shape.dim, rng, device)?
                    .into_iter()
                    .map(|(name, t)| Ok((name, Var::from_tensor(&t)?)))
                    .collect::<Result<_>>()?;
                let weights: HashMap<String, Tensor> = vars
                    .iter()
                    .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
                    .collect();
                Ok((Network::Mlp(Mlp::new(cfg, shape.dim, &weights)?), vars))
            }
            NetworkConfig::UNet(cfg) => {
                let image = image_shape(shape)?;
                let (net, map) = seeded_varmap(device, rng, |vb| UNet::new(cfg, image, vb))?;
                let network = Network::UNet {
                    net,
                    condition: cfg.condition,
                    std: std.clone(),
                };
                Ok((network, named_vars(&map)))
            }
        }
    }

    /// A network from saved weights.
    pub fn load(
        config: &NetworkConfig,
        shape: DataShape,
        std: &NoiseStd,
        weights: HashMap<String, Tensor>,
        device: &Device,
    ) -> Result<Network> {
        match config {
            NetworkConfig::Mlp(cfg) => Ok(Network::Mlp(Mlp::new(cfg, shape.dim, &weights)?)),
            NetworkConfig::UNet(cfg) => {
                let vb = VarBuilder::from_tensors(weights, DType::F32, device);
                Ok(Network::UNet {
                    net: UNet::new(cfg, image_shape(shape)?, vb)?,
                    condition: cfg.condition,
                    std: std.clone(),
                })
            }
        }
    }

    /// `x`: [batch, dim]; `t`: [batch] times in [0, 1]. Returns [batch, dim].
    pub fn forward(&self, x: &Tensor, t: &Tensor) -> Result<Tensor> {
        match self {
            Network::Mlp(net) => net.forward(x, t),
            Network::UNet {
                net,
                condition: Condition::Time,
                ..
            } => net.forward(x, t),
            Network::UNet {
                net,
                condition: Condition::LogStd,
                std,
            } => {
                let log_std: Vec<f32> = t
                    .to_vec1::<f32>()?
                    .iter()
                    .map(|&t| std(t as f64).ln() as f32)
                    .collect();
                net.forward(x, &Tensor::from_vec(log_std, t.dims(), t.device())?)
            }
        }
    }
}

fn image_shape(shape: DataShape) -> Result<ImageShape> {
    shape.image.ok_or_else(|| {
        candle_core::Error::Msg(
            "a U-Net needs image data (mnist, fashion_mnist or image_folder); use `arch: mlp` for points"
                .into(),
        )
    })
}
