//! The networks: small candle modules with a `Config` and a `forward` (the MLP and
//! U-Net score networks, the image classifier, time embeddings, seeded initialisation),
//! and one handle on every score network ([`network`]).

pub mod classifier;
pub mod embedding;
pub mod init;
pub mod mlp;
pub mod network;
pub mod unet;

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
