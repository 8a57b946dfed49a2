//! Predictor-corrector sampling (Song et al. 2021, Algorithm 1 and score_sde): a
//! predictor step of the reverse SDE on the grid, then Langevin corrector steps.

use candle_core::{Result, Tensor};
use serde::{Deserialize, Serialize};

use super::ancestral::{Variance, ancestral_step};
use super::grid::{Spacing, Spread, State, default_rho, grid, is_default_rho, transition};
use crate::diffusion::process::Process;
use super::family::{Run, Sampler, at_least_one, positive};

/// `sampler: pc`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Pc {
    pub predictor: Predictor,
    pub corrector: Corrector,
    /// Signal-to-noise ratio of the Langevin corrector (score_sde: 0.16 for VE, 0.01 for VP).
    pub snr: f64,
    /// Corrector steps per time step.
    pub corrector_steps: usize,
    /// Number of time steps: default every level of a discrete process, 1000 for an SDE.
    pub steps: Option<usize>,
    /// Finish with Tweedie's denoising step.
    pub denoise: bool,
    /// How the steps are spread: `uniform_t` (the default), `uniform_lambda`,
    /// `karras` (with `rho`), or a chain's `leading` / `trailing` levels.
    #[serde(skip_serializing_if = "Spacing::is_uniform_t")]
    pub spacing: Spacing,
    /// The exponent of `spacing: karras` (Karras et al.: 7).
    #[serde(skip_serializing_if = "is_default_rho")]
    pub rho: f64,
}

impl Default for Pc {
    fn default() -> Self {
        Pc {
            predictor: Predictor::ReverseDiffusion,
            corrector: Corrector::Langevin,
            snr: 0.16,
            corrector_steps: 1,
            steps: None,
            denoise: true,
            spacing: Spacing::UniformT,
            rho: default_rho(),
        }
    }
}

/// Predictors of predictor-corrector sampling.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Predictor {
    /// The reverse SDE discretised like the forward chain (score_sde's ReverseDiffusionPredictor).
    #[default]
    ReverseDiffusion,
    /// Euler-Maruyama on the reverse SDE.
    EulerMaruyama,
    /// The ancestral step (DDPM / SMLD).
    Ancestral,
    /// Corrector only.
    None,
}

/// Correctors of predictor-corrector sampling.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Corrector {
    /// Langevin MCMC with its step size set by the signal-to-noise ratio.
    #[default]
    Langevin,
    None,
}

/// score_sde's Langevin corrector step size: 2 alpha (snr |z| / |grad|)^2 with the
/// norms per sample averaged over the batch.
pub fn langevin_step_size(snr: f64, alpha: f64, grad: &Tensor, noise: &Tensor) -> Result<f64> {
    let norm = |x: &Tensor| -> Result<f64> {
        Ok(x.sqr()?.sum(1)?.sqrt()?.mean_all()?.to_scalar::<f32>()? as f64)
    };
    let ratio = snr * norm(noise)? / norm(grad)?;
    Ok(2.0 * alpha * ratio * ratio)
}

impl Sampler for Pc {
    const NAME: &'static str = "pc";

    fn canonical(&self) -> Pc {
        Pc {
            rho: super::grid::rho_if_karras(self.spacing, self.rho),
            ..self.clone()
        }
    }

    fn accepts(&self, process: &Process) -> std::result::Result<(), String> {
        Spread::check(self.spacing, self.rho, process)
    }

    fn check(&self) -> std::result::Result<(), String> {
        if self.predictor == Predictor::None && self.corrector == Corrector::None {
            return Err("`pc` needs a predictor or a corrector; both are `none`".into());
        }
        positive("snr", self.snr)?;
        at_least_one("corrector_steps", self.corrector_steps)?;
        self.steps.map_or(Ok(()), |s| super::family::grid_size("steps", s))
    }

    fn evaluations(&self, process: &Process) -> f64 {
        let moves = (super::grid::grid_len(process, self.steps) - 1) as f64;
        let predictor = f64::from(u8::from(self.predictor != Predictor::None));
        let corrector = if self.corrector == Corrector::None {
            0.0
        } else {
            self.corrector_steps as f64
        };
        moves * (predictor + corrector)
    }

    fn draw(&self, run: &mut Run) -> Result<Tensor> {
        let states = grid(run.process, self.steps, &Spread::new(run.process, self.spacing, self.rho));
        let moves = states.len() - 1;
        let x = run.prior()?;
        let noise = run.noise_fn();
        run.walk(&states, x, &mut |run, mut x, cur, prev, k| {
            if prev == State::CLEAN {
                // The last move: Tweedie's denoising, or the predictor's mean.
                if self.denoise {
                    run.nfe += 1;
                    return run.tweedie(&x, cur);
                }
                return Ok(x);
            }
            let (r, q) = transition(cur, prev);
            if self.corrector == Corrector::Langevin {
                // score_sde uses alpha = 1 - beta_i on VP chains, 1 on VE.
                let alpha = if run.process.is_vp_family() { r * r } else { 1.0 };
                for _ in 0..self.corrector_steps {
                    let grad = run.score.score(&x, cur.t)?;
                    let z = run.noise()?;
                    let step = langevin_step_size(self.snr, alpha, &grad, &z)?;
                    x = ((&x + grad.affine(step, 0.0)?)? + z.affine((2.0 * step).sqrt(), 0.0)?)?;
                    run.nfe += 1;
                }
            }
            // Without the denoising move, the move before it keeps its mean.
            let last_move = !self.denoise && k + 2 == moves;
            if self.predictor != Predictor::None {
                run.nfe += 1;
            }
            match self.predictor {
                Predictor::None => Ok(x),
                Predictor::Ancestral => {
                    let clip = run.clip();
                    ancestral_step(run.score, &x, cur, prev, Variance::Beta, clip, &noise, run.rng)
                }
                Predictor::ReverseDiffusion => {
                    let mean =
                        (x.affine(2.0 - r, 0.0)? + run.predictor_score(&x, cur)?.affine(q, 0.0)?)?;
                    if last_move {
                        Ok(mean)
                    } else {
                        mean + run.noise()?.affine(q.sqrt(), 0.0)?
                    }
                }
                Predictor::EulerMaruyama => {
                    let dt = prev.t - cur.t;
                    let (f, g) = (run.process.drift_coef(cur.t), run.process.diffusion(cur.t));
                    let drift =
                        (x.affine(f, 0.0)? - run.predictor_score(&x, cur)?.affine(g * g, 0.0)?)?;
                    let mean = (&x + drift.affine(dt, 0.0)?)?;
                    if last_move {
                        Ok(mean)
                    } else {
                        mean + run.noise()?.affine(g * (-dt).sqrt(), 0.0)?
                    }
                }
            }
        })
    }
}
