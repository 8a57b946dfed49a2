//! Distance of samples from a thin shell (the circle, the sphere): the thesis's
//! "small subset of particles that deviate" from the ring, as a number.

use super::Points;

/// Fraction of samples farther than `widths` radial stds from the shell of `radius`:
/// for exact samples of a Gaussian radial profile, 0.27% at 3 widths.
pub fn outlier_fraction(samples: Points, radius: f64, width: f64, widths: f64) -> f64 {
    let far = (0..samples.len())
        .filter(|&i| {
            let r = samples
                .row(i)
                .iter()
                .map(|v| (*v as f64).powi(2))
                .sum::<f64>()
                .sqrt();
            (r - radius).abs() > widths * width
        })
        .count();
    far as f64 / samples.len().max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::toy::Distribution;
    use crate::rng::stream;

    #[test]
    fn exact_samples_have_the_gaussian_tail_and_shifted_ones_are_all_outliers() {
        for name in ["circle", "sphere"] {
            let d: Distribution = serde_norway::from_str(&format!("name: {name}")).unwrap();
            let (radius, width) = d.shell().unwrap();
            let xs = d.sample(100_000, &mut stream(3, name));
            let p = Points::new(&xs, d.dim());
            let tail = outlier_fraction(p, radius, width, 3.0);
            // P(|z| > 3) = 0.0027; the sphere's uniform direction changes nothing.
            assert!((tail - 0.0027).abs() < 0.0008, "{name}: {tail}");
            assert_eq!(outlier_fraction(p, radius + 1.0, width, 3.0), 1.0);
        }
    }
}
