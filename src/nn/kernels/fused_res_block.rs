//! A U-Net residual block (GroupNorm, SiLU, conv, time shift, GroupNorm, SiLU, conv,
//! skip) as one CPU op with its own backward pass. As separate candle ops, every
//! activation-sized gradient between them went through candle's gradient store: a
//! zeroed tensor allocated and added to, on the main thread, six times per block,
//! while the worker threads waited. Here the block's inner gradients stay in this
//! op's buffers and only the input, the time shift and the parameters get one.
//!
//! On the U-Net's way up the block's input is the concatenation of the previous
//! layer's output and a skip; the op takes both and concatenates them itself, so that
//! the concatenated tensor and its gradient never pass through candle.
//!
//! The time shift and the parameters enter as one flat tensor (`Tensor::cat` of the
//! shift and the layers' variables, whose backward pass splits the gradient per
//! variable), as in `fused_mlp`.

use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::buffers::{Output, contiguous_f32 as slice, zeroed};
use super::conv::{Conv2d, Geometry};
use super::group_norm::{GroupNorm, Norm};
use super::packed::{pack, unpack};

/// The layers of one block, as the U-Net holds them.
pub struct Layers<'a> {
    pub norm1: &'a GroupNorm,
    pub conv1: &'a Conv2d,
    pub norm2: &'a GroupNorm,
    pub conv2: &'a Conv2d,
    /// The 1x1 projection of the input when the channel count changes.
    pub skip: Option<&'a Conv2d>,
}

/// The block applied to the concatenation along the channels of `inputs` (one
/// tensor, or the way up's previous output and skip), each [batch, c_i, h, w], with
/// the time embedding's projection `shift` [batch, cout] added after the first
/// convolution; `None` where the CPU op does not apply (another device or dtype, a
/// convolution without bias), and the caller runs the layers one by one.
pub fn forward(layers: &Layers, inputs: &[&Tensor], shift: &Tensor) -> Result<Option<Tensor>> {
    let convs = [Some(layers.conv1), Some(layers.conv2), layers.skip];
    let Some(first) = inputs.first() else {
        candle_core::bail!("residual block: no input")
    };
    if !convs
        .iter()
        .flatten()
        .all(|c| c.runs_on_cpu(first) && c.params().1.is_some())
    {
        return Ok(None);
    }
    let parts: Vec<usize> = inputs.iter().map(|x| x.dim(1)).collect::<Result<_>>()?;
    let (batch, h, w) = (first.dim(0)?, first.dim(2)?, first.dim(3)?);
    for x in inputs {
        if x.dims() != [batch, x.dim(1)?, h, w] {
            candle_core::bail!(
                "residual block: inputs {:?} and {:?} differ in size",
                first.dims(),
                x.dims()
            )
        }
    }
    let op = Block::new(layers, parts, [batch, h, w])?;
    if shift.dims() != [batch, op.conv1.output_dims()[1]] {
        candle_core::bail!(
            "residual block: time shift {:?} should be [batch, cout]",
            shift.dims()
        )
    }
    // In `Block::split`'s order: the shift, then norm1, conv1, norm2, conv2, skip.
    let mut tensors = vec![shift];
    for (norm, conv) in [(layers.norm1, layers.conv1), (layers.norm2, layers.conv2)] {
        tensors.extend(norm.params());
        tensors.extend(conv_params(conv));
    }
    tensors.extend(layers.skip.into_iter().flat_map(conv_params));
    let packed = pack(tensors)?;
    match inputs {
        [x] => x.contiguous()?.apply_op2(&packed, op),
        [h, skip] => h.contiguous()?.apply_op3(&skip.contiguous()?, &packed, op),
        _ => candle_core::bail!("residual block: one or two inputs, got {}", inputs.len()),
    }
    .map(Some)
}

/// A convolution's kernel and bias (checked present by `forward`).
fn conv_params(conv: &Conv2d) -> impl Iterator<Item = &Tensor> {
    let (kernel, bias) = conv.params();
    std::iter::once(kernel).chain(bias)
}

/// The block's sizes, and what its forward pass keeps for the backward pass.
#[derive(Clone)]
struct Block {
    /// Channels of each input, concatenated in this order.
    parts: Vec<usize>,
    norm1: Norm,
    conv1: Geometry,
    norm2: Norm,
    conv2: Geometry,
    skip: Option<Geometry>,
    saved: Arc<Mutex<Option<Saved>>>,
}

/// The activations inside the block: silu(norm1(x)), conv1's output,
/// silu(norm2(·)), and the input of a block that concatenates its inputs (a one-input
/// block's backward op takes its input as an argument instead of a copy of it).
struct Saved {
    concatenated: Option<Vec<f32>>,
    a: Vec<f32>,
    h1: Vec<f32>,
    b2: Vec<f32>,
}

/// The flat time shift and parameters, split back into layers.
struct Params<'a> {
    shift: &'a [f32],
    norm1: [&'a [f32]; 2],
    conv1: [&'a [f32]; 2],
    norm2: [&'a [f32]; 2],
    conv2: [&'a [f32]; 2],
    skip: Option<[&'a [f32]; 2]>,
}

impl Block {
    /// Inputs of `parts` channels each, [batch, h, w] in common.
    fn new(layers: &Layers, parts: Vec<usize>, [batch, h, w]: [usize; 3]) -> Result<Block> {
        let dims = [batch, parts.iter().sum(), h, w];
        let conv1 = layers.conv1.geometry(&dims)?;
        let [batch, cout, h, w] = conv1.output_dims();
        let conv2 = layers.conv2.geometry(&[batch, cout, h, w])?;
        let skip = layers.skip.map(|s| s.geometry(&dims)).transpose()?;
        if conv2.output_dims() != conv1.output_dims()
            || skip.is_some_and(|s| s.output_dims() != conv1.output_dims())
            || (skip.is_none() && dims != conv1.output_dims())
        {
            candle_core::bail!("residual block: the convolutions must keep the image size")
        }
        let pixels = h * w;
        Ok(Block {
            parts,
            norm1: layers.norm1.kernel(dims[1], pixels, true),
            conv1,
            norm2: layers.norm2.kernel(cout, pixels, true),
            conv2,
            skip,
            saved: Arc::new(Mutex::new(None)),
        })
    }

    fn sizes(&self) -> Vec<usize> {
        let [batch, cout, _, _] = self.conv1.output_dims();
        let cin = self.norm1.channels();
        let mut sizes = vec![batch * cout, cin, cin, cout * self.conv1.patch(), cout];
        sizes.extend([cout, cout, cout * self.conv2.patch(), cout]);
        if let Some(skip) = self.skip {
            sizes.extend([cout * skip.patch(), cout]);
        }
        sizes
    }

    fn split<'a>(&self, packed: &'a [f32]) -> Result<Params<'a>> {
        let parts = unpack(packed, &self.sizes(), "residual block")?;
        let pair = |i: usize| [parts[i], parts[i + 1]];
        Ok(Params {
            shift: parts[0],
            norm1: pair(1),
            conv1: pair(3),
            norm2: pair(5),
            conv2: pair(7),
            skip: self.skip.map(|_| pair(9)),
        })
    }

    fn batch(&self) -> usize {
        self.conv1.output_dims()[0]
    }

    /// Numbers of one image of input part `i`.
    fn part_len(&self, i: usize) -> usize {
        self.parts[i] * self.conv1.output_dims()[2] * self.conv1.output_dims()[3]
    }

    /// The inputs concatenated along the channels, image by image.
    fn concatenate(&self, inputs: &[&[f32]]) -> Vec<f32> {
        let image_len: usize = (0..inputs.len()).map(|i| self.part_len(i)).sum();
        let mut x = Output::new(self.batch() * image_len);
        x.par_chunks_mut(image_len)
            .enumerate()
            .for_each(|(image, out)| {
                let mut offset = 0;
                for (i, input) in inputs.iter().enumerate() {
                    let len = self.part_len(i);
                    out[offset..offset + len].copy_from_slice(&input[image * len..][..len]);
                    offset += len;
                }
            });
        x.into_vec()
    }

    /// The block on the (concatenated) input `x`; keeps the activations.
    fn run(&self, x: &[f32], packed: &[f32]) -> Result<(CpuStorage, Shape)> {
        let p = self.split(packed)?;
        let a = self.norm1.forward(x, p.norm1[0], p.norm1[1]);
        let cout = p.conv1[1].len();
        let bias1: Vec<f32> = p
            .shift
            .chunks(cout)
            .flat_map(|s| s.iter().zip(p.conv1[1]).map(|(s, b)| s + b))
            .collect();
        let h1 = self.conv1.forward(&a, p.conv1[0], &bias1);
        let b2 = self.norm2.forward(&h1, p.norm2[0], p.norm2[1]);
        let mut y = self
            .conv2
            .forward(&b2, p.conv2[0], &self.conv2.per_image(p.conv2[1]));
        let residual = match (self.skip, p.skip) {
            (Some(skip), Some([kernel, bias])) => {
                Some(skip.forward(x, kernel, &skip.per_image(bias)))
            }
            _ => None,
        };
        let residual = residual.as_deref().unwrap_or(x);
        y.par_chunks_mut(1 << 14)
            .zip(residual.par_chunks(1 << 14))
            .for_each(|(y, r)| y.iter_mut().zip(r).for_each(|(y, r)| *y += r));
        *self.saved.lock().expect("saved activations") = Some(Saved {
            concatenated: None,
            a,
            h1,
            b2,
        });
        Ok((
            CpuStorage::F32(y),
            Shape::from(self.conv1.output_dims().to_vec()),
        ))
    }

    /// The backward op's result, [grad of each input; grad packed], split as `bwd`
    /// returns it.
    fn split_grads(&self, packed_grads: &Tensor, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
        let mut offset = 0;
        let mut grads = Vec::new();
        for x in inputs {
            let n = x.elem_count();
            grads.push(packed_grads.narrow(0, offset, n)?.reshape(x.shape())?);
            offset += n;
        }
        grads.push(packed_grads.narrow(0, offset, packed_grads.elem_count() - offset)?);
        Ok(grads)
    }
}

impl CustomOp2 for Block {
    fn name(&self) -> &'static str {
        "unet-residual-block"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_layout: &Layout,
        packed: &CpuStorage,
        packed_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let op = "residual block";
        self.run(slice(x, x_layout, op)?, slice(packed, packed_layout, op)?)
    }

    fn bwd(
        &self,
        x: &Tensor,
        packed: &Tensor,
        _y: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grads = grad.contiguous()?.apply_op3_no_bwd(
            &x.contiguous()?,
            packed,
            &BlockGrad(self.clone()),
        )?;
        let [gx, gp] = <[Tensor; 2]>::try_from(self.split_grads(&grads, &[x])?)
            .expect("one input and the packed numbers");
        Ok((Some(gx), Some(gp)))
    }
}

impl CustomOp3 for Block {
    fn name(&self) -> &'static str {
        "unet-residual-block-concatenated"
    }

    fn cpu_fwd(
        &self,
        h: &CpuStorage,
        h_layout: &Layout,
        skip: &CpuStorage,
        skip_layout: &Layout,
        packed: &CpuStorage,
        packed_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let op = "residual block";
        let (h, skip) = (slice(h, h_layout, op)?, slice(skip, skip_layout, op)?);
        let x = self.concatenate(&[h, skip]);
        let y = self.run(&x, slice(packed, packed_layout, op)?)?;
        if let Some(saved) = self.saved.lock().expect("saved activations").as_mut() {
            saved.concatenated = Some(x);
        }
        Ok(y)
    }

    fn bwd(
        &self,
        h: &Tensor,
        skip: &Tensor,
        packed: &Tensor,
        _y: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grads = grad
            .contiguous()?
            .apply_op2_no_bwd(packed, &BlockGrad(self.clone()))?;
        let [gh, gs, gp] = <[Tensor; 3]>::try_from(self.split_grads(&grads, &[h, skip])?)
            .expect("two inputs and the packed numbers");
        Ok((Some(gh), Some(gs), Some(gp)))
    }
}

/// (grad y, packed) for a two-input block, (grad y, x, packed) for a one-input one ->
/// [grad of each input; grad shift; grad params], flattened, from what the forward
/// pass kept.
struct BlockGrad(Block);

impl CustomOp2 for BlockGrad {
    fn name(&self) -> &'static str {
        "unet-residual-block-grad"
    }

    fn cpu_fwd(
        &self,
        grad: &CpuStorage,
        grad_layout: &Layout,
        packed: &CpuStorage,
        packed_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let op = "residual block backward";
        self.backward(
            None,
            slice(grad, grad_layout, op)?,
            slice(packed, packed_layout, op)?,
        )
    }
}

impl CustomOp3 for BlockGrad {
    fn name(&self) -> &'static str {
        "unet-residual-block-grad"
    }

    fn cpu_fwd(
        &self,
        grad: &CpuStorage,
        grad_layout: &Layout,
        x: &CpuStorage,
        x_layout: &Layout,
        packed: &CpuStorage,
        packed_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let op = "residual block backward";
        self.backward(
            Some(slice(x, x_layout, op)?),
            slice(grad, grad_layout, op)?,
            slice(packed, packed_layout, op)?,
        )
    }
}

impl BlockGrad {
    /// The backward pass, given the block's input `x` unless the forward pass kept it
    /// (concatenated).
    fn backward(
        &self,
        x: Option<&[f32]>,
        gy: &[f32],
        packed: &[f32],
    ) -> Result<(CpuStorage, Shape)> {
        let block = &self.0;
        let p = block.split(packed)?;
        let saved = block.saved.lock().expect("saved activations");
        let Some(Saved {
            concatenated,
            a,
            h1,
            b2,
        }) = saved.as_ref()
        else {
            candle_core::bail!("residual block: backward pass without a forward pass")
        };
        let Some(x) = x.or(concatenated.as_deref()) else {
            candle_core::bail!("residual block: backward pass without its input")
        };
        let g_b2 = block.conv2.input_grad(gy, p.conv2[0]);
        let conv2 = block.conv2.param_grads(b2, gy);
        let norm2 = block.norm2.backward(h1, &g_b2, p.norm2[0], p.norm2[1]);
        drop(g_b2);
        let g_h1 = &norm2[..h1.len()];
        let g_a = block.conv1.input_grad(g_h1, p.conv1[0]);
        let conv1 = block.conv1.param_grads(a, g_h1);
        // Room for the parameters' gradients after grad x: a one-input block
        // returns this buffer itself.
        let room = x.len() + 2 * p.norm1[0].len() + packed.len();
        let mut norm1 =
            block
                .norm1
                .backward_into(Vec::with_capacity(room), x, &g_a, p.norm1[0], p.norm1[1]);
        drop(g_a);
        // Each parameter gradient in `Block::split`'s order, after the shift's: the
        // shift enters with conv1's bias, so its gradient is that bias's, per image.
        let mut grad_packed = conv1[p.conv1[0].len()..].to_vec();
        grad_packed.extend_from_slice(&norm1[x.len()..]);
        block
            .conv1
            .push_summed_param_grads(&conv1, &mut grad_packed);
        grad_packed.extend_from_slice(&norm2[h1.len()..]);
        block
            .conv2
            .push_summed_param_grads(&conv2, &mut grad_packed);
        let skip_grad_x = match (block.skip, p.skip) {
            (Some(skip), Some([kernel, _])) => {
                skip.push_summed_param_grads(&skip.param_grads(x, gy), &mut grad_packed);
                Some(skip.input_grad(gy, kernel))
            }
            _ => None,
        };
        let grad_x = &mut norm1[..x.len()];
        grad_x
            .par_chunks_mut(1 << 14)
            .zip(skip_grad_x.as_deref().unwrap_or(gy).par_chunks(1 << 14))
            .for_each(|(g, s)| g.iter_mut().zip(s).for_each(|(g, s)| *g += s));
        if block.parts.len() == 1 {
            norm1.truncate(x.len());
            norm1.extend_from_slice(&grad_packed);
            let len = norm1.len();
            return Ok((CpuStorage::F32(norm1), Shape::from(len)));
        }
        // grad x split back into the inputs, image by image.
        let mut out = zeroed(x.len() + grad_packed.len());
        let (mut rest, tail) = out.split_at_mut(x.len());
        let image_len = x.len() / block.batch();
        let mut offset = 0;
        for i in 0..block.parts.len() {
            let len = block.part_len(i);
            let (part, remaining) = rest.split_at_mut(len * block.batch());
            part.par_chunks_mut(len)
                .zip(grad_x.par_chunks(image_len))
                .for_each(|(dst, image)| dst.copy_from_slice(&image[offset..offset + len]));
            rest = remaining;
            offset += len;
        }
        tail.copy_from_slice(&grad_packed);
        let len = out.len();
        Ok((CpuStorage::F32(out), Shape::from(len)))
    }
}
