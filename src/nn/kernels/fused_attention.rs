//! The U-Net's self-attention block (GroupNorm, 1x1 qkv projection, softmax attention
//! over positions, 1x1 output projection, + input) as one CPU op with its own backward
//! pass. At the resolutions it runs at (7x7 for MNIST) its arithmetic is tiny, yet as
//! some twenty candle ops (narrows, transposes, copies, a softmax in five ops) each
//! with its own zeroed gradient in candle's gradient store, it took a tenth of a
//! U-Net training step on the CPU, on one thread.
//!
//! The parameters enter as one flat tensor, as in `fused_res_block`.

use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::buffers::{Output, contiguous_f32 as slice};
use super::conv::{Conv2d, Geometry};
use super::gemm::{View, matmul};
use super::group_norm::{GroupNorm, Norm};
use super::packed::{pack, unpack};

/// The layers of one attention block, as the U-Net holds them.
pub struct Layers<'a> {
    pub norm: &'a GroupNorm,
    /// 1x1 convolution to queries, keys and values, stacked along the channels.
    pub qkv: &'a Conv2d,
    pub proj: &'a Conv2d,
}

/// `x + proj(attention(qkv(norm(x))))` for `x` [batch, c, h, w]; `None` where the CPU
/// op does not apply (another device or dtype, a projection without bias), and the
/// caller runs the layers one by one.
pub fn forward(layers: &Layers, x: &Tensor) -> Result<Option<Tensor>> {
    let convs = [layers.qkv, layers.proj];
    if !convs
        .iter()
        .all(|c| c.runs_on_cpu(x) && c.params().1.is_some())
    {
        return Ok(None);
    }
    let op = Block::new(layers, x.dims())?;
    // In `Block::split`'s order: norm, qkv, proj.
    let mut tensors = layers.norm.params().to_vec();
    for conv in convs {
        let (kernel, bias) = conv.params();
        tensors.push(kernel);
        tensors.extend(bias);
    }
    let packed = pack(tensors)?;
    Ok(Some(x.contiguous()?.apply_op2(&packed, op)?))
}

/// The block's sizes, and what its forward pass keeps for the backward pass.
#[derive(Clone)]
struct Block {
    norm: Norm,
    qkv: Geometry,
    proj: Geometry,
    batch: usize,
    channels: usize,
    pixels: usize,
    saved: Arc<Mutex<Option<Saved>>>,
}

/// The normalised input, queries/keys/values, attention weights, attended values.
struct Saved {
    normed: Vec<f32>,
    qkv: Vec<f32>,
    weights: Vec<f32>,
    attended: Vec<f32>,
}

/// The flat parameters, split back into layers: [weight, bias] each.
struct Params<'a> {
    norm: [&'a [f32]; 2],
    qkv: [&'a [f32]; 2],
    proj: [&'a [f32]; 2],
}

impl Block {
    fn new(layers: &Layers, dims: &[usize]) -> Result<Block> {
        let &[batch, channels, h, w] = dims else {
            candle_core::bail!("attention takes [b, c, h, w], got {dims:?}")
        };
        let qkv = layers.qkv.geometry(dims)?;
        let proj = layers.proj.geometry(dims)?;
        if qkv.output_dims() != [batch, 3 * channels, h, w] || proj.output_dims() != dims {
            candle_core::bail!(
                "attention over {dims:?}: qkv must be a 1x1 convolution to 3 x {channels} channels, proj to {channels}"
            )
        }
        Ok(Block {
            norm: layers.norm.kernel(channels, h * w, false),
            qkv,
            proj,
            batch,
            channels,
            pixels: h * w,
            saved: Arc::new(Mutex::new(None)),
        })
    }

    fn split<'a>(&self, params: &'a [f32]) -> Result<Params<'a>> {
        let c = self.channels;
        let sizes = [c, c, 3 * c * c, 3 * c, c * c, c];
        let parts = unpack(params, &sizes, "attention")?;
        Ok(Params {
            norm: [parts[0], parts[1]],
            qkv: [parts[2], parts[3]],
            proj: [parts[4], parts[5]],
        })
    }

    /// 1/sqrt(c), the scale of the dot products.
    fn scale(&self) -> f32 {
        1.0 / (self.channels as f32).sqrt()
    }

    /// One image: the attention weights [pixels, pixels], softmax over keys of the
    /// scaled dot products, and the attended values [c, pixels] from its queries,
    /// keys and values [3c, pixels].
    fn attend(&self, qkv: &[f32], weights: &mut [f32], attended: &mut [f32]) {
        let (c, n) = (self.channels, self.pixels);
        let (q, rest) = qkv.split_at(c * n);
        let (k, v) = rest.split_at(c * n);
        matmul(
            weights,
            View::rows(q, c, n).t(),
            View::rows(k, c, n),
            false,
            1,
        );
        for row in weights.chunks_mut(n) {
            softmax(row, self.scale());
        }
        // attended[ch, i] = sum_j v[ch, j] weights[i, j]
        let weights = View::rows(weights, n, n).t();
        matmul(attended, View::rows(v, c, n), weights, false, 1);
    }

    /// One image's gradient with respect to its queries, keys and values [3c, pixels],
    /// given the gradient `grad` [c, pixels] with respect to its attended values.
    fn attend_grad(&self, qkv: &[f32], weights: &[f32], grad: &[f32], out: &mut [f32]) {
        let (c, n) = (self.channels, self.pixels);
        let (q, rest) = qkv.split_at(c * n);
        let (k, v) = rest.split_at(c * n);
        let (gq, rest) = out.split_at_mut(c * n);
        let (gk, gv) = rest.split_at_mut(c * n);
        let (grad, weights_view) = (View::rows(grad, c, n), View::rows(weights, n, n));
        matmul(gv, grad, weights_view, false, 1);
        // The weights' gradient, then the scaled dot products' through the softmax.
        let mut g_scores = vec![0f32; n * n];
        matmul(&mut g_scores, grad.t(), View::rows(v, c, n), false, 1);
        for (g, p) in g_scores.chunks_mut(n).zip(weights.chunks(n)) {
            let dot: f32 = g.iter().zip(p).map(|(g, p)| g * p).sum();
            g.iter_mut()
                .zip(p)
                .for_each(|(g, p)| *g = self.scale() * p * (*g - dot));
        }
        let g_scores_view = View::rows(&g_scores, n, n);
        matmul(gq, View::rows(k, c, n), g_scores_view.t(), false, 1);
        matmul(gk, View::rows(q, c, n), g_scores_view, false, 1);
    }
}

/// `row = softmax(scale * row)`, shifted by the maximum so that exp cannot overflow.
fn softmax(row: &mut [f32], scale: f32) {
    let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let mut total = 0f32;
    for v in row.iter_mut() {
        *v = (scale * (*v - max)).exp();
        total += *v;
    }
    row.iter_mut().for_each(|v| *v /= total);
}

impl CustomOp2 for Block {
    fn name(&self) -> &'static str {
        "unet-attention"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_layout: &Layout,
        params: &CpuStorage,
        params_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let op = "attention";
        let x = slice(x, x_layout, op)?;
        let p = self.split(slice(params, params_layout, op)?)?;
        let (c, n) = (self.channels, self.pixels);
        let normed = self.norm.forward(x, p.norm[0], p.norm[1]);
        let qkv = self
            .qkv
            .forward(&normed, p.qkv[0], &self.qkv.per_image(p.qkv[1]));
        let mut weights = Output::new(self.batch * n * n);
        let mut attended = Output::new(self.batch * c * n);
        weights
            .par_chunks_mut(n * n)
            .zip(attended.par_chunks_mut(c * n))
            .zip(qkv.par_chunks(3 * c * n))
            .for_each(|((weights, attended), qkv)| self.attend(qkv, weights, attended));
        let (weights, attended) = (weights.into_vec(), attended.into_vec());
        let mut y = self
            .proj
            .forward(&attended, p.proj[0], &self.proj.per_image(p.proj[1]));
        y.par_iter_mut().zip(x).for_each(|(y, x)| *y += x);
        *self.saved.lock().expect("saved activations") = Some(Saved {
            normed,
            qkv,
            weights,
            attended,
        });
        Ok((CpuStorage::F32(y), x_layout.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        params: &Tensor,
        _y: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let packed = x.apply_op3_no_bwd(&grad.contiguous()?, params, &BlockGrad(self.clone()))?;
        let n = x.elem_count();
        Ok((
            Some(packed.narrow(0, 0, n)?.reshape(x.shape())?),
            Some(packed.narrow(0, n, params.elem_count())?),
        ))
    }
}

/// (x, grad y, params) -> [grad x; grad params], flattened, from the activations the
/// forward pass kept.
struct BlockGrad(Block);

impl CustomOp3 for BlockGrad {
    fn name(&self) -> &'static str {
        "unet-attention-grad"
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
        let block = &self.0;
        let op = "attention backward";
        let (x, gy) = (slice(x, x_layout, op)?, slice(grad, grad_layout, op)?);
        let p = block.split(slice(params, params_layout, op)?)?;
        let saved = block.saved.lock().expect("saved activations");
        let Some(saved) = saved.as_ref() else {
            candle_core::bail!("attention: backward pass without a forward pass")
        };
        let (c, n) = (block.channels, block.pixels);
        let g_attended = block.proj.input_grad(gy, p.proj[0]);
        let proj = block.proj.param_grads(&saved.attended, gy);
        let mut g_qkv = Output::new(block.batch * 3 * c * n);
        g_qkv
            .par_chunks_mut(3 * c * n)
            .zip(saved.qkv.par_chunks(3 * c * n))
            .zip(saved.weights.par_chunks(n * n))
            .zip(g_attended.par_chunks(c * n))
            .for_each(|(((out, qkv), weights), grad)| block.attend_grad(qkv, weights, grad, out));
        let g_qkv = g_qkv.into_vec();
        drop(g_attended);
        let g_normed = block.qkv.input_grad(&g_qkv, p.qkv[0]);
        let qkv = block.qkv.param_grads(&saved.normed, &g_qkv);
        drop(g_qkv);
        let norm = block.norm.backward(x, &g_normed, p.norm[0], p.norm[1]);
        let mut out = Vec::with_capacity(x.len() + params_layout.shape().elem_count());
        // The residual passes grad y to x unchanged.
        out.par_extend(norm[..x.len()].par_iter().zip(gy).map(|(a, b)| a + b));
        out.extend_from_slice(&norm[x.len()..]);
        block.qkv.push_summed_param_grads(&qkv, &mut out);
        block.proj.push_summed_param_grads(&proj, &mut out);
        let len = out.len();
        Ok((CpuStorage::F32(out), Shape::from(len)))
    }
}
