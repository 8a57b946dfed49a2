//! Samplers, written once against [`Process`] and [`ScoreFn`], so every sampler runs
//! on every model whose process it is defined for.
//!
//! The stochastic and DDIM samplers walk a grid of noise states (a_k, s_k) from t = 1
//! down to a final clean state (a = 1, s = 0). Between two states the forward process
//! is x_cur = r x_prev + sqrt(q) z with r = a_cur / a_prev and q = s_cur^2 - r^2
//! s_prev^2, which gives DDPM's step on a VP chain (r = sqrt(alpha_t), q = beta_t) and
//! SMLD's ancestral step on sigma levels (r = 1, q = sigma_t^2 - sigma_prev^2). The step
//! into the clean state is Tweedie's denoising x0 = (x + s^2 score) / a.

use candle_core::{Device, Result, Tensor};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::ode::{self, Rhs, Tolerance};
use super::process::Process;
use super::score::ScoreFn;
use crate::rng::{normals, uniforms};

/// A sampler and its settings, as written in a sample stage.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(tag = "sampler", rename_all = "snake_case", deny_unknown_fields)]
pub enum SamplerParams {
    /// DDPM ancestral sampling (Ho et al. 2020, Algorithm 2); on sigma levels, SMLD's
    /// ancestral step (Song et al. 2021, Appendix F).
    Ancestral {
        /// sigma^2 = q (`beta`, beta_t on a DDPM chain) or the posterior variance
        /// (`posterior`, beta~_t); Ho et al. report both give similar results.
        #[serde(default)]
        variance: Variance,
        /// Number of steps: default every level of a discrete process, 1000 for an SDE.
        #[serde(default)]
        steps: Option<usize>,
    },
    /// DDIM (Song, Meng & Ermon 2021) on an evenly spaced subset of times: eta = 0 is
    /// deterministic, eta = 1 has the ancestral sampler's variance.
    Ddim {
        #[serde(default)]
        eta: f64,
        #[serde(default = "ddim_steps")]
        steps: usize,
    },
    /// Plain Langevin dynamics with the score at the lowest noise level:
    /// x <- x + step_size/2 s(x) + sqrt(step_size) z (Song & Ermon 2019, Sec. 3.2).
    Langevin {
        #[serde(default = "langevin_step")]
        step_size: f64,
        #[serde(default = "langevin_n")]
        n_steps: usize,
        /// Initial distribution: `uniform` on [-init_range, init_range]^d, or
        /// `gaussian` N(0, prior_std^2 I).
        #[serde(default)]
        init: LangevinInit,
        #[serde(default = "unit")]
        init_range: f64,
    },
    /// Annealed Langevin dynamics (Song & Ermon 2019, Algorithm 1) on a VE process.
    AnnealedLangevin {
        /// epsilon in alpha_i = epsilon * sigma_i^2 / sigma_L^2 (paper: 2e-5).
        #[serde(default = "step_lr")]
        step_lr: f64,
        /// Langevin steps per noise level (paper: T = 100).
        #[serde(default = "n_steps_each")]
        n_steps_each: usize,
        /// Noise levels for a continuous VE SDE (sigma levels use their own).
        #[serde(default = "annealed_levels")]
        levels: usize,
        /// Final Tweedie denoising step x + sigma_min^2 s(x, sigma_min)
        /// (Jolicoeur-Martineau et al. 2021; Song & Ermon 2020).
        #[serde(default = "yes")]
        denoise: bool,
        /// Initial distribution: `uniform` on [-init_range, init_range]^d (the paper:
        /// [-1, 1]), or `gaussian` N(0, sigma_max^2 I).
        #[serde(default)]
        init: LangevinInit,
        #[serde(default = "unit")]
        init_range: f64,
    },
    /// Predictor-corrector sampling (Song et al. 2021, Algorithm 1 and score_sde).
    Pc {
        #[serde(default)]
        predictor: Predictor,
        #[serde(default)]
        corrector: Corrector,
        /// Signal-to-noise ratio of the Langevin corrector (score_sde: 0.16 for VE, 0.01 for VP).
        #[serde(default = "snr")]
        snr: f64,
        /// Corrector steps per time step.
        #[serde(default = "one")]
        corrector_steps: usize,
        /// Number of time steps: default every level of a discrete process, 1000 for an SDE.
        #[serde(default)]
        steps: Option<usize>,
        /// Finish with Tweedie's denoising step.
        #[serde(default = "yes")]
        denoise: bool,
    },
    /// The probability-flow ODE dx/dt = f(t) x - g(t)^2 / 2 s(x, t), integrated from
    /// t = 1 to the process's smallest time.
    Ode {
        #[serde(default)]
        solver: Solver,
        /// Steps of `euler` and `heun`.
        #[serde(default = "ode_steps")]
        steps: usize,
        /// Tolerances of `rk45` (score_sde: 1e-5).
        #[serde(default = "tolerance")]
        rtol: f64,
        #[serde(default = "tolerance")]
        atol: f64,
        /// Finish with Tweedie's denoising step (one more evaluation).
        #[serde(default = "yes")]
        denoise: bool,
    },
}

fn ddim_steps() -> usize {
    50
}
fn langevin_step() -> f64 {
    1e-3
}
fn langevin_n() -> usize {
    1000
}
fn step_lr() -> f64 {
    2e-5
}
fn n_steps_each() -> usize {
    100
}
fn annealed_levels() -> usize {
    10
}
fn unit() -> f64 {
    1.0
}
fn yes() -> bool {
    true
}
fn snr() -> f64 {
    0.16
}
fn one() -> usize {
    1
}
fn ode_steps() -> usize {
    100
}
fn tolerance() -> f64 {
    1e-5
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Variance {
    #[default]
    Beta,
    Posterior,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LangevinInit {
    #[default]
    Uniform,
    Gaussian,
}

/// Predictors of predictor-corrector sampling.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Corrector {
    /// Langevin MCMC with its step size set by the signal-to-noise ratio.
    #[default]
    Langevin,
    None,
}

/// ODE solvers of the probability-flow sampler.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Solver {
    Euler,
    Heun,
    /// Adaptive Dormand-Prince, as score_sde's solve_ivp(method="RK45").
    #[default]
    Rk45,
}

impl SamplerParams {
    /// The same sampler with settings it ignores reset to their defaults, so that a
    /// sweep over e.g. `steps` does not recompute an adaptive solver that ignores it.
    pub fn canonical(&self) -> SamplerParams {
        match self {
            SamplerParams::Ode {
                solver: Solver::Rk45,
                rtol,
                atol,
                denoise,
                ..
            } => SamplerParams::Ode {
                solver: Solver::Rk45,
                steps: ode_steps(),
                rtol: *rtol,
                atol: *atol,
                denoise: *denoise,
            },
            SamplerParams::Ode {
                solver,
                steps,
                denoise,
                ..
            } => SamplerParams::Ode {
                solver: *solver,
                steps: *steps,
                rtol: tolerance(),
                atol: tolerance(),
                denoise: *denoise,
            },
            other => other.clone(),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            SamplerParams::Ancestral { .. } => "ancestral",
            SamplerParams::Ddim { .. } => "ddim",
            SamplerParams::Langevin { .. } => "langevin",
            SamplerParams::AnnealedLangevin { .. } => "annealed_langevin",
            SamplerParams::Pc { .. } => "pc",
            SamplerParams::Ode { .. } => "ode",
        }
    }

    /// Whether this sampler is defined for `process`, and settings a user could get wrong.
    pub fn check(&self, process: &Process) -> std::result::Result<(), String> {
        let positive = |name: &str, v: f64| {
            if v > 0.0 && v.is_finite() {
                Ok(())
            } else {
                Err(format!("`{name}` must be positive, got {v}"))
            }
        };
        let at_least_one = |name: &str, v: usize| {
            if v >= 1 {
                Ok(())
            } else {
                Err(format!("`{name}` must be at least 1"))
            }
        };
        match self {
            SamplerParams::Ancestral { steps, .. } => {
                steps.map_or(Ok(()), |s| at_least_one("steps", s))
            }
            SamplerParams::Ddim { eta, steps } => {
                at_least_one("steps", *steps)?;
                if !(0.0..=1.0).contains(eta) {
                    return Err(format!("`eta` must be in [0, 1], got {eta}"));
                }
                Ok(())
            }
            SamplerParams::Langevin {
                step_size,
                n_steps,
                init_range,
                ..
            } => {
                positive("init_range", *init_range)?;
                positive("step_size", *step_size)?;
                at_least_one("n_steps", *n_steps)
            }
            SamplerParams::AnnealedLangevin {
                step_lr,
                n_steps_each,
                levels,
                init_range,
                ..
            } => {
                if process.is_vp_family() {
                    return Err(format!(
                        "sampler `annealed_langevin` needs a VE process (geometric sigmas or ve_sde), not a {}; \
                         use `ancestral`, `ddim`, `pc` or `ode`",
                        process.name()
                    ));
                }
                positive("init_range", *init_range)?;
                positive("step_lr", *step_lr)?;
                at_least_one("n_steps_each", *n_steps_each)?;
                at_least_one("levels", *levels)
            }
            SamplerParams::Pc {
                snr,
                corrector_steps,
                steps,
                predictor,
                corrector,
                ..
            } => {
                if *predictor == Predictor::None && *corrector == Corrector::None {
                    return Err("`pc` needs a predictor or a corrector; both are `none`".into());
                }
                positive("snr", *snr)?;
                at_least_one("corrector_steps", *corrector_steps)?;
                steps.map_or(Ok(()), |s| at_least_one("steps", s))
            }
            SamplerParams::Ode {
                steps, rtol, atol, ..
            } => {
                if process.levels() == Some(1) {
                    return Err(
                        "the probability-flow ODE needs a process with more than one level".into(),
                    );
                }
                at_least_one("steps", *steps)?;
                positive("rtol", *rtol)?;
                positive("atol", *atol)
            }
        }
    }
}

/// What a sampler produced.
pub struct SampleOutcome {
    /// Final samples, row-major [n, dim].
    pub samples: Vec<f32>,
    /// (step, first `keep` particles) at the snapshot points, step 0 being the prior.
    pub trajectory: Vec<(usize, Vec<f32>)>,
    /// Number of score-function evaluations.
    pub nfe: usize,
}

/// Snapshots at evenly spaced fractions of the way from the prior to the end.
struct Snapshots {
    count: usize,
    keep: usize,
    taken: Vec<(usize, Vec<f32>)>,
}

impl Snapshots {
    /// `progress` in [0, 1]; keeps x when it passes the next of `count` marks (and at 1).
    fn observe(&mut self, step: usize, progress: f64, x: &Tensor) -> Result<()> {
        let marks = self.count.max(1);
        let next = if marks == 1 {
            1.0
        } else {
            self.taken.len() as f64 / (marks - 1) as f64
        };
        if self.taken.len() < marks && progress + 1e-9 >= next {
            let rows = x.narrow(0, 0, self.keep.min(x.dim(0)?))?;
            self.taken
                .push((step, rows.flatten_all()?.to_vec1::<f32>()?));
        }
        Ok(())
    }
}

/// Everything a sampler run needs besides the score.
pub struct SampleRequest<'a> {
    pub n: usize,
    pub dim: usize,
    pub snapshots: usize,
    pub snapshot_particles: usize,
    pub device: &'a Device,
    /// Initial points [n, dim] to use instead of draws from the sampler's initial
    /// distribution (spherical interpolation decodes chosen noises).
    pub start: Option<&'a Tensor>,
}

/// One point of a sampling grid.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct State {
    pub t: f64,
    pub a: f64,
    pub s: f64,
}

impl State {
    fn at(process: &Process, t: f64) -> State {
        State {
            t,
            a: process.mean_coef(t),
            s: process.std(t),
        }
    }
    const CLEAN: State = State {
        t: 0.0,
        a: 1.0,
        s: 0.0,
    };
}

/// From t = 1 down to the clean state: the levels of a discrete process (an evenly
/// spaced subset when `steps` is smaller), or `steps` equal steps of an SDE down to
/// its smallest time.
pub fn grid(process: &Process, steps: Option<usize>) -> Vec<State> {
    let mut states: Vec<State> = match process.levels() {
        Some(n) => {
            let k = steps.unwrap_or(n).clamp(1, n);
            let mut levels: Vec<usize> = (0..k)
                .map(|i| {
                    if k == 1 {
                        n
                    } else {
                        (n as f64 - (n - 1) as f64 * i as f64 / (k - 1) as f64).round() as usize
                    }
                })
                .collect();
            levels.dedup();
            levels
                .into_iter()
                .map(|i| State::at(process, process.level_time(i)))
                .collect()
        }
        None => {
            let k = steps.unwrap_or(1000).max(1);
            let t_min = process.t_min();
            (0..k)
                .map(|i| {
                    State::at(
                        process,
                        if k == 1 {
                            1.0
                        } else {
                            1.0 - (1.0 - t_min) * i as f64 / (k - 1) as f64
                        },
                    )
                })
                .collect()
        }
    };
    states.push(State::CLEAN);
    states
}

/// The forward step between two states: (r, q) with x_cur = r x_prev + sqrt(q) z.
fn transition(cur: State, prev: State) -> (f64, f64) {
    let r = cur.a / prev.a;
    (r, (cur.s * cur.s - r * r * prev.s * prev.s).max(0.0))
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

/// Runs the sampler. `progress(done, total)` is called as it goes.
pub fn run(
    params: &SamplerParams,
    score: &dyn ScoreFn,
    process: &Process,
    request: &SampleRequest,
    rng: &mut ChaCha8Rng,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<SampleOutcome> {
    let (n, dim) = (request.n, request.dim);
    let mut snaps = Snapshots {
        count: request.snapshots,
        keep: request.snapshot_particles,
        taken: Vec::new(),
    };
    let noise =
        |rng: &mut ChaCha8Rng| Tensor::from_vec(normals(rng, n * dim), (n, dim), request.device);
    let prior = |rng: &mut ChaCha8Rng| match request.start {
        Some(x) => Ok(x.clone()),
        None => noise(rng)?.affine(process.prior_std(), 0.0),
    };
    // Langevin samplers start uniform on [-1, 1]^d (the paper) or from the prior.
    let start = |init: LangevinInit, range: f64, rng: &mut ChaCha8Rng| match init {
        LangevinInit::Uniform if request.start.is_none() => Tensor::from_vec(
            uniforms(rng, n * dim, -range as f32, range as f32),
            (n, dim),
            request.device,
        ),
        _ => prior(rng),
    };
    let tweedie = |x: &Tensor, state: State| -> Result<Tensor> {
        (x + score.score(x, state.t)?.affine(state.s * state.s, 0.0)?)?.affine(1.0 / state.a, 0.0)
    };
    let mut nfe = 0;
    let x = match params {
        SamplerParams::Ancestral { variance, steps } => {
            let x = prior(rng)?;
            walk(
                &grid(process, *steps),
                x,
                &mut snaps,
                progress,
                &mut |x, cur, prev, _| {
                    nfe += 1;
                    ancestral_step(score, &x, cur, prev, *variance, &noise, rng)
                },
            )?
        }
        SamplerParams::Ddim { eta, steps } => {
            let x = prior(rng)?;
            walk(
                &grid(process, Some(*steps)),
                x,
                &mut snaps,
                progress,
                &mut |x, cur, prev, _| {
                    let (_, q) = transition(cur, prev);
                    let eps = score.eps(&x, cur.t)?;
                    let x0 = (&x - eps.affine(cur.s, 0.0)?)?.affine(1.0 / cur.a, 0.0)?;
                    // Song et al. (2021a) eq. 12 with sigma = eta * posterior std.
                    let c = eta * (prev.s * prev.s * q).sqrt() / cur.s;
                    let direction = (prev.s * prev.s - c * c).max(0.0).sqrt();
                    nfe += 1;
                    let x = (x0.affine(prev.a, 0.0)? + eps.affine(direction, 0.0)?)?;
                    if c > 0.0 {
                        x + noise(rng)?.affine(c, 0.0)?
                    } else {
                        Ok(x)
                    }
                },
            )?
        }
        SamplerParams::Langevin {
            step_size,
            n_steps,
            init,
            init_range,
        } => {
            let mut x = start(*init, *init_range, rng)?;
            snaps.observe(0, 0.0, &x)?;
            let t = process.t_min();
            for k in 0..*n_steps {
                let drift = score.score(&x, t)?.affine(step_size / 2.0, 0.0)?;
                x = ((x + drift)? + noise(rng)?.affine(step_size.sqrt(), 0.0)?)?;
                nfe += 1;
                snaps.observe(k + 1, (k + 1) as f64 / *n_steps as f64, &x)?;
                progress(k + 1, *n_steps);
            }
            x
        }
        SamplerParams::AnnealedLangevin {
            step_lr,
            n_steps_each,
            levels,
            denoise,
            init,
            init_range,
        } => {
            let states: Vec<State> = grid(process, Some(*levels))
                .into_iter()
                .filter(|s| *s != State::CLEAN)
                .collect();
            let sigma_min = states.last().map(|s| s.s).unwrap_or(1.0);
            let total = states.len() * n_steps_each + *denoise as usize;
            let mut x = start(*init, *init_range, rng)?;
            snaps.observe(0, 0.0, &x)?;
            for state in &states {
                let alpha = step_lr * (state.s / sigma_min).powi(2);
                for _ in 0..*n_steps_each {
                    let drift = score.score(&x, state.t)?.affine(alpha / 2.0, 0.0)?;
                    x = ((x + drift)? + noise(rng)?.affine(alpha.sqrt(), 0.0)?)?;
                    nfe += 1;
                    snaps.observe(nfe, nfe as f64 / total as f64, &x)?;
                    progress(nfe, total);
                }
            }
            if *denoise {
                let last = *states.last().expect("at least one level");
                x = tweedie(&x, State { a: 1.0, ..last })?;
                nfe += 1;
                snaps.observe(nfe, 1.0, &x)?;
                progress(nfe, total);
            }
            x
        }
        SamplerParams::Pc {
            predictor,
            corrector,
            snr,
            corrector_steps,
            steps,
            denoise,
        } => {
            let states = grid(process, *steps);
            let moves = states.len() - 1;
            let x = prior(rng)?;
            walk(
                &states,
                x,
                &mut snaps,
                progress,
                &mut |mut x, cur, prev, k| {
                    if prev == State::CLEAN {
                        // The last move: Tweedie's denoising, or the predictor's mean.
                        if *denoise {
                            nfe += 1;
                            return tweedie(&x, cur);
                        }
                        return Ok(x);
                    }
                    let (r, q) = transition(cur, prev);
                    if *corrector == Corrector::Langevin {
                        // score_sde uses alpha = 1 - beta_i on VP chains, 1 on VE.
                        let alpha = if process.is_vp_family() { r * r } else { 1.0 };
                        for _ in 0..*corrector_steps {
                            let grad = score.score(&x, cur.t)?;
                            let z = noise(rng)?;
                            let step = langevin_step_size(*snr, alpha, &grad, &z)?;
                            x = ((&x + grad.affine(step, 0.0)?)?
                                + z.affine((2.0 * step).sqrt(), 0.0)?)?;
                            nfe += 1;
                        }
                    }
                    // Without the denoising move, the move before it keeps its mean.
                    let last_move = !*denoise && k + 2 == moves;
                    if *predictor != Predictor::None {
                        nfe += 1;
                    }
                    match predictor {
                        Predictor::None => Ok(x),
                        Predictor::Ancestral => {
                            ancestral_step(score, &x, cur, prev, Variance::Beta, &noise, rng)
                        }
                        Predictor::ReverseDiffusion => {
                            let mean = (x.affine(2.0 - r, 0.0)?
                                + score.score(&x, cur.t)?.affine(q, 0.0)?)?;
                            if last_move {
                                Ok(mean)
                            } else {
                                mean + noise(rng)?.affine(q.sqrt(), 0.0)?
                            }
                        }
                        Predictor::EulerMaruyama => {
                            let dt = prev.t - cur.t;
                            let (f, g) = (process.drift_coef(cur.t), process.diffusion(cur.t));
                            let drift = (x.affine(f, 0.0)?
                                - score.score(&x, cur.t)?.affine(g * g, 0.0)?)?;
                            let mean = (&x + drift.affine(dt, 0.0)?)?;
                            if last_move {
                                Ok(mean)
                            } else {
                                mean + noise(rng)?.affine(g * (-dt).sqrt(), 0.0)?
                            }
                        }
                    }
                },
            )?
        }
        SamplerParams::Ode {
            solver,
            steps,
            rtol,
            atol,
            denoise,
        } => {
            let t_end = process.t_min();
            let mut drift = |x: &Tensor, t: f64| -> Result<Tensor> {
                let g = process.diffusion(t);
                x.affine(process.drift_coef(t), 0.0)?
                    - score.score(x, t)?.affine(0.5 * g * g, 0.0)?
            };
            let mut rhs = Rhs::new(&mut drift);
            let x0 = prior(rng)?;
            snaps.observe(0, 0.0, &x0)?;
            let mut observe = |step: usize, t: f64, x: &Tensor| -> Result<()> {
                let done = ((1.0 - t) / (1.0 - t_end)).clamp(0.0, 1.0);
                progress((done * 1000.0) as usize, 1000);
                snaps.observe(step, if *denoise { done * 0.999 } else { done }, x)
            };
            let x = match solver {
                Solver::Euler => {
                    ode::fixed(&mut rhs, x0, (1.0, t_end), *steps, false, &mut observe)?
                }
                Solver::Heun => ode::fixed(&mut rhs, x0, (1.0, t_end), *steps, true, &mut observe)?,
                Solver::Rk45 => ode::rk45(
                    &mut rhs,
                    x0,
                    (1.0, t_end),
                    Tolerance {
                        rtol: *rtol,
                        atol: *atol,
                    },
                    &mut observe,
                )?,
            };
            nfe = rhs.nfe;
            if *denoise {
                let x = tweedie(&x, State::at(process, t_end))?;
                nfe += 1;
                snaps.observe(nfe, 1.0, &x)?;
                x
            } else {
                x
            }
        }
    };
    Ok(SampleOutcome {
        samples: x.flatten_all()?.to_vec1::<f32>()?,
        trajectory: snaps.taken,
        nfe,
    })
}

/// Walks a grid from the prior down to the clean state; `step(x, cur, prev, k)` makes
/// move k, and the snapshots and progress are kept here.
fn walk(
    states: &[State],
    mut x: Tensor,
    snaps: &mut Snapshots,
    progress: &mut dyn FnMut(usize, usize),
    step: &mut dyn FnMut(Tensor, State, State, usize) -> Result<Tensor>,
) -> Result<Tensor> {
    let total = states.len() - 1;
    snaps.observe(0, 0.0, &x)?;
    for (k, pair) in states.windows(2).enumerate() {
        x = step(x, pair[0], pair[1], k)?;
        snaps.observe(k + 1, (k + 1) as f64 / total as f64, &x)?;
        progress(k + 1, total);
    }
    Ok(x)
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
        grid(process, steps)
            .into_iter()
            .filter(|s| s.t < from - 1e-12),
    );
    let mut x = x;
    for pair in states.windows(2) {
        x = ancestral_step(score, &x, pair[0], pair[1], Variance::Beta, noise, rng)?;
    }
    Ok(x)
}

/// One ancestral step from `cur` to `prev`: mean (x - q/s eps) / r plus noise (none
/// into the clean state).
fn ancestral_step(
    score: &dyn ScoreFn,
    x: &Tensor,
    cur: State,
    prev: State,
    variance: Variance,
    noise: &dyn Fn(&mut ChaCha8Rng) -> Result<Tensor>,
    rng: &mut ChaCha8Rng,
) -> Result<Tensor> {
    let (r, q) = transition(cur, prev);
    let eps = score.eps(x, cur.t)?;
    let mean = (x - eps.affine(q / cur.s, 0.0)?)?.affine(1.0 / r, 0.0)?;
    if prev == State::CLEAN {
        return Ok(mean);
    }
    let sigma = match variance {
        Variance::Beta => q.sqrt(),
        Variance::Posterior => (prev.s * prev.s * q).sqrt() / cur.s,
    };
    mean + noise(rng)?.affine(sigma, 0.0)?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::toy::Mixture;
    use crate::diffusion::schedule::ScheduleParams;
    use crate::diffusion::score::MixtureScore;
    use crate::rng::stream;

    fn mixture() -> Mixture {
        Mixture {
            means: vec![vec![1.0, 1.0], vec![-1.0, -1.0]],
            weights: vec![0.3, 0.7],
            std: 0.2,
        }
    }

    /// Mode weights within 4 binomial standard errors, per-mode means and standard
    /// deviations within 4 standard errors (plus the sampler's bias allowance).
    fn check_matches_mixture(samples: &[f32], mix: &Mixture, slack: f64, what: &str) {
        let n = samples.len() / 2;
        let w0 = mix.weights[0];
        let first = samples.chunks(2).filter(|p| mix.assign(p) == 0).count() as f64 / n as f64;
        let se = (w0 * (1.0 - w0) / n as f64).sqrt();
        assert!(
            (first - w0).abs() < 4.0 * se + slack,
            "{what}: mode 0 weight {first}"
        );
        for k in 0..2 {
            let members: Vec<&[f32]> = samples.chunks(2).filter(|p| mix.assign(p) == k).collect();
            let m = members.len() as f64;
            for j in 0..2 {
                let mean = members.iter().map(|p| p[j] as f64).sum::<f64>() / m;
                let var = members
                    .iter()
                    .map(|p| (p[j] as f64 - mean).powi(2))
                    .sum::<f64>()
                    / m;
                let se_mean = mix.std / m.sqrt();
                assert!(
                    (mean - mix.means[k][j]).abs() < 4.0 * se_mean + slack,
                    "{what}: mode {k} mean {mean}"
                );
                // sd of the sample std is about std / sqrt(2m).
                assert!(
                    (var.sqrt() - mix.std).abs() < 4.0 * mix.std / (2.0 * m).sqrt() + slack,
                    "{what}: mode {k} std {}",
                    var.sqrt()
                );
            }
        }
    }

    fn request(n: usize, dev: &Device) -> SampleRequest<'_> {
        SampleRequest {
            n,
            dim: 2,
            snapshots: 5,
            snapshot_particles: 10,
            device: dev,
            start: None,
        }
    }

    fn sample(params: &SamplerParams, process: &Process, n: usize, seed: u64) -> SampleOutcome {
        let dev = Device::Cpu;
        let score = MixtureScore {
            mixture: mixture(),
            process,
        };
        run(
            params,
            &score,
            process,
            &request(n, &dev),
            &mut stream(seed, "s"),
            &mut |_, _| {},
        )
        .unwrap()
    }

    fn processes() -> Vec<(&'static str, Process)> {
        vec![
            (
                "ddpm",
                ScheduleParams::Linear {
                    beta_start: 1e-4,
                    beta_end: 0.02,
                    steps: 1000,
                }
                .build(),
            ),
            (
                "smld",
                ScheduleParams::Geometric {
                    sigma_max: 3.0,
                    sigma_min: 0.01,
                    levels: 200,
                }
                .build(),
            ),
            (
                "vp",
                Process::Vp {
                    beta_min: 0.1,
                    beta_max: 20.0,
                },
            ),
            (
                "subvp",
                Process::SubVp {
                    beta_min: 0.1,
                    beta_max: 20.0,
                },
            ),
            (
                "ve",
                Process::Ve {
                    sigma_min: 0.01,
                    sigma_max: 3.0,
                },
            ),
        ]
    }

    #[test]
    fn every_sampler_with_exact_scores_recovers_the_mixture() {
        let n = 4000;
        for (name, process) in processes() {
            let mut samplers = vec![
                SamplerParams::Ancestral {
                    variance: Variance::Beta,
                    steps: Some(500),
                },
                SamplerParams::Ancestral {
                    variance: Variance::Posterior,
                    steps: Some(500),
                },
                SamplerParams::Ddim {
                    eta: 0.0,
                    steps: 100,
                },
                SamplerParams::Ddim {
                    eta: 1.0,
                    steps: 200,
                },
                SamplerParams::Ode {
                    solver: Solver::Heun,
                    steps: 100,
                    rtol: 1e-5,
                    atol: 1e-5,
                    denoise: true,
                },
                SamplerParams::Ode {
                    solver: Solver::Rk45,
                    steps: 100,
                    rtol: 1e-4,
                    atol: 1e-4,
                    denoise: true,
                },
                SamplerParams::Pc {
                    predictor: Predictor::ReverseDiffusion,
                    corrector: Corrector::Langevin,
                    snr: if process.is_vp_family() { 0.01 } else { 0.16 },
                    corrector_steps: 1,
                    steps: Some(500),
                    denoise: true,
                },
                SamplerParams::Pc {
                    predictor: Predictor::EulerMaruyama,
                    corrector: Corrector::None,
                    snr: 0.16,
                    corrector_steps: 1,
                    steps: Some(500),
                    denoise: true,
                },
            ];
            if !process.is_vp_family() {
                samplers.push(SamplerParams::AnnealedLangevin {
                    step_lr: 2e-5,
                    n_steps_each: 100,
                    levels: 10,
                    denoise: true,
                    init: LangevinInit::Gaussian,
                    init_range: 1.0,
                });
            }
            for params in samplers {
                params.check(&process).unwrap();
                let out = sample(&params, &process, n, 0);
                check_matches_mixture(
                    &out.samples,
                    &mixture(),
                    0.02,
                    &format!("{name} {params:?}"),
                );
                assert!(out.nfe > 0);
            }
        }
    }

    #[test]
    fn ddim_with_eta_zero_is_deterministic_given_the_initial_noise() {
        let process = Process::Vp {
            beta_min: 0.1,
            beta_max: 20.0,
        };
        let params = SamplerParams::Ddim {
            eta: 0.0,
            steps: 20,
        };
        let (a, b) = (
            sample(&params, &process, 50, 3),
            sample(&params, &process, 50, 3),
        );
        assert_eq!(a.samples, b.samples);
        assert_eq!(a.nfe, 20, "20 steps, the last into the clean state");
        // eta = 0 draws nothing after the prior: the same seed with a different
        // stream position would differ only through the prior.
        let stochastic = SamplerParams::Ddim {
            eta: 1.0,
            steps: 20,
        };
        let (c, d) = (
            sample(&stochastic, &process, 50, 3),
            sample(&params, &process, 50, 3),
        );
        assert_ne!(c.samples, d.samples);
    }

    #[test]
    fn the_corrector_step_follows_the_snr_rule() {
        let dev = Device::Cpu;
        // Per-sample norms: grad rows 3-4-5 triangles (norm 5), noise rows norm 2.
        let grad = Tensor::new(&[[3f32, 4.0], [0.0, 5.0]], &dev).unwrap();
        let noise = Tensor::new(&[[2f32, 0.0], [0.0, -2.0]], &dev).unwrap();
        let step = langevin_step_size(0.16, 0.9, &grad, &noise).unwrap();
        let expected = 2.0 * 0.9 * (0.16f64 * 2.0 / 5.0).powi(2);
        assert!((step - expected).abs() < 1e-9, "{step} vs {expected}");
    }

    #[test]
    fn grids_use_levels_or_subsets_and_end_clean() {
        let ddpm = ScheduleParams::Linear {
            beta_start: 1e-4,
            beta_end: 0.02,
            steps: 1000,
        }
        .build();
        let full = grid(&ddpm, None);
        assert_eq!(full.len(), 1001);
        assert_eq!(full[0].t, 1.0);
        assert_eq!(*full.last().unwrap(), State::CLEAN);
        let sub = grid(&ddpm, Some(10));
        assert_eq!(sub.len(), 11);
        assert!(
            (sub[9].t - 1e-3).abs() < 1e-12,
            "the subset ends at level 1"
        );
        // On a DDPM chain the transition is DDPM's (r, q) = (sqrt(alpha_t), beta_t).
        let Process::DiscreteVp { betas, .. } = &ddpm else {
            unreachable!()
        };
        let (r, q) = transition(full[0], full[1]);
        assert!((r - (1.0 - betas[999]).sqrt()).abs() < 1e-9 && (q - betas[999]).abs() < 1e-9);
    }

    #[test]
    fn samplers_refuse_processes_they_do_not_fit() {
        let annealed = SamplerParams::AnnealedLangevin {
            step_lr: 2e-5,
            n_steps_each: 1,
            levels: 10,
            denoise: true,
            init: LangevinInit::Uniform,
            init_range: 1.0,
        };
        let vp = Process::Vp {
            beta_min: 0.1,
            beta_max: 20.0,
        };
        assert!(annealed.check(&vp).unwrap_err().contains("VE process"));
        assert!(
            SamplerParams::Ddim {
                eta: 2.0,
                steps: 10
            }
            .check(&vp)
            .is_err()
        );
    }
}
