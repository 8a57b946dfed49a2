//! DDIM (Song, Meng & Ermon 2021) on an evenly spaced subset of times: eta = 0 is
//! deterministic, eta = 1 has the ancestral sampler's variance.

use candle_core::{Result, Tensor};
use serde::{Deserialize, Serialize};

use super::grid::{Spacing, Spread, default_rho, grid, is_default_rho, transition};
use crate::diffusion::process::Process;
use super::family::{Run, Sampler};

/// `sampler: ddim`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Ddim {
    pub eta: f64,
    pub steps: usize,
    /// How the steps are spread: `uniform_t` (the default), `uniform_lambda`,
    /// `karras` (with `rho`), or a chain's `leading` / `trailing` levels.
    #[serde(skip_serializing_if = "Spacing::is_uniform_t")]
    pub spacing: Spacing,
    /// The exponent of `spacing: karras` (Karras et al.: 7).
    #[serde(skip_serializing_if = "is_default_rho")]
    pub rho: f64,
}

impl Default for Ddim {
    fn default() -> Self {
        Ddim {
            eta: 0.0,
            steps: 50,
            spacing: Spacing::UniformT,
            rho: default_rho(),
        }
    }
}

impl Sampler for Ddim {
    const NAME: &'static str = "ddim";

    fn canonical(&self) -> Ddim {
        Ddim {
            rho: super::grid::rho_if_karras(self.spacing, self.rho),
            ..self.clone()
        }
    }

    fn accepts(&self, process: &Process) -> std::result::Result<(), String> {
        Spread::check(self.spacing, self.rho, process)
    }

    fn check(&self) -> std::result::Result<(), String> {
        super::family::grid_size("steps", self.steps)?;
        if !(0.0..=1.0).contains(&self.eta) {
            return Err(format!("`eta` must be in [0, 1], got {}", self.eta));
        }
        Ok(())
    }

    fn evaluations(&self, process: &Process) -> f64 {
        (super::grid::grid_len(process, Some(self.steps)) - 1) as f64
    }

    fn draw(&self, run: &mut Run) -> Result<Tensor> {
        let x = run.prior()?;
        let eta = self.eta;
        let states = grid(run.process, Some(self.steps), &Spread::new(run.process, self.spacing, self.rho));
        run.walk(&states, x, &mut |run, x, cur, prev, _| {
            let (_, q) = transition(cur, prev);
            let mut eps = run.score.eps(&x, cur.t)?;
            let mut x0 = cur.x0_from_eps(&x, &eps)?;
            if run.clip().is_some() {
                // The noise is recomputed from the clipped x0, as diffusers' DDIM does.
                x0 = run.clip_x0(x0)?;
                eps = (&x - x0.affine(cur.a, 0.0)?)?.affine(1.0 / cur.s, 0.0)?;
            }
            // Song et al. (2021a) eq. 12 with sigma = eta * posterior std.
            let c = eta * (prev.s * prev.s * q).sqrt() / cur.s;
            let direction = (prev.s * prev.s - c * c).max(0.0).sqrt();
            run.nfe += 1;
            let x = (x0.affine(prev.a, 0.0)? + eps.affine(direction, 0.0)?)?;
            if c > 0.0 {
                x + run.noise()?.affine(c, 0.0)?
            } else {
                Ok(x)
            }
        })
    }
}
