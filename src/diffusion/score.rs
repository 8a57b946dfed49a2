//! Where scores come from: a trained network, or the exact score of an analytic
//! dataset (the oracle that validates samplers).

use candle_core::{Device, Result, Tensor};
use serde::{Deserialize, Serialize};

use super::process::NoiseProcess;
use crate::data::toy::Mixture;
use crate::nn::mlp::Mlp;

/// What a network's output means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Prediction {
    /// The noise eps that was added (DDPM's epsilon parameterisation).
    Epsilon,
    /// std_t times the score, i.e. the NCSN network output under lambda = sigma^2.
    ScaledScore,
}

/// A score model at the discrete levels of a process.
pub trait ScoreFn: Send + Sync {
    /// Noise prediction eps(x, t); x is [batch, dim].
    fn eps(&self, x: &Tensor, t: usize) -> Result<Tensor>;
    /// grad_x log p_t(x) = -eps / std_t.
    fn score(&self, x: &Tensor, t: usize) -> Result<Tensor>;
}

/// A trained network, read through its parameterisation.
pub struct NetworkScore<'a> {
    pub net: Mlp,
    pub prediction: Prediction,
    pub process: &'a dyn NoiseProcess,
}

impl NetworkScore<'_> {
    fn output(&self, x: &Tensor, t: usize) -> Result<Tensor> {
        let batch = x.dim(0)?;
        let cond = Tensor::full(self.process.conditioning(t), batch, x.device())?;
        self.net.forward(x, &cond)
    }
}

impl ScoreFn for NetworkScore<'_> {
    fn eps(&self, x: &Tensor, t: usize) -> Result<Tensor> {
        let out = self.output(x, t)?;
        match self.prediction {
            Prediction::Epsilon => Ok(out),
            Prediction::ScaledScore => out.neg(),
        }
    }

    fn score(&self, x: &Tensor, t: usize) -> Result<Tensor> {
        let out = self.output(x, t)?;
        let std = self.process.std(t);
        match self.prediction {
            Prediction::Epsilon => out.affine(-1.0 / std, 0.0),
            Prediction::ScaledScore => out.affine(1.0 / std, 0.0),
        }
    }
}

/// The exact score of a Gaussian mixture under a process: the noised marginal of
/// N(mu_k, s^2 I) at level t is N(a mu_k, (a^2 s^2 + std^2) I) with a = signal(t).
pub struct MixtureScore<'a> {
    pub mixture: Mixture,
    pub process: &'a dyn NoiseProcess,
}

impl MixtureScore<'_> {
    fn score_rows(&self, x: &[f32], dim: usize, t: usize) -> Vec<f32> {
        let a = self.process.signal(t);
        let std = self.process.std(t);
        let var = a * a * self.mixture.std * self.mixture.std + std * std;
        let mut out = Vec::with_capacity(x.len());
        let mut logits = vec![0.0; self.mixture.weights.len()];
        for row in x.chunks(dim) {
            for (k, (mean, w)) in self.mixture.means.iter().zip(&self.mixture.weights).enumerate() {
                let d2: f64 = mean.iter().zip(row).map(|(m, &v)| (v as f64 - a * m).powi(2)).sum();
                logits[k] = w.ln() - d2 / (2.0 * var);
            }
            let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let total: f64 = logits.iter().map(|l| (l - max).exp()).sum();
            for j in 0..dim {
                let mut s = 0.0;
                for (k, mean) in self.mixture.means.iter().enumerate() {
                    let r = (logits[k] - max).exp() / total;
                    s += r * (a * mean[j] - row[j] as f64) / var;
                }
                out.push(s as f32);
            }
        }
        out
    }
}

impl ScoreFn for MixtureScore<'_> {
    fn eps(&self, x: &Tensor, t: usize) -> Result<Tensor> {
        self.score(x, t)?.affine(-self.process.std(t), 0.0)
    }

    fn score(&self, x: &Tensor, t: usize) -> Result<Tensor> {
        let (n, dim) = x.dims2()?;
        let rows = x.flatten_all()?.to_vec1::<f32>()?;
        Tensor::from_vec(self.score_rows(&rows, dim, t), (n, dim), &Device::Cpu)?.to_device(x.device())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diffusion::process::SigmaLevels;

    #[test]
    fn mixture_score_of_a_single_gaussian_is_linear() {
        let process = SigmaLevels { sigmas: vec![0.5] };
        let s = MixtureScore {
            mixture: Mixture { means: vec![vec![1.0, -1.0]], weights: vec![1.0], std: 0.5 },
            process: &process,
        };
        let x = Tensor::new(&[[2.0f32, 0.0]], &Device::Cpu).unwrap();
        let got = s.score(&x, 1).unwrap().to_vec2::<f32>().unwrap();
        // var = 0.25 + 0.25 = 0.5; score = (mu - x) / var.
        assert!((got[0][0] + 2.0).abs() < 1e-6 && (got[0][1] + 2.0).abs() < 1e-6, "{got:?}");
    }
}
