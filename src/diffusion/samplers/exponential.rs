//! What the exponential-integrator solvers share (DPM-Solver, DPM-Solver++, UniPC):
//! the first-order steps in the log-SNR lambda with noise or data prediction, the
//! singlestep solvers' split of an evaluation budget into orders, and the dynamic
//! thresholding of predicted images.
//!
//! With lambda = log(a / s) and h = lambda_t - lambda_s, the probability-flow ODE's
//! exact solution has a linear part and an exponentially weighted integral of the model
//! (Lu et al. 2022, eq. 3.4); freezing the model over the step gives DDIM.

use candle_core::{Result, Tensor};

use super::grid::{Spacing, State};
use crate::diffusion::process::Process;

/// One first-order step from `s` to `t` with the noise prediction at `s`:
/// x_t = (a_t / a_s) x - s_t (e^h - 1) eps_s (DPM-Solver-1, which is DDIM).
pub fn noise_step(x: &Tensor, s: State, t: State, eps: &Tensor) -> Result<Tensor> {
    let h = t.lambda() - s.lambda();
    x.affine(t.a / s.a, 0.0)? - eps.affine(t.s * h.exp_m1(), 0.0)?
}

/// One first-order step from `s` to `t` with the data prediction at `s`:
/// x_t = (s_t / s_s) x - a_t (e^-h - 1) x0_s (DPM-Solver++(1), also DDIM).
pub fn data_step(x: &Tensor, s: State, t: State, x0: &Tensor) -> Result<Tensor> {
    let h = t.lambda() - s.lambda();
    x.affine(t.s / s.s, 0.0)? - x0.affine(t.a * (-h).exp_m1(), 0.0)?
}

/// The orders of a singlestep solver's steps that spend exactly `evaluations` model
/// calls at order at most `order` (Lu et al. 2022, Sec. 3.3, "DPM-Solver-fast"): as
/// many steps of `order` as fit, the remainder in one or two lower-order steps.
pub fn singlestep_orders(evaluations: usize, order: usize) -> Vec<usize> {
    let n = evaluations;
    match order {
        3 => {
            let k = n / 3 + 1;
            match n % 3 {
                0 => [vec![3; k.saturating_sub(2)], vec![2, 1]].concat(),
                1 => [vec![3; k - 1], vec![1]].concat(),
                _ => [vec![3; k - 1], vec![2]].concat(),
            }
        }
        2 => {
            if n % 2 == 0 {
                vec![2; n / 2]
            } else {
                [vec![2; n / 2], vec![1]].concat()
            }
        }
        _ => vec![1; n],
    }
}

/// The grid with the clean state appended when the run ends on a data prediction.
pub fn with_denoise(mut states: Vec<State>, denoise: bool) -> Vec<State> {
    if denoise {
        states.push(State::CLEAN);
    }
    states
}

/// `moves` steps between the levels of a chain (the spacings that pick levels) need
/// more than `moves` levels.
pub fn fits_the_chain(
    process: &Process,
    spacing: Spacing,
    moves: usize,
) -> std::result::Result<(), String> {
    let on_levels = matches!(
        spacing,
        Spacing::UniformT | Spacing::Leading | Spacing::Trailing
    );
    match process.levels() {
        Some(n) if on_levels && moves >= n => Err(format!(
            "{moves} steps between levels need more than {moves} levels, and this chain has {n}; take fewer steps or `spacing: uniform_lambda`"
        )),
        _ => Ok(()),
    }
}

/// Dynamic thresholding (Saharia et al. 2022, Sec. 2.3): per sample, s = the `ratio`
/// quantile of |x0| but at least 1 and at most `max`; x0 is clipped to [-s, s] and
/// divided by s, so saturated pixels are pushed inwards instead of piling up at the edge.
pub fn dynamic_threshold(x0: &Tensor, ratio: f64, max: f64) -> Result<Tensor> {
    let rows = x0
        .abs()?
        .to_dtype(candle_core::DType::F64)?
        .to_vec2::<f64>()?;
    let limits: Vec<f64> = rows
        .into_iter()
        .map(|mut row| {
            row.sort_by(f64::total_cmp);
            quantile(&row, ratio).clamp(1.0, max.max(1.0))
        })
        .collect();
    let n = limits.len();
    let s = Tensor::from_vec(limits, (n, 1), x0.device())?.to_dtype(x0.dtype())?;
    x0.broadcast_minimum(&s)?
        .broadcast_maximum(&s.neg()?)?
        .broadcast_div(&s)
}

/// The `q` quantile of sorted values with linear interpolation (numpy's and torch's).
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let pos = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let (lo, frac) = (pos.floor() as usize, pos - pos.floor());
    let hi = (lo + 1).min(sorted.len() - 1);
    sorted[lo] + frac * (sorted[hi] - sorted[lo])
}

/// Row-wise sum of squares, for tests of the steps.
#[cfg(test)]
fn norm2(x: &Tensor) -> Vec<f32> {
    x.sqr()
        .unwrap()
        .sum(candle_core::D::Minus1)
        .unwrap()
        .to_vec1()
        .unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn fast_orders_spend_the_budget_exactly() {
        for order in 1..=3 {
            for n in 1..40 {
                let orders = singlestep_orders(n, order);
                assert_eq!(orders.iter().sum::<usize>(), n, "order {order}, {n}");
                assert!(orders.iter().all(|&o| (1..=order).contains(&o)));
            }
        }
        assert_eq!(singlestep_orders(10, 3), vec![3, 3, 3, 1]);
        assert_eq!(singlestep_orders(9, 3), vec![3, 3, 2, 1]);
        assert_eq!(singlestep_orders(11, 3), vec![3, 3, 3, 2]);
        assert_eq!(singlestep_orders(7, 2), vec![2, 2, 2, 1]);
    }

    #[test]
    fn first_order_steps_are_ddim_in_either_prediction() {
        let dev = Device::Cpu;
        let (s, t) = (
            State {
                t: 0.8,
                a: 0.3,
                s: (1.0f64 - 0.09).sqrt(),
            },
            State {
                t: 0.4,
                a: 0.8,
                s: 0.6,
            },
        );
        let x = Tensor::new(&[[0.5f32, -1.0]], &dev).unwrap();
        let eps = Tensor::new(&[[0.2f32, 0.7]], &dev).unwrap();
        let x0 = s.x0_from_eps(&x, &eps).unwrap();
        // DDIM: x_t = a_t x0 + s_t eps.
        let ddim = (x0.affine(t.a, 0.0).unwrap() + eps.affine(t.s, 0.0).unwrap()).unwrap();
        for step in [
            noise_step(&x, s, t, &eps).unwrap(),
            data_step(&x, s, t, &x0).unwrap(),
        ] {
            let diff = norm2(&(step - &ddim).unwrap())[0];
            assert!(diff < 1e-10, "{diff}");
        }
    }

    #[test]
    fn thresholding_clips_each_sample_at_its_quantile() {
        let dev = Device::Cpu;
        // Row 1 is inside [-1, 1]: unchanged. Row 2's 0.5 quantile of |x| is 2 (of
        // 1, 2, 3 sorted): clipped to [-2, 2] and halved.
        let x = Tensor::new(&[[0.5f32, -0.25, 1.0], [1.0, -3.0, 2.0]], &dev).unwrap();
        let got = dynamic_threshold(&x, 0.5, 10.0)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        assert_eq!(got[0], vec![0.5, -0.25, 1.0]);
        assert_eq!(got[1], vec![0.5, -1.0, 1.0]);
        // `max` caps s: with max 1.5 row 2 is clipped to [-1.5, 1.5] and divided by 1.5.
        let capped = dynamic_threshold(&x, 0.5, 1.5)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        assert!((capped[1][1] + 1.0).abs() < 1e-6 && (capped[1][0] - 1.0 / 1.5).abs() < 1e-6);
    }
}
