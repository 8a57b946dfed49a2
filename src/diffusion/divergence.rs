//! The divergence of a vector field through autograd: exactly (one backward pass per
//! dimension) or by Hutchinson's estimate v^T J v. Scores use it for their default
//! divergence and the likelihood for the probability-flow ODE's log-determinant.

use candle_core::{D, Result, Tensor};

/// Divergence of a function of a batch by reverse-mode autodiff: `f` maps [n, d] rows
/// independently to [n, d]; returns (f(x), div f per row). With a probe v the
/// divergence is Hutchinson's v^T (df/dx) v.
pub fn autograd_divergence(
    f: &dyn Fn(&Tensor) -> Result<Tensor>,
    x: &Tensor,
    probe: Option<&Tensor>,
) -> Result<(Tensor, Tensor)> {
    let var = candle_core::Var::from_tensor(&x.detach())?;
    let out = f(var.as_tensor())?;
    let (n, dim) = out.dims2()?;
    let gradient_of = |scalar: Tensor| -> Result<Tensor> {
        let grads = scalar.backward()?;
        match grads.get(var.as_tensor()) {
            Some(g) => Ok(g.clone()),
            // The output does not depend on x at all.
            None => Tensor::zeros((n, dim), x.dtype(), x.device()),
        }
    };
    let divergence = match probe {
        Some(v) => (gradient_of((&out * v)?.sum_all()?)? * v)?.sum(D::Minus1)?,
        None => {
            let mut total = Tensor::zeros(n, x.dtype(), x.device())?;
            for j in 0..dim {
                let g = gradient_of(out.narrow(1, j, 1)?.sum_all()?)?;
                total = (total + g.narrow(1, j, 1)?.squeeze(1)?)?;
            }
            total
        }
    };
    Ok((out.detach(), divergence))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::{rademacher, stream};
    use candle_core::Device;

    #[test]
    fn autograd_divergence_is_exact_and_hutchinson_is_unbiased() {
        // f(x) = (x0^2 x1, sin x1 + x0): div f = 2 x0 x1 + cos x1; off-diagonal terms
        // (x0^2 and 1) make single Hutchinson estimates noisy but unbiased.
        let f = |x: &Tensor| -> Result<Tensor> {
            let (x0, x1) = (x.narrow(1, 0, 1)?, x.narrow(1, 1, 1)?);
            Tensor::cat(&[(x0.sqr()? * &x1)?, (x1.sin()? + &x0)?], 1)
        };
        let n = 4000;
        let rows: Vec<f32> = (0..n).flat_map(|_| [0.7f32, -0.4]).collect();
        let x = Tensor::from_vec(rows, (n, 2), &Device::Cpu).unwrap();
        let want = 2.0 * 0.7 * -0.4 + (-0.4f64).cos();
        let (_, div) = autograd_divergence(&f, &x, None).unwrap();
        let div = div.to_vec1::<f32>().unwrap();
        assert!((div[0] as f64 - want).abs() < 1e-5, "{} vs {want}", div[0]);
        let probe = Tensor::from_vec(
            rademacher(&mut stream(1, "test/probe"), 2 * n),
            (n, 2),
            &Device::Cpu,
        )
        .unwrap();
        let (_, est) = autograd_divergence(&f, &x, Some(&probe)).unwrap();
        let est = est.to_vec1::<f32>().unwrap();
        let mean = est.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
        // Each estimate is want +- (J01 + J10) = want +- 1.49; the mean of 4000 has
        // standard error 1.49 / sqrt(4000) = 0.024.
        assert!((mean - want).abs() < 0.1, "{mean} vs {want}");
        assert!(
            est.iter().any(|&v| (v as f64 - want).abs() > 1.0),
            "single estimates should vary"
        );
    }
}
