//! How samples split across the components of a known mixture: the documents' test of
//! whether a sampler recovers the relative weights of separated modes.

use super::Points;
use crate::data::toy::Mixture;

/// Fraction of samples assigned (by maximum responsibility) to each component.
pub fn mode_weights(samples: Points, mixture: &Mixture) -> Vec<f64> {
    let mut counts = vec![0usize; mixture.weights.len()];
    for i in 0..samples.len() {
        counts[mixture.assign(samples.row(i))] += 1;
    }
    counts
        .iter()
        .map(|&c| c as f64 / samples.len().max(1) as f64)
        .collect()
}

/// Total variation distance between estimated and true weights.
pub fn weight_error(estimated: &[f64], truth: &[f64]) -> f64 {
    estimated
        .iter()
        .zip(truth)
        .map(|(e, t)| (e - t).abs())
        .sum::<f64>()
        / 2.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_nearest_component() {
        let mix = Mixture {
            means: vec![vec![1.0, 1.0], vec![-1.0, -1.0]],
            weights: vec![0.5, 0.5],
            std: 0.2,
        };
        let pts = [1.1f32, 0.9, -1.0, -1.2, -0.8, -0.9, -2.0, -1.0];
        let w = mode_weights(Points::new(&pts, 2), &mix);
        assert_eq!(w, vec![0.25, 0.75]);
        assert!((weight_error(&w, &mix.weights) - 0.25).abs() < 1e-12);
    }
}
