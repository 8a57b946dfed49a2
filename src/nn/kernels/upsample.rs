//! Nearest-neighbour up-sampling by 2, for the U-Net's way up. Through candle's ops
//! (a broadcast, then a copy into place) the backward pass is a sum over two strided
//! axes on one thread, and three tensors of the up-sampled size pass through the
//! gradient store; on the CPU here it is one op each way, spread over the images.

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::buffers::contiguous_f32 as slice;

/// `x` [batch, c, h, w] -> [batch, c, 2h, 2w], each pixel repeated in a 2x2 block.
pub fn upsample2(x: &Tensor) -> Result<Tensor> {
    if x.device().is_cpu() && x.dtype() == DType::F32 {
        x.contiguous()?.apply_op1(Upsample)
    } else {
        by_broadcast(x)
    }
}

/// The same through candle's ops (other devices), whose backward pass is a sum.
fn by_broadcast(x: &Tensor) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    x.reshape((b, c, h, 1, w, 1))?
        .broadcast_as((b, c, h, 2, w, 2))?
        .reshape((b, c, 2 * h, 2 * w))
}

/// The forward op.
struct Upsample;

impl CustomOp1 for Upsample {
    fn name(&self) -> &'static str {
        "upsample2"
    }

    fn cpu_fwd(&self, x: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = slice(x, layout, "upsample")?;
        let &[b, c, h, w] = layout.dims() else {
            candle_core::bail!("upsample takes [b, c, h, w], got {:?}", layout.dims())
        };
        let mut y = vec![0f32; x.len() * 4];
        // Each input row becomes two output rows of doubled pixels.
        y.par_chunks_mut(4 * w * h)
            .zip(x.par_chunks(w * h))
            .for_each(|(y, plane)| {
                for (rows, row) in y.chunks_mut(4 * w).zip(plane.chunks(w)) {
                    let (top, bottom) = rows.split_at_mut(2 * w);
                    for (pair, v) in top.chunks_mut(2).zip(row) {
                        pair.fill(*v);
                    }
                    bottom.copy_from_slice(top);
                }
            });
        Ok((CpuStorage::F32(y), Shape::from((b, c, 2 * h, 2 * w))))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(grad.contiguous()?.apply_op1_no_bwd(&SumBlocks {
            shape: x.shape().clone(),
        })?))
    }
}

/// The backward op: each 2x2 block of the gradient summed into its input pixel.
struct SumBlocks {
    shape: Shape,
}

impl CustomOp1 for SumBlocks {
    fn name(&self) -> &'static str {
        "upsample2-grad"
    }

    fn cpu_fwd(&self, grad: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let grad = slice(grad, layout, "upsample backward")?;
        let &[_, _, h, w] = self.shape.dims() else {
            candle_core::bail!("upsample backward: input shape {:?}", self.shape)
        };
        let mut out = vec![0f32; grad.len() / 4];
        out.par_chunks_mut(w * h)
            .zip(grad.par_chunks(4 * w * h))
            .for_each(|(plane, grad)| {
                for (row, rows) in plane.chunks_mut(w).zip(grad.chunks(4 * w)) {
                    let (top, bottom) = rows.split_at(2 * w);
                    for (i, v) in row.iter_mut().enumerate() {
                        *v = top[2 * i] + top[2 * i + 1] + bottom[2 * i] + bottom[2 * i + 1];
                    }
                }
            });
        Ok((CpuStorage::F32(out), self.shape.clone()))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Tensor, Var};

    /// The op against candle's broadcast, values and gradient, on a shape with odd sides.
    #[test]
    fn upsampling_matches_the_broadcast_and_its_gradient() {
        let x =
            Var::from_tensor(&crate::nn::kernels::random_tensor(&[2, 3, 3, 5], 1, "x")).unwrap();
        let reference = super::by_broadcast(&x).unwrap();
        let fused = super::upsample2(&x).unwrap();
        assert_eq!(fused.dims(), reference.dims());
        assert_eq!(crate::nn::kernels::max_abs_diff(&fused, &reference), 0.0);
        let weights = crate::nn::kernels::random_tensor(fused.dims(), 2, "loss");
        let loss = |y: &Tensor| (y * &weights).unwrap().sum_all().unwrap();
        let (ga, gb) = (
            loss(&fused).backward().unwrap(),
            loss(&reference).backward().unwrap(),
        );
        let (ga, gb) = (ga.get(&x).unwrap(), gb.get(&x).unwrap());
        assert!(crate::nn::kernels::max_abs_diff(ga, gb) < 1e-5);
    }
}
