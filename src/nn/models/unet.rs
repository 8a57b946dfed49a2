//! The U-Net of DDPM (Ho et al. 2020, after PixelCNN++), at a size a laptop can train:
//! residual blocks with GroupNorm and SiLU that add a projection of the time embedding,
//! strided-convolution down-sampling and nearest-neighbour up-sampling with skip
//! connections, and single-head self-attention at chosen resolutions.

use candle_core::{D, Device, Module, Result, Tensor};
use candle_nn::{Conv2dConfig, Linear, VarBuilder, linear};
use serde::{Deserialize, Serialize};

use super::embedding::{fourier, sinusoidal};
use super::mlp::Embedding;
use crate::data::images::ImageShape;
use crate::nn::kernels::conv::{Conv2d, conv2d};
use crate::nn::kernels::group_norm::{GroupNorm, group_norm};
use crate::nn::kernels::upsample::upsample2;
use crate::nn::kernels::{fused_attention, fused_res_block};
use crate::rng::{normals, stream};

/// Architecture of the U-Net; the image shape comes from the dataset.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UNetConfig {
    /// Channels at full resolution (DDPM: 128; 32 trains on a CPU).
    #[serde(default = "channels")]
    pub channels: usize,
    /// Channel multiplier per resolution level; each level after the first halves the
    /// resolution (DDPM CIFAR-10: [1, 2, 2, 2]).
    #[serde(default = "channel_mult")]
    pub channel_mult: Vec<usize>,
    /// Residual blocks per level on the way down (one more on the way up).
    #[serde(default = "res_blocks")]
    pub res_blocks: usize,
    /// Resolutions (side lengths) with self-attention after each residual block
    /// (DDPM: 16); the middle always has one.
    #[serde(default = "attention")]
    pub attention: Vec<usize>,
    /// Groups of every GroupNorm (DDPM: 32); must divide every channel count.
    #[serde(default = "groups")]
    pub groups: usize,
    /// `sinusoidal` features of 1000 t (DDPM) or Gaussian `fourier` features
    /// (score_sde's continuous-time models).
    #[serde(default)]
    pub embedding: Embedding,
    /// Standard deviation of the Fourier frequencies (score_sde: 16).
    #[serde(default = "fourier_scale")]
    pub fourier_scale: f64,
    /// What the network is told about the noise level: `time` (t in [0, 1]) or
    /// `log_std` (log sigma_t, NCSN's noise conditioning).
    #[serde(default)]
    pub condition: Condition,
}

/// The name of the time embedding's Fourier frequencies among the saved tensors.
pub const FREQUENCIES: &str = "time.frequencies";

/// The scalar the time embedding encodes.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    #[default]
    Time,
    LogStd,
}

fn channels() -> usize {
    32
}
fn channel_mult() -> Vec<usize> {
    vec![1, 2, 2]
}
fn res_blocks() -> usize {
    1
}
fn attention() -> Vec<usize> {
    vec![7]
}
fn groups() -> usize {
    8
}
fn fourier_scale() -> f64 {
    16.0
}

impl Default for UNetConfig {
    fn default() -> Self {
        UNetConfig {
            channels: channels(),
            channel_mult: channel_mult(),
            res_blocks: res_blocks(),
            attention: attention(),
            groups: groups(),
            embedding: Embedding::Sinusoidal,
            fourier_scale: fourier_scale(),
            condition: Condition::Time,
        }
    }
}

impl UNetConfig {
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.channels == 0 || self.channel_mult.is_empty() || self.channel_mult.contains(&0) {
            return Err("`channels` and every `channel_mult` must be at least 1".into());
        }
        if self.res_blocks == 0 {
            return Err("`res_blocks` must be at least 1".into());
        }
        if self.groups == 0 {
            return Err("`groups` must be at least 1".into());
        }
        for &m in &self.channel_mult {
            if !(self.channels * m).is_multiple_of(self.groups) {
                return Err(format!(
                    "`groups` ({}) must divide every level's channels; {} x {m} = {} does not",
                    self.groups,
                    self.channels,
                    self.channels * m
                ));
            }
        }
        if !self.channels.is_multiple_of(2) {
            return Err("`channels` must be even (it is the time embedding's size)".into());
        }
        if !(self.fourier_scale > 0.0) {
            return Err("`fourier_scale` must be positive".into());
        }
        Ok(())
    }

    /// The fixed Fourier frequencies of the time embedding (`channels / 2` of them,
    /// N(0, fourier_scale^2)), saved with the weights as [`FREQUENCIES`].
    pub fn fourier_frequencies(&self) -> Vec<f32> {
        normals(&mut stream(0, "unet/fourier"), self.channels / 2)
            .iter()
            .map(|z| z * self.fourier_scale as f32)
            .collect()
    }

    /// Checks that the image can be halved once per extra level.
    pub fn check_shape(&self, shape: &ImageShape) -> std::result::Result<(), String> {
        let halvings = self.channel_mult.len() - 1;
        let factor = 1 << halvings;
        if !shape.height.is_multiple_of(factor) || !shape.width.is_multiple_of(factor) {
            return Err(format!(
                "a U-Net with {} levels halves the image {halvings} times, so its sides must be multiples of {factor}; the images are {}x{}: use fewer `channel_mult` entries or another size",
                self.channel_mult.len(),
                shape.height,
                shape.width
            ));
        }
        Ok(())
    }
}

/// Residual block: GN, SiLU, conv, + time projection, GN, SiLU, conv, + skip.
struct ResBlock {
    norm1: GroupNorm,
    conv1: Conv2d,
    time: Linear,
    norm2: GroupNorm,
    conv2: Conv2d,
    skip: Option<Conv2d>,
}

fn conv3(cin: usize, cout: usize, stride: usize, vb: VarBuilder) -> Result<Conv2d> {
    let cfg = Conv2dConfig {
        padding: 1,
        stride,
        ..Default::default()
    };
    conv2d(cin, cout, 3, cfg, vb)
}

impl ResBlock {
    fn new(cin: usize, cout: usize, tdim: usize, groups: usize, vb: VarBuilder) -> Result<Self> {
        Ok(ResBlock {
            norm1: group_norm(groups, cin, 1e-6, vb.pp("norm1"))?,
            conv1: conv3(cin, cout, 1, vb.pp("conv1"))?,
            time: linear(tdim, cout, vb.pp("time"))?,
            norm2: group_norm(groups, cout, 1e-6, vb.pp("norm2"))?,
            conv2: conv3(cout, cout, 1, vb.pp("conv2"))?,
            skip: if cin != cout {
                Some(conv2d(cin, cout, 1, Default::default(), vb.pp("skip"))?)
            } else {
                None
            },
        })
    }

    /// The block on `inputs` concatenated along the channels (on the way up, the
    /// previous output and a skip).
    fn forward(&self, inputs: &[&Tensor], temb: &Tensor) -> Result<Tensor> {
        let t = self.time.forward(temb)?;
        let layers = fused_res_block::Layers {
            norm1: &self.norm1,
            conv1: &self.conv1,
            norm2: &self.norm2,
            conv2: &self.conv2,
            skip: self.skip.as_ref(),
        };
        match fused_res_block::forward(&layers, inputs, &t)? {
            Some(y) => Ok(y),
            None => self.forward_layers(&Tensor::cat(inputs, 1)?, &t),
        }
    }

    /// The block layer by layer (off the CPU), given the time embedding's projection.
    fn forward_layers(&self, x: &Tensor, t: &Tensor) -> Result<Tensor> {
        let h = self
            .conv1
            .forward_shifted(&self.norm1.forward_silu(x)?, t)?;
        let h = self.conv2.forward(&self.norm2.forward_silu(&h)?)?;
        let skip = match &self.skip {
            Some(conv) => conv.forward(x)?,
            None => x.clone(),
        };
        h + skip
    }
}

/// Single-head self-attention over positions, with a residual connection. On the CPU
/// one fused op; elsewhere candle's ops, with the differentiable softmax (candle_nn's
/// fused one has no backward pass).
struct Attention {
    norm: GroupNorm,
    qkv: Conv2d,
    proj: Conv2d,
}

impl Attention {
    fn new(ch: usize, groups: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Attention {
            norm: group_norm(groups, ch, 1e-6, vb.pp("norm"))?,
            qkv: conv2d(ch, 3 * ch, 1, Default::default(), vb.pp("qkv"))?,
            proj: conv2d(ch, ch, 1, Default::default(), vb.pp("proj"))?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let layers = fused_attention::Layers {
            norm: &self.norm,
            qkv: &self.qkv,
            proj: &self.proj,
        };
        match fused_attention::forward(&layers, x)? {
            Some(y) => Ok(y),
            None => self.forward_layers(x),
        }
    }

    /// The block op by op (off the CPU).
    fn forward_layers(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let qkv = self.qkv.forward(&self.norm.forward(x)?)?;
        let qkv = qkv.reshape((b, 3, c, h * w))?;
        let q = qkv
            .narrow(1, 0, 1)?
            .squeeze(1)?
            .transpose(1, 2)?
            .contiguous()?;
        let k = qkv.narrow(1, 1, 1)?.squeeze(1)?.contiguous()?;
        let v = qkv.narrow(1, 2, 1)?.squeeze(1)?.contiguous()?;
        let weights = (q.matmul(&k)? / (c as f64).sqrt())?;
        let weights = candle_nn::ops::softmax(&weights, D::Minus1)?;
        // [b, c, hw] x [b, hw, hw]^T -> [b, c, hw]
        let out = v.matmul(&weights.transpose(1, 2)?.contiguous()?)?;
        let out = self.proj.forward(&out.reshape((b, c, h, w))?)?;
        x + out
    }
}

/// One stage of the network, in the order it runs.
enum Layer {
    Res(ResBlock),
    Attn(Attention),
    Down(Conv2d),
    Up(Conv2d),
}

/// The network itself.
pub struct UNet {
    shape: ImageShape,
    channels: usize,
    frequencies: Option<Tensor>,
    time1: Linear,
    time2: Linear,
    conv_in: Conv2d,
    /// Down path; every layer's output is kept for a skip connection.
    down: Vec<Layer>,
    middle: Vec<Layer>,
    /// Up path; each residual block concatenates the last kept skip.
    up: Vec<Layer>,
    norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl UNet {
    /// Builds the network with weights from `vb` (a VarMap while training, loaded
    /// tensors afterwards).
    pub fn new(config: &UNetConfig, shape: ImageShape, vb: VarBuilder) -> Result<UNet> {
        config
            .check_shape(&shape)
            .map_err(candle_core::Error::Msg)?;
        let ch = config.channels;
        let tdim = 4 * ch;
        let g = config.groups;
        let levels = config.channel_mult.len();
        let mut down = Vec::new();
        let mut skips = vec![ch];
        let mut cur = ch;
        let mut res = shape.height;
        let vd = vb.pp("down");
        for (level, &mult) in config.channel_mult.iter().enumerate() {
            for r in 0..config.res_blocks {
                let name = format!("{level}.{r}");
                down.push(Layer::Res(ResBlock::new(
                    cur,
                    ch * mult,
                    tdim,
                    g,
                    vd.pp(format!("{name}.res")),
                )?));
                cur = ch * mult;
                if config.attention.contains(&res) {
                    down.push(Layer::Attn(Attention::new(
                        cur,
                        g,
                        vd.pp(format!("{name}.attn")),
                    )?));
                }
                skips.push(cur);
            }
            if level + 1 < levels {
                down.push(Layer::Down(conv3(
                    cur,
                    cur,
                    2,
                    vd.pp(format!("{level}.down")),
                )?));
                skips.push(cur);
                res /= 2;
            }
        }
        let vm = vb.pp("mid");
        let middle = vec![
            Layer::Res(ResBlock::new(cur, cur, tdim, g, vm.pp("res1"))?),
            Layer::Attn(Attention::new(cur, g, vm.pp("attn"))?),
            Layer::Res(ResBlock::new(cur, cur, tdim, g, vm.pp("res2"))?),
        ];
        let mut up = Vec::new();
        let vu = vb.pp("up");
        for (level, &mult) in config.channel_mult.iter().enumerate().rev() {
            for r in 0..=config.res_blocks {
                let name = format!("{level}.{r}");
                let skip = skips.pop().expect("one skip per down layer");
                up.push(Layer::Res(ResBlock::new(
                    cur + skip,
                    ch * mult,
                    tdim,
                    g,
                    vu.pp(format!("{name}.res")),
                )?));
                cur = ch * mult;
                if config.attention.contains(&res) {
                    up.push(Layer::Attn(Attention::new(
                        cur,
                        g,
                        vu.pp(format!("{name}.attn")),
                    )?));
                }
            }
            if level > 0 {
                up.push(Layer::Up(conv3(cur, cur, 1, vu.pp(format!("{level}.up")))?));
                res *= 2;
            }
        }
        let frequencies = match config.embedding {
            Embedding::Sinusoidal => None,
            // Loaded with the weights when they carry them (saved since they are part
            // of the architecture); drawn from their stream otherwise.
            Embedding::Fourier if vb.contains_tensor(FREQUENCIES) => {
                Some(vb.get(ch / 2, FREQUENCIES)?)
            }
            Embedding::Fourier => Some(Tensor::from_vec(
                config.fourier_frequencies(),
                ch / 2,
                vb.device(),
            )?),
        };
        Ok(UNet {
            shape,
            channels: ch,
            frequencies,
            time1: linear(ch, tdim, vb.pp("time.0"))?,
            time2: linear(tdim, tdim, vb.pp("time.1"))?,
            conv_in: conv3(shape.channels, ch, 1, vb.pp("conv_in"))?,
            down,
            middle,
            up,
            norm_out: group_norm(g, ch * config.channel_mult[0], 1e-6, vb.pp("norm_out"))?,
            conv_out: conv3(
                ch * config.channel_mult[0],
                shape.channels,
                1,
                vb.pp("conv_out"),
            )?,
        })
    }

    /// `x`: [batch, c*h*w] flattened images; `cond`: [batch] conditioning values (t,
    /// or log sigma). Returns [batch, c*h*w].
    pub fn forward(&self, x: &Tensor, cond: &Tensor) -> Result<Tensor> {
        let batch = x.dim(0)?;
        let s = self.shape;
        let x = x.reshape((batch, s.channels, s.height, s.width))?;
        let emb = match &self.frequencies {
            Some(w) => fourier(cond, w)?,
            None => sinusoidal(&cond.affine(1000.0, 0.0)?, self.channels)?,
        };
        let temb = self
            .time2
            .forward(&self.time1.forward(&emb)?.silu()?)?
            .silu()?;
        let mut h = self.conv_in.forward(&x)?;
        let mut skips = vec![h.clone()];
        for layer in &self.down {
            h = match layer {
                Layer::Res(block) => block.forward(&[&h], &temb)?,
                Layer::Attn(attn) => {
                    skips.pop();
                    attn.forward(&h)?
                }
                Layer::Down(conv) => conv.forward(&h)?,
                Layer::Up(_) => unreachable!("no up-sampling on the way down"),
            };
            skips.push(h.clone());
        }
        for layer in &self.middle {
            h = match layer {
                Layer::Res(block) => block.forward(&[&h], &temb)?,
                Layer::Attn(attn) => attn.forward(&h)?,
                _ => unreachable!("the middle has residual blocks and attention"),
            };
        }
        for layer in &self.up {
            h = match layer {
                Layer::Res(block) => {
                    let skip = skips.pop().expect("one skip per up block");
                    block.forward(&[&h, &skip], &temb)?
                }
                Layer::Attn(attn) => attn.forward(&h)?,
                Layer::Up(conv) => conv.forward(&upsample2(&h)?)?,
                Layer::Down(_) => unreachable!("no down-sampling on the way up"),
            };
        }
        let out = self.conv_out.forward(&self.norm_out.forward_silu(&h)?)?;
        out.reshape((batch, s.dim()))
    }
}

/// A device-agnostic check used by tests and the model stage: the parameter count.
pub fn parameter_count(config: &UNetConfig, shape: ImageShape) -> Result<usize> {
    let map = candle_nn::VarMap::new();
    let vb = VarBuilder::from_varmap(&map, candle_core::DType::F32, &Device::Cpu);
    UNet::new(config, shape, vb)?;
    let data = map.data().lock().expect("varmap lock");
    Ok(data.values().map(|v| v.elem_count()).sum())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::models::init::seeded_varmap;

    fn tiny() -> (UNetConfig, ImageShape) {
        (
            UNetConfig {
                channels: 8,
                channel_mult: vec![1, 2],
                res_blocks: 1,
                attention: vec![4],
                groups: 4,
                ..Default::default()
            },
            ImageShape {
                channels: 1,
                height: 8,
                width: 8,
            },
        )
    }

    #[test]
    fn output_has_the_input_shape() {
        let (mut cfg, shape) = tiny();
        for embedding in [Embedding::Sinusoidal, Embedding::Fourier] {
            cfg.embedding = embedding;
            let (net, _) = seeded_varmap(&Device::Cpu, &mut stream(0, "init"), |vb| {
                UNet::new(&cfg, shape, vb)
            })
            .unwrap();
            let x = Tensor::zeros((3, 64), candle_core::DType::F32, &Device::Cpu).unwrap();
            let t = Tensor::new(&[0.1f32, 0.5, 0.9], &Device::Cpu).unwrap();
            assert_eq!(net.forward(&x, &t).unwrap().dims(), &[3, 64]);
        }
        let rgb = ImageShape {
            channels: 3,
            height: 16,
            width: 16,
        };
        let cfg3 = UNetConfig {
            channel_mult: vec![1, 2, 2],
            attention: vec![8],
            ..cfg
        };
        let (net, _) = seeded_varmap(&Device::Cpu, &mut stream(0, "init"), |vb| {
            UNet::new(&cfg3, rgb, vb)
        })
        .unwrap();
        let x = Tensor::zeros((2, 768), candle_core::DType::F32, &Device::Cpu).unwrap();
        let t = Tensor::new(&[0.1f32, 0.5], &Device::Cpu).unwrap();
        assert_eq!(net.forward(&x, &t).unwrap().dims(), &[2, 768]);
    }

    #[test]
    fn every_parameter_gets_a_gradient() {
        let (cfg, shape) = tiny();
        let (net, map) = seeded_varmap(&Device::Cpu, &mut stream(1, "init"), |vb| {
            UNet::new(&cfg, shape, vb)
        })
        .unwrap();
        let x =
            Tensor::from_vec(normals(&mut stream(2, "x"), 2 * 64), (2, 64), &Device::Cpu).unwrap();
        let t = Tensor::new(&[0.2f32, 0.7], &Device::Cpu).unwrap();
        let loss = net
            .forward(&x, &t)
            .unwrap()
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap();
        let grads = loss.backward().unwrap();
        let data = map.data().lock().unwrap();
        assert!(data.len() > 30, "{} parameters", data.len());
        crate::nn::models::assert_every_parameter_learns(&grads, data.iter());
    }

    /// Moves every variable off its initial value, so that identity scales and zero
    /// biases cannot hide a mistake in a fused op.
    fn perturb(map: &candle_nn::VarMap, seed: u64) {
        for (i, var) in map.all_vars().iter().enumerate() {
            let noise = crate::nn::kernels::random_tensor(var.dims(), seed + i as u64, "perturb");
            var.set(&(var.as_tensor() + noise.affine(0.3, 0.1).unwrap()).unwrap())
                .unwrap();
        }
    }

    /// `fused` and `layers` agree, and so do the gradients of a random weighting of
    /// them with respect to every variable of `map` and every tensor of `inputs`.
    fn assert_same_outputs_and_grads(
        fused: &Tensor,
        layers: &Tensor,
        map: &candle_nn::VarMap,
        inputs: &[(&str, &Tensor)],
        case: &str,
    ) {
        let diff = crate::nn::kernels::max_abs_diff(fused, layers);
        assert!(diff < 1e-4, "output, {case}: {diff}");
        let weights = crate::nn::kernels::random_tensor(fused.dims(), 9, "loss");
        let loss = |y: &Tensor| (y * &weights).unwrap().sum_all().unwrap();
        let (ga, gb) = (
            loss(fused).backward().unwrap(),
            loss(layers).backward().unwrap(),
        );
        let data = map.data().lock().unwrap();
        let tensors = data
            .iter()
            .map(|(name, v)| (name.clone(), v.as_tensor().clone()))
            .chain(
                inputs
                    .iter()
                    .map(|(name, t)| (name.to_string(), (*t).clone())),
            );
        for (name, tensor) in tensors {
            let (a, b) = (ga.get(&tensor).unwrap(), gb.get(&tensor).unwrap());
            let diff = crate::nn::kernels::max_abs_diff(a, b);
            assert!(diff < 1e-3, "grad {name}, {case}: {diff}");
        }
    }

    /// The fused CPU block against the same layers one by one: output and the
    /// gradients of the input, the time embedding and every parameter, with and
    /// without a projected skip, on trained-looking (perturbed) parameters.
    #[test]
    fn the_fused_residual_block_matches_its_layers() {
        // (input channels, output channels, whether the input comes in two parts).
        let cases = [(4, 4, false), (4, 8, false), (6, 4, true)];
        for (case, (cin, cout, two_parts)) in cases.into_iter().enumerate() {
            let (block, map) =
                seeded_varmap(&Device::Cpu, &mut stream(case as u64, "init"), |vb| {
                    ResBlock::new(cin, cout, 6, 2, vb)
                })
                .unwrap();
            perturb(&map, 40);
            let x = candle_core::Var::from_tensor(&crate::nn::kernels::random_tensor(
                &[3, cin, 5, 6],
                7,
                "x",
            ))
            .unwrap();
            let temb = candle_core::Var::from_tensor(&crate::nn::kernels::random_tensor(
                &[3, 6],
                8,
                "temb",
            ))
            .unwrap();
            // Two parts: the first two channels and the rest, as separate tensors.
            let parts = if two_parts {
                vec![
                    x.narrow(1, 0, 2).unwrap().contiguous().unwrap(),
                    x.narrow(1, 2, cin - 2).unwrap().contiguous().unwrap(),
                ]
            } else {
                vec![x.as_tensor().clone()]
            };
            let fused = block
                .forward(&parts.iter().collect::<Vec<_>>(), &temb)
                .unwrap();
            let t = block.time.forward(&temb).unwrap();
            let layers = block.forward_layers(&x, &t).unwrap();
            let inputs = [("x", x.as_tensor()), ("temb", temb.as_tensor())];
            let case = format!("case {case}");
            assert_same_outputs_and_grads(&fused, &layers, &map, &inputs, &case);
        }
    }

    /// The fused CPU attention block against the same layers op by op: output and the
    /// gradients of the input and every parameter, on perturbed parameters.
    #[test]
    fn the_fused_attention_block_matches_its_layers() {
        let (attention, map) = seeded_varmap(&Device::Cpu, &mut stream(3, "init"), |vb| {
            Attention::new(8, 2, vb)
        })
        .unwrap();
        perturb(&map, 60);
        let x = candle_core::Var::from_tensor(&crate::nn::kernels::random_tensor(
            &[3, 8, 4, 5],
            7,
            "x",
        ))
        .unwrap();
        let fused = attention.forward(&x).unwrap();
        let layers = attention.forward_layers(&x).unwrap();
        let inputs = [("x", x.as_tensor())];
        assert_same_outputs_and_grads(&fused, &layers, &map, &inputs, "attention");
    }

    #[test]
    fn shapes_that_cannot_be_halved_are_refused() {
        let cfg = UNetConfig::default();
        let odd = ImageShape {
            channels: 1,
            height: 30,
            width: 30,
        };
        let err = cfg.check_shape(&odd).unwrap_err();
        assert!(err.contains("multiples of 4"), "{err}");
        let mnist = ImageShape {
            channels: 1,
            height: 28,
            width: 28,
        };
        let count = parameter_count(&cfg, mnist).unwrap();
        assert!(count > 100_000 && count < 3_000_000, "{count}");
    }
}
