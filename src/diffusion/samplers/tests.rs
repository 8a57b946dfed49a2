//! Every sampler against exact scores on five processes, and the grid walk.

use super::ancestral::Variance;
use super::grid::{State, grid, transition};
use super::langevin::LangevinInit;
use super::pc::{Corrector, Predictor, langevin_step_size};
use super::probability_flow::Solver;
use super::*;
use crate::data::toy::Mixture;
use crate::diffusion::schedule::ScheduleParams;
use crate::diffusion::score::MixtureScore;
use crate::rng::stream;
use candle_core::Device;

fn mixture() -> Mixture {
    Mixture {
        means: vec![vec![1.0, 1.0], vec![-1.0, -1.0]],
        weights: vec![0.3, 0.7],
        std: 0.2,
    }
}

/// Mode weights within 4 binomial standard errors, per-mode means and standard
/// deviations within 4 standard errors (plus the sampler's bias allowance).
fn check_matches_mixture(samples: &[f32], mix: &Mixture, slack: f64, what: &str) {
    let n = samples.len() / 2;
    let w0 = mix.weights[0];
    let first = samples.chunks(2).filter(|p| mix.assign(p) == 0).count() as f64 / n as f64;
    let se = (w0 * (1.0 - w0) / n as f64).sqrt();
    assert!(
        (first - w0).abs() < 4.0 * se + slack,
        "{what}: mode 0 weight {first}"
    );
    for k in 0..2 {
        let members: Vec<&[f32]> = samples.chunks(2).filter(|p| mix.assign(p) == k).collect();
        let m = members.len() as f64;
        for j in 0..2 {
            let mean = members.iter().map(|p| p[j] as f64).sum::<f64>() / m;
            let var = members
                .iter()
                .map(|p| (p[j] as f64 - mean).powi(2))
                .sum::<f64>()
                / m;
            let se_mean = mix.std / m.sqrt();
            assert!(
                (mean - mix.means[k][j]).abs() < 4.0 * se_mean + slack,
                "{what}: mode {k} mean {mean}"
            );
            // sd of the sample std is about std / sqrt(2m).
            assert!(
                (var.sqrt() - mix.std).abs() < 4.0 * mix.std / (2.0 * m).sqrt() + slack,
                "{what}: mode {k} std {}",
                var.sqrt()
            );
        }
    }
}

fn request(n: usize, dev: &Device) -> SampleRequest<'_> {
    SampleRequest {
        clip: None,
        n,
        dim: 2,
        snapshots: 5,
        snapshot_particles: 10,
        device: dev,
        start: None,
    }
}

fn sample(params: &SamplerParams, process: &Process, n: usize, seed: u64) -> SampleOutcome {
    let dev = Device::Cpu;
    let score = MixtureScore {
        mixture: mixture(),
        process,
    };
    run(
        params,
        &score,
        process,
        &request(n, &dev),
        &mut stream(seed, "s"),
        &mut |_, _| {},
    )
    .unwrap()
}

fn processes() -> Vec<(&'static str, Process)> {
    vec![
        (
            "ddpm",
            ScheduleParams::Linear {
                beta_start: 1e-4,
                beta_end: 0.02,
                steps: 1000,
            }
            .build(),
        ),
        (
            "smld",
            ScheduleParams::Geometric {
                sigma_max: 3.0,
                sigma_min: 0.01,
                levels: 200,
            }
            .build(),
        ),
        (
            "vp",
            Process::Vp {
                beta_min: 0.1,
                beta_max: 20.0,
            },
        ),
        (
            "subvp",
            Process::SubVp {
                beta_min: 0.1,
                beta_max: 20.0,
            },
        ),
        (
            "ve",
            Process::Ve {
                sigma_min: 0.01,
                sigma_max: 3.0,
            },
        ),
    ]
}

#[test]
fn every_sampler_with_exact_scores_recovers_the_mixture() {
    let n = 4000;
    for (name, process) in processes() {
        let mut samplers = vec![
            SamplerParams::Ancestral(ancestral::Ancestral {
                variance: Variance::Beta,
                steps: Some(500),
            }),
            SamplerParams::Ancestral(ancestral::Ancestral {
                variance: Variance::Posterior,
                steps: Some(500),
            }),
            SamplerParams::Ddim(ddim::Ddim {
                eta: 0.0,
                steps: 100,
            }),
            SamplerParams::Ddim(ddim::Ddim {
                eta: 1.0,
                steps: 200,
            }),
            SamplerParams::Ode(probability_flow::Ode {
                solver: Solver::Heun,
                steps: 100,
                rtol: 1e-5,
                atol: 1e-5,
                denoise: true,
            }),
            SamplerParams::Ode(probability_flow::Ode {
                solver: Solver::Rk45,
                steps: 100,
                rtol: 1e-4,
                atol: 1e-4,
                denoise: true,
            }),
            SamplerParams::Pc(pc::Pc {
                predictor: Predictor::ReverseDiffusion,
                corrector: Corrector::Langevin,
                snr: if process.is_vp_family() { 0.01 } else { 0.16 },
                corrector_steps: 1,
                steps: Some(500),
                denoise: true,
            }),
            SamplerParams::Pc(pc::Pc {
                predictor: Predictor::EulerMaruyama,
                corrector: Corrector::None,
                snr: 0.16,
                corrector_steps: 1,
                steps: Some(500),
                denoise: true,
            }),
        ];
        if !process.is_vp_family() {
            samplers.push(SamplerParams::AnnealedLangevin(
                annealed_langevin::AnnealedLangevin {
                    step_lr: 2e-5,
                    n_steps_each: 100,
                    levels: 10,
                    denoise: true,
                    init: LangevinInit::Gaussian,
                    init_range: 1.0,
                },
            ));
        }
        for params in samplers {
            params.check(&process).unwrap();
            let out = sample(&params, &process, n, 0);
            check_matches_mixture(
                &out.samples,
                &mixture(),
                0.02,
                &format!("{name} {params:?}"),
            );
            assert!(out.nfe > 0);
        }
    }
}

#[test]
fn ddim_with_eta_zero_is_deterministic_given_the_initial_noise() {
    let process = Process::Vp {
        beta_min: 0.1,
        beta_max: 20.0,
    };
    let params = SamplerParams::Ddim(ddim::Ddim {
        eta: 0.0,
        steps: 20,
    });
    let (a, b) = (
        sample(&params, &process, 50, 3),
        sample(&params, &process, 50, 3),
    );
    assert_eq!(a.samples, b.samples);
    assert_eq!(a.nfe, 20, "20 steps, the last into the clean state");
    // eta = 0 draws nothing after the prior: the same seed with a different
    // stream position would differ only through the prior.
    let stochastic = SamplerParams::Ddim(ddim::Ddim {
        eta: 1.0,
        steps: 20,
    });
    let (c, d) = (
        sample(&stochastic, &process, 50, 3),
        sample(&params, &process, 50, 3),
    );
    assert_ne!(c.samples, d.samples);
}

#[test]
fn the_corrector_step_follows_the_snr_rule() {
    let dev = Device::Cpu;
    // Per-sample norms: grad rows 3-4-5 triangles (norm 5), noise rows norm 2.
    let grad = Tensor::new(&[[3f32, 4.0], [0.0, 5.0]], &dev).unwrap();
    let noise = Tensor::new(&[[2f32, 0.0], [0.0, -2.0]], &dev).unwrap();
    let step = langevin_step_size(0.16, 0.9, &grad, &noise).unwrap();
    let expected = 2.0 * 0.9 * (0.16f64 * 2.0 / 5.0).powi(2);
    assert!((step - expected).abs() < 1e-9, "{step} vs {expected}");
}

#[test]
fn grids_use_levels_or_subsets_and_end_clean() {
    let ddpm = ScheduleParams::Linear {
        beta_start: 1e-4,
        beta_end: 0.02,
        steps: 1000,
    }
    .build();
    let full = grid(&ddpm, None);
    assert_eq!(full.len(), 1001);
    assert_eq!(full[0].t, 1.0);
    assert_eq!(*full.last().unwrap(), State::CLEAN);
    let sub = grid(&ddpm, Some(10));
    assert_eq!(sub.len(), 11);
    assert!(
        (sub[9].t - 1e-3).abs() < 1e-12,
        "the subset ends at level 1"
    );
    // On a DDPM chain the transition is DDPM's (r, q) = (sqrt(alpha_t), beta_t).
    let Process::DiscreteVp { betas, .. } = &ddpm else {
        unreachable!()
    };
    let (r, q) = transition(full[0], full[1]);
    assert!((r - (1.0 - betas[999]).sqrt()).abs() < 1e-9 && (q - betas[999]).abs() < 1e-9);
}

#[test]
fn samplers_refuse_processes_they_do_not_fit() {
    let annealed = SamplerParams::AnnealedLangevin(annealed_langevin::AnnealedLangevin {
        step_lr: 2e-5,
        n_steps_each: 1,
        levels: 10,
        denoise: true,
        init: LangevinInit::Uniform,
        init_range: 1.0,
    });
    let vp = Process::Vp {
        beta_min: 0.1,
        beta_max: 20.0,
    };
    assert!(annealed.check(&vp).unwrap_err().contains("VE process"));
    assert!(
        SamplerParams::Ddim(ddim::Ddim {
            eta: 2.0,
            steps: 10
        })
        .check(&vp)
        .is_err()
    );
}

/// A deliberately bad score whose prediction of x0 is huge: eps = -50 everywhere.
struct HugeX0<'a> {
    process: &'a Process,
}

impl ScoreFn for HugeX0<'_> {
    fn score(&self, x: &Tensor, t: f64) -> candle_core::Result<Tensor> {
        self.eps(x, t)?.affine(-1.0 / self.process.std(t), 0.0)
    }
    fn eps(&self, x: &Tensor, _t: f64) -> candle_core::Result<Tensor> {
        x.ones_like()?.affine(-50.0, 0.0)
    }
}

/// The largest |x| of 200 samples drawn with [`HugeX0`]'s score.
fn largest_with_huge_x0(
    params: &SamplerParams,
    process: &Process,
    clip: Option<(f32, f32)>,
) -> f32 {
    let dev = Device::Cpu;
    let request = SampleRequest {
        clip,
        ..request(200, &dev)
    };
    let score = HugeX0 { process };
    let out = run(
        params,
        &score,
        process,
        &request,
        &mut stream(3, "s"),
        &mut |_, _| {},
    )
    .unwrap();
    out.samples.iter().fold(0f32, |m, v| m.max(v.abs()))
}

/// `clip_denoised`: with a score that predicts a huge x0, every sampler that uses the
/// prediction ends inside the data range when it clips, and far outside when not.
#[test]
fn clipping_keeps_samples_in_the_data_range() {
    let ddpm = ScheduleParams::Linear {
        beta_start: 1e-4,
        beta_end: 0.02,
        steps: 100,
    }
    .build();
    let smld = ScheduleParams::Geometric {
        sigma_max: 3.0,
        sigma_min: 0.01,
        levels: 20,
    }
    .build();
    let parse = |yaml: &str| -> SamplerParams { serde_norway::from_str(yaml).unwrap() };
    let cases = [
        (&ddpm, parse("sampler: ancestral")),
        (&ddpm, parse("sampler: ancestral\nvariance: posterior")),
        (&ddpm, parse("sampler: ddim\nsteps: 20")),
        (&ddpm, parse("sampler: ddim\nsteps: 20\neta: 1.0")),
        (&ddpm, parse("sampler: pc\nsnr: 0.01")),
        (
            &ddpm,
            parse("sampler: pc\npredictor: euler_maruyama\ncorrector: none"),
        ),
        (
            &ddpm,
            parse("sampler: pc\npredictor: ancestral\ncorrector: none"),
        ),
        (&ddpm, parse("sampler: ode\nsolver: euler\nsteps: 20")),
        (&smld, parse("sampler: ancestral")),
        (
            &smld,
            parse("sampler: annealed_langevin\nn_steps_each: 5\ninit: gaussian"),
        ),
    ];
    for (process, params) in cases {
        let (clipped, raw) = (
            largest_with_huge_x0(&params, process, Some((-1.0, 1.0))),
            largest_with_huge_x0(&params, process, None),
        );
        assert!(clipped <= 1.0, "{params:?} clipped: max |x| = {clipped}");
        assert!(raw > 2.0, "{params:?} unclipped: max |x| = {raw}");
    }
    // Without the final denoising step, PC's predictors clip on their own: their last
    // move lands near the data range with clipping, far from it without.
    for predictor in ["reverse_diffusion", "euler_maruyama"] {
        let params = parse(&format!(
            "sampler: pc\npredictor: {predictor}\ncorrector: none\ndenoise: false"
        ));
        let (clipped, raw) = (
            largest_with_huge_x0(&params, &ddpm, Some((-1.0, 1.0))),
            largest_with_huge_x0(&params, &ddpm, None),
        );
        assert!(
            clipped < 1.5 && raw > 10.0,
            "{predictor}: clipped {clipped}, raw {raw}"
        );
    }
}
