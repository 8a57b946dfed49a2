//! Maximum mean discrepancy (Gretton et al. 2012) with a Gaussian RBF kernel
//! k(x, y) = exp(-|x - y|^2 / (2 h^2)).

use rayon::prelude::*;

use super::Points;

fn sq_dist(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| (x as f64 - y as f64).powi(2))
        .sum()
}

/// The median heuristic: h = median pairwise distance of the pooled sample.
pub fn median_bandwidth(a: Points, b: Points) -> f64 {
    let pooled: Vec<&[f32]> = (0..a.len())
        .map(|i| a.row(i))
        .chain((0..b.len()).map(|i| b.row(i)))
        .collect();
    let mut d: Vec<f64> = (0..pooled.len())
        .into_par_iter()
        .flat_map_iter(|i| {
            let pooled = &pooled;
            (i + 1..pooled.len()).map(move |j| sq_dist(pooled[i], pooled[j]).sqrt())
        })
        .collect();
    if d.is_empty() {
        return 1.0;
    }
    let mid = d.len() / 2;
    let (_, median, _) = d.select_nth_unstable_by(mid, f64::total_cmp);
    if *median > 0.0 { *median } else { 1.0 }
}

/// Unbiased estimate of MMD^2 with bandwidth `h`.
pub fn mmd2_unbiased(a: Points, b: Points, h: f64) -> f64 {
    let gamma = 1.0 / (2.0 * h * h);
    let mean_k = |p: Points, q: Points, same: bool| -> f64 {
        // Rows in parallel, their sums added in row order: a parallel reduction would
        // add in an order that depends on the threads, and one key must always mean
        // the same bytes.
        let rows: Vec<f64> = (0..p.len())
            .into_par_iter()
            .map(|i| {
                (0..q.len())
                    .filter(|&j| !(same && i == j))
                    .map(|j| (-gamma * sq_dist(p.row(i), q.row(j))).exp())
                    .sum::<f64>()
            })
            .collect();
        let sum: f64 = rows.iter().sum();
        let pairs = if same {
            p.len() * (p.len() - 1)
        } else {
            p.len() * q.len()
        };
        sum / pairs as f64
    };
    mean_k(a, a, true) + mean_k(b, b, true) - 2.0 * mean_k(a, b, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::{normals, stream};

    #[test]
    fn the_estimate_is_the_same_bytes_whatever_the_thread_count() {
        let a = normals(&mut stream(1, "a"), 2 * 700);
        let b = normals(&mut stream(2, "b"), 2 * 700);
        let (pa, pb) = (Points::new(&a, 2), Points::new(&b, 2));
        let with = |threads: usize| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| mmd2_unbiased(pa, pb, 1.0).to_bits())
        };
        let one = with(1);
        for threads in [2, 3, 7] {
            assert_eq!(with(threads), one, "{threads} threads");
        }
    }

    #[test]
    fn shifted_gaussians_match_closed_form() {
        // For x, x' ~ N(m, s^2 I_d) and y ~ N(m', s^2 I_d):
        // E k(x, y) = (h^2 / (h^2 + 2 s^2))^(d/2) exp(-|m - m'|^2 / (2 (h^2 + 2 s^2))),
        // so MMD^2 = 2 c (1 - exp(-|mu|^2 / (2 (h^2 + 2 s^2)))), c = (h^2/(h^2+2s^2))^(d/2).
        let (n, h, s2) = (3000, 1.0f64, 1.0f64);
        let mut rng = stream(5, "mmd");
        let a = normals(&mut rng, n * 2);
        let b: Vec<f32> = normals(&mut rng, n * 2)
            .chunks(2)
            .flat_map(|p| [p[0] + 1.0, p[1]])
            .collect();
        let got = mmd2_unbiased(Points::new(&a, 2), Points::new(&b, 2), h);
        let c = h * h / (h * h + 2.0 * s2);
        let expected = 2.0 * c * (1.0 - (-1.0 / (2.0 * (h * h + 2.0 * s2))).exp());
        assert!((got - expected).abs() < 0.01, "mmd2 {got} vs {expected}");
        let same = mmd2_unbiased(Points::new(&a[..n], 2), Points::new(&a[n..], 2), h);
        assert!(same.abs() < 0.005, "same-distribution mmd2 {same}");
    }

    #[test]
    fn median_bandwidth_of_two_points() {
        let a = [0f32, 0.0];
        let b = [3f32, 4.0];
        assert_eq!(
            median_bandwidth(Points::new(&a, 2), Points::new(&b, 2)),
            5.0
        );
    }
}
