//! Training objectives, written against `NoiseProcess`.

use candle_core::{D, Result, Tensor};
use serde::{Deserialize, Serialize};

use super::score::Prediction;

/// Which loss a train stage minimises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Objective {
    /// DDPM's L_simple (Ho et al. 2020, eq. 14): E ||eps - eps_theta(x_t, t)||^2.
    Eps,
    /// NCSN denoising score matching with lambda(sigma) = sigma^2 (Song & Ermon 2019,
    /// eq. 5-6): 1/2 E ||sigma s_theta(x~, sigma) + z||^2; the network outputs sigma*s.
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

    /// Scalar loss of the network output against the target.
    pub fn loss(self, output: &Tensor, target: &Tensor) -> Result<Tensor> {
        let sq = (output - target)?.sqr()?;
        match self {
            // Mean over every element, as the reference implementation's mean_flat.
            Objective::Eps => sq.mean_all(),
            // Sum over data dimensions, mean over the batch, times 1/2.
            Objective::Dsm => sq.sum(D::Minus1)?.mean_all()?.affine(0.5, 0.0),
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
        let l = Objective::Eps.loss(&out, &Objective::Eps.target(&eps).unwrap()).unwrap();
        assert!((l.to_scalar::<f32>().unwrap() - 1.75).abs() < 1e-6);
        // DSM target is -eps: rows (1,2) vs (0,0) -> 5; (0,0) vs (-1,-1) -> 2; 0.5 * mean = 1.75.
        let l = Objective::Dsm.loss(&out, &Objective::Dsm.target(&eps).unwrap()).unwrap();
        assert!((l.to_scalar::<f32>().unwrap() - 1.75).abs() < 1e-6);
    }
}
