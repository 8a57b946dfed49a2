//! A multilayer perceptron on [x, embedding(t)]: the standard score network for
//! low-dimensional data.

use std::collections::HashMap;

use candle_core::{D, DType, Device, Result, Tensor};
use candle_nn::{Linear, Module};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::embedding::{fourier, sinusoidal, sinusoidal_frequencies};
use crate::nn::kernels::vmath::sin_cos;
use crate::rng::{normals, stream, uniforms};

/// Architecture of the MLP; the data dimension comes from the dataset at train time.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MlpConfig {
    /// Widths of the hidden layers (SiLU after each).
    #[serde(default = "hidden")]
    pub hidden: Vec<usize>,
    /// Size of the time embedding.
    #[serde(default = "embedding_dim")]
    pub embedding_dim: usize,
    /// `sinusoidal` features of 1000 t (DDPM's) or Gaussian `fourier` features of t
    /// (score_sde's, for continuous-time models).
    #[serde(default)]
    pub embedding: Embedding,
    /// Standard deviation of the Fourier frequencies (score_sde: 16).
    #[serde(default = "fourier_scale")]
    pub fourier_scale: f64,
}

/// How the network sees time.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Embedding {
    #[default]
    Sinusoidal,
    Fourier,
}

fn fourier_scale() -> f64 {
    16.0
}

fn hidden() -> Vec<usize> {
    vec![128, 128, 128]
}
fn embedding_dim() -> usize {
    32
}

impl Default for MlpConfig {
    fn default() -> Self {
        MlpConfig {
            hidden: hidden(),
            embedding_dim: embedding_dim(),
            embedding: Embedding::Sinusoidal,
            fourier_scale: fourier_scale(),
        }
    }
}

impl MlpConfig {
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.hidden.is_empty() || self.hidden.contains(&0) {
            return Err("`hidden` needs at least one layer and no zero widths".into());
        }
        if !(self.fourier_scale > 0.0) {
            return Err(format!(
                "`fourier_scale` must be positive, got {}",
                self.fourier_scale
            ));
        }
        if self.embedding_dim < 2 || !self.embedding_dim.is_multiple_of(2) {
            return Err(format!(
                "`embedding_dim` must be even and at least 2, got {}",
                self.embedding_dim
            ));
        }
        Ok(())
    }

    /// The fixed Fourier frequencies w ~ N(0, fourier_scale^2), drawn from their own
    /// stream: part of the architecture, saved with the weights as [`FREQUENCIES`].
    pub fn fourier_frequencies(&self) -> Vec<f32> {
        normals(&mut stream(0, "mlp/fourier"), self.embedding_dim / 2)
            .iter()
            .map(|z| z * self.fourier_scale as f32)
            .collect()
    }

    /// (in, out) of every linear layer for data of dimension `dim`.
    fn layer_shapes(&self, dim: usize) -> Vec<(usize, usize)> {
        let mut widths = vec![dim + self.embedding_dim];
        widths.extend(&self.hidden);
        widths.push(dim);
        widths.windows(2).map(|w| (w[0], w[1])).collect()
    }

    /// Freshly initialised weights, as PyTorch's nn.Linear does
    /// (uniform in +-1/sqrt(fan_in)), drawn from the project's seeded RNG.
    pub fn init_weights(
        &self,
        dim: usize,
        rng: &mut ChaCha8Rng,
        device: &Device,
    ) -> Result<Vec<(String, Tensor)>> {
        let mut out = Vec::new();
        for (i, (fan_in, fan_out)) in self.layer_shapes(dim).into_iter().enumerate() {
            let bound = 1.0 / (fan_in as f32).sqrt();
            let w = Tensor::from_vec(
                uniforms(rng, fan_in * fan_out, -bound, bound),
                (fan_out, fan_in),
                device,
            )?;
            let b = Tensor::from_vec(uniforms(rng, fan_out, -bound, bound), fan_out, device)?;
            out.push((format!("layers.{i}.weight"), w));
            out.push((format!("layers.{i}.bias"), b));
        }
        Ok(out)
    }
}

/// The name of the Fourier frequencies among the saved tensors.
pub const FREQUENCIES: &str = "embedding.frequencies";

/// The network itself.
pub struct Mlp {
    layers: Vec<Linear>,
    /// (fan_in, fan_out) of each layer.
    shapes: Vec<(usize, usize)>,
    /// Every weight and bias in one tensor, for the fused CPU op; kept when the
    /// weights are plain tensors (sampling), rebuilt per call from trainable ones.
    flat: Option<Tensor>,
    /// The same plain weights laid out for inference on the CPU.
    frozen: Option<crate::nn::kernels::fused_mlp::Frozen>,
    embedding_dim: usize,
    /// Fixed Fourier frequencies (drawn from a fixed stream: part of the architecture,
    /// not trained), when the embedding is `fourier`.
    frequencies: Option<Tensor>,
}

impl Mlp {
    /// Builds the network from named weights (fresh, trainable or loaded from disk).
    pub fn new(config: &MlpConfig, dim: usize, weights: &HashMap<String, Tensor>) -> Result<Mlp> {
        let mut layers = Vec::new();
        let shapes = config.layer_shapes(dim);
        for (i, &(fan_in, fan_out)) in shapes.iter().enumerate() {
            let get = |name: String| {
                weights.get(&name).cloned().ok_or_else(|| {
                    candle_core::Error::Msg(format!("weights have no tensor `{name}`"))
                })
            };
            let w = get(format!("layers.{i}.weight"))?;
            if w.dims() != [fan_out, fan_in] {
                return Err(candle_core::Error::Msg(format!(
                    "layer {i} weight has shape {:?}, the config needs [{fan_out}, {fan_in}]",
                    w.dims()
                )));
            }
            layers.push(Linear::new(w, Some(get(format!("layers.{i}.bias"))?)));
        }
        let frequencies = match config.embedding {
            Embedding::Sinusoidal => None,
            // Saved with the weights (`FREQUENCIES`); entries from before are rebuilt
            // from the stream they were drawn from.
            Embedding::Fourier => match weights.get(FREQUENCIES) {
                Some(w) => Some(w.clone()),
                None => {
                    let device = weights
                        .values()
                        .next()
                        .map(|t| t.device().clone())
                        .unwrap_or(Device::Cpu);
                    let w = config.fourier_frequencies();
                    let half = w.len();
                    Some(Tensor::from_vec(w, half, &device)?)
                }
            },
        };
        let mut mlp = Mlp {
            layers,
            shapes,
            flat: None,
            frozen: None,
            embedding_dim: config.embedding_dim,
            frequencies,
        };
        if !mlp.layers.iter().any(|l| l.weight().track_op()) {
            let flat = mlp.flat_parameters()?;
            if flat.device().is_cpu() && flat.dtype() == DType::F32 {
                let numbers = flat.to_vec1::<f32>()?;
                mlp.frozen = Some(crate::nn::kernels::fused_mlp::Frozen::new(
                    &numbers,
                    &mlp.shapes,
                )?);
            }
            mlp.flat = Some(flat);
        }
        Ok(mlp)
    }

    /// Weight 0, bias 0, weight 1, ... concatenated, the fused op's parameter layout.
    fn flat_parameters(&self) -> Result<Tensor> {
        let mut parts = Vec::with_capacity(2 * self.layers.len());
        for layer in &self.layers {
            parts.push(layer.weight().flatten_all()?);
            if let Some(bias) = layer.bias() {
                parts.push(bias.clone());
            }
        }
        Tensor::cat(&parts, 0)
    }

    /// `x`: [batch, dim]; `t`: [batch] times in [0, 1]. Returns [batch, dim].
    pub fn forward(&self, x: &Tensor, t: &Tensor) -> Result<Tensor> {
        if x.device().is_cpu() && x.dtype() == DType::F32 && x.rank() == 2 {
            return self.forward_fused(x, t);
        }
        self.forward_ops(x, t)
    }

    /// The same network as candle tensor ops (any device).
    fn forward_ops(&self, x: &Tensor, t: &Tensor) -> Result<Tensor> {
        let emb = match &self.frequencies {
            Some(w) => fourier(t, w)?,
            None => sinusoidal(&t.affine(1000.0, 0.0)?, self.embedding_dim)?,
        };
        let mut h = Tensor::cat(&[x, &emb], D::Minus1)?;
        let last = self.layers.len() - 1;
        for (i, layer) in self.layers.iter().enumerate() {
            h = layer.forward(&h)?;
            if i < last {
                h = h.silu()?;
            }
        }
        Ok(h)
    }

    /// The CPU path: the input rows [x, embedding(t)] are built here (the embedding
    /// with the vectorised sin and cos), and the layers run as one fused op; with
    /// frozen weights and no gradient wanted, as `fused_mlp::Frozen`'s inference pass,
    /// which, when every row has the same time (a sampling step), takes the time's
    /// embedding once instead of once per row.
    fn forward_fused(&self, x: &Tensor, t: &Tensor) -> Result<Tensor> {
        let (batch, dim) = x.dims2()?;
        let times = t.to_vec1::<f32>()?;
        if times.len() != batch {
            candle_core::bail!("mlp: {batch} points but {} times", times.len());
        }
        let embed = self.embedder()?;
        if let Some(frozen) = self.frozen.as_ref().filter(|_| !x.track_op()) {
            let xs = x.flatten_all()?.to_vec1::<f32>()?;
            let out = match times.first() {
                Some(&first) if times.iter().all(|&t| t == first) => {
                    let mut embedding = vec![0f32; self.embedding_dim];
                    embed.row(first, &mut embedding);
                    frozen.forward_shared(&xs, &embedding, batch)?
                }
                _ => frozen.forward(&embed.rows(&xs, dim, &times), batch)?,
            };
            let width = self.shapes[self.shapes.len() - 1].1;
            return Tensor::from_vec(out, (batch, width), x.device());
        }
        // A tracked x (a gradient with respect to the input is wanted) joins as a
        // tensor op, so that the gradient flows back to it.
        let input = if x.track_op() {
            let rows = embed.rows(&[], 0, &times);
            let rows = Tensor::from_vec(rows, (batch, self.embedding_dim), x.device())?;
            Tensor::cat(&[x, &rows], D::Minus1)?
        } else {
            let xs = x.flatten_all()?.to_vec1::<f32>()?;
            Tensor::from_vec(
                embed.rows(&xs, dim, &times),
                (batch, dim + self.embedding_dim),
                x.device(),
            )?
        };
        let flat = match &self.flat {
            Some(flat) => flat.clone(),
            None => self.flat_parameters()?,
        };
        crate::nn::kernels::fused_mlp::forward(&input, &flat, &self.shapes)
    }

    /// The time embedding as plain numbers, for the CPU path.
    fn embedder(&self) -> Result<Embedder> {
        let half = self.embedding_dim / 2;
        Ok(match &self.frequencies {
            Some(w) => Embedder {
                frequencies: w.to_vec1::<f32>()?,
                scale: 2.0 * std::f32::consts::PI,
            },
            None => Embedder {
                frequencies: sinusoidal_frequencies(half),
                scale: 1000.0,
            },
        })
    }
}

/// The time embedding on the CPU: [sin(scale t w), cos(scale t w)] over the
/// frequencies w, as `sinusoidal` and `fourier` compute it with tensor ops.
struct Embedder {
    frequencies: Vec<f32>,
    scale: f32,
}

impl Embedder {
    /// The embedding of `t` into `out` (twice as long as the frequencies).
    fn row(&self, t: f32, out: &mut [f32]) {
        let (sin, cos) = out.split_at_mut(self.frequencies.len());
        for ((s, c), w) in sin.iter_mut().zip(cos.iter_mut()).zip(&self.frequencies) {
            (*s, *c) = sin_cos(self.scale * t * w);
        }
    }

    /// Rows [x, embedding(t)] for the `dim`-wide points of `xs` (none when `dim` is 0)
    /// and their times.
    fn rows(&self, xs: &[f32], dim: usize, times: &[f32]) -> Vec<f32> {
        let width = dim + 2 * self.frequencies.len();
        let mut rows = vec![0f32; times.len() * width];
        // Each row's sines and cosines are a few hundred cycles: a training batch's
        // share the cores (the fused op that follows waits for them).
        (rows.par_chunks_exact_mut(width).zip(times).enumerate())
            .with_min_len(256)
            .for_each(|(i, (row, &t))| {
                let (point, embedding) = row.split_at_mut(dim);
                point.copy_from_slice(&xs[i * dim..(i + 1) * dim]);
                self.row(t, embedding);
            });
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Var;

    /// A 2D MLP built from freshly initialised trainable variables.
    fn trainable(cfg: &MlpConfig) -> (Mlp, Vec<(String, Var)>) {
        let vars: Vec<(String, Var)> = cfg
            .init_weights(2, &mut stream(0, "init"), &Device::Cpu)
            .unwrap()
            .into_iter()
            .map(|(n, t)| (n, Var::from_tensor(&t).unwrap()))
            .collect();
        let map = vars
            .iter()
            .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
            .collect();
        (Mlp::new(cfg, 2, &map).unwrap(), vars)
    }

    #[test]
    fn every_parameter_gets_a_gradient() {
        for embedding in [Embedding::Sinusoidal, Embedding::Fourier] {
            let cfg = MlpConfig {
                hidden: vec![16, 16],
                embedding_dim: 8,
                embedding,
                fourier_scale: 16.0,
            };
            let dev = Device::Cpu;
            let (mlp, vars) = trainable(&cfg);
            let x = Tensor::new(&[[0.5f32, -0.3], [1.0, 2.0]], &dev).unwrap();
            let c = Tensor::new(&[0.3f32, 0.7], &dev).unwrap();
            let loss = mlp
                .forward(&x, &c)
                .unwrap()
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap();
            let grads = loss.backward().unwrap();
            crate::nn::models::assert_every_parameter_learns(
                &grads,
                vars.iter().map(|(n, v)| (n, v)),
            );
        }
    }

    /// A divergence takes one backward pass per output dimension through one forward
    /// pass: the fused op must keep what it saved until its graph is dropped, and its
    /// buffers, recycled then, must not leak into the next forward pass's numbers.
    #[test]
    fn backward_passes_repeat_through_one_forward_pass() {
        let cfg = MlpConfig {
            hidden: vec![128, 128],
            ..MlpConfig::default()
        };
        let (mlp, vars) = trainable(&cfg);
        let x =
            Var::from_tensor(&crate::nn::kernels::random_tensor(&[600, 2], 1, "mlp/x")).unwrap();
        let t = Tensor::rand(0f32, 1f32, 600, &Device::Cpu).unwrap();
        let gradients = || {
            let out = mlp.forward(&x, &t).unwrap();
            let first = out.sum_all().unwrap().backward().unwrap();
            let second = out.sum_all().unwrap().backward().unwrap();
            let get = |grads: &candle_core::backprop::GradStore, v: &Var| {
                grads
                    .get(v.as_tensor())
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap()
            };
            let (weight, _) = &vars[0];
            let weight = &vars.iter().find(|(n, _)| n == weight).unwrap().1;
            assert_eq!(get(&first, weight), get(&second, weight));
            assert_eq!(get(&first, &x), get(&second, &x));
            get(&first, &x)
        };
        let before = gradients();
        // The same pass again, on buffers recycled from the first.
        assert_eq!(before, gradients());
    }

    /// The fused CPU path against the same network as candle ops: outputs, the
    /// gradient of every weight and bias, and the input's gradient when the input is
    /// tracked; for both embeddings, a one-point batch, and batches large enough to
    /// split the products over threads.
    #[test]
    fn the_fused_path_matches_candles_ops() {
        let diff = crate::nn::kernels::max_abs_diff;
        for (embedding, hidden, batch) in [
            (Embedding::Sinusoidal, vec![16, 16], 1),
            (Embedding::Fourier, vec![64, 64, 64, 64], 37),
            (Embedding::Sinusoidal, vec![128, 128, 128], 600),
        ] {
            let cfg = MlpConfig {
                hidden,
                embedding_dim: 32,
                embedding,
                fourier_scale: 16.0,
            };
            let (mlp, vars) = trainable(&cfg);
            let x = Var::from_tensor(&crate::nn::kernels::random_tensor(&[batch, 2], 1, "mlp/x"))
                .unwrap();
            let t = crate::nn::kernels::random_tensor(&[batch], 2, "mlp/t")
                .abs()
                .unwrap();
            let weights = crate::nn::kernels::random_tensor(&[batch, 2], 3, "mlp/w");
            let ours = mlp.forward_fused(&x, &t).unwrap();
            let theirs = mlp.forward_ops(&x, &t).unwrap();
            assert!(diff(&ours, &theirs) < 1e-4, "{embedding:?} batch {batch}");
            // The untracked input takes the other way of building the rows.
            let plain = mlp
                .forward_fused(x.as_tensor().detach().as_ref(), &t)
                .unwrap();
            assert!(diff(&plain, &theirs) < 1e-4);
            let loss = |out: &Tensor| (out * &weights).unwrap().sum_all().unwrap();
            let (ga, gb) = (
                loss(&ours).backward().unwrap(),
                loss(&theirs).backward().unwrap(),
            );
            for (name, var) in vars
                .iter()
                .map(|(n, v)| (n, v))
                .chain([(&"x".to_string(), &x)])
            {
                let (a, b) = (ga.get(var).unwrap(), gb.get(var).unwrap());
                assert!(
                    diff(a, b) < 1e-4,
                    "{embedding:?} batch {batch}: gradient of {name}"
                );
            }
        }
    }

    /// Frozen weights (sampling, evaluation) take the inference pass: against the
    /// same network as candle ops, with every row at one time (the embedding folded
    /// into the first layer's bias) and at different times, for one row, for a
    /// batch of several row blocks split over threads, and for an output layer
    /// narrow enough for the dot-product kernel (2D) or not (8D).
    #[test]
    fn the_inference_pass_matches_candles_ops() {
        for (embedding, hidden, dim, batch) in [
            (Embedding::Sinusoidal, vec![128, 128, 128], 2, 1),
            (Embedding::Sinusoidal, vec![128, 128, 128], 2, 1000),
            (Embedding::Fourier, vec![64, 48], 8, 37),
            (Embedding::Fourier, vec![3], 2, 400),
        ] {
            let cfg = MlpConfig {
                hidden,
                embedding_dim: 16,
                embedding,
                fourier_scale: 16.0,
            };
            let weights: HashMap<_, _> = cfg
                .init_weights(dim, &mut stream(1, "init"), &Device::Cpu)
                .unwrap()
                .into_iter()
                .collect();
            let mlp = Mlp::new(&cfg, dim, &weights).unwrap();
            assert!(
                mlp.frozen.is_some(),
                "plain weights are laid out for inference"
            );
            let x = crate::nn::kernels::random_tensor(&[batch, dim], 4, "mlp/x");
            let shared = Tensor::full(0.37f32, batch, &Device::Cpu).unwrap();
            let spread = crate::nn::kernels::random_tensor(&[batch], 5, "mlp/t")
                .abs()
                .unwrap();
            for t in [shared, spread] {
                let ours = mlp.forward(&x, &t).unwrap();
                let theirs = mlp.forward_ops(&x, &t).unwrap();
                assert_eq!(ours.dims(), [batch, dim]);
                let diff = crate::nn::kernels::max_abs_diff(&ours, &theirs);
                assert!(diff < 1e-4, "{embedding:?} batch {batch} dim {dim}: {diff}");
            }
        }
    }

    #[test]
    fn frozen_layers_refuse_parameters_and_rows_that_do_not_fit() {
        use crate::nn::kernels::fused_mlp::Frozen;
        let shapes = [(4, 8), (8, 2)];
        let err = Frozen::new(&[0.0; 10], &shapes).err().unwrap().to_string();
        assert!(err.contains("10 parameters do not fit"), "{err}");
        let frozen = Frozen::new(&[0.5; 4 * 8 + 8 + 8 * 2 + 2], &shapes).unwrap();
        let err = frozen.forward(&[0.0; 7], 2).err().unwrap().to_string();
        assert!(err.contains("7 numbers are not 2 rows of 4"), "{err}");
        let err = (frozen.forward_shared(&[0.0; 2], &[0.0; 5], 2))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("5 shared inputs"), "{err}");
        // All ones in: 0.5 * 4 + 0.5 = 2.5 before SiLU, then 8 of those, + 0.5.
        let out = frozen.forward_shared(&[1.0; 9], &[1.0], 3).unwrap();
        let want = 8.0 * 0.5 * crate::nn::kernels::vmath::silu(2.5) + 0.5;
        assert!(
            out.iter().all(|v| (v - want).abs() < 1e-4),
            "{out:?} vs {want}"
        );
    }

    #[test]
    fn wrong_shapes_are_reported() {
        let cfg = MlpConfig::default();
        let dev = Device::Cpu;
        let init: HashMap<_, _> = cfg
            .init_weights(2, &mut stream(0, "init"), &dev)
            .unwrap()
            .into_iter()
            .collect();
        let err = Mlp::new(&cfg, 3, &init).err().unwrap().to_string();
        assert!(err.contains("layer 0 weight has shape"), "{err}");
    }
}
