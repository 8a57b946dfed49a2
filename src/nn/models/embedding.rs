//! Embeddings of the time t in [0, 1], so one network can serve every noise level.

use candle_core::{D, Result, Tensor};

/// Transformer-style sinusoidal features of a scalar (Vaswani et al. 2017; DDPM's time
/// embedding): [sin(c w_k), cos(c w_k)] with w_k = 10000^(-k/half).
pub fn sinusoidal(cond: &Tensor, dim: usize) -> Result<Tensor> {
    let half = dim / 2;
    let freqs = Tensor::from_vec(sinusoidal_frequencies(half), (1, half), cond.device())?;
    let args = cond.unsqueeze(1)?.broadcast_mul(&freqs)?;
    Tensor::cat(&[args.sin()?, args.cos()?], D::Minus1)
}

/// w_k = 10000^(-k/half), k < half: the sinusoidal embedding's frequencies.
pub fn sinusoidal_frequencies(half: usize) -> Vec<f32> {
    (0..half)
        .map(|k| (-(10000f64.ln()) * k as f64 / half.max(1) as f64).exp() as f32)
        .collect()
}

/// Gaussian Fourier features (Tancik et al. 2020; score_sde's time embedding):
/// [sin(2 pi w_k c), cos(2 pi w_k c)] with fixed w_k ~ N(0, scale^2).
pub fn fourier(cond: &Tensor, frequencies: &Tensor) -> Result<Tensor> {
    let args = cond
        .unsqueeze(1)?
        .broadcast_mul(&frequencies.unsqueeze(0)?)?
        .affine(2.0 * std::f64::consts::PI, 0.0)?;
    Tensor::cat(&[args.sin()?, args.cos()?], D::Minus1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn sinusoidal_has_expected_values() {
        let c = Tensor::new(&[0f32, 2.0], &Device::Cpu).unwrap();
        let e = sinusoidal(&c, 4).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(e[0], vec![0.0, 0.0, 1.0, 1.0]);
        let w1 = (-(10000f64.ln()) / 2.0).exp();
        assert!((e[1][0] - 2f32.sin()).abs() < 1e-6);
        assert!((e[1][1] as f64 - (2.0 * w1).sin()).abs() < 1e-6);
        assert!((e[1][3] as f64 - (2.0 * w1).cos()).abs() < 1e-6);
    }

    #[test]
    fn fourier_has_expected_values() {
        let c = Tensor::new(&[0.25f32], &Device::Cpu).unwrap();
        let w = Tensor::new(&[1f32, 2.0], &Device::Cpu).unwrap();
        let e = fourier(&c, &w).unwrap().to_vec2::<f32>().unwrap();
        // 2 pi * 0.25 = pi/2, 2 pi * 0.5 = pi.
        let want = [1.0f32, 0.0, 0.0, -1.0];
        for (g, w) in e[0].iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{:?}", e[0]);
        }
    }
}
