//! The MLP's stack of linear layers (SiLU between them) as one CPU op with its own
//! backward pass. Run as candle ops, a 4-layer MLP step is about forty small tensors,
//! each with an allocation, a pass over memory and a node in the autograd graph; at
//! the sizes of 2D experiments those fixed costs outweighed the matrix products. Here
//! a forward pass is one product per layer (the bias is the product's starting value)
//! and a vectorised SiLU, and the backward pass two products per layer, all through
//! `gemm::matmul`. The parameters enter as one flat tensor, the concatenation of every
//! layer's weight and bias, so that one op carries the gradient of all of them.

use std::sync::Mutex;

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::buffers::contiguous_f32 as slice;
use super::buffers::{recycle, recycled, with_scratch};
use super::gemm::{Activation, View, matmul, matmul_bias, matmul_bias_silu_keeping_sigmoid};
use super::transpose::transpose;
use super::vmath::{add_rows, mul_silu_grad};

/// `input` [batch, in] through layers of (fan_in, fan_out) with SiLU after every layer
/// but the last; `flat` holds weight 0 ([fan_out, fan_in], row-major), bias 0, weight
/// 1, ... Returns [batch, last fan_out]. The input's gradient is computed only when it
/// is tracked.
pub fn forward(input: &Tensor, flat: &Tensor, shapes: &[(usize, usize)]) -> Result<Tensor> {
    let op = FusedMlp {
        shapes: shapes.to_vec(),
        keep: input.track_op() || flat.track_op(),
        input_grad: input.track_op(),
        saved: Mutex::new(Vec::new()),
    };
    let (input, flat) = (input.contiguous()?, flat.contiguous()?);
    if op.keep {
        input.apply_op2(&flat, op)
    } else {
        input.apply_op2_no_bwd(&flat, &op)
    }
}

/// Number of parameters of the stack, the length `flat` must have.
pub fn parameter_count(shapes: &[(usize, usize)]) -> usize {
    shapes.iter().map(|(i, o)| i * o + o).sum()
}

/// The stack with fixed parameters, laid out for inference (sampling, evaluation),
/// where no backward pass follows: rows go through every layer in blocks small enough
/// that a block's activations stay in the core's cache from one layer to the next,
/// each layer one product whose bias and SiLU are applied as it is stored.
pub struct Frozen {
    layers: Vec<FrozenLayer>,
}

struct FrozenLayer {
    fan_in: usize,
    fan_out: usize,
    /// The right-hand side of x · W^T in the layout its kernel reads in place: W^T
    /// row-major, or W itself for outputs narrower than 4 (one dot product each).
    rhs: Vec<f32>,
    bias: Vec<f32>,
}

impl FrozenLayer {
    fn rhs(&self) -> View<'_> {
        if self.fan_out < 4 {
            View::rows(&self.rhs, self.fan_out, self.fan_in).t()
        } else {
            View::rows(&self.rhs, self.fan_in, self.fan_out)
        }
    }
}

/// Rows a thread carries through every layer at a time: a block of 128-wide
/// activations is 84 KiB, and the AVX-512 product reads W^T in place up to this many
/// rows (its MC).
const BLOCK_ROWS: usize = 168;

impl Frozen {
    /// The layers of `flat` (as `forward` takes it), rearranged.
    pub fn new(flat: &[f32], shapes: &[(usize, usize)]) -> Result<Frozen> {
        if shapes.is_empty() || flat.len() != parameter_count(shapes) {
            candle_core::bail!(
                "fused mlp: {} parameters do not fit layers {shapes:?}",
                flat.len()
            )
        }
        let layers = shapes
            .iter()
            .zip(offsets(shapes))
            .map(|(&(fan_in, fan_out), (w, b))| {
                let weight = &flat[w..b];
                let rhs = if fan_out < 4 {
                    weight.to_vec()
                } else {
                    let mut weight_t = vec![0f32; fan_in * fan_out];
                    transpose(
                        weight,
                        fan_in,
                        fan_out,
                        fan_in,
                        &mut weight_t,
                        fan_out,
                        None,
                    );
                    weight_t
                };
                FrozenLayer {
                    fan_in,
                    fan_out,
                    rhs,
                    bias: flat[b..b + fan_out].to_vec(),
                }
            })
            .collect();
        Ok(Frozen { layers })
    }

    /// `batch` rows of `input`, each as wide as the first layer, through the stack.
    pub fn forward(&self, input: &[f32], batch: usize) -> Result<Vec<f32>> {
        let first = &self.layers[0];
        self.run(input, first.fan_in, &first.bias, batch)
    }

    /// Rows [x, shared] for every row of `x`, where `shared` is the same for all rows
    /// (the embedding of the one time every particle of a sampling step is at): its
    /// share of the first layer is computed once and folded into that layer's bias,
    /// so each row costs only its x part.
    pub fn forward_shared(&self, x: &[f32], shared: &[f32], batch: usize) -> Result<Vec<f32>> {
        let first = &self.layers[0];
        let Some(width) = first.fan_in.checked_sub(shared.len()) else {
            candle_core::bail!(
                "fused mlp: {} shared inputs for a first layer of {}",
                shared.len(),
                first.fan_in
            )
        };
        let mut bias = vec![0f32; first.fan_out];
        let shared_rows = first.rhs().row_range(width, shared.len());
        let shared = View::rows(shared, 1, shared.len());
        matmul_bias(
            &mut bias,
            shared,
            shared_rows,
            &first.bias,
            Activation::Identity,
            1,
        );
        self.run(x, width, &bias, batch)
    }

    /// The stack on rows `width` wide, the first layer's first `width` inputs and
    /// `first_bias` standing for the whole first layer.
    fn run(
        &self,
        input: &[f32],
        width: usize,
        first_bias: &[f32],
        batch: usize,
    ) -> Result<Vec<f32>> {
        if input.len() != batch * width {
            candle_core::bail!(
                "fused mlp: {} numbers are not {batch} rows of {width}",
                input.len()
            )
        }
        let out_width = self.layers[self.layers.len() - 1].fan_out;
        let widest = self.layers.iter().map(|l| l.fan_out).max().unwrap_or(0);
        let mut out = vec![0f32; batch * out_width];
        let block = |(index, out): (usize, &mut [f32])| {
            let start = index * BLOCK_ROWS;
            let rows = out.len() / out_width;
            let input = &input[start * width..(start + rows) * width];
            with_scratch(2 * BLOCK_ROWS * widest, |scratch| {
                self.block(input, rows, width, first_bias, scratch, out)
            })
        };
        let chunks = BLOCK_ROWS * out_width;
        let work: usize = batch
            * self
                .layers
                .iter()
                .map(|l| l.fan_in * l.fan_out)
                .sum::<usize>();
        if work >= 1 << 19 {
            out.par_chunks_mut(chunks).enumerate().for_each(block);
        } else {
            out.chunks_mut(chunks).enumerate().for_each(block);
        }
        Ok(out)
    }

    /// One block of at most `BLOCK_ROWS` rows through every layer, the activations
    /// alternating between the two halves of `scratch`.
    fn block(
        &self,
        input: &[f32],
        rows: usize,
        width: usize,
        first_bias: &[f32],
        scratch: &mut [f32],
        out: &mut [f32],
    ) {
        let (mut h, mut next) = scratch.split_at_mut(scratch.len() / 2);
        let last = self.layers.len() - 1;
        for (i, layer) in self.layers.iter().enumerate() {
            let (x, fan_in, bias, rhs) = if i == 0 {
                (input, width, first_bias, layer.rhs().row_range(0, width))
            } else {
                (
                    &h[..rows * layer.fan_in],
                    layer.fan_in,
                    &layer.bias[..],
                    layer.rhs(),
                )
            };
            let lhs = View::rows(x, rows, fan_in);
            if i == last {
                matmul_bias(out, lhs, rhs, bias, Activation::Identity, 1);
            } else {
                let y = &mut next[..rows * layer.fan_out];
                matmul_bias(y, lhs, rhs, bias, Activation::Silu, 1);
                std::mem::swap(&mut h, &mut next);
            }
        }
    }
}

struct FusedMlp {
    shapes: Vec<(usize, usize)>,
    /// Whether a backward pass can follow (else nothing is saved).
    keep: bool,
    /// Whether the backward pass returns the input's gradient.
    input_grad: bool,
    /// What the forward pass saved for the backward one, per band of rows.
    saved: Mutex<Vec<Band>>,
}

/// The saved activations go back to the buffer pool with the autograd graph that
/// holds this op (there may be several backward passes through one forward pass, as
/// for a divergence, so the backward pass cannot give them back itself).
impl Drop for FusedMlp {
    fn drop(&mut self) {
        let bands = std::mem::take(self.saved.get_mut().unwrap_or_else(|p| p.into_inner()));
        for layer in bands.into_iter().flat_map(|band| band.layers) {
            recycle(layer.output);
            recycle(layer.sigmoid);
        }
    }
}

/// A band of rows that one thread carries through every layer, forward and backward:
/// threads meet once per pass instead of once per layer and operation.
struct Band {
    /// First row and number of rows.
    start: usize,
    rows: usize,
    /// Per SiLU layer, when a backward pass can follow.
    layers: Vec<Saved>,
}

struct Saved {
    /// The layer's output after SiLU (the next layer's input).
    output: Vec<f32>,
    /// sigmoid of the layer's output before SiLU: with `output`, SiLU's derivative.
    sigmoid: Vec<f32>,
}

/// Splits `batch` rows into one band per rayon thread, or a single band when the work
/// is too small to repay waking threads.
fn bands(batch: usize, shapes: &[(usize, usize)]) -> Vec<(usize, usize)> {
    let work: usize = shapes.iter().map(|(i, o)| batch * i * o).sum();
    let count = if work >= 1 << 19 {
        rayon::current_num_threads().min(batch.div_ceil(64)).max(1)
    } else {
        1
    };
    let size = batch.div_ceil(count);
    (0..batch)
        .step_by(size.max(1))
        .map(|start| (start, size.min(batch - start)))
        .collect()
}

/// Offsets of each layer's weight and bias in the flat parameters.
fn offsets(shapes: &[(usize, usize)]) -> Vec<(usize, usize)> {
    let mut at = 0;
    shapes
        .iter()
        .map(|&(fan_in, fan_out)| {
            let weight = at;
            at += fan_in * fan_out + fan_out;
            (weight, weight + fan_in * fan_out)
        })
        .collect()
}

impl FusedMlp {
    /// The forward pass of `rows` rows of `input`: (output, what backward needs).
    fn forward_band(&self, input: &[f32], rows: usize, flat: &[f32]) -> (Vec<f32>, Vec<Saved>) {
        let last = self.shapes.len() - 1;
        let mut saved: Vec<Saved> = Vec::new();
        let mut h: Vec<f32> = Vec::new();
        for (i, (&(fan_in, fan_out), (w, b))) in
            self.shapes.iter().zip(offsets(&self.shapes)).enumerate()
        {
            let x = match (i, saved.last()) {
                (0, _) => input,
                (_, Some(previous)) => &previous.output[..],
                (_, None) => &h[..],
            };
            let mut out = recycled(rows * fan_out);
            let weight = View::rows(&flat[w..b], fan_out, fan_in);
            let (lhs, bias) = (View::rows(x, rows, fan_in), &flat[b..b + fan_out]);
            if i < last && self.keep {
                let mut sigmoid = recycled(rows * fan_out);
                matmul_bias_silu_keeping_sigmoid(&mut out, &mut sigmoid, lhs, weight.t(), bias, 1);
                saved.push(Saved {
                    output: out,
                    sigmoid,
                });
                continue;
            }
            let activation = if i < last {
                Activation::Silu
            } else {
                Activation::Identity
            };
            matmul_bias(&mut out, lhs, weight.t(), bias, activation, 1);
            recycle(std::mem::replace(&mut h, out));
        }
        (h, saved)
    }

    /// The backward pass of one band: `grad` is the gradient of its output rows.
    /// Returns its share of the parameters' gradient and its rows of the input's.
    fn backward_band(
        &self,
        band: &Band,
        input: &[f32],
        flat: &[f32],
        grad: &[f32],
    ) -> (Vec<f32>, Vec<f32>) {
        let rows = band.rows;
        // The gradient of the current layer's output, its first rows x fan_out, and
        // the buffer the previous layer's is written into: the two swap roles layer
        // after layer, each as long as the widest layer's rows.
        let widest = self
            .shapes
            .iter()
            .map(|&(i, o)| i.max(o))
            .max()
            .unwrap_or(0);
        let mut g = recycled(rows * widest);
        g[..grad.len()].copy_from_slice(grad);
        let mut spare = recycled(rows * widest);
        let mut grad_flat = vec![0f32; flat.len()];
        for (i, (&(fan_in, fan_out), (w, b))) in self
            .shapes
            .iter()
            .zip(offsets(&self.shapes))
            .enumerate()
            .rev()
        {
            let g_len = rows * fan_out;
            if let Some(layer) = band.layers.get(i) {
                mul_silu_grad(&mut g[..g_len], &layer.sigmoid, &layer.output);
            }
            let x = if i == 0 {
                input
            } else {
                &band.layers[i - 1].output[..]
            };
            let g_view = View::rows(&g[..g_len], rows, fan_out);
            let (grad_weight, grad_bias) = grad_flat[w..b + fan_out].split_at_mut(b - w);
            matmul(
                grad_weight,
                g_view.t(),
                View::rows(x, rows, fan_in),
                false,
                1,
            );
            add_rows(grad_bias, &g[..g_len]);
            if i > 0 || self.input_grad {
                let len = rows * fan_in;
                let weight = View::rows(&flat[w..b], fan_out, fan_in);
                matmul(&mut spare[..len], g_view, weight, false, 1);
                std::mem::swap(&mut g, &mut spare);
            }
        }
        recycle(spare);
        if self.input_grad {
            g.truncate(rows * self.shapes[0].0);
        } else {
            recycle(std::mem::take(&mut g));
        }
        (grad_flat, g)
    }
}

/// The numbers of a contiguous f32 tensor on the CPU, in place.
fn cpu_slice<'a>(storage: &'a candle_core::Storage, layout: &Layout) -> Result<&'a [f32]> {
    match storage {
        candle_core::Storage::Cpu(cpu) => slice(cpu, layout, "fused mlp"),
        _ => candle_core::bail!("fused mlp: the backward pass runs on the CPU"),
    }
}

impl CustomOp2 for FusedMlp {
    fn name(&self) -> &'static str {
        "fused-mlp"
    }

    fn cpu_fwd(
        &self,
        input: &CpuStorage,
        input_layout: &Layout,
        flat: &CpuStorage,
        flat_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let &[batch, width] = input_layout.dims() else {
            candle_core::bail!("fused mlp: the input must be [batch, features]")
        };
        let (input, flat) = (
            slice(input, input_layout, "fused mlp")?,
            slice(flat, flat_layout, "fused mlp")?,
        );
        if self.shapes.first().map(|s| s.0) != Some(width)
            || flat.len() != parameter_count(&self.shapes)
        {
            candle_core::bail!(
                "fused mlp: input {:?} and {} parameters do not fit layers {:?}",
                input_layout.dims(),
                flat.len(),
                self.shapes
            )
        }
        let results: Vec<(Band, Vec<f32>)> = bands(batch, &self.shapes)
            .into_par_iter()
            .map(|(start, rows)| {
                let rows_in = &input[start * width..(start + rows) * width];
                let (out, layers) = self.forward_band(rows_in, rows, flat);
                (
                    Band {
                        start,
                        rows,
                        layers,
                    },
                    out,
                )
            })
            .collect();
        let out_width = self.shapes[self.shapes.len() - 1].1;
        let mut out = Vec::with_capacity(batch * out_width);
        let mut saved = Vec::with_capacity(results.len());
        for (band, rows) in results {
            out.extend_from_slice(&rows);
            saved.push(band);
        }
        *self.saved.lock().expect("saved activations") = saved;
        Ok((CpuStorage::F32(out), Shape::from((batch, out_width))))
    }

    fn bwd(
        &self,
        input: &Tensor,
        flat: &Tensor,
        _out: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let saved = self.saved.lock().expect("saved activations");
        let (batch, width) = input.dims2()?;
        let out_width = self.shapes[self.shapes.len() - 1].1;
        // Read where they are: copying them out cost the one thread the others wait on.
        let (input, flat, grad) = (input.contiguous()?, flat.contiguous()?, grad.contiguous()?);
        let (input_storage, input_layout) = input.storage_and_layout();
        let (flat_storage, flat_layout) = flat.storage_and_layout();
        let (grad_storage, grad_layout) = grad.storage_and_layout();
        let input = cpu_slice(&input_storage, input_layout)?;
        let flat = cpu_slice(&flat_storage, flat_layout)?;
        let grad_out = cpu_slice(&grad_storage, grad_layout)?;
        let results: Vec<(Vec<f32>, Vec<f32>)> = saved
            .par_iter()
            .map(|band| {
                let (start, end) = (band.start, band.start + band.rows);
                self.backward_band(
                    band,
                    &input[start * width..end * width],
                    flat,
                    &grad_out[start * out_width..end * out_width],
                )
            })
            .collect();
        let mut grad_flat = vec![0f32; flat.len()];
        let mut grad_input = Vec::with_capacity(if self.input_grad { batch * width } else { 0 });
        for (partial, rows) in results {
            add_rows(&mut grad_flat, &partial);
            if self.input_grad {
                grad_input.extend_from_slice(&rows);
            }
        }
        let grad_input = if self.input_grad {
            Some(Tensor::from_vec(grad_input, (batch, width), grad.device())?)
        } else {
            None
        };
        let grad_flat = Tensor::from_vec(grad_flat, flat.len(), grad.device())?;
        Ok((grad_input, Some(grad_flat)))
    }
}
