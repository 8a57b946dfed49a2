//! Where scores come from: a trained network, or the exact score of an analytic
//! dataset (the oracle that validates samplers).

use candle_core::{DType, Device, Result, Tensor};
use serde::{Deserialize, Serialize};

use super::process::Process;
use crate::data::toy::Mixture;
use crate::nn::models::network::Network;

/// What a network's output means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Prediction {
    /// The noise eps that was added (DDPM's epsilon parameterisation).
    Epsilon,
    /// std_t times the score, i.e. the NCSN network output under lambda = sigma^2.
    ScaledScore,
    /// EDM's preconditioned denoiser: the network F sees c_in x and D = c_skip x +
    /// c_out F predicts x0 (the `edm` objective, on an EDM process).
    Denoiser,
}

/// EDM's preconditioning at noise level `sigma` for data of std `sigma_data`
/// (Karras et al. 2022, Table 1): (c_skip, c_out, c_in).
pub fn edm_preconditioning(sigma: f64, sigma_data: f64) -> (f64, f64, f64) {
    let total = sigma * sigma + sigma_data * sigma_data;
    (
        sigma_data * sigma_data / total,
        sigma * sigma_data / total.sqrt(),
        1.0 / total.sqrt(),
    )
}

/// A score model: grad_x log p_t(x) for a batch x of [batch, dim] at time t.
pub trait ScoreFn: Send + Sync {
    fn score(&self, x: &Tensor, t: f64) -> Result<Tensor>;
    /// The noise prediction eps = -std(t) score.
    fn eps(&self, x: &Tensor, t: f64) -> Result<Tensor>;
    /// The score and its divergence per row (the likelihood needs both): exact, or
    /// Hutchinson's v^T J v for a probe v. By default through autograd.
    fn score_and_divergence(
        &self,
        x: &Tensor,
        t: f64,
        probe: Option<&Tensor>,
    ) -> Result<(Tensor, Tensor)> {
        super::divergence::autograd_divergence(&|x| self.score(x, t), x, probe)
    }
}

/// A trained network, conditioned on time, read through its parameterisation.
pub struct NetworkScore<'a> {
    pub net: Network,
    pub prediction: Prediction,
    pub process: &'a Process,
}

impl NetworkScore<'_> {
    /// The network's output at t; a denoiser's network sees EDM's c_in x.
    fn output(&self, x: &Tensor, t: f64) -> Result<Tensor> {
        if self.prediction == Prediction::Denoiser {
            let (_, _, c_in) = self.preconditioning(t)?;
            return self.raw_output(&x.affine(c_in, 0.0)?, t);
        }
        self.raw_output(x, t)
    }

    /// EDM's (c_skip, c_out, c_in) at time t of the model's EDM process.
    fn preconditioning(&self, t: f64) -> Result<(f64, f64, f64)> {
        let sigma_data = self.process.sigma_data().ok_or_else(|| {
            candle_core::Error::Msg(format!(
                "an `edm` model needs its EDM process, not the {}",
                self.process.name()
            ))
        })?;
        Ok(edm_preconditioning(self.process.std(t), sigma_data))
    }

    /// The data prediction D(x; sigma) of a denoiser network.
    fn denoised(&self, x: &Tensor, t: f64) -> Result<Tensor> {
        let (c_skip, c_out, _) = self.preconditioning(t)?;
        x.affine(c_skip, 0.0)? + self.output(x, t)?.affine(c_out, 0.0)?
    }

    /// The network on x itself, in chunks of 256 rows so that thousands of images do
    /// not go through a U-Net at once (an MLP takes every row in one pass).
    fn raw_output(&self, x: &Tensor, t: f64) -> Result<Tensor> {
        let batch = x.dim(0)?;
        let chunk = match self.net {
            Network::Mlp(_) => batch.max(1),
            Network::UNet { .. } => 256,
        };
        let mut parts = Vec::with_capacity(batch.div_ceil(chunk));
        for start in (0..batch).step_by(chunk) {
            let len = chunk.min(batch - start);
            let cond = Tensor::full(t as f32, len, x.device())?;
            parts.push(self.net.forward(&x.narrow(0, start, len)?, &cond)?);
        }
        if parts.len() == 1 {
            return Ok(parts.pop().expect("one part"));
        }
        Tensor::cat(&parts, 0)
    }
}

impl ScoreFn for NetworkScore<'_> {
    fn eps(&self, x: &Tensor, t: f64) -> Result<Tensor> {
        match self.prediction {
            Prediction::Epsilon => self.output(x, t),
            Prediction::ScaledScore => self.output(x, t)?.neg(),
            Prediction::Denoiser => {
                (x - self.denoised(x, t)?)?.affine(1.0 / self.process.std(t), 0.0)
            }
        }
    }

    fn score(&self, x: &Tensor, t: f64) -> Result<Tensor> {
        let std = self.process.std(t);
        match self.prediction {
            Prediction::Epsilon => self.output(x, t)?.affine(-1.0 / std, 0.0),
            Prediction::ScaledScore => self.output(x, t)?.affine(1.0 / std, 0.0),
            Prediction::Denoiser => (self.denoised(x, t)? - x)?.affine(1.0 / (std * std), 0.0),
        }
    }
}

/// The exact score of a Gaussian mixture under a process: the noised marginal of
/// N(mu_k, s^2 I) at time t is N(a mu_k, (a^2 s^2 + std^2) I) with a = mean_coef(t).
pub struct MixtureScore<'a> {
    pub mixture: Mixture,
    pub process: &'a Process,
}

impl MixtureScore<'_> {
    /// (score rows, divergence per row): div s = -d/v + sum_k r_k |u_k|^2 - |s|^2 with
    /// u_k = (a mu_k - x)/v, since grad r_k = r_k (u_k - s).
    pub fn rows(&self, x: &[f32], dim: usize, t: f64) -> (Vec<f32>, Vec<f64>) {
        let x: Vec<f64> = x.iter().map(|&v| f64::from(v)).collect();
        let (score, divergence) = self.rows64(&x, dim, t);
        (score.into_iter().map(|v| v as f32).collect(), divergence)
    }

    /// [`MixtureScore::rows`] in f64.
    pub fn rows64(&self, x: &[f64], dim: usize, t: f64) -> (Vec<f64>, Vec<f64>) {
        let a = self.process.mean_coef(t);
        let std = self.process.std(t);
        let var = a * a * self.mixture.std * self.mixture.std + std * std;
        let k_count = self.mixture.weights.len();
        let mut out = Vec::with_capacity(x.len());
        let mut divergence = Vec::with_capacity(x.len() / dim.max(1));
        let mut logits = vec![0.0; k_count];
        let mut u = vec![0.0; k_count * dim];
        for row in x.chunks(dim) {
            for (k, (mean, w)) in self
                .mixture
                .means
                .iter()
                .zip(&self.mixture.weights)
                .enumerate()
            {
                let mut d2 = 0.0;
                for j in 0..dim {
                    let diff = a * mean[j] - row[j];
                    u[k * dim + j] = diff / var;
                    d2 += diff * diff;
                }
                logits[k] = w.ln() - d2 / (2.0 * var);
            }
            let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let total: f64 = logits.iter().map(|l| (l - max).exp()).sum();
            let r: Vec<f64> = logits.iter().map(|l| (l - max).exp() / total).collect();
            let (mut s_norm, mut u_norm) = (0.0, 0.0);
            for j in 0..dim {
                let s: f64 = (0..k_count).map(|k| r[k] * u[k * dim + j]).sum();
                s_norm += s * s;
                out.push(s);
            }
            for k in 0..k_count {
                u_norm += r[k] * (0..dim).map(|j| u[k * dim + j].powi(2)).sum::<f64>();
            }
            divergence.push(-(dim as f64) / var + u_norm - s_norm);
        }
        (out, divergence)
    }
}

impl ScoreFn for MixtureScore<'_> {
    fn eps(&self, x: &Tensor, t: f64) -> Result<Tensor> {
        self.score(x, t)?.affine(-self.process.std(t), 0.0)
    }

    /// In the dtype of `x`: f64 points get an f64 score (the solvers' order tests).
    fn score(&self, x: &Tensor, t: f64) -> Result<Tensor> {
        let (n, dim) = x.dims2()?;
        let rows = x.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
        let (score, _) = self.rows64(&rows, dim, t);
        Tensor::from_vec(score, (n, dim), &Device::Cpu)?
            .to_dtype(x.dtype())?
            .to_device(x.device())
    }

    /// The analytic divergence, whatever the probe: exact is never worse.
    fn score_and_divergence(
        &self,
        x: &Tensor,
        t: f64,
        _probe: Option<&Tensor>,
    ) -> Result<(Tensor, Tensor)> {
        let (n, dim) = x.dims2()?;
        let rows = x.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
        let (score, divergence) = self.rows64(&rows, dim, t);
        Ok((
            Tensor::from_vec(score, (n, dim), &Device::Cpu)?
                .to_dtype(x.dtype())?
                .to_device(x.device())?,
            Tensor::from_vec(divergence, n, &Device::Cpu)?
                .to_dtype(x.dtype())?
                .to_device(x.device())?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixture_score_of_a_single_gaussian_is_linear() {
        let process = Process::SigmaLevels { sigmas: vec![0.5] };
        let s = MixtureScore {
            mixture: Mixture {
                means: vec![vec![1.0, -1.0]],
                weights: vec![1.0],
                std: 0.5,
            },
            process: &process,
        };
        let x = Tensor::new(&[[2.0f32, 0.0]], &Device::Cpu).unwrap();
        let got = s.score(&x, 0.0).unwrap().to_vec2::<f32>().unwrap();
        // var = 0.25 + 0.25 = 0.5; score = (mu - x) / var; divergence = -d / var.
        assert!(
            (got[0][0] + 2.0).abs() < 1e-6 && (got[0][1] + 2.0).abs() < 1e-6,
            "{got:?}"
        );
        let (_, div) = s.rows(&[2.0, 0.0], 2, 0.0);
        assert!((div[0] + 4.0).abs() < 1e-9);
    }

    #[test]
    fn mixture_divergence_matches_finite_differences() {
        let process = Process::Vp {
            beta_min: 0.1,
            beta_max: 20.0,
        };
        let s = MixtureScore {
            mixture: Mixture {
                means: vec![vec![1.0, 1.0], vec![-1.0, -0.5]],
                weights: vec![0.3, 0.7],
                std: 0.3,
            },
            process: &process,
        };
        let (x, t, h) = ([0.1f32, 0.2], 0.2, 1e-3f32);
        let (_, div) = s.rows(&x, 2, t);
        let mut fd = 0.0;
        for j in 0..2 {
            let (mut up, mut down) = (x, x);
            up[j] += h;
            down[j] -= h;
            let (su, _) = s.rows(&up, 2, t);
            let (sd, _) = s.rows(&down, 2, t);
            fd += (su[j] - sd[j]) as f64 / (2.0 * h as f64);
        }
        assert!(
            (div[0] - fd).abs() < 1e-2 * fd.abs().max(1.0),
            "{} vs {fd}",
            div[0]
        );
    }
}
