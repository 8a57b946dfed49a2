//! A linear layer with its SiLU fused in, for the MLP on the CPU. candle runs
//! `matmul`, `broadcast_add` and `silu` as three ops with a temporary each, and its
//! SiLU calls the scalar `expf` per element; at the MLP's sizes these fixed costs
//! outweighed the matrix products. Here the bias is the GEMM's starting value and the
//! SiLU a vectorisable pass over its output; the pre-activation is kept for the
//! backward pass instead of being recomputed. On other devices candle's ops run.

use std::sync::Mutex;

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Module, Result, Shape, Tensor};
use candle_nn::Linear;

use super::gemm::{View, contiguous_f32 as slice, matmul};

/// `x · weightᵀ + bias`, then SiLU when `silu`.
pub fn forward(layer: &Linear, x: &Tensor, silu: bool) -> Result<Tensor> {
    let fused = x.device().is_cpu() && x.dtype() == DType::F32 && x.rank() == 2;
    match (fused, layer.bias()) {
        (true, Some(bias)) => {
            let (x, weight, bias) = (
                x.contiguous()?,
                layer.weight().contiguous()?,
                bias.contiguous()?,
            );
            let op = LinearAct {
                silu,
                keep: x.track_op() || weight.track_op() || bias.track_op(),
                pre_activation: Mutex::new(None),
            };
            if op.keep {
                x.apply_op3(&weight, &bias, op)
            } else {
                x.apply_op3_no_bwd(&weight, &bias, &op)
            }
        }
        _ => {
            let y = layer.forward(x)?;
            if silu { y.silu() } else { Ok(y) }
        }
    }
}

/// exp(v) to about 2 ulp for the range SiLU needs, written so that the compiler
/// vectorises a loop over it (the library `expf` is a call per element): 2^n · e^r
/// with |r| <= ln2/2 and a degree-6 polynomial for e^r.
fn exp(v: f32) -> f32 {
    let v = v.clamp(-87.0, 88.0);
    // Round to nearest by the 1.5 * 2^23 trick: `round()` is a library call unless
    // the target has SSE4.1, and would stop the vectorisation.
    const SHIFTER: f32 = 12_582_912.0;
    let n = (v * std::f32::consts::LOG2_E + SHIFTER) - SHIFTER;
    // ln 2 in two parts (Cody and Waite), so that n ln 2 is subtracted exactly.
    let r = (v - n * 0.693_145_75) - n * 1.428_606_8e-6;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    p * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// SiLU, x · sigmoid(x), through the vectorisable `exp`.
pub fn silu(v: f32) -> f32 {
    v / (1.0 + exp(-v))
}

/// d silu / dx = s (1 + x (1 - s)) with s = sigmoid(x) (GroupNorm+SiLU uses it too).
pub fn silu_grad(v: f32) -> f32 {
    let s = 1.0 / (1.0 + exp(-v));
    s * (1.0 + v * (1.0 - s))
}

/// The fused op: (x [batch, in], weight [out, in], bias [out]) -> [batch, out].
struct LinearAct {
    silu: bool,
    /// Whether a backward pass can follow (else the pre-activation is not kept).
    keep: bool,
    /// x · weightᵀ + bias of the forward pass, which SiLU's derivative needs.
    pre_activation: Mutex<Option<Tensor>>,
}

impl CustomOp3 for LinearAct {
    fn name(&self) -> &'static str {
        "linear-silu"
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
        let (&[batch, fan_in], &[fan_out, w_in]) = (x_layout.dims(), weight_layout.dims()) else {
            candle_core::bail!("linear: x must be [batch, in] and the weight [out, in]")
        };
        if w_in != fan_in || bias_layout.shape().elem_count() != fan_out {
            candle_core::bail!(
                "linear: x {:?} does not fit weight {:?} and bias {:?}",
                x_layout.dims(),
                weight_layout.dims(),
                bias_layout.dims()
            )
        }
        let (x, weight, bias) = (
            slice(x, x_layout, "linear")?,
            slice(weight, weight_layout, "linear")?,
            slice(bias, bias_layout, "linear")?,
        );
        let mut out: Vec<f32> = Vec::with_capacity(batch * fan_out);
        for _ in 0..batch {
            out.extend_from_slice(bias);
        }
        // Small products are faster on one thread than split.
        let threads = if batch * fan_in * fan_out >= 1 << 18 {
            rayon::current_num_threads()
        } else {
            1
        };
        let w_t = View::rows(weight, fan_out, fan_in).t();
        matmul(&mut out, View::rows(x, batch, fan_in), w_t, true, threads);
        if self.silu && self.keep {
            let pre = Tensor::from_slice(&out, (batch, fan_out), &candle_core::Device::Cpu)?;
            *self.pre_activation.lock().expect("pre-activation") = Some(pre);
        }
        if self.silu {
            use rayon::prelude::*;
            out.par_chunks_mut(1 << 14)
                .for_each(|chunk| chunk.iter_mut().for_each(|v| *v = silu(*v)));
        }
        Ok((CpuStorage::F32(out), Shape::from((batch, fan_out))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        _bias: &Tensor,
        _y: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad_pre = match &*self.pre_activation.lock().expect("pre-activation") {
            Some(pre) if self.silu => {
                let g = grad.flatten_all()?.to_vec1::<f32>()?;
                let a = pre.flatten_all()?.to_vec1::<f32>()?;
                let d: Vec<f32> = g.iter().zip(&a).map(|(g, a)| g * silu_grad(*a)).collect();
                Tensor::from_vec(d, grad.shape(), grad.device())?
            }
            _ => grad.clone(),
        };
        let grad_x = grad_pre.matmul(weight)?;
        let grad_weight = grad_pre.t()?.matmul(x)?;
        let grad_bias = grad_pre.sum(0)?;
        Ok((Some(grad_x), Some(grad_weight), Some(grad_bias)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Var;

    #[test]
    fn the_fast_exp_and_silu_are_accurate() {
        for i in -2000..=2000 {
            let v = i as f32 * 0.02;
            let rel = (exp(v) - v.exp()).abs() / v.exp();
            assert!(rel < 2e-6, "exp({v}): {} vs {}", exp(v), v.exp());
            let want = v / (1.0 + (-v).exp());
            assert!(
                (silu(v) - want).abs() <= 1e-6 * want.abs().max(1.0),
                "silu({v})"
            );
        }
        assert_eq!(exp(-200.0), exp(-87.0));
        assert!(silu(-200.0).abs() < 1e-30 && silu(200.0) == 200.0);
    }

    /// The fused layer against candle_nn's Linear (and SiLU): outputs and the
    /// gradients of the input, weight and bias, on one row and on many.
    #[test]
    fn the_fused_layer_matches_candles_ops() {
        let random = |(rows, cols): (usize, usize), seed: u64| {
            crate::nn::random_tensor(&[rows, cols], seed, "linear")
        };
        for (batch, fan_in, fan_out) in [(1, 3, 5), (37, 34, 64), (600, 128, 128)] {
            for silu in [true, false] {
                let x = Var::from_tensor(&random((batch, fan_in), 1)).unwrap();
                let w = Var::from_tensor(&random((fan_out, fan_in), 2)).unwrap();
                let b = Var::from_tensor(&random((1, fan_out), 3).flatten_all().unwrap()).unwrap();
                let layer = Linear::new(w.as_tensor().clone(), Some(b.as_tensor().clone()));
                let ours = forward(&layer, &x, silu).unwrap();
                let theirs = layer.forward(&x).unwrap();
                let theirs = if silu { theirs.silu().unwrap() } else { theirs };
                let diff = crate::nn::max_abs_diff;
                assert!(diff(&ours, &theirs) < 1e-4);
                let weights = random((batch, fan_out), 4);
                let ga = (&ours * &weights)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .backward()
                    .unwrap();
                let gb = (&theirs * &weights)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .backward()
                    .unwrap();
                for var in [&x, &w, &b] {
                    let (a, b) = (ga.get(var).unwrap(), gb.get(var).unwrap());
                    assert!(diff(a, b) < 1e-3, "{batch}x{fan_in}x{fan_out} silu {silu}");
                }
            }
        }
    }
}
