//! Sample quality in a classifier's feature space: FID (Heusel et al. 2017), KID
//! (Binkowski et al. 2018), the Inception Score (Salimans et al. 2016) and
//! precision/recall with k-nearest-neighbour manifolds (Kynkaanniemi et al. 2019).
//! The features come from the project's own small classifier, not Inception-v3, so the
//! numbers rank models against each other but are not comparable to published ones.

use nalgebra::{DMatrix, DVector, SymmetricEigen};

use super::Points;

/// Mean and covariance (unbiased) of a feature set, in f64.
fn moments(x: Points) -> (DVector<f64>, DMatrix<f64>) {
    let (n, d) = (x.len(), x.dim);
    let m = DMatrix::from_row_iterator(n, d, x.data.iter().map(|&v| v as f64));
    let mean = DVector::from_iterator(d, (0..d).map(|j| m.column(j).mean()));
    let mut centred = m;
    for j in 0..d {
        let mu = mean[j];
        centred.column_mut(j).add_scalar_mut(-mu);
    }
    let cov = centred.transpose() * &centred / (n.max(2) - 1) as f64;
    (mean, cov)
}

/// The symmetric positive semi-definite square root (negative eigenvalues, which only
/// rounding produces, are set to zero).
fn sqrt_psd(m: &DMatrix<f64>) -> DMatrix<f64> {
    let sym = (m + m.transpose()) * 0.5;
    let eig = SymmetricEigen::new(sym);
    let roots = eig.eigenvalues.map(|l| l.max(0.0).sqrt());
    &eig.eigenvectors * DMatrix::from_diagonal(&roots) * eig.eigenvectors.transpose()
}

/// Frechet distance between Gaussians fitted to the two sets:
/// |mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a^1/2 S_b S_a^1/2)^1/2).
pub fn frechet_distance(a: Points, b: Points) -> f64 {
    let (mu_a, s_a) = moments(a);
    let (mu_b, s_b) = moments(b);
    let root_a = sqrt_psd(&s_a);
    let cross = sqrt_psd(&(&root_a * &s_b * &root_a));
    (mu_a - mu_b).norm_squared() + s_a.trace() + s_b.trace() - 2.0 * cross.trace()
}

/// Unbiased squared MMD with KID's cubic polynomial kernel k(x, y) = (x.y/d + 1)^3,
/// averaged over `subsets` random subsets of `size` rows (drawn by `pick`) as in the
/// paper. Returns (mean, standard deviation over subsets).
pub fn kernel_inception_distance(
    a: Points,
    b: Points,
    subsets: usize,
    size: usize,
    pick: &mut dyn FnMut(usize, usize) -> Vec<usize>,
) -> (f64, f64) {
    let d = a.dim as f64;
    let k = |x: &[f32], y: &[f32]| {
        let dot: f64 = x
            .iter()
            .zip(y)
            .map(|(p, q)| (*p as f64) * (*q as f64))
            .sum();
        (dot / d + 1.0).powi(3)
    };
    let m = size.min(a.len()).min(b.len());
    let mut values = Vec::with_capacity(subsets);
    for _ in 0..subsets.max(1) {
        let ia = pick(a.len(), m);
        let ib = pick(b.len(), m);
        let (mut kaa, mut kbb, mut kab) = (0.0, 0.0, 0.0);
        for (p, &i) in ia.iter().enumerate() {
            for (q, &j) in ia.iter().enumerate() {
                if p != q {
                    kaa += k(a.row(i), a.row(j));
                }
            }
            for (q, &j) in ib.iter().enumerate() {
                if p != q {
                    kbb += k(b.row(ib[p]), b.row(j));
                }
                kab += k(a.row(i), b.row(j));
            }
        }
        let mf = m as f64;
        values.push(kaa / (mf * (mf - 1.0)) + kbb / (mf * (mf - 1.0)) - 2.0 * kab / (mf * mf));
    }
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / values.len() as f64;
    (mean, var.sqrt())
}

/// exp(E_x KL(p(y|x) || p(y))) from class probabilities (rows sum to 1): between 1
/// (no confident or no diverse predictions) and the number of classes.
pub fn inception_score(probs: Points) -> f64 {
    let (n, k) = (probs.len(), probs.dim);
    let mut marginal = vec![0.0f64; k];
    for i in 0..n {
        for (m, p) in marginal.iter_mut().zip(probs.row(i)) {
            *m += *p as f64 / n as f64;
        }
    }
    let mut kl = 0.0;
    for i in 0..n {
        for (p, m) in probs.row(i).iter().zip(&marginal) {
            let p = *p as f64;
            if p > 0.0 {
                kl += p * (p.ln() - m.ln());
            }
        }
    }
    (kl / n as f64).exp()
}

/// Mean over samples of the largest class probability: how sure the classifier is that
/// each sample is some digit (near 1 for clean images, near 1/k for noise), which the
/// Inception Score mixes with diversity.
pub fn mean_top_probability(probs: Points) -> f64 {
    let n = probs.len().max(1);
    (0..probs.len())
        .map(|i| probs.row(i).iter().copied().fold(0f32, f32::max) as f64)
        .sum::<f64>()
        / n as f64
}

/// Fraction of samples whose most probable class is each class: a model that drops or
/// favours a class shows it here even when every single image looks fine.
pub fn class_fractions(probs: Points) -> Vec<f64> {
    let mut counts = vec![0usize; probs.dim];
    for i in 0..probs.len() {
        let row = probs.row(i);
        let top = (0..row.len()).fold(0, |best, k| if row[k] > row[best] { k } else { best });
        counts[top] += 1;
    }
    let n = probs.len().max(1) as f64;
    counts.into_iter().map(|c| c as f64 / n).collect()
}

/// Squared Euclidean distances between every row of `a` and every row of `b`.
fn distances(a: Points, b: Points) -> Vec<f64> {
    let mut out = Vec::with_capacity(a.len() * b.len());
    for i in 0..a.len() {
        let x = a.row(i);
        for j in 0..b.len() {
            out.push(
                x.iter()
                    .zip(b.row(j))
                    .map(|(p, q)| ((p - q) as f64).powi(2))
                    .sum(),
            );
        }
    }
    out
}

/// Radius of each point's k-NN ball within its own set (the k-th neighbour other than
/// itself), squared.
fn knn_radii(x: Points, k: usize) -> Vec<f64> {
    let d = distances(x, x);
    let n = x.len();
    (0..n)
        .map(|i| {
            let mut row: Vec<f64> = d[i * n..(i + 1) * n].to_vec();
            row.sort_by(f64::total_cmp);
            row[k.min(n - 1)]
        })
        .collect()
}

/// Fraction of `query` points inside the union of `support`'s k-NN balls.
fn coverage(query: Points, support: Points, radii: &[f64]) -> f64 {
    let d = distances(query, support);
    let m = support.len();
    let inside = (0..query.len())
        .filter(|&i| (0..m).any(|j| d[i * m + j] <= radii[j]))
        .count();
    inside as f64 / query.len() as f64
}

/// (precision, recall): the share of samples on the data manifold, and of data on the
/// samples' manifold, each manifold being the union of k-NN balls.
pub fn precision_recall(samples: Points, data: Points, k: usize) -> (f64, f64) {
    let data_radii = knn_radii(data, k);
    let sample_radii = knn_radii(samples, k);
    (
        coverage(samples, data, &data_radii),
        coverage(data, samples, &sample_radii),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::{normals, stream};

    fn gaussian(n: usize, std: &[f32], shift: f32, seed: u64) -> Vec<f32> {
        let d = std.len();
        normals(&mut stream(seed, "g"), n * d)
            .chunks(d)
            .flat_map(|r| {
                r.iter()
                    .zip(std)
                    .map(|(z, s)| z * s + shift)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    #[test]
    fn fid_matches_the_closed_form_for_diagonal_gaussians() {
        // Diagonal covariances: FID = |dmu|^2 + sum (s_a - s_b)^2 over std devs.
        let (sa, sb) = ([1.0f32, 2.0, 0.5], [2.0f32, 1.0, 0.5]);
        let a = gaussian(40_000, &sa, 0.0, 1);
        let b = gaussian(40_000, &sb, 1.0, 2);
        let fid = frechet_distance(Points::new(&a, 3), Points::new(&b, 3));
        let want = 3.0 + (1.0f64 - 2.0).powi(2) + (2.0f64 - 1.0).powi(2);
        assert!((fid - want).abs() < 0.1, "{fid} vs {want}");
        let same = frechet_distance(Points::new(&a, 3), Points::new(&a, 3));
        assert!(same.abs() < 1e-6, "{same}");
    }

    #[test]
    fn kid_is_unbiased_and_separates() {
        let a = gaussian(400, &[1.0, 1.0], 0.0, 1);
        let b = gaussian(400, &[1.0, 1.0], 0.0, 2);
        let c = gaussian(400, &[1.0, 1.0], 1.0, 3);
        let mut rng = stream(0, "pick");
        let mut pick = |n: usize, m: usize| {
            use rand::seq::index::sample;
            sample(&mut rng, n, m).into_vec()
        };
        let (same, _) =
            kernel_inception_distance(Points::new(&a, 2), Points::new(&b, 2), 10, 200, &mut pick);
        let (apart, _) =
            kernel_inception_distance(Points::new(&a, 2), Points::new(&c, 2), 10, 200, &mut pick);
        assert!(same.abs() < 0.05, "{same}");
        assert!(apart > 0.5, "{apart}");
        // Two points each: the unbiased estimate by hand.
        let x = [1.0f32, 0.0, 0.0, 1.0];
        let y = [1.0f32, 1.0, 0.0, 0.0];
        let mut all = |_: usize, m: usize| (0..m).collect::<Vec<_>>();
        let (v, _) =
            kernel_inception_distance(Points::new(&x, 2), Points::new(&y, 2), 1, 2, &mut all);
        let k = |dot: f64| (dot / 2.0 + 1.0f64).powi(3);
        // k_xx(0,1)=k(0), k_yy(0,1)=k(0); k_xy: (1,1)->1, (1,0)->0, (0,1)->1, (0,0)->0.
        let want =
            (2.0 * k(0.0)) / 2.0 + (2.0 * k(0.0)) / 2.0 - 2.0 * (2.0 * k(1.0) + 2.0 * k(0.0)) / 4.0;
        assert!((v - want).abs() < 1e-9, "{v} vs {want}");
    }

    #[test]
    fn inception_score_spans_one_to_the_class_count() {
        let uniform = vec![0.25f32; 4 * 8];
        assert!((inception_score(Points::new(&uniform, 4)) - 1.0).abs() < 1e-9);
        let confident: Vec<f32> = (0..8)
            .flat_map(|i| (0..4).map(move |k| if k == i % 4 { 1.0 } else { 0.0 }))
            .collect();
        assert!((inception_score(Points::new(&confident, 4)) - 4.0).abs() < 1e-9);
    }

    #[test]
    fn top_probability_and_class_fractions_of_known_predictions() {
        // Three samples: two sure of class 2 (0.9), one unsure of class 0 (0.4).
        let probs = [
            0.05f32, 0.05, 0.9, 0.0, 0.1, 0.0, 0.9, 0.0, 0.4, 0.3, 0.2, 0.1,
        ];
        let p = Points::new(&probs, 4);
        assert!((mean_top_probability(p) - (0.9 + 0.9 + 0.4) / 3.0).abs() < 1e-6);
        let f = class_fractions(p);
        assert_eq!(f.len(), 4);
        assert!((f[2] - 2.0 / 3.0).abs() < 1e-12 && (f[0] - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!((f[1], f[3]), (0.0, 0.0));
    }

    #[test]
    fn precision_and_recall_see_missing_modes() {
        let data: Vec<f32> = gaussian(200, &[0.1, 0.1], 0.0, 1)
            .into_iter()
            .chain(gaussian(200, &[0.1, 0.1], 5.0, 2))
            .collect();
        // Samples cover only the first mode: full precision, half the recall.
        let samples = gaussian(200, &[0.1, 0.1], 0.0, 3);
        let (p, r) = precision_recall(Points::new(&samples, 2), Points::new(&data, 2), 3);
        assert!(p > 0.95, "{p}");
        assert!((r - 0.5).abs() < 0.05, "{r}");
    }
}
