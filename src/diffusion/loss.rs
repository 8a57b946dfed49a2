//! Training objectives, written against `NoiseProcess`.

use candle_core::{D, Result, Tensor};
use serde::{Deserialize, Serialize};

use super::score::{Prediction, edm_preconditioning};

/// Which loss a train stage minimises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Objective {
    /// DDPM's L_simple (Ho et al. 2020, eq. 14): E ||eps - eps_theta(x_t, t)||^2.
    Eps,
    /// Denoising score matching with lambda = sigma^2 (Song & Ermon 2019, eq. 5-6;
    /// Song et al. 2021, eq. 7): 1/2 E ||sigma s_theta(x~, t) + z||^2; the network
    /// outputs sigma * s. Other weightings multiply each sample's term.
    Dsm,
    /// EDM (Karras et al. 2022, Sec. 5 and Table 1): the denoiser D = c_skip x + c_out
    /// F(c_in x) regressed on x0 with weight lambda = (sigma^2 + sigma_data^2) /
    /// (sigma sigma_data)^2 at ln sigma ~ N(P_mean, P_std^2). Since lambda c_out^2 = 1
    /// this is F's unit-weight regression on (x0 - c_skip x) / c_out, taken as a mean
    /// over coordinates (EDM's loss divided by the dimension).
    Edm,
}

/// EDM's training distribution of noise levels, ln sigma ~ N(P_mean, P_std^2).
pub const EDM_P_MEAN: f64 = -1.2;
pub const EDM_P_STD: f64 = 1.2;

impl Objective {
    /// The parameterisation the trained network ends up with.
    pub fn prediction(self) -> Prediction {
        match self {
            Objective::Eps => Prediction::Epsilon,
            Objective::Dsm => Prediction::ScaledScore,
            Objective::Edm => Prediction::Denoiser,
        }
    }

    /// The network's input and regression target for a batch x_t = x0 + std eps
    /// (VE, as EDM's) or x_t = a x0 + std eps; `stds` has one entry per row and
    /// `sigma_data` is the EDM schedule's.
    pub fn regression(
        self,
        xt: &Tensor,
        x0: &Tensor,
        eps: &Tensor,
        stds: &[f64],
        sigma_data: Option<f64>,
    ) -> Result<(Tensor, Tensor)> {
        match self {
            Objective::Eps => Ok((xt.clone(), eps.clone())),
            Objective::Dsm => Ok((xt.clone(), eps.neg()?)),
            Objective::Edm => {
                let sigma_data = sigma_data.ok_or_else(|| {
                    candle_core::Error::Msg("`objective: edm` needs an edm schedule".into())
                })?;
                let column = |f: &dyn Fn(f64) -> f64| -> Result<Tensor> {
                    let values: Vec<f32> = stds.iter().map(|&s| f(s) as f32).collect();
                    Tensor::from_vec(values, (stds.len(), 1), xt.device())
                };
                let c_in = column(&|s| edm_preconditioning(s, sigma_data).2)?;
                // (x0 - c_skip x) / c_out = (sigma / sigma_data x0 - sigma_data eps) / sqrt(sigma^2 + sigma_data^2).
                let on_x0 = column(&|s| s / sigma_data / (s * s + sigma_data * sigma_data).sqrt())?;
                let on_eps = column(&|s| sigma_data / (s * s + sigma_data * sigma_data).sqrt())?;
                let target = (x0.broadcast_mul(&on_x0)? - eps.broadcast_mul(&on_eps)?)?;
                Ok((xt.broadcast_mul(&c_in)?, target))
            }
        }
    }

    /// Scalar loss of the network output against the target; `weights` ([batch])
    /// reweight each sample's `dsm` term (lambda(t) / sigma(t)^2).
    pub fn loss(
        self,
        output: &Tensor,
        target: &Tensor,
        weights: Option<&Tensor>,
    ) -> Result<Tensor> {
        let sq = (output - target)?.sqr()?;
        match self {
            // Mean over every element, as the reference implementation's mean_flat.
            Objective::Eps | Objective::Edm => sq.mean_all(),
            // Sum over data dimensions, mean over the batch, times 1/2.
            Objective::Dsm => {
                let per_sample = sq.sum(D::Minus1)?;
                let per_sample = match weights {
                    Some(w) => (per_sample * w)?,
                    None => per_sample,
                };
                per_sample.mean_all()?.affine(0.5, 0.0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn losses_match_hand_computation() {
        let dev = Device::Cpu;
        let out = Tensor::new(&[[1f32, 2.0], [0.0, 0.0]], &dev).unwrap();
        let eps = Tensor::new(&[[0f32, 0.0], [1.0, 1.0]], &dev).unwrap();
        let target = |objective: Objective| {
            objective
                .regression(&out, &out, &eps, &[1.0, 1.0], None)
                .unwrap()
                .1
        };
        let l = Objective::Eps
            .loss(&out, &target(Objective::Eps), None)
            .unwrap();
        assert!((l.to_scalar::<f32>().unwrap() - 1.75).abs() < 1e-6);
        // DSM target is -eps: rows (1,2) vs (0,0) -> 5; (0,0) vs (-1,-1) -> 2; 0.5 * mean = 1.75.
        let l = Objective::Dsm
            .loss(&out, &target(Objective::Dsm), None)
            .unwrap();
        assert!((l.to_scalar::<f32>().unwrap() - 1.75).abs() < 1e-6);
        // Weights 2 and 0: 0.5 * (2 * 5 + 0 * 2) / 2 = 2.5.
        let w = Tensor::new(&[2f32, 0.0], &dev).unwrap();
        let l = Objective::Dsm
            .loss(&out, &target(Objective::Dsm), Some(&w))
            .unwrap();
        assert!((l.to_scalar::<f32>().unwrap() - 2.5).abs() < 1e-6);
    }

    /// At the optimum F = F*, EDM's denoiser D = c_skip x + c_out F* returns x0 exactly
    /// (whatever sigma), and the network sees c_in x, of unit variance when x0 has
    /// std sigma_data.
    #[test]
    fn edm_target_makes_the_denoiser_return_the_data() {
        let dev = Device::Cpu;
        let sigma_data = 0.5;
        let x0 = Tensor::new(&[[0.3f32, -0.7], [1.1, 0.2]], &dev).unwrap();
        let eps = Tensor::new(&[[1.0f32, -0.5], [0.25, 2.0]], &dev).unwrap();
        let stds = [0.01, 20.0];
        let noise = Tensor::new(&[[0.01f32], [20.0]], &dev).unwrap();
        let xt = (&x0 + eps.broadcast_mul(&noise).unwrap()).unwrap();
        let (input, target) = Objective::Edm
            .regression(&xt, &x0, &eps, &stds, Some(sigma_data))
            .unwrap();
        let (xs, fs, ins) = (
            xt.to_vec2::<f32>().unwrap(),
            target.to_vec2::<f32>().unwrap(),
            input.to_vec2::<f32>().unwrap(),
        );
        let want = x0.to_vec2::<f32>().unwrap();
        for (row, &sigma) in stds.iter().enumerate() {
            let (c_skip, c_out, c_in) = edm_preconditioning(sigma, sigma_data);
            for j in 0..2 {
                let d = c_skip * xs[row][j] as f64 + c_out * fs[row][j] as f64;
                assert!(
                    (d - want[row][j] as f64).abs() < 1e-4,
                    "sigma {sigma}: D = {d}"
                );
                assert!((ins[row][j] as f64 - c_in * xs[row][j] as f64).abs() < 1e-5);
            }
            // lambda c_out^2 = 1: the weighting is absorbed.
            let lambda = (sigma * sigma + sigma_data * sigma_data) / (sigma * sigma_data).powi(2);
            assert!((lambda * c_out * c_out - 1.0).abs() < 1e-12);
        }
        assert!(
            Objective::Edm
                .regression(&xt, &x0, &eps, &stds, None)
                .is_err()
        );
    }
}
