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

/// How big a network is, from its configuration alone: what a stage's cost estimate
/// needs before anything is allocated (in floating point, since a hostile
/// configuration's counts overflow integers).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct NetworkSize {
    pub parameters: f64,
    /// Multiply-adds times two of one forward pass, per example.
    pub flops: f64,
    /// Values one forward pass keeps per example (for the backward pass).
    pub activations: f64,
}

impl NetworkConfig {
    /// Tensors the network needs that training does not change (the Fourier
    /// frequencies), so saved weights rebuild it anywhere without runner's streams.
    pub fn fixed_tensors(&self) -> Vec<(&'static str, Vec<f32>)> {
        match self {
            NetworkConfig::Mlp(cfg) if cfg.embedding == super::mlp::Embedding::Fourier => {
                vec![(super::mlp::FREQUENCIES, cfg.fourier_frequencies())]
            }
            NetworkConfig::UNet(cfg) if cfg.embedding == super::mlp::Embedding::Fourier => {
                vec![(super::unet::FREQUENCIES, cfg.fourier_frequencies())]
            }
            _ => Vec::new(),
        }
    }

    /// The network's size on data of this shape.
    pub fn size(&self, shape: DataShape) -> NetworkSize {
        match self {
            NetworkConfig::Mlp(cfg) => {
                let dim = shape.dim as f64;
                let mut widths = vec![dim + cfg.embedding_dim as f64];
                widths.extend(cfg.hidden.iter().map(|&h| h as f64));
                widths.push(dim);
                let mut size = NetworkSize::default();
                for w in widths.windows(2) {
                    size.parameters += w[0] * w[1] + w[1];
                    size.flops += 2.0 * w[0] * w[1];
                    size.activations += 2.0 * w[1];
                }
                size
            }
            NetworkConfig::UNet(cfg) => {
                let (side, channels_in) = shape.image.map_or((1.0, 1.0), |i| {
                    (i.height as f64 * i.width as f64, i.channels as f64)
                });
                let blocks = cfg.res_blocks as f64;
                let mut size = NetworkSize::default();
                let mut pixels = side;
                for &m in &cfg.channel_mult {
                    let c = cfg.channels as f64 * m as f64;
                    // Two 3x3 convolutions per residual block: `res_blocks` on the way
                    // down, one more (on concatenated, wider inputs) on the way up.
                    let convs = 2.0 * blocks + 3.0 * (blocks + 1.0);
                    let weights = 9.0 * c * c * convs;
                    size.parameters += weights;
                    size.flops += 2.0 * weights * pixels;
                    size.activations += 6.0 * c * pixels * convs;
                    pixels /= 4.0;
                }
                let first = 9.0 * channels_in * cfg.channels as f64;
                size.parameters += 2.0 * first;
                size.flops += 4.0 * first * side;
                size
            }
        }
    }
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
