//! UniPC (Zhao et al. 2023, "UniPC: A Unified Predictor-Corrector Framework for Fast
//! Sampling of Diffusion Models"): the multistep predictor UniP-p with data
//! prediction, and after each step the corrector UniC, which reuses the evaluation at
//! the new point (no extra model call) to raise the order by one. B(h) is `bh1`
//! (B(h) = h) or `bh2` (B(h) = e^h - 1), orders 1 to 3, as in their Algorithm 3 and
//! diffusers' UniPCMultistepScheduler.

use candle_core::{Result, Tensor};
use serde::{Deserialize, Serialize};

use super::exponential::{fits_the_chain, with_denoise};
use super::family::{Run, Sampler, grid_size};
use super::grid::{Spacing, Spread, State, default_rho, solver_grid};
use crate::diffusion::process::Process;

/// `sampler: unipc`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct UniPc {
    /// The predictor's order p, 1 to 3 (the corrector makes it p + 1).
    pub order: usize,
    /// `bh1` (the paper's choice for unconditional sampling) or `bh2`.
    pub variant: Variant,
    /// Model evaluations (NFE), one per step.
    pub steps: usize,
    /// How the steps are spread: `uniform_lambda` (the default), `uniform_t`,
    /// `karras` (with `rho`), or a chain's `leading` / `trailing` levels.
    pub spacing: Spacing,
    /// The exponent of `spacing: karras`.
    pub rho: f64,
    /// The last steps at lower order (the last at order 1), as diffusers does.
    pub lower_order_final: bool,
    /// Apply the corrector UniC (without it, UniP alone).
    pub corrector: bool,
    /// End with the data prediction at the smallest time (one more evaluation).
    pub denoise: bool,
}

/// B(h) of UniPC's update.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Variant {
    /// B(h) = h.
    #[default]
    Bh1,
    /// B(h) = e^h - 1.
    Bh2,
}

impl Default for UniPc {
    fn default() -> Self {
        UniPc {
            order: 2,
            variant: Variant::Bh1,
            steps: 20,
            spacing: Spacing::UniformLambda,
            rho: default_rho(),
            lower_order_final: true,
            corrector: true,
            denoise: false,
        }
    }
}

impl Sampler for UniPc {
    const NAME: &'static str = "unipc";

    fn canonical(&self) -> UniPc {
        UniPc {
            rho: super::grid::rho_if_karras(self.spacing, self.rho),
            ..self.clone()
        }
    }

    fn accepts(&self, process: &Process) -> std::result::Result<(), String> {
        Spread::check(self.spacing, self.rho, process)?;
        fits_the_chain(process, self.spacing, self.steps)
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
        let spread = Spread::new(process, self.spacing, self.rho);
        let states = with_denoise(solver_grid(process, self.steps, &spread), self.denoise);
        let moves = states.len() - 1 - usize::from(self.denoise);
        let x = run.prior()?;
        // Data predictions at the earlier states, newest last.
        let mut history: Vec<(State, Tensor)> = Vec::new();
        // The state before the last predictor step, and the order it took.
        let mut last: Option<(Tensor, usize)> = None;
        run.walk(&states, x, &mut |run, x, s, t, k| {
            let m = run.x0_at(&x, s)?;
            if t == State::CLEAN {
                return Ok(m);
            }
            let x = match (&last, history.last()) {
                (Some((before, order)), Some(_)) if self.corrector => {
                    self.correct(before, &history, s, &m, *order)?
                }
                _ => x,
            };
            history.push((s, m));
            if history.len() > self.order {
                history.remove(0);
            }
            let remaining = moves - k;
            let order = if self.lower_order_final {
                self.order.min(remaining)
            } else {
                self.order
            }
            .min(history.len());
            let next = self.predict(&x, &history, t, order)?;
            last = Some((x, order));
            Ok(next)
        })
    }
}

impl UniPc {
    /// UniP-p from the newest state of `history` to `t`: DPM-Solver++(1) plus
    /// B(h) sum_k rho_k D_k over the differences with the earlier predictions.
    fn predict(&self, x: &Tensor, history: &[(State, Tensor)], t: State, order: usize) -> Result<Tensor> {
        let (s0, m0) = history.last().expect("the newest prediction");
        let h = t.lambda() - s0.lambda();
        let (rks, diffs) = differences(history, *s0, m0, h, order)?;
        let (phi1, b_h, b) = self.coefficients(h, order);
        let mut x_t = (x.affine(t.s / s0.s, 0.0)? - m0.affine(t.a * phi1, 0.0)?)?;
        if !diffs.is_empty() {
            let rhos = if order == 2 {
                vec![0.5]
            } else {
                solve(&matrix(&rks, order - 1), &b[..order - 1])
            };
            for (rho, d) in rhos.iter().zip(&diffs) {
                x_t = (x_t - d.affine(t.a * b_h * rho, 0.0)?)?;
            }
        }
        Ok(x_t)
    }

    /// UniC-p: the step from `x` (at the second newest state of `history`) to the
    /// newest one again, now with the prediction `m_t` made there.
    fn correct(
        &self,
        x: &Tensor,
        history: &[(State, Tensor)],
        t: State,
        m_t: &Tensor,
        order: usize,
    ) -> Result<Tensor> {
        let (s0, m0) = history.last().expect("the previous prediction");
        let h = t.lambda() - s0.lambda();
        let (mut rks, diffs) = differences(history, *s0, m0, h, order)?;
        rks.push(1.0);
        let (phi1, b_h, b) = self.coefficients(h, order);
        let rhos = if order == 1 {
            vec![0.5]
        } else {
            solve(&matrix(&rks, order), &b)
        };
        let mut x_t = (x.affine(t.s / s0.s, 0.0)? - m0.affine(t.a * phi1, 0.0)?)?;
        for (rho, d) in rhos.iter().zip(&diffs) {
            x_t = (x_t - d.affine(t.a * b_h * rho, 0.0)?)?;
        }
        let d_t = (m_t - m0)?;
        x_t - d_t.affine(t.a * b_h * rhos[rhos.len() - 1], 0.0)?
    }

    /// (e^-h - 1, B(h), b): b_k = phi_(k+1)(-h) k! / B(h), the right-hand side of
    /// UniPC's order conditions (with -h, as data prediction steps backwards in lambda).
    fn coefficients(&self, h: f64, order: usize) -> (f64, f64, Vec<f64>) {
        let hh = -h;
        let phi1 = hh.exp_m1();
        let b_h = match self.variant {
            Variant::Bh1 => hh,
            Variant::Bh2 => hh.exp_m1(),
        };
        let mut phi_k = phi1 / hh - 1.0;
        let mut factorial = 1.0;
        let mut b = Vec::with_capacity(order);
        for i in 1..=order {
            b.push(phi_k * factorial / b_h);
            factorial *= (i + 1) as f64;
            phi_k = phi_k / hh - 1.0 / factorial;
        }
        (phi1, b_h, b)
    }
}

/// r_k = (lambda_k - lambda_s0) / h and D_k = (m_k - m0) / r_k for the `order - 1`
/// predictions before the newest.
fn differences(
    history: &[(State, Tensor)],
    s0: State,
    m0: &Tensor,
    h: f64,
    order: usize,
) -> Result<(Vec<f64>, Vec<Tensor>)> {
    let mut rks = Vec::new();
    let mut diffs = Vec::new();
    for i in 1..order {
        let Some((si, mi)) = history.len().checked_sub(i + 1).map(|j| &history[j]) else {
            break;
        };
        let rk = (si.lambda() - s0.lambda()) / h;
        diffs.push((mi - m0)?.affine(1.0 / rk, 0.0)?);
        rks.push(rk);
    }
    Ok((rks, diffs))
}

/// The `size` x `size` matrix R[i][j] = r_j^i.
fn matrix(rks: &[f64], size: usize) -> Vec<Vec<f64>> {
    (0..size)
        .map(|i| (0..size).map(|j| rks[j].powi(i as i32)).collect())
        .collect()
}

/// Solves a x = b by Gaussian elimination with partial pivoting (at most 3 x 3).
fn solve(a: &[Vec<f64>], b: &[f64]) -> Vec<f64> {
    let n = b.len();
    let mut m: Vec<Vec<f64>> = a.iter().zip(b).map(|(row, &v)| [row.clone(), vec![v]].concat()).collect();
    for col in 0..n {
        let pivot = (col..n)
            .max_by(|&i, &j| m[i][col].abs().total_cmp(&m[j][col].abs()))
            .unwrap_or(col);
        m.swap(col, pivot);
        for row in col + 1..n {
            let f = m[row][col] / m[col][col];
            for c in col..=n {
                m[row][c] -= f * m[col][c];
            }
        }
    }
    let mut x = vec![0.0; n];
    for row in (0..n).rev() {
        let tail: f64 = (row + 1..n).map(|c| m[row][c] * x[c]).sum();
        x[row] = (m[row][n] - tail) / m[row][row];
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn solve_inverts_a_small_system() {
        let a = vec![vec![1.0, 1.0, 1.0], vec![-0.5, -1.5, 1.0], vec![0.25, 2.25, 1.0]];
        let want = [0.3, -0.2, 0.9];
        let b: Vec<f64> = a.iter().map(|r| r.iter().zip(&want).map(|(x, y)| x * y).sum()).collect();
        for (got, want) in solve(&a, &b).iter().zip(want) {
            assert!((got - want).abs() < 1e-12);
        }
    }
}
