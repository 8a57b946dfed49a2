//! Every noise process in one continuous-time description, so losses and samplers are
//! written once (Song et al. 2021, "Score-based generative modeling through SDEs").
//!
//! Time runs over t in [0, 1], more noise at larger t. A process gives the marginal
//! x_t = mean_coef(t) x0 + std(t) eps and the forward SDE dx = f(t) x dt + g(t) dw.
//! DDPM's chain and SMLD's sigma levels are the discrete members: their levels sit at
//! fixed times (DDPM level i at t = i/N, SMLD level i at t = (i-1)/(N-1)) and between
//! levels log alpha_bar (DDPM) or log sigma (SMLD) is linear in t, which makes them the
//! VP and VE SDEs of score_sde with piecewise-constant coefficients. Networks are
//! conditioned on t, so any sampler can query any model at any time.

/// A noise process.
#[derive(Debug, Clone, PartialEq)]
pub enum Process {
    /// DDPM's discrete variance-preserving chain (Ho et al. 2020).
    DiscreteVp {
        betas: Vec<f64>,
        /// log alpha_bar_i for i = 1..N.
        log_alpha_bars: Vec<f64>,
    },
    /// SMLD's Gaussian perturbations (Song & Ermon 2019), ascending sigmas.
    SigmaLevels { sigmas: Vec<f64> },
    /// VP SDE: beta(t) = beta_min + t (beta_max - beta_min).
    Vp { beta_min: f64, beta_max: f64 },
    /// sub-VP SDE: VP's drift, a smaller diffusion, std = 1 - alpha_bar(t).
    SubVp { beta_min: f64, beta_max: f64 },
    /// VE SDE: sigma(t) = sigma_min (sigma_max / sigma_min)^t.
    Ve { sigma_min: f64, sigma_max: f64 },
    /// EDM (Karras et al. 2022): no scaling, noise sigma from sigma_min to sigma_max, and
    /// the data's std `sigma_data` its preconditioning needs. EDM's clock is sigma
    /// itself; runner's t in [0, 1] relabels it log-linearly, sigma(t) = sigma_min
    /// (sigma_max / sigma_min)^t, so that a network conditioned on t sees an affine
    /// function of EDM's c_noise = ln(sigma) / 4. The marginals, and so the
    /// probability-flow ODE in sigma, are EDM's.
    Edm {
        sigma_min: f64,
        sigma_max: f64,
        sigma_data: f64,
    },
}

impl Process {
    /// The DDPM chain of a beta schedule.
    pub fn from_betas(betas: Vec<f64>) -> Process {
        let mut total = 0.0;
        let log_alpha_bars = betas
            .iter()
            .map(|b| {
                total += (1.0 - b).ln();
                total
            })
            .collect();
        Process::DiscreteVp {
            betas,
            log_alpha_bars,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Process::DiscreteVp { .. } => "discrete VP (DDPM)",
            Process::SigmaLevels { .. } => "sigma levels (SMLD)",
            Process::Vp { .. } => "VP SDE",
            Process::SubVp { .. } => "sub-VP SDE",
            Process::Ve { .. } => "VE SDE",
            Process::Edm { .. } => "EDM",
        }
    }

    /// Number of discrete levels, or None for a continuous SDE.
    pub fn levels(&self) -> Option<usize> {
        match self {
            Process::DiscreteVp { betas, .. } => Some(betas.len()),
            Process::SigmaLevels { sigmas } => Some(sigmas.len()),
            _ => None,
        }
    }

    /// The time of level i = 1..N of a discrete process.
    pub fn level_time(&self, i: usize) -> f64 {
        match self {
            Process::DiscreteVp { betas, .. } => i as f64 / betas.len() as f64,
            Process::SigmaLevels { sigmas } if sigmas.len() > 1 => {
                (i - 1) as f64 / (sigmas.len() - 1) as f64
            }
            _ => 1.0,
        }
    }

    /// The smallest time samplers integrate down to: the first level of a discrete
    /// process, and score_sde's 1e-3 (VP family) or 1e-5 (VE) for SDEs.
    pub fn t_min(&self) -> f64 {
        match self {
            Process::DiscreteVp { betas, .. } => 1.0 / betas.len() as f64,
            Process::SigmaLevels { .. } | Process::Edm { .. } => 0.0,
            Process::Vp { .. } | Process::SubVp { .. } => 1e-3,
            Process::Ve { .. } => 1e-5,
        }
    }

    /// Whether the mean shrinks towards zero (VP family) rather than staying (VE family).
    pub fn is_vp_family(&self) -> bool {
        !matches!(
            self,
            Process::SigmaLevels { .. } | Process::Ve { .. } | Process::Edm { .. }
        )
    }

    /// (segment index k, fraction) of t on a grid of `segments` equal pieces.
    fn segment(t: f64, segments: usize) -> (usize, f64) {
        let u = (t.clamp(0.0, 1.0) * segments as f64).min(segments as f64);
        let k = (u.floor() as usize).min(segments - 1);
        (k, u - k as f64)
    }

    /// log alpha_bar(t) of the VP family.
    fn log_alpha_bar(&self, t: f64) -> f64 {
        match self {
            Process::DiscreteVp { log_alpha_bars, .. } => {
                let (k, frac) = Self::segment(t, log_alpha_bars.len());
                let before = if k == 0 { 0.0 } else { log_alpha_bars[k - 1] };
                before + frac * (log_alpha_bars[k] - before)
            }
            Process::Vp { beta_min, beta_max } | Process::SubVp { beta_min, beta_max } => {
                -0.5 * t * t * (beta_max - beta_min) - t * beta_min
            }
            _ => 0.0,
        }
    }

    /// beta(t) = -d/dt log alpha_bar(t) of the VP family.
    fn beta(&self, t: f64) -> f64 {
        match self {
            Process::DiscreteVp { betas, .. } => {
                let (k, _) = Self::segment(t, betas.len());
                -(betas.len() as f64) * (1.0 - betas[k]).ln()
            }
            Process::Vp { beta_min, beta_max } | Process::SubVp { beta_min, beta_max } => {
                beta_min + t * (beta_max - beta_min)
            }
            _ => 0.0,
        }
    }

    /// (log sigma(t), d log sigma / dt) of the VE family.
    fn log_sigma(&self, t: f64) -> (f64, f64) {
        match self {
            Process::SigmaLevels { sigmas } if sigmas.len() > 1 => {
                let (k, frac) = Self::segment(t, sigmas.len() - 1);
                let (a, b) = (sigmas[k].ln(), sigmas[k + 1].ln());
                (a + frac * (b - a), (b - a) * (sigmas.len() - 1) as f64)
            }
            Process::SigmaLevels { sigmas } => (sigmas[0].ln(), 0.0),
            Process::Ve {
                sigma_min,
                sigma_max,
            }
            | Process::Edm {
                sigma_min,
                sigma_max,
                ..
            } => {
                let rate = (sigma_max / sigma_min).ln();
                (sigma_min.ln() + t * rate, rate)
            }
            _ => (f64::NEG_INFINITY, 0.0),
        }
    }

    /// Mean coefficient of the marginal: sqrt(alpha_bar(t)) for VP, 1 for VE.
    pub fn mean_coef(&self, t: f64) -> f64 {
        if self.is_vp_family() {
            (0.5 * self.log_alpha_bar(t)).exp()
        } else {
            1.0
        }
    }

    /// std(t) as an owned function, for the networks conditioned on log std.
    pub fn noise_std(&self) -> std::sync::Arc<dyn Fn(f64) -> f64 + Send + Sync> {
        let process = self.clone();
        std::sync::Arc::new(move |t| process.std(t))
    }

    /// Standard deviation of the marginal.
    pub fn std(&self, t: f64) -> f64 {
        match self {
            Process::SubVp { .. } => -self.log_alpha_bar(t).exp_m1(),
            _ if self.is_vp_family() => (-self.log_alpha_bar(t).exp_m1()).sqrt(),
            _ => self.log_sigma(t).0.exp(),
        }
    }

    /// f(t) of the forward SDE's linear drift f(t) x.
    pub fn drift_coef(&self, t: f64) -> f64 {
        if self.is_vp_family() {
            -0.5 * self.beta(t)
        } else {
            0.0
        }
    }

    /// g(t) of the forward SDE.
    pub fn diffusion(&self, t: f64) -> f64 {
        match self {
            Process::SubVp { beta_min, beta_max } => {
                let discount = 1.0 - (-2.0 * beta_min * t - (beta_max - beta_min) * t * t).exp();
                (self.beta(t) * discount).sqrt()
            }
            _ if self.is_vp_family() => self.beta(t).sqrt(),
            _ => {
                let (log_sigma, rate) = self.log_sigma(t);
                log_sigma.exp() * (2.0 * rate).sqrt()
            }
        }
    }

    /// sigma(t) / alpha(t) = e^-lambda(t): the noise level of the equivalent VE process
    /// x / alpha(t), the sigma EDM's samplers and Karras's spacing are written in.
    pub fn ve_sigma(&self, t: f64) -> f64 {
        (-self.log_snr(t)).exp()
    }

    /// The log signal-to-noise ratio lambda(t) = log(alpha(t) / sigma(t)), strictly
    /// decreasing in t: the clock of the exponential-integrator solvers (Lu et al. 2022,
    /// Sec. 3.1).
    pub fn log_snr(&self, t: f64) -> f64 {
        match self {
            Process::SubVp { .. } => {
                let l = self.log_alpha_bar(t);
                0.5 * l - (-l.exp_m1()).ln()
            }
            _ if self.is_vp_family() => {
                let l = self.log_alpha_bar(t);
                0.5 * l - 0.5 * (-l.exp_m1()).ln()
            }
            _ => -self.log_sigma(t).0,
        }
    }

    /// The time at which the log-SNR is `lambda`, clamped to [0, 1] (the inverse of
    /// [`Process::log_snr`], in closed form for the SDEs and piecewise for the chains).
    pub fn time_of_log_snr(&self, lambda: f64) -> f64 {
        let t = match self {
            Process::DiscreteVp { .. } | Process::Vp { .. } => {
                // alpha_bar = sigmoid(2 lambda).
                self.time_of_log_alpha_bar(-softplus(-2.0 * lambda))
            }
            Process::SubVp { .. } => {
                // alpha = u, sigma = 1 - u^2 and e^lambda = u / (1 - u^2).
                let e = (-lambda.clamp(-300.0, 300.0)).exp();
                let u = 1.0 / (0.5 * e + (0.25 * e * e + 1.0).sqrt());
                self.time_of_log_alpha_bar(2.0 * u.ln())
            }
            Process::SigmaLevels { sigmas } if sigmas.len() > 1 => {
                let target = -lambda;
                let logs: Vec<f64> = sigmas.iter().map(|s| s.ln()).collect();
                let k = logs
                    .partition_point(|&l| l < target)
                    .clamp(1, logs.len() - 1);
                let (a, b) = (logs[k - 1], logs[k]);
                (k - 1) as f64 / (logs.len() - 1) as f64
                    + (target - a) / (b - a) / (logs.len() - 1) as f64
            }
            Process::SigmaLevels { .. } => 1.0,
            Process::Ve {
                sigma_min,
                sigma_max,
            }
            | Process::Edm {
                sigma_min,
                sigma_max,
                ..
            } => (-lambda - sigma_min.ln()) / (sigma_max / sigma_min).ln(),
        };
        t.clamp(0.0, 1.0)
    }

    /// The time at which log alpha_bar (<= 0) reaches `l`, in the VP family.
    fn time_of_log_alpha_bar(&self, l: f64) -> f64 {
        match self {
            Process::DiscreteVp { log_alpha_bars, .. } => {
                let n = log_alpha_bars.len();
                let k = log_alpha_bars.partition_point(|&v| v > l).min(n - 1);
                let before = if k == 0 { 0.0 } else { log_alpha_bars[k - 1] };
                let span = before - log_alpha_bars[k];
                let frac = if span > 0.0 { (before - l) / span } else { 0.0 };
                (k as f64 + frac.clamp(0.0, 1.0)) / n as f64
            }
            Process::Vp { beta_min, beta_max } | Process::SubVp { beta_min, beta_max } => {
                // 0.5 (beta_max - beta_min) t^2 + beta_min t + l = 0, the root without
                // cancellation (also when beta_max = beta_min).
                let slope = beta_max - beta_min;
                -2.0 * l / (beta_min + (beta_min * beta_min - 2.0 * slope * l).max(0.0).sqrt())
            }
            _ => 0.0,
        }
    }

    /// The data std of an EDM process, which its preconditioning needs.
    pub fn sigma_data(&self) -> Option<f64> {
        match self {
            Process::Edm { sigma_data, .. } => Some(*sigma_data),
            _ => None,
        }
    }

    /// Standard deviation of the Gaussian prior at t = 1.
    pub fn prior_std(&self) -> f64 {
        if self.is_vp_family() {
            1.0
        } else {
            self.std(1.0)
        }
    }
}

/// ln(1 + e^x) without overflow.
fn softplus(x: f64) -> f64 {
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

/// Noises a batch: x_t = mean_coef(t) x0 + std(t) eps, row-major with `dim` columns.
pub fn noise_batch(
    process: &Process,
    x0: &[f32],
    times: &[f64],
    eps: &[f32],
    dim: usize,
) -> Vec<f32> {
    let mut out = Vec::with_capacity(x0.len());
    for (row, &t) in times.iter().enumerate() {
        let (a, s) = (process.mean_coef(t) as f32, process.std(t) as f32);
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
    use crate::rng::{normals, stream};

    fn all() -> Vec<Process> {
        let linear: Vec<f64> = (0..100)
            .map(|i| 1e-3 + (0.2 - 1e-3) * i as f64 / 99.0)
            .collect();
        let sigmas: Vec<f64> = (0..8)
            .map(|i| 0.05 * (20f64).powf(i as f64 / 7.0))
            .collect();
        vec![
            Process::from_betas(linear),
            Process::SigmaLevels { sigmas },
            Process::Vp {
                beta_min: 0.1,
                beta_max: 20.0,
            },
            Process::SubVp {
                beta_min: 0.1,
                beta_max: 20.0,
            },
            Process::Ve {
                sigma_min: 0.05,
                sigma_max: 3.0,
            },
            Process::Edm {
                sigma_min: 0.002,
                sigma_max: 80.0,
                sigma_data: 0.5,
            },
        ]
    }

    #[test]
    fn log_snr_is_log_alpha_over_sigma_and_inverts_on_every_process() {
        for process in all() {
            let mut previous = f64::INFINITY;
            for i in 1..=200 {
                let t = i as f64 / 200.0;
                let lambda = process.log_snr(t);
                let direct = (process.mean_coef(t) / process.std(t)).ln();
                assert!(
                    (lambda - direct).abs() < 1e-9 * direct.abs().max(1.0),
                    "{} t={t}: {lambda} vs {direct}",
                    process.name()
                );
                assert!(
                    lambda < previous,
                    "{} not decreasing at t={t}",
                    process.name()
                );
                previous = lambda;
                let back = process.time_of_log_snr(lambda);
                assert!(
                    (back - t).abs() < 1e-9,
                    "{} t={t}: inverse gives {back}",
                    process.name()
                );
                assert!(
                    (process.ve_sigma(t) - process.std(t) / process.mean_coef(t)).abs()
                        < 1e-9 * process.ve_sigma(t)
                );
            }
            // Beyond the ends the inverse clamps.
            assert_eq!(process.time_of_log_snr(1e6), 0.0, "{}", process.name());
            assert_eq!(process.time_of_log_snr(-1e6), 1.0, "{}", process.name());
        }
    }

    #[test]
    fn discrete_levels_sit_on_their_times() {
        let betas = vec![0.1, 0.2, 0.3];
        let p = Process::from_betas(betas.clone());
        let mut abar = 1.0;
        for (i, b) in betas.iter().enumerate() {
            abar *= 1.0 - b;
            let t = p.level_time(i + 1);
            assert!((p.mean_coef(t) - abar.sqrt()).abs() < 1e-12);
            assert!((p.std(t) - (1.0 - abar).sqrt()).abs() < 1e-12);
        }
        assert_eq!(p.mean_coef(0.0), 1.0);
        let s = Process::SigmaLevels {
            sigmas: vec![0.01, 0.1, 1.0],
        };
        for (i, sigma) in [0.01, 0.1, 1.0].iter().enumerate() {
            assert!((s.std(s.level_time(i + 1)) - sigma).abs() < 1e-12);
        }
        // Between levels, geometric: halfway between 0.01 and 0.1 is 10^-1.5.
        assert!((s.std(0.25) - 10f64.powf(-1.5)).abs() < 1e-12);
    }

    #[test]
    fn vp_and_ve_sdes_match_score_sde_closed_forms() {
        let vp = Process::Vp {
            beta_min: 0.1,
            beta_max: 20.0,
        };
        let log_mean = -0.25 * 0.25 * 19.9 - 0.5 * 0.5 * 0.1;
        assert!((vp.mean_coef(0.5) - f64::exp(log_mean)).abs() < 1e-12);
        assert!((vp.std(0.5) - (1.0 - f64::exp(2.0 * log_mean)).sqrt()).abs() < 1e-12);
        assert!((vp.diffusion(0.5) - (0.1f64 + 0.5 * 19.9).sqrt()).abs() < 1e-12);
        let sub = Process::SubVp {
            beta_min: 0.1,
            beta_max: 20.0,
        };
        assert!((sub.std(0.5) - (1.0 - f64::exp(2.0 * log_mean))).abs() < 1e-12);
        let ve = Process::Ve {
            sigma_min: 0.01,
            sigma_max: 50.0,
        };
        assert!((ve.std(1.0) - 50.0).abs() < 1e-9 && (ve.std(0.0) - 0.01).abs() < 1e-12);
        assert!((ve.diffusion(0.3) - ve.std(0.3) * (2.0 * (5000f64).ln()).sqrt()).abs() < 1e-9);
        assert_eq!(ve.prior_std(), ve.std(1.0));
    }

    /// Euler-Maruyama on dx = f(t) x dt + g(t) dw from x(0) = x0 + std(0) z, with many
    /// particles: the mean and variance at t must be the closed-form marginal's.
    #[test]
    fn each_marginal_matches_a_long_simulation_of_its_forward_sde() {
        let (n, steps, x0) = (20_000usize, 2000usize, 1.5f64);
        for process in all() {
            let mut rng = stream(7, "forward sde");
            let start = process.std(0.0);
            let mut x: Vec<f64> = normals(&mut rng, n)
                .iter()
                .map(|&z| x0 + start * z as f64)
                .collect();
            let dt = 1.0 / steps as f64;
            for step in 0..steps {
                let t = (step as f64 + 0.5) * dt;
                let (f, g) = (process.drift_coef(t), process.diffusion(t));
                let z = normals(&mut rng, n);
                for (v, z) in x.iter_mut().zip(z) {
                    *v += f * *v * dt + g * dt.sqrt() * z as f64;
                }
                if (step + 1) % 500 == 0 {
                    let t = (step + 1) as f64 * dt;
                    let mean = x.iter().sum::<f64>() / n as f64;
                    let var = x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n as f64;
                    let (m, s) = (process.mean_coef(t) * x0, process.std(t));
                    let tol = 4.0 * s / (n as f64).sqrt() + 0.01 * s;
                    assert!(
                        (mean - m).abs() < tol,
                        "{} t={t}: mean {mean} vs {m}",
                        process.name()
                    );
                    assert!(
                        (var / (s * s) - 1.0).abs() < 0.05,
                        "{} t={t}: var {var} vs {}",
                        process.name(),
                        s * s
                    );
                }
            }
        }
    }

    #[test]
    fn noise_batch_applies_the_marginal() {
        let p = Process::Ve {
            sigma_min: 0.1,
            sigma_max: 1.0,
        };
        let out = noise_batch(&p, &[1.0, 2.0], &[1.0], &[1.0, -1.0], 2);
        assert!((out[0] - 2.0).abs() < 1e-6 && (out[1] - 1.0).abs() < 1e-6);
    }
}
