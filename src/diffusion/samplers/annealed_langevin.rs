//! Annealed Langevin dynamics (Song & Ermon 2019, Algorithm 1) on a VE process's noise
//! levels, with a final Tweedie denoising step.

use candle_core::{Result, Tensor};
use serde::{Deserialize, Serialize};

use super::family::{Run, Sampler, at_least_one, positive};
use super::grid::{Spacing, Spread, State, default_rho, grid, is_default_rho};
use super::langevin::{LangevinInit, start};
use crate::diffusion::process::Process;

/// `sampler: annealed_langevin`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct AnnealedLangevin {
    /// epsilon in alpha_i = epsilon * sigma_i^2 / sigma_L^2 (paper: 2e-5).
    pub step_lr: f64,
    /// Langevin steps per noise level (paper: T = 100).
    pub n_steps_each: usize,
    /// Noise levels for a continuous VE SDE (sigma levels use their own).
    pub levels: usize,
    /// Final Tweedie denoising step x + sigma_min^2 s(x, sigma_min)
    /// (Jolicoeur-Martineau et al. 2021; Song & Ermon 2020).
    pub denoise: bool,
    /// Initial distribution: `uniform` on [-init_range, init_range]^d (the paper:
    /// [-1, 1]), or `gaussian` N(0, sigma_max^2 I).
    pub init: LangevinInit,
    pub init_range: f64,
    /// How the levels are picked: `uniform_t` (the default), `uniform_lambda`,
    /// `karras` (with `rho`), or a chain's `leading` / `trailing` levels.
    #[serde(skip_serializing_if = "Spacing::is_uniform_t")]
    pub spacing: Spacing,
    /// The exponent of `spacing: karras` (Karras et al.: 7).
    #[serde(skip_serializing_if = "is_default_rho")]
    pub rho: f64,
}

impl Default for AnnealedLangevin {
    fn default() -> Self {
        AnnealedLangevin {
            step_lr: 2e-5,
            n_steps_each: 100,
            levels: 10,
            denoise: true,
            init: LangevinInit::Uniform,
            init_range: 1.0,
            spacing: Spacing::UniformT,
            rho: default_rho(),
        }
    }
}

impl Sampler for AnnealedLangevin {
    const NAME: &'static str = "annealed_langevin";
    const PROCESSES: &'static str = "VE processes (geometric sigmas, ve_sde)";

    fn accepts(&self, process: &Process) -> std::result::Result<(), String> {
        if process.is_vp_family() {
            return Err(format!(
                "sampler `annealed_langevin` needs a VE process (geometric sigmas or ve_sde), not a {}; \
                 use `ancestral`, `ddim`, `pc` or `ode`",
                process.name()
            ));
        }
        Spread::check(self.spacing, self.rho, process)
    }

    fn canonical(&self) -> AnnealedLangevin {
        AnnealedLangevin {
            rho: super::grid::rho_if_karras(self.spacing, self.rho),
            ..self.clone()
        }
    }

    fn check(&self) -> std::result::Result<(), String> {
        positive("init_range", self.init_range)?;
        positive("step_lr", self.step_lr)?;
        at_least_one("n_steps_each", self.n_steps_each)?;
        super::family::grid_size("levels", self.levels)
    }

    fn evaluations(&self, process: &Process) -> f64 {
        let levels = super::grid::grid_len(process, Some(self.levels)) - 1;
        levels as f64 * self.n_steps_each as f64 + f64::from(u8::from(self.denoise))
    }

    fn draw(&self, run: &mut Run) -> Result<Tensor> {
        let spread = Spread::new(run.process, self.spacing, self.rho);
        let states: Vec<State> = grid(run.process, Some(self.levels), &spread)
            .into_iter()
            .filter(|s| *s != State::CLEAN)
            .collect();
        let sigma_min = states.last().map(|s| s.s).unwrap_or(1.0);
        let total = states.len() * self.n_steps_each + self.denoise as usize;
        let mut x = start(run, self.init, self.init_range)?;
        run.observe(0, 0.0, &x)?;
        for state in &states {
            let alpha = self.step_lr * (state.s / sigma_min).powi(2);
            for _ in 0..self.n_steps_each {
                let drift = run.score.score(&x, state.t)?.affine(alpha / 2.0, 0.0)?;
                x = ((x + drift)? + run.noise()?.affine(alpha.sqrt(), 0.0)?)?;
                run.nfe += 1;
                run.observe(run.nfe, run.nfe as f64 / total as f64, &x)?;
                run.progress(run.nfe, total);
            }
        }
        if self.denoise {
            let last = *states.last().expect("at least one level");
            x = run.tweedie(&x, State { a: 1.0, ..last })?;
            run.nfe += 1;
            run.observe(run.nfe, 1.0, &x)?;
            run.progress(run.nfe, total);
        }
        Ok(x)
    }
}
