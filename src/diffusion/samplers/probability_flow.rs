//! The probability-flow ODE dx/dt = f(t) x - g(t)^2 / 2 s(x, t) (Song et al. 2021,
//! eq. 13), integrated from t = 1 to the process's smallest time.

use candle_core::{Result, Tensor};
use serde::{Deserialize, Serialize};

use super::grid::{Spacing, Spread, State, default_rho, is_default_rho, solver_grid};
use super::family::{Run, Sampler, grid_size, positive};
use crate::diffusion::ode::{self, Rhs, Tolerance};
use crate::diffusion::process::Process;

/// `sampler: ode`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Ode {
    pub solver: Solver,
    /// Steps of `euler` and `heun`.
    pub steps: usize,
    /// Tolerances of `rk45` (score_sde: 1e-5).
    pub rtol: f64,
    pub atol: f64,
    /// Finish with Tweedie's denoising step (one more evaluation).
    pub denoise: bool,
    /// How `euler` and `heun` spread their steps: `uniform_t` (the default),
    /// `uniform_lambda`, `karras` (with `rho`), or a chain's `leading` / `trailing`.
    #[serde(skip_serializing_if = "Spacing::is_uniform_t")]
    pub spacing: Spacing,
    /// The exponent of `spacing: karras` (Karras et al.: 7).
    #[serde(skip_serializing_if = "is_default_rho")]
    pub rho: f64,
}

impl Default for Ode {
    fn default() -> Self {
        Ode {
            solver: Solver::Rk45,
            steps: 100,
            rtol: 1e-5,
            atol: 1e-5,
            denoise: true,
            spacing: Spacing::UniformT,
            rho: default_rho(),
        }
    }
}

/// ODE solvers of the probability-flow sampler.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Solver {
    Euler,
    Heun,
    /// Adaptive Dormand-Prince, as score_sde's solve_ivp(method="RK45").
    #[default]
    Rk45,
}

impl Sampler for Ode {
    const NAME: &'static str = "ode";
    const PROCESSES: &'static str = "every process with more than one level";

    /// The adaptive solver ignores `steps`, the fixed-step ones the tolerances: they
    /// stay out of the key, so a sweep over one does not recompute the other.
    fn canonical(&self) -> Ode {
        let defaults = Ode::default();
        match self.solver {
            Solver::Rk45 => Ode {
                steps: defaults.steps,
                spacing: defaults.spacing,
                rho: defaults.rho,
                ..self.clone()
            },
            Solver::Euler | Solver::Heun => Ode {
                rtol: defaults.rtol,
                atol: defaults.atol,
                rho: super::grid::rho_if_karras(self.spacing, self.rho),
                ..self.clone()
            },
        }
    }

    fn accepts(&self, process: &Process) -> std::result::Result<(), String> {
        if process.levels() == Some(1) {
            return Err("the probability-flow ODE needs a process with more than one level".into());
        }
        Spread::check(self.spacing, self.rho, process)
    }

    fn check(&self) -> std::result::Result<(), String> {
        grid_size("steps", self.steps)?;
        positive("rtol", self.rtol)?;
        positive("atol", self.atol)
    }

    /// RK45 on these ODEs takes a few hundred evaluations at the default tolerances.
    fn evaluations(&self, _: &Process) -> f64 {
        match self.solver {
            Solver::Rk45 => 300.0,
            Solver::Euler => self.steps as f64,
            Solver::Heun => 2.0 * self.steps as f64,
        }
    }

    fn draw(&self, run: &mut Run) -> Result<Tensor> {
        let (score, process) = (run.score, run.process);
        let t_end = process.t_min();
        let mut drift = |x: &Tensor, t: f64| -> Result<Tensor> {
            let g = process.diffusion(t);
            x.affine(process.drift_coef(t), 0.0)? - score.score(x, t)?.affine(0.5 * g * g, 0.0)?
        };
        let mut rhs = Rhs::new(&mut drift);
        let x0 = run.prior()?;
        run.observe(0, 0.0, &x0)?;
        let denoise = self.denoise;
        let mut observe = |step: usize, t: f64, x: &Tensor| -> Result<()> {
            let done = ((1.0 - t) / (1.0 - t_end)).clamp(0.0, 1.0);
            run.progress((done * 1000.0) as usize, 1000);
            run.observe(step, if denoise { done * 0.999 } else { done }, x)
        };
        let x = match self.solver {
            Solver::Euler | Solver::Heun => {
                let heun = self.solver == Solver::Heun;
                match self.spacing {
                    Spacing::UniformT => {
                        ode::fixed(&mut rhs, x0, (1.0, t_end), self.steps, heun, &mut observe)?
                    }
                    spacing => {
                        let spread = Spread::new(process, spacing, self.rho);
                        let times: Vec<f64> =
                            solver_grid(process, self.steps, &spread).iter().map(|s| s.t).collect();
                        ode::on_times(&mut rhs, x0, &times, heun, &mut observe)?
                    }
                }
            }
            Solver::Rk45 => ode::rk45(
                &mut rhs,
                x0,
                (1.0, t_end),
                Tolerance {
                    rtol: self.rtol,
                    atol: self.atol,
                },
                &mut observe,
            )?,
        };
        run.nfe = rhs.nfe;
        if self.denoise {
            let x = run.tweedie(&x, State::at(process, t_end))?;
            run.nfe += 1;
            run.observe(run.nfe, 1.0, &x)?;
            Ok(x)
        } else {
            Ok(x)
        }
    }
}
