//! DPM-Solver++ (Lu et al. 2022b, "DPM-Solver++: Fast Solver for Guided Sampling of
//! Diffusion Probabilistic Models"): exponential integrators with data prediction,
//! 2M multistep (their Algorithm 2, reusing the previous step's prediction) and 2S
//! singlestep (Algorithm 1, r1 = 1/2), with optional dynamic thresholding of the
//! predicted images.

use candle_core::{Result, Tensor};
use serde::{Deserialize, Serialize};

use super::exponential::{data_step, dynamic_threshold, fits_the_chain, singlestep_orders, with_denoise};
use super::family::{Run, Sampler, grid_size, positive};
use super::grid::{Spacing, Spread, State, default_rho, solver_grid};
use crate::diffusion::process::Process;

/// `sampler: dpm_solver_pp`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct DpmSolverPp {
    /// `multistep` (2M) or `singlestep` (2S).
    pub method: Method,
    /// 1 (DDIM) or 2.
    pub order: usize,
    /// Model evaluations (NFE): one per step for `multistep`, two per step for
    /// `singlestep` (an odd budget ends with a first-order step).
    pub steps: usize,
    /// How the steps are spread: `uniform_lambda` (the default), `uniform_t`,
    /// `karras` (with `rho`), or a chain's `leading` / `trailing` levels.
    pub spacing: Spacing,
    /// The exponent of `spacing: karras`.
    pub rho: f64,
    /// The last multistep step at first order when there are fewer than 15 steps, as
    /// diffusers does for stability at few steps.
    pub lower_order_final: bool,
    /// Dynamic thresholding of each predicted x0 (images): clip to the
    /// `threshold_ratio` quantile of |x0|, kept between 1 and `threshold_max`.
    pub thresholding: bool,
    pub threshold_ratio: f64,
    pub threshold_max: f64,
    /// End with the data prediction at the smallest time (one more evaluation).
    pub denoise: bool,
}

/// The two DPM-Solver++ methods.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// DPM-Solver++(2M): one evaluation per step, the previous one reused.
    #[default]
    Multistep,
    /// DPM-Solver++(2S): an intermediate evaluation inside each step.
    Singlestep,
}

impl Default for DpmSolverPp {
    fn default() -> Self {
        DpmSolverPp {
            method: Method::Multistep,
            order: 2,
            steps: 20,
            spacing: Spacing::UniformLambda,
            rho: default_rho(),
            lower_order_final: true,
            thresholding: false,
            threshold_ratio: 0.995,
            threshold_max: 1.0,
            denoise: false,
        }
    }
}

impl DpmSolverPp {
    /// The data prediction at `state`, thresholded when asked.
    fn x0(&self, run: &mut Run, x: &Tensor, state: State) -> Result<Tensor> {
        let x0 = run.x0_at(x, state)?;
        if self.thresholding {
            dynamic_threshold(&x0, self.threshold_ratio, self.threshold_max)
        } else {
            Ok(x0)
        }
    }

    /// Steps of the grid: one per evaluation (multistep) or one per order.
    fn orders(&self) -> Vec<usize> {
        match self.method {
            Method::Multistep => vec![self.order; self.steps],
            Method::Singlestep => singlestep_orders(self.steps, self.order),
        }
    }
}

impl Sampler for DpmSolverPp {
    const NAME: &'static str = "dpm_solver_pp";

    fn canonical(&self) -> DpmSolverPp {
        let defaults = DpmSolverPp::default();
        let mut canonical = DpmSolverPp {
            rho: super::grid::rho_if_karras(self.spacing, self.rho),
            ..self.clone()
        };
        if !self.thresholding {
            canonical.threshold_ratio = defaults.threshold_ratio;
            canonical.threshold_max = defaults.threshold_max;
        }
        if self.method == Method::Singlestep {
            canonical.lower_order_final = defaults.lower_order_final;
        }
        canonical
    }

    fn accepts(&self, process: &Process) -> std::result::Result<(), String> {
        Spread::check(self.spacing, self.rho, process)?;
        fits_the_chain(process, self.spacing, self.orders().len())
    }

    fn check(&self) -> std::result::Result<(), String> {
        grid_size("steps", self.steps)?;
        if !(1..=2).contains(&self.order) {
            return Err(format!("`order` must be 1 or 2, got {}", self.order));
        }
        if !(0.0..=1.0).contains(&self.threshold_ratio) {
            return Err(format!(
                "`threshold_ratio` is a quantile in [0, 1], got {}",
                self.threshold_ratio
            ));
        }
        positive("threshold_max", self.threshold_max)
    }

    fn evaluations(&self, _: &Process) -> f64 {
        (self.steps + usize::from(self.denoise)) as f64
    }

    fn draw(&self, run: &mut Run) -> Result<Tensor> {
        let process = run.process;
        let orders = self.orders();
        let spread = Spread::new(process, self.spacing, self.rho);
        let states = with_denoise(solver_grid(process, orders.len(), &spread), self.denoise);
        let moves = states.len() - 1 - usize::from(self.denoise);
        let x = run.prior()?;
        // The previous step's state and data prediction (multistep).
        let mut previous: Option<(State, Tensor)> = None;
        run.walk(&states, x, &mut |run, x, s, t, k| {
            if t == State::CLEAN {
                return self.x0(run, &x, s);
            }
            let x0 = self.x0(run, &x, s)?;
            let order = orders[k.min(orders.len() - 1)];
            let next = match self.method {
                Method::Multistep => {
                    let last = k + 1 == moves;
                    let lower = last && self.lower_order_final && moves < 15;
                    let next = match (&previous, order, lower) {
                        (Some((before, x0_before)), 2, false) => {
                            // D = (1 + 1/(2r)) x0_s - 1/(2r) x0_before, r = h_before / h.
                            let h = t.lambda() - s.lambda();
                            let r = (s.lambda() - before.lambda()) / h;
                            let d = (x0.affine(1.0 + 0.5 / r, 0.0)? - x0_before.affine(0.5 / r, 0.0)?)?;
                            data_step(&x, s, t, &d)?
                        }
                        _ => data_step(&x, s, t, &x0)?,
                    };
                    previous = Some((s, x0));
                    next
                }
                Method::Singlestep if order == 2 => {
                    let r1 = 0.5;
                    let h = t.lambda() - s.lambda();
                    let s1 = State::at(process, process.time_of_log_snr(s.lambda() + r1 * h));
                    let u = data_step(&x, s, s1, &x0)?;
                    let d1 = (self.x0(run, &u, s1)? - &x0)?;
                    (data_step(&x, s, t, &x0)? - d1.affine(0.5 / r1 * t.a * (-h).exp_m1(), 0.0)?)?
                }
                Method::Singlestep => data_step(&x, s, t, &x0)?,
            };
            Ok(next)
        })
    }
}
