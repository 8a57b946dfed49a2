//! Sliced Wasserstein distance (Rabin et al. 2011; Bonneel et al. 2015):
//! SW_2(P, Q)^2 = E_theta W_2(theta#P, theta#Q)^2 over uniform directions theta, where
//! each one-dimensional W_2 is computed exactly by matching sorted quantiles.

use rand_chacha::ChaCha8Rng;

use super::Points;
use crate::rng::normals;

/// SW_2 with `projections` random directions; sets of unequal size are compared
/// through `m` = the smaller size's evenly spaced quantiles.
pub fn sliced_wasserstein(a: Points, b: Points, projections: usize, rng: &mut ChaCha8Rng) -> f64 {
    let dim = a.dim;
    let m = a.len().min(b.len());
    if m == 0 || projections == 0 {
        return f64::NAN;
    }
    let mut total = 0.0;
    for _ in 0..projections {
        let mut dir: Vec<f64> = normals(rng, dim).into_iter().map(f64::from).collect();
        let norm = dir.iter().map(|v| v * v).sum::<f64>().sqrt();
        dir.iter_mut().for_each(|v| *v /= norm);
        let project = |p: Points| {
            let mut v: Vec<f64> = (0..p.len())
                .map(|i| p.row(i).iter().zip(&dir).map(|(&x, d)| x as f64 * d).sum())
                .collect();
            v.sort_by(f64::total_cmp);
            v
        };
        let (pa, pb) = (project(a), project(b));
        let quantile =
            |v: &[f64], k: usize| v[((k as f64 + 0.5) * v.len() as f64 / m as f64) as usize];
        total += (0..m)
            .map(|k| (quantile(&pa, k) - quantile(&pb, k)).powi(2))
            .sum::<f64>()
            / m as f64;
    }
    (total / projections as f64).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::stream;

    #[test]
    fn shifted_gaussians_match_closed_form() {
        // For P = N(0, I), Q = N(mu, I) in d dims, every projection is a 1D shift by
        // theta.mu, so SW_2^2 = E[(theta.mu)^2] = |mu|^2 / d.
        let n = 20_000;
        let mut rng = stream(1, "sw");
        let a = normals(&mut rng, n * 2);
        let b: Vec<f32> = normals(&mut rng, n * 2)
            .chunks(2)
            .flat_map(|p| [p[0] + 3.0, p[1] + 4.0])
            .collect();
        let sw = sliced_wasserstein(
            Points::new(&a, 2),
            Points::new(&b, 2),
            500,
            &mut stream(2, "p"),
        );
        let expected = (25.0f64 / 2.0).sqrt();
        assert!(
            (sw - expected).abs() < 0.05 * expected,
            "sw {sw} vs {expected}"
        );
    }

    #[test]
    fn same_distribution_is_near_zero() {
        let mut rng = stream(1, "sw");
        let a = normals(&mut rng, 20_000);
        let b = normals(&mut rng, 16_000);
        let sw = sliced_wasserstein(
            Points::new(&a, 2),
            Points::new(&b, 2),
            100,
            &mut stream(2, "p"),
        );
        assert!(sw < 0.05, "sw {sw}");
    }
}
