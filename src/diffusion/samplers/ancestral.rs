//! DDPM ancestral sampling (Ho et al. 2020, Algorithm 2); on sigma levels, SMLD's
//! ancestral step (Song et al. 2021, Appendix F).

use candle_core::{Result, Tensor};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::grid::{Spacing, Spread, State, default_rho, grid, is_default_rho, transition};
use super::family::{Run, Sampler};
use crate::diffusion::process::Process;
use crate::diffusion::score::ScoreFn;

/// `sampler: ancestral`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Ancestral {
    /// sigma^2 = q (`beta`, beta_t on a DDPM chain) or the posterior variance
    /// (`posterior`, beta~_t); Ho et al. report both give similar results.
    pub variance: Variance,
    /// Number of steps: default every level of a discrete process, 1000 for an SDE.
    pub steps: Option<usize>,
    /// How the steps are spread: `uniform_t` (the default), `uniform_lambda`,
    /// `karras` (with `rho`), or a chain's `leading` / `trailing` levels.
    #[serde(skip_serializing_if = "Spacing::is_uniform_t")]
    pub spacing: Spacing,
    /// The exponent of `spacing: karras` (Karras et al.: 7).
    #[serde(skip_serializing_if = "is_default_rho")]
    pub rho: f64,
}

impl Default for Ancestral {
    fn default() -> Self {
        Ancestral {
            variance: Variance::Beta,
            steps: None,
            spacing: Spacing::UniformT,
            rho: default_rho(),
        }
    }
}

/// The variance of each ancestral step's noise.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Variance {
    #[default]
    Beta,
    Posterior,
}

impl Sampler for Ancestral {
    const NAME: &'static str = "ancestral";

    fn canonical(&self) -> Ancestral {
        Ancestral {
            rho: super::grid::rho_if_karras(self.spacing, self.rho),
            ..self.clone()
        }
    }

    fn accepts(&self, process: &Process) -> std::result::Result<(), String> {
        Spread::check(self.spacing, self.rho, process)
    }

    fn check(&self) -> std::result::Result<(), String> {
        self.steps.map_or(Ok(()), |s| super::family::grid_size("steps", s))
    }

    fn evaluations(&self, process: &Process) -> f64 {
        (super::grid::grid_len(process, self.steps) - 1) as f64
    }

    fn draw(&self, run: &mut Run) -> Result<Tensor> {
        let x = run.prior()?;
        let noise = run.noise_fn();
        let states = grid(run.process, self.steps, &Spread::new(run.process, self.spacing, self.rho));
        run.walk(&states, x, &mut |run, x, cur, prev, _| {
            run.nfe += 1;
            let clip = run.clip();
            ancestral_step(run.score, &x, cur, prev, self.variance, clip, &noise, run.rng)
        })
    }
}

/// Ancestral sampling from points already at time `from` (noised data, as in Ho et al.
/// 2020's interpolation) down to the clean state, on the grid of `steps` (see [`grid`])
/// below `from`. `noise` draws each step's noise, so a caller can share it across rows.
pub fn ancestral_from(
    score: &dyn ScoreFn,
    process: &Process,
    x: Tensor,
    from: f64,
    steps: Option<usize>,
    noise: &dyn Fn(&mut ChaCha8Rng) -> Result<Tensor>,
    rng: &mut ChaCha8Rng,
) -> Result<Tensor> {
    if from <= 0.0 {
        return Ok(x);
    }
    let mut states = vec![State::at(process, from)];
    states.extend(
        grid(process, steps, &Spread::new(process, Spacing::UniformT, default_rho()))
            .into_iter()
            .filter(|s| s.t < from - 1e-12),
    );
    let mut x = x;
    for pair in states.windows(2) {
        x = ancestral_step(score, &x, pair[0], pair[1], Variance::Beta, None, noise, rng)?;
    }
    Ok(x)
}

/// One ancestral step from `cur` to `prev`: mean (x - q/s eps) / r plus noise (none
/// into the clean state). With `clip`, the mean is the posterior mean of Ho et al.'s
/// eq. 7 from the predicted x0 clipped to that range: (a_prev q / s^2) x0 +
/// (r s_prev^2 / s^2) x, which is the mean above when nothing is clipped.
#[allow(clippy::too_many_arguments)]
pub fn ancestral_step(
    score: &dyn ScoreFn,
    x: &Tensor,
    cur: State,
    prev: State,
    variance: Variance,
    clip: Option<(f32, f32)>,
    noise: &dyn Fn(&mut ChaCha8Rng) -> Result<Tensor>,
    rng: &mut ChaCha8Rng,
) -> Result<Tensor> {
    let (r, q) = transition(cur, prev);
    let eps = score.eps(x, cur.t)?;
    let mean = match clip {
        None => (x - eps.affine(q / cur.s, 0.0)?)?.affine(1.0 / r, 0.0)?,
        Some((lo, hi)) => {
            let x0 = cur.x0_from_eps(x, &eps)?.clamp(lo, hi)?;
            let s2 = cur.s * cur.s;
            (x0.affine(prev.a * q / s2, 0.0)? + x.affine(r * prev.s * prev.s / s2, 0.0)?)?
        }
    };
    if prev == State::CLEAN {
        return Ok(mean);
    }
    let sigma = match variance {
        Variance::Beta => q.sqrt(),
        Variance::Posterior => (prev.s * prev.s * q).sqrt() / cur.s,
    };
    mean + noise(rng)?.affine(sigma, 0.0)?
}
