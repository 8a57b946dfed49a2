//! Samplers: DDPM ancestral sampling and SMLD annealed Langevin dynamics.

use candle_core::{Device, Result, Tensor};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::process::NoiseProcess;
use super::score::ScoreFn;
use crate::rng::{normals, uniforms};

/// A sampler and its settings, as written in a sample stage.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(tag = "sampler", rename_all = "snake_case", deny_unknown_fields)]
pub enum SamplerParams {
    /// DDPM ancestral sampling (Ho et al. 2020, Algorithm 2).
    Ancestral {
        /// sigma_t^2 = beta_t (`beta`) or the posterior variance beta~_t (`posterior`);
        /// Ho et al. report both give similar results.
        #[serde(default)]
        variance: Variance,
    },
    /// Annealed Langevin dynamics (Song & Ermon 2019, Algorithm 1).
    AnnealedLangevin {
        /// epsilon in alpha_i = epsilon * sigma_i^2 / sigma_L^2 (paper: 2e-5).
        #[serde(default = "step_lr")]
        step_lr: f64,
        /// Langevin steps per noise level (paper: T = 100).
        #[serde(default = "n_steps_each")]
        n_steps_each: usize,
        /// Final Tweedie denoising step x + sigma_min^2 s(x, sigma_min)
        /// (Jolicoeur-Martineau et al. 2021; Song & Ermon 2020).
        #[serde(default = "yes")]
        denoise: bool,
        /// Initial distribution: `uniform` on [-1, 1]^d as in the paper, or `gaussian`
        /// N(0, sigma_max^2 I).
        #[serde(default)]
        init: LangevinInit,
    },
}

fn step_lr() -> f64 {
    2e-5
}
fn n_steps_each() -> usize {
    100
}
fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Variance {
    #[default]
    Beta,
    Posterior,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LangevinInit {
    #[default]
    Uniform,
    Gaussian,
}

impl SamplerParams {
    pub fn name(&self) -> &'static str {
        match self {
            SamplerParams::Ancestral { .. } => "ancestral",
            SamplerParams::AnnealedLangevin { .. } => "annealed_langevin",
        }
    }

    /// Whether this sampler is defined for a model trained on a `vp` (DDPM) or
    /// sigma-level (SMLD) schedule; the message says which schedules fit.
    pub fn check_schedule(&self, is_vp: bool) -> std::result::Result<(), String> {
        match (self, is_vp) {
            (SamplerParams::Ancestral { .. }, false) => Err(
                "sampler `ancestral` needs a model trained on a DDPM schedule (linear or cosine); \
                 for geometric sigmas use `annealed_langevin`"
                    .into(),
            ),
            (SamplerParams::AnnealedLangevin { .. }, true) => Err(
                "sampler `annealed_langevin` needs a model trained on geometric sigma levels; \
                 for DDPM schedules use `ancestral`"
                    .into(),
            ),
            (SamplerParams::AnnealedLangevin { step_lr, n_steps_each, .. }, _) => {
                if !(*step_lr > 0.0) || *n_steps_each == 0 {
                    return Err("need step_lr > 0 and n_steps_each >= 1".into());
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Number of score evaluations for a process with `levels` levels.
    pub fn total_steps(&self, levels: usize) -> usize {
        match self {
            SamplerParams::Ancestral { .. } => levels,
            SamplerParams::AnnealedLangevin { n_steps_each, denoise, .. } => levels * n_steps_each + *denoise as usize,
        }
    }
}

/// What a sampler produced.
pub struct SampleOutcome {
    /// Final samples, row-major [n, dim].
    pub samples: Vec<f32>,
    /// (step, first `keep` particles) at the snapshot steps, step 0 being the prior.
    pub trajectory: Vec<(usize, Vec<f32>)>,
    /// Number of score-function evaluations.
    pub nfe: usize,
}

/// Snapshot bookkeeping: which steps to keep and how many particles.
struct Snapshots {
    at: Vec<usize>,
    keep: usize,
    taken: Vec<(usize, Vec<f32>)>,
}

impl Snapshots {
    fn new(count: usize, total: usize, keep: usize) -> Snapshots {
        let mut at: Vec<usize> = if count < 2 {
            vec![total]
        } else {
            (0..count).map(|i| ((i * total) as f64 / (count - 1) as f64).round() as usize).collect()
        };
        at.dedup();
        Snapshots { at, keep, taken: Vec::new() }
    }

    fn observe(&mut self, step: usize, x: &Tensor) -> Result<()> {
        if self.at.contains(&step) {
            let rows = x.narrow(0, 0, self.keep.min(x.dim(0)?))?;
            self.taken.push((step, rows.flatten_all()?.to_vec1::<f32>()?));
        }
        Ok(())
    }
}

/// Everything a sampler run needs besides the score.
pub struct SampleRequest<'a> {
    pub n: usize,
    pub dim: usize,
    pub snapshots: usize,
    pub snapshot_particles: usize,
    pub device: &'a Device,
}

/// Runs the sampler. `progress(done, total)` is called after every step.
pub fn run(
    params: &SamplerParams,
    score: &dyn ScoreFn,
    process: &dyn NoiseProcess,
    request: &SampleRequest,
    rng: &mut ChaCha8Rng,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<SampleOutcome> {
    let (n, dim) = (request.n, request.dim);
    let total = params.total_steps(process.levels());
    let mut snaps = Snapshots::new(request.snapshots, total, request.snapshot_particles);
    let noise = |rng: &mut ChaCha8Rng| Tensor::from_vec(normals(rng, n * dim), (n, dim), request.device);
    let mut step = 0;
    let x = match params {
        SamplerParams::Ancestral { variance } => {
            let betas = process
                .betas()
                .ok_or_else(|| candle_core::Error::Msg("ancestral sampling needs a DDPM process".into()))?;
            let mut x = noise(rng)?.affine(process.prior_std(), 0.0)?;
            snaps.observe(0, &x)?;
            for t in (1..=process.levels()).rev() {
                // Ho et al. eq. 11: x_{t-1} = (x_t - beta_t / sqrt(1 - abar_t) eps) / sqrt(alpha_t) + sigma_t z
                let beta = betas[t - 1];
                let std_t = process.std(t);
                let eps = score.eps(&x, t)?;
                let mean = (x - eps.affine(beta / std_t, 0.0)?)?.affine(1.0 / (1.0 - beta).sqrt(), 0.0)?;
                x = if t > 1 {
                    let sigma = match variance {
                        Variance::Beta => beta.sqrt(),
                        Variance::Posterior => (process.std(t - 1).powi(2) / std_t.powi(2) * beta).sqrt(),
                    };
                    (mean + noise(rng)?.affine(sigma, 0.0)?)?
                } else {
                    mean
                };
                step += 1;
                snaps.observe(step, &x)?;
                progress(step, total);
            }
            x
        }
        SamplerParams::AnnealedLangevin { step_lr, n_steps_each, denoise, init } => {
            let sigmas = process
                .sigmas()
                .ok_or_else(|| candle_core::Error::Msg("annealed Langevin needs sigma levels".into()))?;
            let sigma_min = sigmas[0];
            let mut x = match init {
                LangevinInit::Uniform => Tensor::from_vec(uniforms(rng, n * dim, -1.0, 1.0), (n, dim), request.device)?,
                LangevinInit::Gaussian => noise(rng)?.affine(process.prior_std(), 0.0)?,
            };
            snaps.observe(0, &x)?;
            for t in (1..=process.levels()).rev() {
                let alpha = step_lr * (process.std(t) / sigma_min).powi(2);
                for _ in 0..*n_steps_each {
                    // x <- x + alpha/2 s(x, sigma_i) + sqrt(alpha) z
                    let drift = score.score(&x, t)?.affine(alpha / 2.0, 0.0)?;
                    x = ((x + drift)? + noise(rng)?.affine(alpha.sqrt(), 0.0)?)?;
                    step += 1;
                    snaps.observe(step, &x)?;
                    progress(step, total);
                }
            }
            if *denoise {
                x = (&x + score.score(&x, 1)?.affine(sigma_min * sigma_min, 0.0)?)?;
                step += 1;
                snaps.observe(step, &x)?;
                progress(step, total);
            }
            x
        }
    };
    Ok(SampleOutcome { samples: x.flatten_all()?.to_vec1::<f32>()?, trajectory: snaps.taken, nfe: total })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::toy::Mixture;
    use crate::diffusion::process::from_schedule;
    use crate::diffusion::schedule::ScheduleParams;
    use crate::diffusion::score::MixtureScore;
    use crate::rng::stream;

    fn mixture() -> Mixture {
        Mixture { means: vec![vec![1.0, 1.0], vec![-1.0, -1.0]], weights: vec![0.3, 0.7], std: 0.2 }
    }

    fn check_matches_mixture(samples: &[f32], mix: &Mixture) {
        let n = samples.len() / 2;
        let first = samples.chunks(2).filter(|p| mix.assign(p) == 0).count() as f64 / n as f64;
        assert!((first - mix.weights[0]).abs() < 0.03, "mode 0 weight {first}");
        // Within-mode spread matches std.
        let var: f64 = samples
            .chunks(2)
            .map(|p| {
                let m = &mix.means[mix.assign(p)];
                (p[0] as f64 - m[0]).powi(2)
            })
            .sum::<f64>()
            / n as f64;
        assert!((var.sqrt() - mix.std).abs() < 0.03, "std {}", var.sqrt());
    }

    fn request(n: usize, dev: &Device) -> SampleRequest<'_> {
        SampleRequest { n, dim: 2, snapshots: 5, snapshot_particles: 10, device: dev }
    }

    #[test]
    fn ancestral_with_exact_score_recovers_the_mixture() {
        let dev = Device::Cpu;
        let process = from_schedule(ScheduleParams::Linear { beta_start: 1e-4, beta_end: 0.02, steps: 1000 }.build());
        let score = MixtureScore { mixture: mixture(), process: process.as_ref() };
        for variance in [Variance::Beta, Variance::Posterior] {
            let params = SamplerParams::Ancestral { variance };
            let out = run(&params, &score, process.as_ref(), &request(4000, &dev), &mut stream(0, "s"), &mut |_, _| {})
                .unwrap();
            assert_eq!(out.nfe, 1000);
            assert_eq!(out.trajectory.len(), 5);
            assert_eq!(out.trajectory[0].1.len(), 20);
            check_matches_mixture(&out.samples, &mixture());
        }
    }

    #[test]
    fn annealed_langevin_with_exact_score_recovers_the_mixture() {
        let dev = Device::Cpu;
        let process = from_schedule(ScheduleParams::Geometric { sigma_max: 3.0, sigma_min: 0.01, levels: 10 }.build());
        let score = MixtureScore { mixture: mixture(), process: process.as_ref() };
        let params = SamplerParams::AnnealedLangevin {
            step_lr: 2e-5,
            n_steps_each: 100,
            denoise: true,
            init: LangevinInit::Gaussian,
        };
        let out =
            run(&params, &score, process.as_ref(), &request(4000, &dev), &mut stream(0, "s"), &mut |_, _| {}).unwrap();
        assert_eq!(out.nfe, 1001);
        check_matches_mixture(&out.samples, &mixture());
    }

    #[test]
    fn samplers_refuse_the_wrong_schedule() {
        let a = SamplerParams::Ancestral { variance: Variance::Beta };
        assert!(a.check_schedule(false).unwrap_err().contains("annealed_langevin"));
        assert!(a.check_schedule(true).is_ok());
    }
}
