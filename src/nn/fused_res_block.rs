//! A U-Net residual block (GroupNorm, SiLU, conv, + time shift, GroupNorm, SiLU, conv,
//! + skip) as one CPU op with its own backward pass. As separate candle ops, every
//! activation-sized gradient between them went through candle's gradient store: a
//! zeroed tensor allocated and added to, on the main thread, six times per block,
//! while the worker threads waited. Here the block's inner gradients stay in this
//! op's buffers and only the input, the time shift and the parameters get one.
//!
//! The parameters enter as one flat tensor (`Tensor::cat` of the layers' variables,
//! whose backward pass splits the gradient per variable), as in `fused_mlp`.

use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::conv::{Conv2d, Geometry};
use super::gemm::contiguous_f32 as slice;
use super::group_norm::{GroupNorm, Norm};

/// The layers of one block, as the U-Net holds them.
pub struct Layers<'a> {
    pub norm1: &'a GroupNorm,
    pub conv1: &'a Conv2d,
    pub norm2: &'a GroupNorm,
    pub conv2: &'a Conv2d,
    /// The 1x1 projection of the input when the channel count changes.
    pub skip: Option<&'a Conv2d>,
}

/// The block applied to `x` [batch, cin, h, w] with the time embedding's projection
/// `shift` [batch, cout] added after the first convolution; `None` where the CPU op
/// does not apply (another device or dtype, a convolution without bias), and the
/// caller runs the layers one by one.
pub fn forward(layers: &Layers, x: &Tensor, shift: &Tensor) -> Result<Option<Tensor>> {
    let convs = [Some(layers.conv1), Some(layers.conv2), layers.skip];
    if !convs
        .iter()
        .flatten()
        .all(|c| c.runs_on_cpu(x) && c.params().1.is_some())
    {
        return Ok(None);
    }
    let op = Block::new(layers, x.dims())?;
    // In `Block::split`'s order: norm1, conv1, norm2, conv2, skip.
    let mut params = Vec::new();
    for (norm, conv) in [(layers.norm1, layers.conv1), (layers.norm2, layers.conv2)] {
        params.extend(norm.params());
        params.extend(conv_params(conv));
    }
    params.extend(layers.skip.into_iter().flat_map(conv_params));
    let flat: Vec<Tensor> = params
        .into_iter()
        .map(|t| t.flatten_all())
        .collect::<Result<_>>()?;
    let params = Tensor::cat(&flat, 0)?;
    if shift.dims() != [op.conv1.output_dims()[0], op.conv1.output_dims()[1]] {
        candle_core::bail!(
            "residual block: time shift {:?} should be [batch, cout]",
            shift.dims()
        )
    }
    Ok(Some(x.contiguous()?.apply_op3(
        &shift.contiguous()?,
        &params,
        op,
    )?))
}

/// A convolution's kernel and bias (checked present by `forward`).
fn conv_params(conv: &Conv2d) -> impl Iterator<Item = &Tensor> {
    let (kernel, bias) = conv.params();
    std::iter::once(kernel).chain(bias)
}

/// The block's sizes, and what its forward pass keeps for the backward pass.
#[derive(Clone)]
struct Block {
    norm1: Norm,
    conv1: Geometry,
    norm2: Norm,
    conv2: Geometry,
    skip: Option<Geometry>,
    saved: Arc<Mutex<Option<Saved>>>,
}

/// Activations inside the block: silu(norm1(x)), conv1's output, silu(norm2(·)).
struct Saved {
    a: Vec<f32>,
    h1: Vec<f32>,
    b2: Vec<f32>,
}

/// The flat parameters, split back into layers.
struct Params<'a> {
    norm1: [&'a [f32]; 2],
    conv1: [&'a [f32]; 2],
    norm2: [&'a [f32]; 2],
    conv2: [&'a [f32]; 2],
    skip: Option<[&'a [f32]; 2]>,
}

impl Block {
    fn new(layers: &Layers, dims: &[usize]) -> Result<Block> {
        let conv1 = layers.conv1.geometry(dims)?;
        let [batch, cout, h, w] = conv1.output_dims();
        let conv2 = layers.conv2.geometry(&[batch, cout, h, w])?;
        let skip = layers.skip.map(|s| s.geometry(dims)).transpose()?;
        if conv2.output_dims() != conv1.output_dims()
            || skip.is_some_and(|s| s.output_dims() != conv1.output_dims())
            || (skip.is_none() && dims != conv1.output_dims())
        {
            candle_core::bail!("residual block: the convolutions must keep the image size")
        }
        let pixels = h * w;
        Ok(Block {
            norm1: layers.norm1.kernel(dims[1], pixels, true),
            conv1,
            norm2: layers.norm2.kernel(cout, pixels, true),
            conv2,
            skip,
            saved: Arc::new(Mutex::new(None)),
        })
    }

    fn sizes(&self) -> Vec<usize> {
        let [_, cout, _, _] = self.conv1.output_dims();
        let cin = self.norm1.channels();
        let mut sizes = vec![cin, cin, cout * self.conv1.patch(), cout];
        sizes.extend([cout, cout, cout * self.conv2.patch(), cout]);
        if let Some(skip) = self.skip {
            sizes.extend([cout * skip.patch(), cout]);
        }
        sizes
    }

    fn split<'a>(&self, params: &'a [f32]) -> Result<Params<'a>> {
        let sizes = self.sizes();
        if params.len() != sizes.iter().sum::<usize>() {
            candle_core::bail!(
                "residual block: {} parameters, expected {sizes:?}",
                params.len()
            )
        }
        let mut parts = Vec::new();
        let mut rest = params;
        for size in sizes {
            let (part, tail) = rest.split_at(size);
            parts.push(part);
            rest = tail;
        }
        let pair = |i: usize| [parts[i], parts[i + 1]];
        Ok(Params {
            norm1: pair(0),
            conv1: pair(2),
            norm2: pair(4),
            conv2: pair(6),
            skip: self.skip.map(|_| pair(8)),
        })
    }

    fn batch(&self) -> usize {
        self.conv1.output_dims()[0]
    }

    /// A per-channel bias as the per-image bias the convolution kernel takes.
    fn per_image(&self, bias: &[f32]) -> Vec<f32> {
        bias.repeat(self.batch())
    }
}

impl CustomOp3 for Block {
    fn name(&self) -> &'static str {
        "unet-residual-block"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_layout: &Layout,
        shift: &CpuStorage,
        shift_layout: &Layout,
        params: &CpuStorage,
        params_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let op = "residual block";
        let x = slice(x, x_layout, op)?;
        let shift = slice(shift, shift_layout, op)?;
        let p = self.split(slice(params, params_layout, op)?)?;
        let a = self.norm1.forward(x, p.norm1[0], p.norm1[1]);
        let cout = p.conv1[1].len();
        let bias1: Vec<f32> = shift
            .chunks(cout)
            .flat_map(|s| s.iter().zip(p.conv1[1]).map(|(s, b)| s + b))
            .collect();
        let h1 = self.conv1.forward(&a, p.conv1[0], &bias1);
        let b2 = self.norm2.forward(&h1, p.norm2[0], p.norm2[1]);
        let mut y = self
            .conv2
            .forward(&b2, p.conv2[0], &self.per_image(p.conv2[1]));
        let residual = match (self.skip, p.skip) {
            (Some(skip), Some([kernel, bias])) => {
                Some(skip.forward(x, kernel, &self.per_image(bias)))
            }
            _ => None,
        };
        let residual = residual.as_deref().unwrap_or(x);
        y.par_chunks_mut(1 << 14)
            .zip(residual.par_chunks(1 << 14))
            .for_each(|(y, r)| y.iter_mut().zip(r).for_each(|(y, r)| *y += r));
        *self.saved.lock().expect("saved activations") = Some(Saved { a, h1, b2 });
        Ok((
            CpuStorage::F32(y),
            Shape::from(self.conv1.output_dims().to_vec()),
        ))
    }

    fn bwd(
        &self,
        x: &Tensor,
        shift: &Tensor,
        params: &Tensor,
        _y: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let packed = x.apply_op3_no_bwd(&grad.contiguous()?, params, &BlockGrad(self.clone()))?;
        let (n, s) = (x.elem_count(), shift.elem_count());
        Ok((
            Some(packed.narrow(0, 0, n)?.reshape(x.shape())?),
            Some(packed.narrow(0, n, s)?.reshape(shift.shape())?),
            Some(packed.narrow(0, n + s, params.elem_count())?),
        ))
    }
}

/// (x, grad y, params) -> [grad x; grad shift; grad params], flattened, from the
/// activations the forward pass kept.
struct BlockGrad(Block);

impl CustomOp3 for BlockGrad {
    fn name(&self) -> &'static str {
        "unet-residual-block-grad"
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
        let op = "residual block backward";
        let (x, gy) = (slice(x, x_layout, op)?, slice(grad, grad_layout, op)?);
        let p = block.split(slice(params, params_layout, op)?)?;
        let saved = block.saved.lock().expect("saved activations");
        let Some(Saved { a, h1, b2 }) = saved.as_ref() else {
            candle_core::bail!("residual block: backward pass without a forward pass")
        };
        let (batch, cout) = (block.batch(), p.conv1[1].len());
        // Each parameter gradient in `Block::split`'s order.
        let mut grad_params = Vec::with_capacity(params_layout.shape().elem_count());
        let g_b2 = block.conv2.input_grad(gy, p.conv2[0]);
        let conv2 = block.conv2.param_grads(b2, gy);
        let norm2 = block.norm2.backward(h1, &g_b2, p.norm2[0], p.norm2[1]);
        drop(g_b2);
        let g_h1 = &norm2[..h1.len()];
        let g_a = block.conv1.input_grad(g_h1, p.conv1[0]);
        let conv1 = block.conv1.param_grads(a, g_h1);
        let norm1 = block.norm1.backward(x, &g_a, p.norm1[0], p.norm1[1]);
        grad_params.extend_from_slice(&norm1[x.len()..]);
        block
            .conv1
            .push_summed_param_grads(&conv1, &mut grad_params);
        grad_params.extend_from_slice(&norm2[h1.len()..]);
        block
            .conv2
            .push_summed_param_grads(&conv2, &mut grad_params);
        let skip_grad_x = match (block.skip, p.skip) {
            (Some(skip), Some([kernel, _])) => {
                skip.push_summed_param_grads(&skip.param_grads(x, gy), &mut grad_params);
                Some(skip.input_grad(gy, kernel))
            }
            _ => None,
        };
        let skip_grad_x = skip_grad_x.as_deref().unwrap_or(gy);
        let mut out = Vec::with_capacity(x.len() + batch * cout + grad_params.len());
        out.extend(norm1[..x.len()].iter().zip(skip_grad_x).map(|(a, b)| a + b));
        // The shift enters with conv1's bias: its gradient is that bias's, per image.
        out.extend_from_slice(&conv1[p.conv1[0].len()..]);
        out.extend_from_slice(&grad_params);
        let len = out.len();
        Ok((CpuStorage::F32(out), Shape::from(len)))
    }
}
