//! One trait for every noise process, so losses and samplers are written once.
//!
//! A process maps clean data x0 at level t (1..T, more noise at larger t) to
//! x_t = signal(t) x0 + std(t) eps. Networks see the level index as their
//! conditioning input, and their output is converted to epsilon or score here.

use super::schedule::Schedule;

/// Forward noising and the conversions samplers need.
pub trait NoiseProcess: Send + Sync {
    /// Number of discrete levels T.
    fn levels(&self) -> usize;
    /// Mean coefficient at level t: sqrt(alpha_bar_t) for VP, 1 for VE.
    fn signal(&self, t: usize) -> f64;
    /// Marginal standard deviation at level t: sqrt(1 - alpha_bar_t) for VP, sigma_t for VE.
    fn std(&self, t: usize) -> f64;
    /// Standard deviation of the prior the reverse process starts from.
    fn prior_std(&self) -> f64;
    /// What the network is conditioned on at level t: the 0-based level index.
    fn conditioning(&self, t: usize) -> f32 {
        (t - 1) as f32
    }
    /// Score of the noised marginal from a noise prediction: grad log p_t = -eps / std_t.
    fn eps_to_score(&self, t: usize) -> f64 {
        -1.0 / self.std(t)
    }
    /// The per-level betas when the process is a discrete Markov chain (DDPM).
    fn betas(&self) -> Option<&[f64]> {
        None
    }
    /// The noise levels when the process is a set of Gaussian perturbations (SMLD).
    fn sigmas(&self) -> Option<&[f64]> {
        None
    }
}

/// DDPM's discrete variance-preserving chain (Ho et al. 2020).
pub struct DiscreteVp {
    pub betas: Vec<f64>,
    pub alpha_bars: Vec<f64>,
}

impl NoiseProcess for DiscreteVp {
    fn levels(&self) -> usize {
        self.betas.len()
    }
    fn signal(&self, t: usize) -> f64 {
        self.alpha_bars[t - 1].sqrt()
    }
    fn std(&self, t: usize) -> f64 {
        (1.0 - self.alpha_bars[t - 1]).sqrt()
    }
    fn prior_std(&self) -> f64 {
        1.0
    }
    fn betas(&self) -> Option<&[f64]> {
        Some(&self.betas)
    }
}

/// SMLD's Gaussian perturbations at geometric noise levels (Song & Ermon 2019).
pub struct SigmaLevels {
    /// Ascending: sigmas[0] = sigma_min.
    pub sigmas: Vec<f64>,
}

impl NoiseProcess for SigmaLevels {
    fn levels(&self) -> usize {
        self.sigmas.len()
    }
    fn signal(&self, _t: usize) -> f64 {
        1.0
    }
    fn std(&self, t: usize) -> f64 {
        self.sigmas[t - 1]
    }
    fn prior_std(&self) -> f64 {
        *self.sigmas.last().expect("at least one level")
    }
    fn sigmas(&self) -> Option<&[f64]> {
        Some(&self.sigmas)
    }
}

/// The process a schedule defines.
pub fn from_schedule(schedule: Schedule) -> Box<dyn NoiseProcess> {
    match schedule {
        Schedule::Vp { betas, alpha_bars } => Box::new(DiscreteVp { betas, alpha_bars }),
        Schedule::Sigmas { sigmas } => Box::new(SigmaLevels { sigmas }),
    }
}

/// Noises a batch: x_t = signal(t) x0 + std(t) eps, row-major with `dim` columns.
pub fn noise_batch(process: &dyn NoiseProcess, x0: &[f32], levels: &[usize], eps: &[f32], dim: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(x0.len());
    for (row, &t) in levels.iter().enumerate() {
        let (a, s) = (process.signal(t) as f32, process.std(t) as f32);
        for j in 0..dim {
            let k = row * dim + j;
            out.push(a * x0[k] + s * eps[k]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diffusion::schedule::ScheduleParams;
    use crate::rng::{normals, stream};

    #[test]
    fn forward_process_matches_marginal_statistics() {
        let process = from_schedule(ScheduleParams::Linear { beta_start: 1e-4, beta_end: 0.02, steps: 1000 }.build());
        let n = 200_000;
        let x0 = vec![1.5f32; n];
        let mut rng = stream(3, "forward");
        for t in [1usize, 100, 500, 1000] {
            let eps = normals(&mut rng, n);
            let xt = noise_batch(process.as_ref(), &x0, &vec![t; n], &eps, 1);
            let mean = xt.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
            let var = xt.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n as f64;
            let ab = process.signal(t).powi(2);
            assert!((mean - 1.5 * ab.sqrt()).abs() < 0.01, "t={t}: mean {mean}");
            assert!((var - (1.0 - ab)).abs() < 0.01 + 0.01 * (1.0 - ab), "t={t}: var {var} vs {}", 1.0 - ab);
        }
    }

    #[test]
    fn sigma_levels_add_noise_of_their_sigma() {
        let process = SigmaLevels { sigmas: vec![0.01, 0.1, 1.0] };
        assert_eq!(process.signal(3), 1.0);
        assert_eq!(process.std(2), 0.1);
        assert_eq!(process.prior_std(), 1.0);
        assert!((process.eps_to_score(1) + 100.0).abs() < 1e-9);
    }
}
