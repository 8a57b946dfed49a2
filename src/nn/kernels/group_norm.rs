//! GroupNorm, optionally followed by SiLU, as one CPU kernel with its own backward pass.
//! candle_nn's GroupNorm is a chain of a dozen tensor ops (means, broadcasts, a square
//! root) whose backward pass doubles the chain, and each op allocates a tensor the size
//! of the activations: in a U-Net training step at MNIST size they cost more than the
//! convolutions. Here the CPU computes each group's statistics once and the gradient in
//! closed form; on other devices candle_nn's ops run.

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Module, Result, Shape, Tensor};
use candle_nn::VarBuilder;
use rayon::prelude::*;

use super::buffers::Output;
use super::buffers::contiguous_f32 as slice;
use super::vmath::{lane_sum, lane_sum2, silu, silu_grad, with_wide_vectors};

/// A GroupNorm layer with candle_nn's parameters (`weight`, `bias`) and epsilon.
#[derive(Debug, Clone)]
pub struct GroupNorm {
    inner: candle_nn::GroupNorm,
    weight: Tensor,
    bias: Tensor,
    groups: usize,
    eps: f64,
}

/// GroupNorm over `channels` in `groups`, as `candle_nn::group_norm` builds it.
pub fn group_norm(groups: usize, channels: usize, eps: f64, vb: VarBuilder) -> Result<GroupNorm> {
    let weight = vb.get_with_hints(channels, "weight", candle_nn::Init::Const(1.0))?;
    let bias = vb.get_with_hints(channels, "bias", candle_nn::Init::Const(0.0))?;
    Ok(GroupNorm {
        inner: candle_nn::GroupNorm::new(weight.clone(), bias.clone(), channels, groups, eps)?,
        weight,
        bias,
        groups,
        eps,
    })
}

impl GroupNorm {
    /// silu(groupnorm(x)), the pair every residual block and the output layer apply.
    pub fn forward_silu(&self, x: &Tensor) -> Result<Tensor> {
        match self.fused(x, true)? {
            Some(y) => Ok(y),
            None => self.inner.forward(x)?.silu(),
        }
    }

    /// The CPU kernel for images of `channels` x `pixels`, for ops that fuse it.
    pub(super) fn kernel(&self, channels: usize, pixels: usize, silu: bool) -> Norm {
        Norm {
            channels,
            pixels,
            groups: self.groups,
            eps: self.eps,
            silu,
        }
    }

    /// The learnt per-channel scale and shift.
    pub(super) fn params(&self) -> [&Tensor; 2] {
        [&self.weight, &self.bias]
    }

    /// The CPU kernel, where it applies (f32 on the CPU).
    fn fused(&self, x: &Tensor, silu: bool) -> Result<Option<Tensor>> {
        if !x.device().is_cpu() || x.dtype() != DType::F32 || x.rank() < 2 {
            return Ok(None);
        }
        let (batch, channels) = (x.dim(0)?, x.dim(1)?);
        if channels != self.weight.elem_count() || !channels.is_multiple_of(self.groups) {
            candle_core::bail!(
                "group norm over {} channels in {} groups got input {:?}",
                self.weight.elem_count(),
                self.groups,
                x.dims()
            )
        }
        let op = self.kernel(channels, x.elem_count() / (batch * channels).max(1), silu);
        Ok(Some(x.contiguous()?.apply_op3(
            &self.weight.contiguous()?,
            &self.bias.contiguous()?,
            op,
        )?))
    }
}

impl Module for GroupNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self.fused(x, false)? {
            Some(y) => Ok(y),
            None => self.inner.forward(x),
        }
    }
}

/// Sizes of one normalisation: images of `channels` x `pixels`, channels in `groups`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Norm {
    channels: usize,
    pixels: usize,
    groups: usize,
    eps: f64,
    silu: bool,
}

impl Norm {
    /// Channels of each image.
    pub(super) fn channels(&self) -> usize {
        self.channels
    }

    /// Numbers in one group of one image.
    fn group_len(&self) -> usize {
        self.channels / self.groups * self.pixels
    }

    /// The normalised (and activated) images `x`, each [channels, pixels].
    pub(super) fn forward(&self, x: &[f32], weight: &[f32], bias: &[f32]) -> Vec<f32> {
        let image_len = self.channels * self.pixels;
        let mut out = Output::new(x.len());
        out.par_chunks_mut(image_len)
            .zip(x.par_chunks(image_len))
            .for_each(|(y, image)| {
                with_wide_vectors(
                    #[inline(always)]
                    || self.forward_image(image, weight, bias, y),
                )
            });
        out.into_vec()
    }

    /// [grad x; grad weight; grad bias], flattened, given `grad` with respect to the
    /// output.
    pub(super) fn backward(
        &self,
        x: &[f32],
        grad: &[f32],
        weight: &[f32],
        bias: &[f32],
    ) -> Vec<f32> {
        self.backward_into(Vec::new(), x, grad, weight, bias)
    }

    /// `backward`, written into `buffer` (emptied first), whose capacity a caller may
    /// have made room in for what it appends next.
    pub(super) fn backward_into(
        &self,
        buffer: Vec<f32>,
        x: &[f32],
        grad: &[f32],
        weight: &[f32],
        bias: &[f32],
    ) -> Vec<f32> {
        let (image_len, c) = (self.channels * self.pixels, self.channels);
        let mut grad_x = Output::in_buffer(buffer, x.len(), x.len() + 2 * c);
        // Per image: its part of grad x, and its sums for grad weight and grad bias.
        let partial: Vec<Vec<f32>> = grad_x
            .par_chunks_mut(image_len)
            .zip(x.par_chunks(image_len).zip(grad.par_chunks(image_len)))
            .map(|(gx, (image, gy))| {
                let mut sums = vec![0f32; 2 * c];
                with_wide_vectors(
                    #[inline(always)]
                    || self.backward_image(image, gy, weight, bias, gx, &mut sums),
                );
                sums
            })
            .collect();
        let mut out = grad_x.into_vec();
        let mut tail = vec![0f32; 2 * c];
        for sums in partial {
            tail.iter_mut().zip(sums).for_each(|(t, s)| *t += s);
        }
        out.extend_from_slice(&tail);
        out
    }

    /// Mean and 1/std of one group (two passes, in 16 f32 lanes totalled in f64).
    #[inline(always)]
    fn stats(&self, group: &[f32]) -> (f32, f32) {
        let n = group.len() as f64;
        let mean = (lane_sum(group, |v| v) / n) as f32;
        let var = lane_sum(group, |v| (v - mean) * (v - mean)) / n;
        (mean, (1.0 / (var + self.eps).sqrt()) as f32)
    }

    /// Normalises (and activates) one image [channels, pixels] into `y`.
    #[inline(always)]
    fn forward_image(&self, image: &[f32], weight: &[f32], bias: &[f32], y: &mut [f32]) {
        let (p, per_group) = (self.pixels, self.channels / self.groups);
        for (g, group) in image.chunks(self.group_len()).enumerate() {
            let (mean, rstd) = self.stats(group);
            for c in g * per_group..(g + 1) * per_group {
                let (scale, shift) = (weight[c] * rstd, bias[c] - weight[c] * rstd * mean);
                let (src, dst) = (&image[c * p..(c + 1) * p], &mut y[c * p..(c + 1) * p]);
                if self.silu {
                    dst.iter_mut()
                        .zip(src)
                        .for_each(|(d, &v)| *d = silu(v * scale + shift));
                } else {
                    dst.iter_mut()
                        .zip(src)
                        .for_each(|(d, &v)| *d = v * scale + shift);
                }
            }
        }
    }

    /// One image's gradient with respect to its input (into `gx`), and its sums for
    /// the weight's and the bias's gradients (into `sums`, [weight; bias]).
    ///
    /// With a = w x̂ + b and da the gradient reaching a (through SiLU if applied), the
    /// closed form per group of n numbers is dx = rstd (w da - mean(w da) - x̂ mean(w da x̂)).
    #[inline(always)]
    fn backward_image(
        &self,
        image: &[f32],
        gy: &[f32],
        weight: &[f32],
        bias: &[f32],
        gx: &mut [f32],
        sums: &mut [f32],
    ) {
        let (p, c_all, per_group) = (self.pixels, self.channels, self.channels / self.groups);
        let n = self.group_len() as f64;
        for (g, group) in image.chunks(self.group_len()).enumerate() {
            let (mean, rstd) = self.stats(group);
            let (mut s1, mut s2) = (0f64, 0f64);
            // First pass: da into gx, and per channel the sums of da and da x̂.
            for c in g * per_group..(g + 1) * per_group {
                let range = c * p..(c + 1) * p;
                let (x, dy, da) = (&image[range.clone()], &gy[range.clone()], &mut gx[range]);
                let (w, b) = (weight[c], bias[c]);
                for ((d, &v), &g) in da.iter_mut().zip(x).zip(dy) {
                    *d = if self.silu {
                        g * silu_grad((v - mean) * rstd * w + b)
                    } else {
                        g
                    };
                }
                let (sum_da, sum_da_xhat) = lane_sum2(da, x, |d, v| (d, d * (v - mean) * rstd));
                sums[c] = sum_da_xhat as f32;
                sums[c_all + c] = sum_da as f32;
                s1 += w as f64 * sum_da;
                s2 += w as f64 * sum_da_xhat;
            }
            let (m1, m2) = ((s1 / n) as f32, (s2 / n) as f32);
            // Second pass: the closed form, in place.
            for c in g * per_group..(g + 1) * per_group {
                let range = c * p..(c + 1) * p;
                let w = weight[c];
                for (d, &v) in gx[range.clone()].iter_mut().zip(&image[range]) {
                    let xhat = (v - mean) * rstd;
                    *d = rstd * (w * *d - m1 - xhat * m2);
                }
            }
        }
    }
}

impl CustomOp3 for Norm {
    fn name(&self) -> &'static str {
        "group-norm"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_layout: &Layout,
        weight: &CpuStorage,
        weight_layout: &Layout,
        bias: &CpuStorage,
        bias_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, weight, bias) = (
            slice(x, x_layout, "group norm")?,
            slice(weight, weight_layout, "group norm")?,
            slice(bias, bias_layout, "group norm")?,
        );
        let out = self.forward(x, weight, bias);
        Ok((CpuStorage::F32(out), x_layout.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        bias: &Tensor,
        _y: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let packed = x.apply_op3_no_bwd(
            &grad.contiguous()?,
            &Tensor::cat(&[weight, bias], 0)?,
            &NormGrad(*self),
        )?;
        let n = x.elem_count();
        let c = self.channels;
        Ok((
            Some(packed.narrow(0, 0, n)?.reshape(x.shape())?),
            Some(packed.narrow(0, n, c)?),
            Some(packed.narrow(0, n + c, c)?),
        ))
    }
}

/// (x, grad y, [weight; bias]) -> [grad x; grad weight; grad bias], flattened.
struct NormGrad(Norm);

impl CustomOp3 for NormGrad {
    fn name(&self) -> &'static str {
        "group-norm-grad"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_layout: &Layout,
        grad: &CpuStorage,
        grad_layout: &Layout,
        params: &CpuStorage,
        params_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let norm = self.0;
        let (x, grad, params) = (
            slice(x, x_layout, "group norm")?,
            slice(grad, grad_layout, "group norm")?,
            slice(params, params_layout, "group norm")?,
        );
        let (weight, bias) = params.split_at(norm.channels);
        let out = norm.backward(x, grad, weight, bias);
        let len = out.len();
        Ok((CpuStorage::F32(out), Shape::from(len)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn random(shape: &[usize], seed: u64, scale: f32) -> Tensor {
        let t = crate::nn::kernels::random_tensor(shape, seed, "group_norm");
        t.affine(scale as f64, 0.3).unwrap()
    }

    use crate::nn::kernels::max_abs_diff as max_diff;

    /// The fused kernel against candle_nn's chain of ops (then SiLU), forward and all
    /// three gradients, with trained-looking (not 1 and 0) weight and bias.
    #[test]
    fn fused_group_norm_and_silu_match_candle_nns_ops() {
        for (i, &(shape, groups, silu)) in [
            (&[3usize, 8, 5, 5][..], 4, true),
            (&[2, 6, 4, 3][..], 3, false),
            (&[1, 4, 7, 7][..], 1, true),
            (&[4, 8, 1, 2][..], 4, false),
        ]
        .iter()
        .enumerate()
        {
            let channels = shape[1];
            let x = Var::from_tensor(&random(shape, i as u64, 2.0)).unwrap();
            let vm = candle_nn::VarMap::new();
            let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
            let norm = group_norm(groups, channels, 1e-6, vb).unwrap();
            for var in vm.all_vars() {
                let values = random(&[channels], 50 + i as u64 + var.elem_count() as u64, 1.0);
                var.set(&values).unwrap();
            }
            let (ours, theirs) = if silu {
                (
                    norm.forward_silu(&x).unwrap(),
                    norm.inner.forward(&x).unwrap().silu().unwrap(),
                )
            } else {
                (norm.forward(&x).unwrap(), norm.inner.forward(&x).unwrap())
            };
            assert!(max_diff(&ours, &theirs) < 1e-4, "forward, case {i}");
            let w = random(shape, 99, 1.0);
            let ga = (&ours * &w).unwrap().sum_all().unwrap().backward().unwrap();
            let gb = (&theirs * &w)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            for (name, t) in [
                ("x", x.as_tensor()),
                ("weight", &norm.weight),
                ("bias", &norm.bias),
            ] {
                let (a, b) = (ga.get(t).unwrap(), gb.get(t).unwrap());
                assert!(
                    max_diff(a, b) < 1e-3,
                    "grad {name}, case {i}: {}",
                    max_diff(a, b)
                );
            }
        }
    }
}
