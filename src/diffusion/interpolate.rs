//! Interpolations that show what a model has learned between two points: spherical
//! interpolation of initial noises decoded by a deterministic sampler (Song, Meng &
//! Ermon 2021, Sec. 5.3), and Ho et al. (2020, Sec. 4.3)'s mix of two images noised
//! for k steps, decoded by the reverse process.

use candle_core::{Device, Result, Tensor};
use rand_chacha::ChaCha8Rng;

use super::process::{Process, noise_batch};
use super::samplers::{self, SampleRequest, SamplerParams};
use super::score::ScoreFn;
use crate::rng::normals;

/// Spherical interpolation between a and b at fraction `lambda`: it keeps the norm of
/// Gaussian noise, where a straight line would pass through improbably small vectors.
pub fn slerp(a: &[f32], b: &[f32], lambda: f64) -> Vec<f32> {
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (*x as f64) * (*y as f64))
        .sum();
    let norm = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let cos = (dot / (norm(a) * norm(b)).max(f64::MIN_POSITIVE)).clamp(-1.0, 1.0);
    let theta = cos.acos();
    let (wa, wb) = if theta.sin() < 1e-6 {
        (1.0 - lambda, lambda)
    } else {
        (
            ((1.0 - lambda) * theta).sin() / theta.sin(),
            (lambda * theta).sin() / theta.sin(),
        )
    };
    a.iter()
        .zip(b)
        .map(|(x, y)| (wa * *x as f64 + wb * *y as f64) as f32)
        .collect()
}

/// `columns` evenly spaced fractions from 0 to 1.
pub fn fractions(columns: usize) -> Vec<f64> {
    (0..columns)
        .map(|i| i as f64 / (columns.max(2) - 1) as f64)
        .collect()
}

/// Decodes `pairs` rows of `columns` spherical interpolations between two prior draws
/// with a deterministic `sampler`; returns the images row by row, flattened.
#[allow(clippy::too_many_arguments)]
pub fn spherical(
    sampler: &SamplerParams,
    score: &dyn ScoreFn,
    process: &Process,
    pairs: usize,
    columns: usize,
    dim: usize,
    device: &Device,
    rng: &mut ChaCha8Rng,
) -> Result<Vec<f32>> {
    let std = process.prior_std() as f32;
    let mut starts = Vec::with_capacity(pairs * columns * dim);
    for _ in 0..pairs {
        let a: Vec<f32> = normals(rng, dim).iter().map(|v| v * std).collect();
        let b: Vec<f32> = normals(rng, dim).iter().map(|v| v * std).collect();
        for lambda in fractions(columns) {
            starts.extend(slerp(&a, &b, lambda));
        }
    }
    let n = pairs * columns;
    let start = Tensor::from_vec(starts, (n, dim), device)?;
    let request = SampleRequest {
        clip: None,
        n,
        dim,
        snapshots: 0,
        snapshot_particles: 0,
        device,
        start: Some(&start),
    };
    Ok(samplers::run(sampler, score, process, &request, rng, &mut |_, _| {})?.samples)
}

/// Ho et al.'s interpolation: x and y are noised to time `t` (independent noise),
/// mixed as (1 - lambda) x_t + lambda y_t at `columns` fractions and decoded by
/// ancestral sampling on the grid of `steps`, with the same reverse-process noise for
/// every fraction. t = 0 is the plain mix of the images. Returns the row, flattened.
#[allow(clippy::too_many_arguments)]
pub fn noised_mix(
    score: &dyn ScoreFn,
    process: &Process,
    x: &[f32],
    y: &[f32],
    t: f64,
    columns: usize,
    steps: Option<usize>,
    device: &Device,
    rng: &mut ChaCha8Rng,
) -> Result<Vec<f32>> {
    let dim = x.len();
    let (ex, ey) = (normals(rng, dim), normals(rng, dim));
    let noised = |v: &[f32], eps: &[f32]| {
        if t > 0.0 {
            noise_batch(process, v, &[t], eps, dim)
        } else {
            v.to_vec()
        }
    };
    let (xt, yt) = (noised(x, &ex), noised(y, &ey));
    let mut mixed = Vec::with_capacity(columns * dim);
    for lambda in fractions(columns) {
        let l = lambda as f32;
        mixed.extend(xt.iter().zip(&yt).map(|(a, b)| (1.0 - l) * a + l * b));
    }
    let xt = Tensor::from_vec(mixed, (columns, dim), device)?;
    let shared = |rng: &mut ChaCha8Rng| {
        Tensor::from_vec(normals(rng, dim), (1, dim), device)?.broadcast_as((columns, dim))
    };
    samplers::ancestral::ancestral_from(score, process, xt, t, steps, &shared, rng)?
        .flatten_all()?
        .to_vec1::<f32>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::toy::Mixture;
    use crate::diffusion::schedule::ScheduleParams;
    use crate::diffusion::score::MixtureScore;
    use crate::rng::stream;

    #[test]
    fn slerp_ends_at_its_endpoints_and_keeps_the_norm_between_orthogonal_vectors() {
        let (a, b) = ([3.0f32, 0.0], [0.0f32, 3.0]);
        assert_eq!(slerp(&a, &b, 0.0), a.to_vec());
        let end = slerp(&a, &b, 1.0);
        assert!((end[0] - 0.0).abs() < 1e-6 && (end[1] - 3.0).abs() < 1e-6);
        let mid = slerp(&a, &b, 0.5);
        let norm = (mid[0] * mid[0] + mid[1] * mid[1]).sqrt();
        assert!(
            (norm - 3.0).abs() < 1e-5,
            "norm {norm}; a line would give 2.12"
        );
        assert!((mid[0] - mid[1]).abs() < 1e-6);
        // Parallel vectors fall back to the straight line.
        assert_eq!(slerp(&a, &a, 0.3), a.to_vec());
    }

    fn ddpm() -> Process {
        ScheduleParams::Linear {
            beta_start: 1e-4,
            beta_end: 0.02,
            steps: 200,
        }
        .build()
    }

    fn exact(process: &Process) -> MixtureScore<'_> {
        MixtureScore {
            mixture: Mixture {
                means: vec![vec![2.0, 0.0], vec![-2.0, 0.0]],
                weights: vec![0.5, 0.5],
                std: 0.1,
            },
            process,
        }
    }

    #[test]
    fn spherical_rows_start_and_end_where_the_sampler_takes_the_endpoints() {
        let process = ddpm();
        let score = exact(&process);
        let ddim = SamplerParams::Ddim(samplers::ddim::Ddim {
            eta: 0.0,
            steps: 50,
            ..Default::default()
        });
        let dev = Device::Cpu;
        let rows = spherical(&ddim, &score, &process, 2, 5, 2, &dev, &mut stream(1, "i")).unwrap();
        assert_eq!(rows.len(), 2 * 5 * 2);
        // The same noises, decoded alone, give the row's ends: decoding is deterministic.
        let mut rng = stream(1, "i");
        let a = normals(&mut rng, 2);
        let b = normals(&mut rng, 2);
        let start = Tensor::from_vec([a, b].concat(), (2, 2), &dev).unwrap();
        let request = SampleRequest {
            clip: None,
            n: 2,
            dim: 2,
            snapshots: 0,
            snapshot_particles: 0,
            device: &dev,
            start: Some(&start),
        };
        let ends = samplers::run(
            &ddim,
            &score,
            &process,
            &request,
            &mut stream(9, "x"),
            &mut |_, _| {},
        )
        .unwrap()
        .samples;
        for (got, want) in [(&rows[0..2], &ends[0..2]), (&rows[8..10], &ends[2..4])] {
            assert!(
                got.iter().zip(want).all(|(g, w)| (g - w).abs() < 1e-4),
                "{got:?} vs {want:?}"
            );
        }
        // Every decoded point lands on one of the two modes.
        for p in rows.chunks(2) {
            assert!((p[0].abs() - 2.0).abs() < 0.5 && p[1].abs() < 0.5, "{p:?}");
        }
    }

    #[test]
    fn mixing_without_noise_is_the_plain_mix_and_full_noise_forgets_the_sources() {
        let process = ddpm();
        let score = exact(&process);
        let dev = Device::Cpu;
        let (x, y) = ([2.0f32, 0.0], [-2.0f32, 0.0]);
        let plain = noised_mix(
            &score,
            &process,
            &x,
            &y,
            0.0,
            3,
            None,
            &dev,
            &mut stream(0, "m"),
        )
        .unwrap();
        assert_eq!(plain, vec![2.0, 0.0, 0.0, 0.0, -2.0, 0.0]);
        // From t = 1 the sources are forgotten; with the reverse noise shared across
        // the row, every column still lands on a mode.
        let row = noised_mix(
            &score,
            &process,
            &x,
            &y,
            1.0,
            4,
            None,
            &dev,
            &mut stream(0, "m"),
        )
        .unwrap();
        for p in row.chunks(2) {
            assert!((p[0].abs() - 2.0).abs() < 0.5, "{p:?}");
        }
        // After few noising steps the sources come back at the row's ends, and the
        // middle stays near the plain mix: k decides how much the decoder rewrites.
        let near = noised_mix(
            &score,
            &process,
            &x,
            &y,
            0.05,
            5,
            None,
            &dev,
            &mut stream(0, "m"),
        )
        .unwrap();
        assert!(
            (near[0] - 2.0).abs() < 0.5 && (near[8] + 2.0).abs() < 0.5,
            "{near:?}"
        );
        assert!(near[4].abs() < 1.0, "middle {near:?}");
    }
}
