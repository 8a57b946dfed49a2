//! DPM-Solver (Lu et al. 2022, "DPM-Solver: A Fast ODE Solver for Diffusion
//! Probabilistic Model Sampling in Around 10 Steps"): singlestep exponential
//! integrators of the probability-flow ODE in lambda with noise prediction, orders 1
//! (DDIM), 2 (Algorithm 1, r1 = 1/2) and 3 (Algorithm 2, r1 = 1/3, r2 = 2/3), the
//! evaluation budget split as their DPM-Solver-fast does.

use candle_core::{Result, Tensor};
use serde::{Deserialize, Serialize};

use super::exponential::{fits_the_chain, noise_step, singlestep_orders, with_denoise};
use super::family::{Run, Sampler, grid_size};
use super::grid::{Spacing, Spread, State, default_rho, solver_grid};
use crate::diffusion::process::Process;

/// `sampler: dpm_solver`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct DpmSolver {
    /// Highest order of a step: 1, 2 or 3 (the paper's choice for unconditional
    /// sampling).
    pub order: usize,
    /// Model evaluations (NFE), split into steps of `order` with one or two
    /// lower-order steps for the remainder.
    pub steps: usize,
    /// How the steps are spread: `uniform_lambda` (the paper's default), `uniform_t`,
    /// `karras` (with `rho`), or a chain's `leading` / `trailing` levels.
    pub spacing: Spacing,
    /// The exponent of `spacing: karras`.
    pub rho: f64,
    /// End with the data prediction at the smallest time (one more evaluation)
    /// instead of the state there.
    pub denoise: bool,
}

impl Default for DpmSolver {
    fn default() -> Self {
        DpmSolver {
            order: 3,
            steps: 20,
            spacing: Spacing::UniformLambda,
            rho: default_rho(),
            denoise: false,
        }
    }
}

impl Sampler for DpmSolver {
    const NAME: &'static str = "dpm_solver";

    fn canonical(&self) -> DpmSolver {
        DpmSolver {
            rho: super::grid::rho_if_karras(self.spacing, self.rho),
            ..self.clone()
        }
    }

    fn accepts(&self, process: &Process) -> std::result::Result<(), String> {
        Spread::check(self.spacing, self.rho, process)?;
        fits_the_chain(process, self.spacing, singlestep_orders(self.steps, self.order).len())
    }

    fn check(&self) -> std::result::Result<(), String> {
        grid_size("steps", self.steps)?;
        if !(1..=3).contains(&self.order) {
            return Err(format!("`order` must be 1, 2 or 3, got {}", self.order));
        }
        Ok(())
    }

    fn evaluations(&self, _: &Process) -> f64 {
        (self.steps + usize::from(self.denoise)) as f64
    }

    fn draw(&self, run: &mut Run) -> Result<Tensor> {
        let process = run.process;
        let orders = singlestep_orders(self.steps, self.order);
        let spread = Spread::new(process, self.spacing, self.rho);
        let states = with_denoise(solver_grid(process, orders.len(), &spread), self.denoise);
        let x = run.prior()?;
        run.walk(&states, x, &mut |run, x, s, t, k| {
            if t == State::CLEAN {
                return run.x0_at(&x, s);
            }
            let h = t.lambda() - s.lambda();
            let between = |r: f64| State::at(process, process.time_of_log_snr(s.lambda() + r * h));
            let eps_s = run.eps_at(&x, s)?;
            let first = noise_step(&x, s, t, &eps_s)?;
            match orders[k.min(orders.len() - 1)] {
                1 => Ok(first),
                2 => {
                    let r1 = 0.5;
                    let s1 = between(r1);
                    let u = noise_step(&x, s, s1, &eps_s)?;
                    let d1 = (run.eps_at(&u, s1)? - &eps_s)?;
                    first - d1.affine(t.s / (2.0 * r1) * h.exp_m1(), 0.0)?
                }
                _ => {
                    let (r1, r2) = (1.0 / 3.0, 2.0 / 3.0);
                    let (s1, s2) = (between(r1), between(r2));
                    let u1 = noise_step(&x, s, s1, &eps_s)?;
                    let d1 = (run.eps_at(&u1, s1)? - &eps_s)?;
                    let phi_22 = (r2 * h).exp_m1() / (r2 * h) - 1.0;
                    let u2 = (noise_step(&x, s, s2, &eps_s)?
                        - d1.affine(s2.s * r2 / r1 * phi_22, 0.0)?)?;
                    let d2 = (run.eps_at(&u2, s2)? - &eps_s)?;
                    let phi_2 = h.exp_m1() / h - 1.0;
                    first - d2.affine(t.s / r2 * phi_2, 0.0)?
                }
            }
        })
    }
}
