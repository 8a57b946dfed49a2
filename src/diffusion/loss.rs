//! Training objectives, written against `NoiseProcess`.

use candle_core::{D, Result, Tensor};
use serde::{Deserialize, Serialize};

use super::score::Prediction;

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
}

impl Objective {
    /// The parameterisation the trained network ends up with.
    pub fn prediction(self) -> Prediction {
        match self {
            Objective::Eps => Prediction::Epsilon,
            Objective::Dsm => Prediction::ScaledScore,
        }
    }

    /// The regression target for a batch given the noise `eps` that was added.
    pub fn target(self, eps: &Tensor) -> Result<Tensor> {
        match self {
            Objective::Eps => Ok(eps.clone()),
            Objective::Dsm => eps.neg(),
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
            Objective::Eps => sq.mean_all(),
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
        let l = Objective::Eps
            .loss(&out, &Objective::Eps.target(&eps).unwrap(), None)
            .unwrap();
        assert!((l.to_scalar::<f32>().unwrap() - 1.75).abs() < 1e-6);
        // DSM target is -eps: rows (1,2) vs (0,0) -> 5; (0,0) vs (-1,-1) -> 2; 0.5 * mean = 1.75.
        let l = Objective::Dsm
            .loss(&out, &Objective::Dsm.target(&eps).unwrap(), None)
            .unwrap();
        assert!((l.to_scalar::<f32>().unwrap() - 1.75).abs() < 1e-6);
        // Weights 2 and 0: 0.5 * (2 * 5 + 0 * 2) / 2 = 2.5.
        let w = Tensor::new(&[2f32, 0.0], &dev).unwrap();
        let l = Objective::Dsm
            .loss(&out, &Objective::Dsm.target(&eps).unwrap(), Some(&w))
            .unwrap();
        assert!((l.to_scalar::<f32>().unwrap() - 2.5).abs() < 1e-6);
    }
}
