//! CPU kernels: matrix products, convolutions (im2col, implicit GEMM, Winograd), fused
//! layers with their own backward passes, buffers and vectorised maths. Each works on
//! plain f32 slices or as a candle custom op, and is tested against the candle ops it
//! replaces. They hold all of the crate's `unsafe` (each block with its SAFETY note)
//! and import nothing from the rest of the crate, so a kernel change rebuilds only
//! what uses it and a model change never touches them.

pub mod adamw;
pub mod buffers;
pub mod conv;
pub mod cpu;
pub mod fused_attention;
pub mod fused_mlp;
pub mod fused_res_block;
pub mod gemm;
pub mod group_norm;
pub mod lanes;
pub mod packed;
pub mod transpose;
pub mod upsample;
pub mod vmath;
pub mod winograd;

/// Test support: `n` seeded standard normal numbers (`label` names the stream). The
/// kernels' tests draw their own numbers so that the kernels need nothing else.
#[cfg(test)]
pub(crate) fn normals(seed: u64, label: &str, n: usize) -> Vec<f32> {
    use rand::{RngExt, SeedableRng};
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut hasher = DefaultHasher::new();
    (seed, label).hash(&mut hasher);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(hasher.finish());
    (0..n)
        .map(|_| rng.sample::<f64, _>(rand_distr::StandardNormal) as f32)
        .collect()
}

/// Test support: a seeded normal tensor (`label` names the stream).
#[cfg(test)]
pub(crate) fn random_tensor(shape: &[usize], seed: u64, label: &str) -> candle_core::Tensor {
    let data = normals(seed, label, shape.iter().product());
    candle_core::Tensor::from_vec(data, shape, &candle_core::Device::Cpu).unwrap()
}

/// Test support: the larger of two errors, NaN (a number never written, or a
/// computation gone wrong) the worst of all, where `f32::max` would drop it.
#[cfg(test)]
pub(crate) fn worst(a: f32, b: f32) -> f32 {
    if a.is_nan() || b.is_nan() {
        f32::INFINITY
    } else {
        a.max(b)
    }
}

/// Test support: the largest absolute difference of two tensors, how each kernel is
/// compared with the candle ops it replaces; a NaN on either side counts as infinite
/// (candle's `max` reduction would skip it, as `f32::max` does).
#[cfg(test)]
pub(crate) fn max_abs_diff(a: &candle_core::Tensor, b: &candle_core::Tensor) -> f32 {
    let d = (a - b).unwrap().abs().unwrap().flatten_all().unwrap();
    d.to_vec1::<f32>().unwrap().into_iter().fold(0f32, worst)
}

#[cfg(test)]
mod test_support {
    use super::*;

    #[test]
    fn a_nan_anywhere_is_the_largest_difference() {
        let cpu = candle_core::Device::Cpu;
        let a = candle_core::Tensor::new(&[1f32, 2.0, 3.0], &cpu).unwrap();
        for at in 0..3 {
            let mut values = vec![1f32, 2.5, 3.0];
            values[at] = f32::NAN;
            let b = candle_core::Tensor::new(values.as_slice(), &cpu).unwrap();
            assert_eq!(max_abs_diff(&a, &b), f32::INFINITY, "NaN at {at}");
        }
        let b = candle_core::Tensor::new(&[1f32, 2.5, 3.0], &cpu).unwrap();
        assert_eq!(max_abs_diff(&a, &b), 0.5);
    }
}

#[cfg(test)]
mod every_level;
