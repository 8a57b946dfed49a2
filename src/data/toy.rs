//! Low-dimensional toy distributions with, where one exists, their analytic density.
//! They are the documents' test beds: a thin ring, an imbalanced Gaussian mixture, and
//! the usual spiral and moons.

use std::f64::consts::PI;

use rand::RngExt;
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};

/// Which distribution to draw from, with its shape parameters.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(tag = "name", rename_all = "snake_case", deny_unknown_fields)]
pub enum Distribution {
    /// A thin ring: radius plus Gaussian radial noise of std `width`.
    Circle {
        #[serde(default = "one")]
        radius: f64,
        #[serde(default = "ring_width")]
        width: f64,
    },
    /// Isotropic Gaussian mixture; the default is the documents' imbalanced 0.1/0.9
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
    pub const NAMES: [&'static str; 5] = ["circle", "gmm", "spiral", "moons", "two_gaussians"];

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
            Distribution::Circle { radius, width } => {
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
            _ => 2,
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
        for name in ["circle", "gmm", "spiral", "moons", "two_gaussians"] {
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
