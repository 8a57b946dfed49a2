//! ODE solvers for the probability-flow ODE (and the likelihood's augmented ODE):
//! Euler, Heun and adaptive Dormand-Prince RK45, over batches held as tensors. Every
//! right-hand-side call is one function evaluation (NFE).

use candle_core::{Result, Tensor};

/// dx/dt = rhs(x, t); counts its calls.
pub struct Rhs<'a> {
    f: &'a mut dyn FnMut(&Tensor, f64) -> Result<Tensor>,
    pub nfe: usize,
}

impl<'a> Rhs<'a> {
    pub fn new(f: &'a mut dyn FnMut(&Tensor, f64) -> Result<Tensor>) -> Rhs<'a> {
        Rhs { f, nfe: 0 }
    }

    pub fn eval(&mut self, x: &Tensor, t: f64) -> Result<Tensor> {
        self.nfe += 1;
        (self.f)(x, t)
    }
}

/// One fixed step of explicit Euler.
pub fn euler_step(rhs: &mut Rhs, x: &Tensor, t: f64, h: f64) -> Result<Tensor> {
    x + rhs.eval(x, t)?.affine(h, 0.0)?
}

/// One fixed step of Heun's method (explicit trapezoid, second order).
pub fn heun_step(rhs: &mut Rhs, x: &Tensor, t: f64, h: f64) -> Result<Tensor> {
    let k1 = rhs.eval(x, t)?;
    let guess = (x + k1.affine(h, 0.0)?)?;
    let k2 = rhs.eval(&guess, t + h)?;
    x + (k1 + k2)?.affine(h / 2.0, 0.0)?
}

/// Integrates from t0 to t1 in `steps` equal steps; `observe(step, t, x)` sees every
/// accepted state.
pub fn fixed(
    rhs: &mut Rhs,
    x: Tensor,
    (t0, t1): (f64, f64),
    steps: usize,
    heun: bool,
    observe: &mut dyn FnMut(usize, f64, &Tensor) -> Result<()>,
) -> Result<Tensor> {
    let h = (t1 - t0) / steps as f64;
    let moves = (0..steps).map(|i| (t0 + i as f64 * h, h));
    along(rhs, x, moves, heun, observe)
}

/// Integrates from `times[0]` through each of `times` in turn.
pub fn on_times(
    rhs: &mut Rhs,
    x: Tensor,
    times: &[f64],
    heun: bool,
    observe: &mut dyn FnMut(usize, f64, &Tensor) -> Result<()>,
) -> Result<Tensor> {
    let moves = times.windows(2).map(|pair| (pair[0], pair[1] - pair[0]));
    along(rhs, x, moves, heun, observe)
}

/// Fixed steps (t, h) of Euler or Heun.
fn along(
    rhs: &mut Rhs,
    x: Tensor,
    moves: impl Iterator<Item = (f64, f64)>,
    heun: bool,
    observe: &mut dyn FnMut(usize, f64, &Tensor) -> Result<()>,
) -> Result<Tensor> {
    let mut x = x;
    for (i, (t, h)) in moves.enumerate() {
        x = if heun {
            heun_step(rhs, &x, t, h)?
        } else {
            euler_step(rhs, &x, t, h)?
        };
        observe(i + 1, t + h, &x)?;
    }
    Ok(x)
}

// Dormand & Prince (1980) RK5(4)7M tableau.
const C: [f64; 7] = [0.0, 1.0 / 5.0, 3.0 / 10.0, 4.0 / 5.0, 8.0 / 9.0, 1.0, 1.0];
const A: [&[f64]; 7] = [
    &[],
    &[1.0 / 5.0],
    &[3.0 / 40.0, 9.0 / 40.0],
    &[44.0 / 45.0, -56.0 / 15.0, 32.0 / 9.0],
    &[
        19372.0 / 6561.0,
        -25360.0 / 2187.0,
        64448.0 / 6561.0,
        -212.0 / 729.0,
    ],
    &[
        9017.0 / 3168.0,
        -355.0 / 33.0,
        46732.0 / 5247.0,
        49.0 / 176.0,
        -5103.0 / 18656.0,
    ],
    &[
        35.0 / 384.0,
        0.0,
        500.0 / 1113.0,
        125.0 / 192.0,
        -2187.0 / 6784.0,
        11.0 / 84.0,
    ],
];
/// Fifth-order weights minus the embedded fourth-order ones: the error estimate.
const E: [f64; 7] = [
    35.0 / 384.0 - 5179.0 / 57600.0,
    0.0,
    500.0 / 1113.0 - 7571.0 / 16695.0,
    125.0 / 192.0 - 393.0 / 640.0,
    -2187.0 / 6784.0 + 92097.0 / 339200.0,
    11.0 / 84.0 - 187.0 / 2100.0,
    -1.0 / 40.0,
];

/// Tolerances of the adaptive solver (score_sde uses 1e-5 for both).
#[derive(Debug, Clone, Copy)]
pub struct Tolerance {
    pub rtol: f64,
    pub atol: f64,
}

/// Steps (accepted or not) after which the adaptive solver gives up instead of
/// running for hours: score_sde's sampling takes a few hundred.
const MAX_ATTEMPTS: usize = 100_000;

/// Adaptive RK45 from t0 to t1 with scipy's error norm and step-size control
/// (RMS of err / (atol + rtol max(|y|, |y_new|)), safety 0.9, factor in [0.2, 10]).
pub fn rk45(
    rhs: &mut Rhs,
    x: Tensor,
    (t0, t1): (f64, f64),
    tol: Tolerance,
    observe: &mut dyn FnMut(usize, f64, &Tensor) -> Result<()>,
) -> Result<Tensor> {
    let direction = (t1 - t0).signum();
    let span = (t1 - t0).abs();
    let mut h = direction * span * 0.01;
    let (mut t, mut x) = (t0, x);
    let mut k1 = rhs.eval(&x, t)?;
    let (mut accepted, mut attempts) = (0, 0usize);
    while (t1 - t) * direction > 1e-12 * span.max(1.0) {
        if (t + h - t1) * direction > 0.0 {
            h = t1 - t;
        }
        let mut k = vec![k1.clone()];
        for stage in 1..7 {
            let mut sum = x.clone();
            for (j, &a) in A[stage].iter().enumerate() {
                if a != 0.0 {
                    sum = (sum + k[j].affine(h * a, 0.0)?)?;
                }
            }
            k.push(rhs.eval(&sum, t + C[stage] * h)?);
        }
        // The seventh stage is evaluated at the fifth-order solution (FSAL).
        let mut new = x.clone();
        for (j, &a) in A[6].iter().enumerate() {
            if a != 0.0 {
                new = (new + k[j].affine(h * a, 0.0)?)?;
            }
        }
        let mut err = k[0].affine(h * E[0], 0.0)?;
        for j in 1..7 {
            if E[j] != 0.0 {
                err = (err + k[j].affine(h * E[j], 0.0)?)?;
            }
        }
        let scale = x.abs()?.maximum(&new.abs()?)?.affine(tol.rtol, tol.atol)?;
        let ratio = (err / scale)?
            .sqr()?
            .mean_all()?
            .to_dtype(candle_core::DType::F64)?
            .to_scalar::<f64>()?;
        let norm = ratio.sqrt();
        if !norm.is_finite() {
            // A NaN norm would leave h unchanged and the loop would never end.
            return Err(candle_core::Error::Msg(format!(
                "rk45: the solution became non-finite at t = {t} (the model's output is NaN or infinite there); check the training loss"
            )));
        }
        attempts += 1;
        if attempts > MAX_ATTEMPTS {
            return Err(candle_core::Error::Msg(format!(
                "rk45: {MAX_ATTEMPTS} steps without reaching t = {t1} (at t = {t}); the ODE is too stiff for rtol/atol, loosen them or use a fixed-step solver"
            )));
        }
        if norm <= 1.0 {
            t += h;
            x = new;
            k1 = k.pop().expect("seven stages");
            accepted += 1;
            observe(accepted, t, &x)?;
        }
        let factor = if norm == 0.0 {
            10.0
        } else {
            (0.9 * norm.powf(-0.2)).clamp(0.2, 10.0)
        };
        h *= if norm <= 1.0 { factor } else { factor.min(1.0) };
        if h.abs() < 1e-12 * span.max(1.0) {
            return Err(candle_core::Error::Msg(format!(
                "rk45: step size underflow at t = {t}; loosen rtol/atol"
            )));
        }
    }
    Ok(x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn rk45_fails_on_a_non_finite_solution_instead_of_looping() {
        let mut f = |x: &Tensor, _t: f64| x.affine(f64::NAN, 0.0);
        let mut rhs = Rhs::new(&mut f);
        let x0 = Tensor::new(&[1.0f32], &Device::Cpu).unwrap();
        let mut none = |_: usize, _: f64, _: &Tensor| Ok(());
        let tol = Tolerance {
            rtol: 1e-5,
            atol: 1e-5,
        };
        let err = rk45(&mut rhs, x0, (1.0, 0.0), tol, &mut none).unwrap_err();
        assert!(err.to_string().contains("non-finite at t = 1"), "{err}");
    }

    /// dx/dt = -2x from x(0) = 1: x(1) = e^-2. Returns (error, nfe).
    fn solve(method: &str, steps: usize) -> (f64, usize) {
        let mut f = |x: &Tensor, _t: f64| x.affine(-2.0, 0.0);
        let mut rhs = Rhs::new(&mut f);
        let x0 = Tensor::new(&[1.0f32], &Device::Cpu).unwrap();
        let mut none = |_: usize, _: f64, _: &Tensor| Ok(());
        let x = match method {
            "euler" => fixed(&mut rhs, x0, (0.0, 1.0), steps, false, &mut none),
            "heun" => fixed(&mut rhs, x0, (0.0, 1.0), steps, true, &mut none),
            _ => rk45(
                &mut rhs,
                x0,
                (0.0, 1.0),
                Tolerance {
                    rtol: 1e-6,
                    atol: 1e-6,
                },
                &mut none,
            ),
        }
        .unwrap();
        let got = x.to_vec1::<f32>().unwrap()[0] as f64;
        ((got - (-2.0f64).exp()).abs(), rhs.nfe)
    }

    #[test]
    fn fixed_step_solvers_reach_their_order() {
        // Halving the step divides the error by 2^order.
        let (e1, n1) = solve("euler", 50);
        let (e2, _) = solve("euler", 100);
        assert_eq!(n1, 50);
        assert!((e1 / e2 - 2.0).abs() < 0.1, "euler ratio {}", e1 / e2);
        let (h1, n2) = solve("heun", 20);
        let (h2, _) = solve("heun", 40);
        assert_eq!(n2, 40);
        assert!((h1 / h2 - 4.0).abs() < 0.3, "heun ratio {}", h1 / h2);
    }

    #[test]
    fn rk45_meets_its_tolerance_with_few_evaluations() {
        let (err, nfe) = solve("rk45", 0);
        assert!(err < 1e-5, "error {err}");
        assert!(nfe < 100, "nfe {nfe}");
    }
}
