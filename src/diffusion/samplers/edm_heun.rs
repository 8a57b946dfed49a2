//! EDM's sampler (Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based
//! Generative Models", Algorithm 2): Heun's method on the probability-flow ODE
//! dx/dsigma = (x - D(x; sigma)) / sigma over Karras sigmas, the last step to sigma = 0
//! Euler, with optional stochastic churn (S_churn, S_tmin, S_tmax, S_noise).
//!
//! Any process is sampled through its VE twin: x / alpha(t) is noised with
//! sigma = s(t) / alpha(t) = e^-lambda (their Sec. 4 "scaling"), so the same steps
//! serve DDPM chains, VP, sub-VP, VE and EDM models.

use candle_core::{Result, Tensor};
use serde::{Deserialize, Serialize};

use super::family::{Run, Sampler, grid_size, positive};
use super::grid::{Spacing, Spread, State, default_rho, grid};
use crate::diffusion::process::Process;

/// `sampler: edm_heun`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct EdmHeun {
    /// Noise levels N before sigma = 0 (EDM: 18); 2N - 1 evaluations.
    pub steps: usize,
    /// The range of the sigmas: EDM's 0.002 and 80, within what the model's process
    /// reaches.
    pub sigma_min: Option<f64>,
    pub sigma_max: Option<f64>,
    /// `karras` (with `rho`, the default), or another spacing.
    pub spacing: Spacing,
    pub rho: f64,
    /// Stochasticity: total churn S_churn (0: deterministic), applied where sigma is
    /// in [s_tmin, s_tmax] (no upper bound when left out), with noise scaled by s_noise.
    pub s_churn: f64,
    pub s_tmin: f64,
    pub s_tmax: Option<f64>,
    pub s_noise: f64,
}

impl Default for EdmHeun {
    fn default() -> Self {
        EdmHeun {
            steps: 18,
            sigma_min: None,
            sigma_max: None,
            spacing: Spacing::Karras,
            rho: default_rho(),
            s_churn: 0.0,
            s_tmin: 0.0,
            s_tmax: None,
            s_noise: 1.0,
        }
    }
}

/// EDM's sigma range (Karras et al., Table 1).
pub const EDM_SIGMA_MIN: f64 = 0.002;
pub const EDM_SIGMA_MAX: f64 = 80.0;

/// The Karras-style spread between sigma_min and sigma_max (EDM's defaults), cut to
/// the sigmas the process reaches between its smallest time and t = 1.
pub fn sigma_spread(
    process: &Process,
    spacing: Spacing,
    rho: f64,
    sigma_min: Option<f64>,
    sigma_max: Option<f64>,
) -> Spread {
    let full = Spread::new(process, spacing, rho);
    let (lo, hi) = (process.ve_sigma(full.bottom), process.ve_sigma(full.top));
    let at = |sigma: f64| process.time_of_log_snr(-sigma.clamp(lo, hi).ln());
    Spread {
        top: at(sigma_max.unwrap_or(EDM_SIGMA_MAX)),
        bottom: at(sigma_min.unwrap_or(EDM_SIGMA_MIN)),
        ..full
    }
}

/// Checks an optional sigma range.
pub fn check_sigmas(sigma_min: Option<f64>, sigma_max: Option<f64>) -> std::result::Result<(), String> {
    if let Some(v) = sigma_min {
        positive("sigma_min", v)?;
    }
    if let Some(v) = sigma_max {
        positive("sigma_max", v)?;
    }
    let (lo, hi) = (sigma_min.unwrap_or(EDM_SIGMA_MIN), sigma_max.unwrap_or(EDM_SIGMA_MAX));
    if lo >= hi {
        return Err(format!("need sigma_min < sigma_max, got {lo} and {hi}"));
    }
    Ok(())
}

/// The VE twin's sigma of a grid state (0 at the clean state).
pub fn sigma_of(state: State) -> f64 {
    if state == State::CLEAN { 0.0 } else { state.s / state.a }
}

/// The denoiser D(x^; sigma) of the VE twin: the data prediction at the state whose
/// sigma it is, from x = alpha x^ (one evaluation).
pub fn denoise(run: &mut Run, x_hat: &Tensor, state: State) -> Result<Tensor> {
    let x = x_hat.affine(state.a, 0.0)?;
    run.x0_at(&x, state)
}

/// The VE twin's starting point: the prior's draw rescaled to N(0, sigma_top^2).
pub fn start(run: &mut Run, top: State) -> Result<Tensor> {
    let scale = sigma_of(top) / run.process.prior_std();
    run.prior()?.affine(scale, 0.0)
}

impl Sampler for EdmHeun {
    const NAME: &'static str = "edm_heun";

    fn canonical(&self) -> EdmHeun {
        let mut canonical = EdmHeun {
            rho: super::grid::rho_if_karras(self.spacing, self.rho),
            ..self.clone()
        };
        if self.s_churn == 0.0 {
            let defaults = EdmHeun::default();
            canonical.s_tmin = defaults.s_tmin;
            canonical.s_tmax = defaults.s_tmax;
            canonical.s_noise = defaults.s_noise;
        }
        canonical
    }

    fn accepts(&self, process: &Process) -> std::result::Result<(), String> {
        Spread::check(self.spacing, self.rho, process)
    }

    fn check(&self) -> std::result::Result<(), String> {
        grid_size("steps", self.steps)?;
        check_sigmas(self.sigma_min, self.sigma_max)?;
        if !(self.s_churn >= 0.0 && self.s_churn.is_finite()) {
            return Err(format!("`s_churn` must be 0 or more, got {}", self.s_churn));
        }
        positive("s_noise", self.s_noise)
    }

    fn evaluations(&self, _: &Process) -> f64 {
        (2 * self.steps).saturating_sub(1) as f64
    }

    fn draw(&self, run: &mut Run) -> Result<Tensor> {
        let process = run.process;
        let spread = sigma_spread(process, self.spacing, self.rho, self.sigma_min, self.sigma_max);
        let states = grid(process, Some(self.steps), &spread);
        let x = start(run, states[0])?;
        let levels = (states.len() - 1) as f64;
        let gamma_max = std::f64::consts::SQRT_2 - 1.0;
        run.walk(&states, x, &mut |run, x, cur, next, _| {
            let sigma = sigma_of(cur);
            let in_band = sigma >= self.s_tmin && self.s_tmax.is_none_or(|hi| sigma <= hi);
            let gamma = if in_band { (self.s_churn / levels).min(gamma_max) } else { 0.0 };
            // Churn: raise the noise to sigma_hat = (1 + gamma) sigma.
            let (x, hat) = if gamma > 0.0 {
                let t_hat = process.time_of_log_snr(-(sigma * (1.0 + gamma)).ln());
                let hat = State::at(process, t_hat);
                let extra = (sigma_of(hat).powi(2) - sigma * sigma).max(0.0).sqrt();
                let z = run.noise()?;
                ((x + z.affine(self.s_noise * extra, 0.0)?)?, hat)
            } else {
                (x, cur)
            };
            let (sigma_hat, sigma_next) = (sigma_of(hat), sigma_of(next));
            let d = ((&x - denoise(run, &x, hat)?)?).affine(1.0 / sigma_hat, 0.0)?;
            let euler = (&x + d.affine(sigma_next - sigma_hat, 0.0)?)?;
            if next == State::CLEAN {
                return Ok(euler);
            }
            let d_next = ((&euler - denoise(run, &euler, next)?)?).affine(1.0 / sigma_next, 0.0)?;
            x + (d + d_next)?.affine(0.5 * (sigma_next - sigma_hat), 0.0)?
        })
    }
}
