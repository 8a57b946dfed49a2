//! Langevin dynamics with the score at the lowest noise level (Song & Ermon 2019,
//! Sec. 3.2), and where Langevin chains start (shared with annealed Langevin).

use candle_core::{Result, Tensor};
use serde::{Deserialize, Serialize};

use crate::diffusion::process::Process;
use super::family::{Run, Sampler, at_least_one, positive};
use crate::rng::uniforms;

/// `sampler: langevin`: x <- x + step_size/2 s(x) + sqrt(step_size) z (Song & Ermon
/// 2019, Sec. 3.2).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Langevin {
    pub step_size: f64,
    pub n_steps: usize,
    /// Initial distribution: `uniform` on [-init_range, init_range]^d, or
    /// `gaussian` N(0, prior_std^2 I).
    pub init: LangevinInit,
    pub init_range: f64,
}

impl Default for Langevin {
    fn default() -> Self {
        Langevin {
            step_size: 1e-3,
            n_steps: 1000,
            init: LangevinInit::Uniform,
            init_range: 1.0,
        }
    }
}

/// Where Langevin chains start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LangevinInit {
    #[default]
    Uniform,
    Gaussian,
}

/// Langevin samplers start uniform on [-1, 1]^d (the paper) or from the prior.
pub(super) fn start(run: &mut Run, init: LangevinInit, range: f64) -> Result<Tensor> {
    match init {
        LangevinInit::Uniform if !run.starts_given() => {
            let (n, dim) = run.shape();
            Tensor::from_vec(
                uniforms(run.rng, n * dim, -range as f32, range as f32),
                (n, dim),
                run.device(),
            )
        }
        _ => run.prior(),
    }
}

impl Sampler for Langevin {
    const NAME: &'static str = "langevin";

    fn check(&self) -> std::result::Result<(), String> {
        positive("init_range", self.init_range)?;
        positive("step_size", self.step_size)?;
        at_least_one("n_steps", self.n_steps)
    }

    fn evaluations(&self, _: &Process) -> f64 {
        self.n_steps as f64
    }

    fn draw(&self, run: &mut Run) -> Result<Tensor> {
        let mut x = start(run, self.init, self.init_range)?;
        run.observe(0, 0.0, &x)?;
        let t = run.process.t_min();
        for k in 0..self.n_steps {
            let drift = run.score.score(&x, t)?.affine(self.step_size / 2.0, 0.0)?;
            x = ((x + drift)? + run.noise()?.affine(self.step_size.sqrt(), 0.0)?)?;
            run.nfe += 1;
            run.observe(k + 1, (k + 1) as f64 / self.n_steps as f64, &x)?;
            run.progress(k + 1, self.n_steps);
        }
        Ok(x)
    }
}
