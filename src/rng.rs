//! The project's own seeded randomness. Candle cannot seed its CPU generator, and global
//! RNG state would make results depend on scheduling, so every random draw comes from a
//! ChaCha stream derived from a seed and a purpose label: one key, one set of bytes.

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use sha2::{Digest, Sha256};

/// A reproducible random stream for one purpose ("init", "batches", ...) of one seed.
pub fn stream(seed: u64, purpose: &str) -> ChaCha8Rng {
    let mut hasher = Sha256::new();
    hasher.update(seed.to_le_bytes());
    hasher.update(purpose.as_bytes());
    let digest = hasher.finalize();
    let mut bytes = [0u8; 32];
    bytes.copy_from_slice(&digest);
    ChaCha8Rng::from_seed(bytes)
}

/// `n` standard normal draws as f32.
pub fn normals(rng: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    (0..n)
        .map(|_| rng.sample::<f64, _>(StandardNormal) as f32)
        .collect()
}

/// `n` uniform draws from [lo, hi) as f32.
pub fn uniforms(rng: &mut ChaCha8Rng, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    (0..n)
        .map(|_| lo + (hi - lo) * rng.random::<f32>())
        .collect()
}

/// `n` random signs (+1 or -1), the probes of Hutchinson's trace estimator.
pub fn rademacher(rng: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    (0..n)
        .map(|_| if rng.random::<bool>() { 1.0 } else { -1.0 })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_different_purpose_different_stream() {
        let a = normals(&mut stream(7, "x"), 5);
        let b = normals(&mut stream(7, "x"), 5);
        let c = normals(&mut stream(7, "y"), 5);
        assert_eq!(a, b);
        assert_ne!(a, c);
    }
}
