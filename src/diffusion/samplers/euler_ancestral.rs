//! Euler ancestral sampling as k-diffusion's `sample_euler_ancestral` (Crowson, after
//! Karras et al. 2022): on the VE twin (see [`super::edm_heun`]), each step goes down
//! to sigma_down by an Euler step of the probability-flow ODE and adds fresh noise
//! sigma_up, with sigma_down^2 + sigma_up^2 = sigma_next^2 and
//! sigma_up = eta sqrt(sigma_next^2 (sigma^2 - sigma_next^2) / sigma^2) (at most
//! sigma_next); eta = 1 is DDPM's posterior variance.

use candle_core::{Result, Tensor};
use serde::{Deserialize, Serialize};

use super::edm_heun::{check_sigmas, denoise, sigma_of, sigma_spread, start};
use super::family::{Run, Sampler, grid_size, positive};
use super::grid::{Spacing, Spread, State, default_rho, grid};
use crate::diffusion::process::Process;

/// `sampler: euler_ancestral`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct EulerAncestral {
    /// Noise levels before sigma = 0, one evaluation each.
    pub steps: usize,
    /// The range of the sigmas: EDM's 0.002 and 80, within what the model's process
    /// reaches.
    pub sigma_min: Option<f64>,
    pub sigma_max: Option<f64>,
    /// `karras` (with `rho`, the default), or another spacing.
    pub spacing: Spacing,
    pub rho: f64,
    /// How much of each step's noise is fresh: 0 is the Euler ODE step, 1 ancestral.
    pub eta: f64,
    /// Scale of the fresh noise.
    pub s_noise: f64,
}

impl Default for EulerAncestral {
    fn default() -> Self {
        EulerAncestral {
            steps: 20,
            sigma_min: None,
            sigma_max: None,
            spacing: Spacing::Karras,
            rho: default_rho(),
            eta: 1.0,
            s_noise: 1.0,
        }
    }
}

impl Sampler for EulerAncestral {
    const NAME: &'static str = "euler_ancestral";

    fn canonical(&self) -> EulerAncestral {
        EulerAncestral {
            rho: super::grid::rho_if_karras(self.spacing, self.rho),
            ..self.clone()
        }
    }

    fn accepts(&self, process: &Process) -> std::result::Result<(), String> {
        Spread::check(self.spacing, self.rho, process)
    }

    fn check(&self) -> std::result::Result<(), String> {
        grid_size("steps", self.steps)?;
        check_sigmas(self.sigma_min, self.sigma_max)?;
        if !(0.0..=1.0).contains(&self.eta) {
            return Err(format!("`eta` must be in [0, 1], got {}", self.eta));
        }
        positive("s_noise", self.s_noise)
    }

    fn evaluations(&self, _: &Process) -> f64 {
        self.steps as f64
    }

    fn draw(&self, run: &mut Run) -> Result<Tensor> {
        let process = run.process;
        let spread = sigma_spread(process, self.spacing, self.rho, self.sigma_min, self.sigma_max);
        let states = grid(process, Some(self.steps), &spread);
        let x = start(run, states[0])?;
        run.walk(&states, x, &mut |run, x, cur, next, _| {
            let (sigma, sigma_next) = (sigma_of(cur), sigma_of(next));
            let up = (self.eta
                * (sigma_next * sigma_next * (sigma * sigma - sigma_next * sigma_next)
                    / (sigma * sigma))
                    .max(0.0)
                    .sqrt())
            .min(sigma_next);
            let down = (sigma_next * sigma_next - up * up).max(0.0).sqrt();
            let d = ((&x - denoise(run, &x, cur)?)?).affine(1.0 / sigma, 0.0)?;
            let x = (&x + d.affine(down - sigma, 0.0)?)?;
            if next == State::CLEAN || up == 0.0 {
                return Ok(x);
            }
            x + run.noise()?.affine(self.s_noise * up, 0.0)?
        })
    }
}
