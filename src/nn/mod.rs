//! Score networks: small candle modules with a `Config` and a `forward`.

pub mod adamw;
pub mod buffers;
pub mod classifier;
pub mod conv;
pub mod embedding;
pub mod fused_attention;
pub mod fused_mlp;
pub mod fused_res_block;
pub mod gemm;
pub mod group_norm;
pub mod init;
pub mod mlp;
pub mod network;
pub mod packed;
pub mod transpose;
pub mod unet;
pub mod upsample;
pub mod vmath;
pub mod winograd;

/// Test support: the DESIGN's candle pitfall (fused ops without a backward pass make
/// gradients vanish silently) is checked the same way for every network.
#[cfg(test)]
pub(crate) fn assert_every_parameter_learns<'a>(
    grads: &candle_core::backprop::GradStore,
    vars: impl IntoIterator<Item = (&'a String, &'a candle_core::Var)>,
) {
    for (name, var) in vars {
        let g = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("{name} has no gradient"));
        let norm = g
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(norm > 0.0, "{name} has a zero gradient");
    }
}

/// Test support for the CPU kernels: a seeded normal tensor (`label` names the stream).
#[cfg(test)]
pub(crate) fn random_tensor(shape: &[usize], seed: u64, label: &str) -> candle_core::Tensor {
    let n = shape.iter().product();
    let data = crate::rng::normals(&mut crate::rng::stream(seed, label), n);
    candle_core::Tensor::from_vec(data, shape, &candle_core::Device::Cpu).unwrap()
}

/// Test support for the CPU kernels: the largest absolute difference of two tensors,
/// how each kernel is compared with the candle ops it replaces.
#[cfg(test)]
pub(crate) fn max_abs_diff(a: &candle_core::Tensor, b: &candle_core::Tensor) -> f32 {
    let d = (a - b).unwrap().abs().unwrap().flatten_all().unwrap();
    d.max(0).unwrap().to_scalar::<f32>().unwrap()
}
