//! The grid of noise states the stochastic and DDIM samplers walk, from t = 1 down to
//! a final clean state (a = 1, s = 0). Between two states the forward process is
//! x_cur = r x_prev + sqrt(q) z with r = a_cur / a_prev and q = s_cur^2 - r^2
//! s_prev^2, which gives DDPM's step on a VP chain (r = sqrt(alpha_t), q = beta_t) and
//! SMLD's ancestral step on sigma levels (r = 1, q = sigma_t^2 - sigma_prev^2). The step
//! into the clean state is Tweedie's denoising x0 = (x + s^2 score) / a.

use candle_core::{Result, Tensor};
use serde::{Deserialize, Serialize};

use crate::diffusion::process::Process;

/// One point of a sampling grid.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct State {
    pub t: f64,
    pub a: f64,
    pub s: f64,
}

impl State {
    pub fn at(process: &Process, t: f64) -> State {
        State {
            t,
            a: process.mean_coef(t),
            s: process.std(t),
        }
    }

    /// Tweedie's prediction of x0 from the score at this state: (x + s^2 score) / a.
    pub fn x0_from_score(self, x: &Tensor, score: &Tensor) -> Result<Tensor> {
        (x + score.affine(self.s * self.s, 0.0)?)?.affine(1.0 / self.a, 0.0)
    }

    /// The same prediction from the noise: (x - s eps) / a.
    pub fn x0_from_eps(self, x: &Tensor, eps: &Tensor) -> Result<Tensor> {
        (x - eps.affine(self.s, 0.0)?)?.affine(1.0 / self.a, 0.0)
    }

    /// The log-SNR log(a / s) (infinite at the clean state).
    pub fn lambda(self) -> f64 {
        (self.a / self.s).ln()
    }

    pub const CLEAN: State = State {
        t: 0.0,
        a: 1.0,
        s: 0.0,
    };
}

/// How a grid spreads its points between its ends (`spacing:` of every grid sampler).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Spacing {
    /// Evenly in t; on a chain, evenly spaced levels (DDIM's and diffusers' `linspace`).
    #[default]
    UniformT,
    /// Evenly in the log-SNR lambda: DPM-Solver's choice for unconditional sampling
    /// (Lu et al. 2022, Sec. 3.3).
    UniformLambda,
    /// Karras et al. (2022) eq. 5: sigma^(1/rho) evenly spaced, sigma = e^-lambda.
    Karras,
    /// diffusers' `leading` on a chain: levels 1, 1 + r, 1 + 2r, ... with r = N // points.
    Leading,
    /// diffusers' `trailing` on a chain: levels N, N - N/k, ... down from the last one.
    Trailing,
}

impl Spacing {
    /// Every choice, for errors and docs.
    pub const NAMES: &'static [&'static str] = &[
        "uniform_t",
        "uniform_lambda",
        "karras",
        "leading",
        "trailing",
    ];

    /// Whether this is the older samplers' grid, left out of their keys.
    pub fn is_uniform_t(&self) -> bool {
        *self == Spacing::UniformT
    }
}

/// Karras et al.'s rho (7), the default of every sampler's `rho`.
pub fn default_rho() -> f64 {
    7.0
}

/// Whether `rho` is the default, left out of the older samplers' keys.
pub fn is_default_rho(rho: &f64) -> bool {
    *rho == default_rho()
}

/// `rho` where karras reads it, else the default: what a sampler's key hashes.
pub fn rho_if_karras(spacing: Spacing, rho: f64) -> f64 {
    if spacing == Spacing::Karras {
        rho
    } else {
        default_rho()
    }
}

/// Where a grid starts and stops, and how its points are spread in between.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    pub spacing: Spacing,
    /// The exponent of `karras`.
    pub rho: f64,
    /// The first and last time of the grid's noisy part.
    pub top: f64,
    pub bottom: f64,
}

impl Spread {
    /// From t = 1 down to the process's smallest time.
    pub fn new(process: &Process, spacing: Spacing, rho: f64) -> Spread {
        Spread {
            spacing,
            rho,
            top: 1.0,
            bottom: process.t_min(),
        }
    }

    /// A spacing a user could pick for the wrong process, and a bad `rho`.
    pub fn check(spacing: Spacing, rho: f64, process: &Process) -> std::result::Result<(), String> {
        if !(rho > 0.0 && rho.is_finite()) {
            return Err(format!("`rho` must be positive, got {rho}"));
        }
        if matches!(spacing, Spacing::Leading | Spacing::Trailing) && process.levels().is_none() {
            return Err(format!(
                "`spacing: {}` picks levels of a discrete chain, and this model's process is the {}; use uniform_t, uniform_lambda or karras",
                if spacing == Spacing::Leading {
                    "leading"
                } else {
                    "trailing"
                },
                process.name()
            ));
        }
        Ok(())
    }

    /// `points` times from `top` down to `bottom` (both included), spread evenly in t,
    /// in lambda or in sigma^(1/rho).
    fn continuous(&self, process: &Process, points: usize) -> Vec<f64> {
        let along = |i: usize| {
            if points <= 1 {
                0.0
            } else {
                i as f64 / (points - 1) as f64
            }
        };
        let (lambda_top, lambda_bottom) = (process.log_snr(self.top), process.log_snr(self.bottom));
        (0..points)
            .map(|i| {
                let u = along(i);
                match self.spacing {
                    Spacing::UniformLambda => {
                        process.time_of_log_snr(lambda_top + u * (lambda_bottom - lambda_top))
                    }
                    Spacing::Karras => {
                        let (hi, lo) = (
                            (-lambda_top).exp().powf(1.0 / self.rho),
                            (-lambda_bottom).exp().powf(1.0 / self.rho),
                        );
                        let sigma = (hi + u * (lo - hi)).powf(self.rho);
                        process.time_of_log_snr(-sigma.ln())
                    }
                    // As the older grids computed it, so their points are unchanged.
                    _ if points <= 1 => self.top,
                    _ => self.top - (self.top - self.bottom) * i as f64 / (points - 1) as f64,
                }
                .clamp(self.bottom.min(self.top), self.top.max(self.bottom))
            })
            .collect()
    }

    /// `points` levels of an n-level chain, descending (`uniform_t`, `leading` and
    /// `trailing`), or None for the spacings that leave the levels.
    fn levels(&self, n: usize, points: usize) -> Option<Vec<usize>> {
        let k = points.max(1);
        let levels: Vec<usize> = match self.spacing {
            Spacing::UniformT => (0..k)
                .map(|i| {
                    if k == 1 {
                        n
                    } else {
                        (n as f64 - (n - 1) as f64 * i as f64 / (k - 1) as f64).round() as usize
                    }
                })
                .collect(),
            Spacing::Leading => {
                let ratio = (n / k).max(1);
                (0..k).rev().map(|j| (j * ratio + 1).min(n)).collect()
            }
            Spacing::Trailing => (0..k)
                .map(|j| ((n as f64 - j as f64 * n as f64 / k as f64).round() as usize).max(1))
                .collect(),
            Spacing::UniformLambda | Spacing::Karras => return None,
        };
        let mut levels = levels;
        levels.dedup();
        Some(levels)
    }

    /// `points` states from the top down (on a chain's levels where the spacing picks
    /// levels).
    fn states(&self, process: &Process, points: usize) -> Vec<State> {
        let on_levels = (self.top == 1.0 && self.bottom == process.t_min())
            .then(|| process.levels().and_then(|n| self.levels(n, points.min(n))))
            .flatten();
        match on_levels {
            Some(levels) => levels
                .into_iter()
                .map(|i| State::at(process, process.level_time(i)))
                .collect(),
            None => self
                .continuous(process, points)
                .into_iter()
                .map(|t| State::at(process, t))
                .collect(),
        }
    }
}

/// From the top of `spread` down to the clean state: `steps` noisy states (default
/// every level of a discrete process, 1000 for an SDE), then the clean one. The grid of
/// the samplers whose last move denoises (ancestral, DDIM, PC, EDM's).
pub fn grid(process: &Process, steps: Option<usize>, spread: &Spread) -> Vec<State> {
    let k = match process.levels() {
        Some(n) => steps.unwrap_or(n).clamp(1, n),
        None => steps.unwrap_or(1000).max(1),
    };
    let mut states = spread.states(process, k);
    states.push(State::CLEAN);
    states
}

/// `steps` moves from the top of `spread` down to its bottom (the smallest time), no
/// clean state: the grid of the exponential-integrator solvers, whose model
/// evaluations sit at every state but the last. On a chain, `trailing` takes `steps`
/// trailing levels and then level 1, as diffusers' multistep schedulers do.
pub fn solver_grid(process: &Process, steps: usize, spread: &Spread) -> Vec<State> {
    let mut states = match spread.spacing {
        Spacing::Trailing => {
            let mut s = spread.states(process, steps);
            let last = State::at(process, spread.bottom);
            if s.last() != Some(&last) {
                s.push(last);
            }
            s
        }
        _ => spread.states(process, steps + 1),
    };
    states.dedup();
    states
}

/// How many states [`grid`] returns, without building them (`steps` may be huge).
pub fn grid_len(process: &Process, steps: Option<usize>) -> usize {
    match process.levels() {
        Some(n) => steps.unwrap_or(n).clamp(1, n) + 1,
        None => steps.unwrap_or(1000).max(1).saturating_add(1),
    }
}

/// The forward step between two states: (r, q) with x_cur = r x_prev + sqrt(q) z.
pub fn transition(cur: State, prev: State) -> (f64, f64) {
    let r = cur.a / prev.a;
    (r, (cur.s * cur.s - r * r * prev.s * prev.s).max(0.0))
}
