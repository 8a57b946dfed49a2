//! Low-dimensional toy distributions with, where one exists, their analytic density.
//! They are the documents' test beds: a thin ring, an imbalanced Gaussian mixture, and
//! the usual spiral and moons.

use std::f64::consts::PI;

use rand::RngExt;
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};

use crate::tagged::tagged_enum;

tagged_enum! {
    #[tag = "name", remote = "Distribution"]
    /// Which distribution to draw from, with its shape parameters.
    #[derive(Debug, Clone, PartialEq)]
    pub enum Distribution {
        /// A thin ring: radius plus Gaussian radial noise of std `width`.
        Circle {
            #[serde(default = "one")]
            radius: f64,
            #[serde(default = "ring_width")]
            width: f64,
        },
        /// A thin spherical shell in 3D, the circle's analogue: a uniform direction at
        /// radius plus Gaussian radial noise of std `width`.
        Sphere {
            #[serde(default = "one")]
            radius: f64,
            #[serde(default = "ring_width")]
            width: f64,
        },
        /// Isotropic Gaussian mixture in any dimension (one coordinate per entry of each
        /// mean: `[[-1], [1]]` is a 1D mixture); the default is the documents' imbalanced 0.1/0.9
        /// mixture at (1,1) and (-1,-1).
        Gmm {
            #[serde(default = "gmm_means")]
            means: Vec<Vec<f64>>,
            #[serde(default = "gmm_weights")]
            weights: Vec<f64>,
            #[serde(default = "gmm_std")]
            std: f64,
        },
        /// A two-dimensional spiral arm with Gaussian noise.
        Spiral {
            #[serde(default = "spiral_turns")]
            turns: f64,
            #[serde(default = "toy_noise")]
            noise: f64,
        },
        /// Two interleaving half circles (as scikit-learn's make_moons), centred.
        Moons {
            #[serde(default = "toy_noise")]
            noise: f64,
        },
        /// Two equally weighted Gaussians at (-offset, 0) and (offset, 0).
        TwoGaussians {
            #[serde(default = "one")]
            offset: f64,
            #[serde(default = "gmm_std")]
            std: f64,
        },
    }
}

fn one() -> f64 {
    1.0
}
fn ring_width() -> f64 {
    0.05
}
fn gmm_means() -> Vec<Vec<f64>> {
    vec![vec![1.0, 1.0], vec![-1.0, -1.0]]
}
fn gmm_weights() -> Vec<f64> {
    vec![0.1, 0.9]
}
fn gmm_std() -> f64 {
    0.2
}
fn spiral_turns() -> f64 {
    1.5
}
fn toy_noise() -> f64 {
    0.05
}

/// An isotropic Gaussian mixture: the analytic form evaluate and exact scores use.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mixture {
    pub means: Vec<Vec<f64>>,
    pub weights: Vec<f64>,
    pub std: f64,
}

impl Mixture {
    /// The mixture after x -> a x + std z (z standard normal): the marginal of a
    /// diffusion at a time with mean coefficient `a` and noise `std`.
    pub fn noised(&self, a: f64, std: f64) -> Mixture {
        Mixture {
            means: self
                .means
                .iter()
                .map(|m| m.iter().map(|v| a * v).collect())
                .collect(),
            weights: self.weights.clone(),
            std: (a * a * self.std * self.std + std * std).sqrt(),
        }
    }

    /// The mixture's density at `x`: the curve a 1D histogram of samples is drawn over.
    pub fn density(&self, x: &[f64]) -> f64 {
        let var = self.std * self.std;
        let norm = (2.0 * PI * var).powf(x.len() as f64 / 2.0);
        self.means
            .iter()
            .zip(&self.weights)
            .map(|(mean, w)| {
                let d2: f64 = mean.iter().zip(x).map(|(m, v)| (v - m).powi(2)).sum();
                w * (-d2 / (2.0 * var)).exp() / norm
            })
            .sum()
    }

    /// Index of the component with the highest posterior responsibility for `x`.
    pub fn assign(&self, x: &[f32]) -> usize {
        let var = self.std * self.std;
        let mut best = (f64::NEG_INFINITY, 0);
        for (k, (mean, w)) in self.means.iter().zip(&self.weights).enumerate() {
            let d2: f64 = mean
                .iter()
                .zip(x)
                .map(|(m, &v)| (v as f64 - m).powi(2))
                .sum();
            let logp = w.ln() - d2 / (2.0 * var);
            if logp > best.0 {
                best = (logp, k);
            }
        }
        best.1
    }
}

impl Distribution {
    /// Every name this enum accepts, for error messages.
    pub const NAMES: [&'static str; 6] = [
        "circle",
        "sphere",
        "gmm",
        "spiral",
        "moons",
        "two_gaussians",
    ];

    /// Checks parameters a user could get wrong; the message says what is expected.
    pub fn validate(&self) -> Result<(), String> {
        let positive = |name: &str, v: f64| {
            if v > 0.0 && v.is_finite() {
                Ok(())
            } else {
                Err(format!("`{name}` must be positive, got {v}"))
            }
        };
        match self {
            Distribution::Circle { radius, width } | Distribution::Sphere { radius, width } => {
                positive("radius", *radius)?;
                positive("width", *width)
            }
            Distribution::Gmm {
                means,
                weights,
                std,
            } => {
                positive("std", *std)?;
                if means.is_empty() {
                    return Err("`means` needs at least one component".into());
                }
                if means.len() != weights.len() {
                    return Err(format!(
                        "{} means but {} weights: give one weight per mean",
                        means.len(),
                        weights.len()
                    ));
                }
                let dim = means[0].len();
                if dim == 0 || means.iter().any(|m| m.len() != dim) {
                    return Err(
                        "every mean must have the same, non-zero number of coordinates".into(),
                    );
                }
                if weights.iter().any(|w| !(*w > 0.0)) {
                    return Err("every weight must be positive".into());
                }
                let total: f64 = weights.iter().sum();
                if (total - 1.0).abs() > 1e-6 {
                    return Err(format!("weights must sum to 1, they sum to {total}"));
                }
                Ok(())
            }
            Distribution::Spiral { turns, noise } => {
                positive("turns", *turns)?;
                positive("noise", *noise)
            }
            Distribution::Moons { noise } => positive("noise", *noise),
            Distribution::TwoGaussians { offset, std } => {
                positive("offset", *offset)?;
                positive("std", *std)
            }
        }
    }

    pub fn dim(&self) -> usize {
        match self {
            Distribution::Gmm { means, .. } => means.first().map(Vec::len).unwrap_or(2),
            Distribution::Sphere { .. } => 3,
            _ => 2,
        }
    }

    /// (radius, width) of the thin shells (circle, sphere): what the outlier metric
    /// measures distances from.
    pub fn shell(&self) -> Option<(f64, f64)> {
        match self {
            Distribution::Circle { radius, width } | Distribution::Sphere { radius, width } => {
                Some((*radius, *width))
            }
            _ => None,
        }
    }

    /// The analytic mixture form, for distributions that are Gaussian mixtures.
    pub fn mixture(&self) -> Option<Mixture> {
        match self {
            Distribution::Gmm {
                means,
                weights,
                std,
            } => Some(Mixture {
                means: means.clone(),
                weights: weights.clone(),
                std: *std,
            }),
            Distribution::TwoGaussians { offset, std } => Some(Mixture {
                means: vec![vec![-offset, 0.0], vec![*offset, 0.0]],
                weights: vec![0.5, 0.5],
                std: *std,
            }),
            _ => None,
        }
    }

    /// Draws `n` points as a row-major `[n, dim]` buffer.
    pub fn sample(&self, n: usize, rng: &mut ChaCha8Rng) -> Vec<f32> {
        let mut out = Vec::with_capacity(n * self.dim());
        let normal = |rng: &mut ChaCha8Rng| rng.sample::<f64, _>(StandardNormal);
        for _ in 0..n {
            match self {
                Distribution::Circle { radius, width } => {
                    let angle = 2.0 * PI * rng.random::<f64>();
                    let r = radius + width * normal(rng);
                    out.extend([(r * angle.cos()) as f32, (r * angle.sin()) as f32]);
                }
                Distribution::Sphere { radius, width } => {
                    // A normalised Gaussian vector is uniform on the sphere.
                    let v: [f64; 3] = [normal(rng), normal(rng), normal(rng)];
                    let norm = v.iter().map(|c| c * c).sum::<f64>().sqrt().max(1e-12);
                    let r = radius + width * normal(rng);
                    out.extend(v.map(|c| (r * c / norm) as f32));
                }
                Distribution::Gmm { .. } | Distribution::TwoGaussians { .. } => {
                    let mix = self
                        .mixture()
                        .expect("mixture distributions have a mixture form");
                    let u: f64 = rng.random();
                    let mut acc = 0.0;
                    let mut k = mix.weights.len() - 1;
                    for (i, w) in mix.weights.iter().enumerate() {
                        acc += w;
                        if u < acc {
                            k = i;
                            break;
                        }
                    }
                    for m in &mix.means[k] {
                        out.push((m + mix.std * normal(rng)) as f32);
                    }
                }
                Distribution::Spiral { turns, noise } => {
                    let t = rng.random::<f64>().sqrt();
                    let angle = t * turns * 2.0 * PI;
                    out.extend([
                        (t * angle.cos() + noise * normal(rng)) as f32,
                        (t * angle.sin() + noise * normal(rng)) as f32,
                    ]);
                }
                Distribution::Moons { noise } => {
                    let angle = PI * rng.random::<f64>();
                    let (x, y) = if rng.random::<bool>() {
                        (angle.cos(), angle.sin())
                    } else {
                        (1.0 - angle.cos(), 0.5 - angle.sin())
                    };
                    out.extend([
                        (x - 0.5 + noise * normal(rng)) as f32,
                        (y - 0.25 + noise * normal(rng)) as f32,
                    ]);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::stream;

    #[test]
    fn gmm_samples_follow_the_weights() {
        let d = Distribution::Gmm {
            means: gmm_means(),
            weights: gmm_weights(),
            std: 0.2,
        };
        let xs = d.sample(20_000, &mut stream(1, "t"));
        let mix = d.mixture().unwrap();
        let first = xs.chunks(2).filter(|p| mix.assign(p) == 0).count() as f64 / 20_000.0;
        assert!((first - 0.1).abs() < 0.01, "fraction in mode 0 = {first}");
    }

    #[test]
    fn circle_points_lie_on_the_ring() {
        let d = Distribution::Circle {
            radius: 2.0,
            width: 0.01,
        };
        let xs = d.sample(1000, &mut stream(1, "t"));
        for p in xs.chunks(2) {
            let r = ((p[0] * p[0] + p[1] * p[1]) as f64).sqrt();
            assert!((r - 2.0).abs() < 0.06, "radius {r}");
        }
    }

    #[test]
    fn sphere_points_lie_on_the_shell_in_every_direction() {
        let d = Distribution::Sphere {
            radius: 2.0,
            width: 0.01,
        };
        assert_eq!(d.dim(), 3);
        let xs = d.sample(4000, &mut stream(1, "s"));
        let mut mean = [0f64; 3];
        for p in xs.chunks(3) {
            let r = p.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt();
            assert!((r - 2.0).abs() < 0.06, "radius {r}");
            for (m, v) in mean.iter_mut().zip(p) {
                *m += *v as f64 / 4000.0;
            }
        }
        // Uniform directions: no side of the sphere is favoured.
        assert!(mean.iter().all(|m| m.abs() < 0.1), "{mean:?}");
        assert_eq!(d.shell(), Some((2.0, 0.01)));
    }

    #[test]
    fn a_one_dimensional_mixture_has_its_density() {
        let d: Distribution = serde_norway::from_str(
            "{ name: gmm, means: [[-1.0], [1.0]], weights: [0.3, 0.7], std: 0.5 }",
        )
        .unwrap();
        d.validate().unwrap();
        assert_eq!(d.dim(), 1);
        let mix = d.mixture().unwrap();
        // Riemann sum of the density over the line is 1; its mass right of 0 is about
        // 0.7 (each mode is 2 stds from 0, where 2.3% of it lies on the other side).
        let dx = 0.001;
        let grid = (-8000..8000).map(|i| i as f64 * dx);
        let total: f64 = grid.clone().map(|x| mix.density(&[x]) * dx).sum();
        let right: f64 = grid
            .filter(|x| *x > 0.0)
            .map(|x| mix.density(&[x]) * dx)
            .sum();
        assert!((total - 1.0).abs() < 1e-6, "{total}");
        assert!(
            (right - (0.7 * 0.97725 + 0.3 * 0.02275)).abs() < 1e-3,
            "{right}"
        );
        let xs = d.sample(20_000, &mut stream(2, "g1"));
        let above = xs.iter().filter(|v| **v > 0.0).count() as f64 / 20_000.0;
        assert!((above - right).abs() < 0.015, "{above} vs {right}");
    }

    #[test]
    fn validation_names_the_problem() {
        let bad = Distribution::Gmm {
            means: gmm_means(),
            weights: vec![0.5],
            std: 0.1,
        };
        assert!(bad.validate().unwrap_err().contains("1 weights"));
        let bad = Distribution::Gmm {
            means: gmm_means(),
            weights: vec![0.5, 0.6],
            std: 0.1,
        };
        assert!(bad.validate().unwrap_err().contains("sum to 1"));
    }
}

#[cfg(test)]
mod every_distribution {
    use super::*;
    use crate::rng::stream;

    #[test]
    fn every_default_distribution_is_valid_finite_and_seeded() {
        for name in Distribution::NAMES {
            let d: Distribution = serde_norway::from_str(&format!("name: {name}")).unwrap();
            d.validate().unwrap();
            let xs = d.sample(500, &mut stream(4, name));
            assert_eq!(xs.len(), 500 * d.dim(), "{name}");
            assert!(xs.iter().all(|v| v.is_finite() && v.abs() < 10.0), "{name}");
            assert_eq!(
                xs,
                d.sample(500, &mut stream(4, name)),
                "{name} is reproducible"
            );
            let spread = xs.iter().map(|v| v.abs()).sum::<f32>() / xs.len() as f32;
            assert!(spread > 0.1, "{name} is not degenerate");
        }
    }
}
