//! The grid of noise states the stochastic and DDIM samplers walk, from t = 1 down to
//! a final clean state (a = 1, s = 0). Between two states the forward process is
//! x_cur = r x_prev + sqrt(q) z with r = a_cur / a_prev and q = s_cur^2 - r^2
//! s_prev^2, which gives DDPM's step on a VP chain (r = sqrt(alpha_t), q = beta_t) and
//! SMLD's ancestral step on sigma levels (r = 1, q = sigma_t^2 - sigma_prev^2). The step
//! into the clean state is Tweedie's denoising x0 = (x + s^2 score) / a.

use candle_core::{Result, Tensor};

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

    pub const CLEAN: State = State {
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
