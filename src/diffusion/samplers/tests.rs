//! Every sampler against exact scores on five processes, and the grid walk.

use super::ancestral::Variance;
use super::family::Run;
use super::grid::{Spacing, Spread, State, grid, solver_grid, transition};
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
            "edm",
            ScheduleParams::Edm {
                sigma_min: 0.002,
                sigma_max: 80.0,
                sigma_data: 0.5,
            }
            .build(),
        ),
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
                ..Default::default()
            }),
            SamplerParams::Ancestral(ancestral::Ancestral {
                variance: Variance::Posterior,
                steps: Some(500),
                ..Default::default()
            }),
            SamplerParams::Ddim(ddim::Ddim {
                eta: 0.0,
                steps: 100,
                ..Default::default()
            }),
            SamplerParams::Ddim(ddim::Ddim {
                eta: 1.0,
                steps: 200,
                ..Default::default()
            }),
            SamplerParams::Ode(probability_flow::Ode {
                solver: Solver::Heun,
                steps: 100,
                rtol: 1e-5,
                atol: 1e-5,
                denoise: true,
                ..Default::default()
            }),
            SamplerParams::Ode(probability_flow::Ode {
                solver: Solver::Rk45,
                steps: 100,
                rtol: 1e-4,
                atol: 1e-4,
                denoise: true,
                ..Default::default()
            }),
            SamplerParams::Pc(pc::Pc {
                predictor: Predictor::ReverseDiffusion,
                corrector: Corrector::Langevin,
                snr: if process.is_vp_family() { 0.01 } else { 0.16 },
                corrector_steps: 1,
                steps: Some(500),
                denoise: true,
                ..Default::default()
            }),
            SamplerParams::Pc(pc::Pc {
                predictor: Predictor::EulerMaruyama,
                corrector: Corrector::None,
                snr: 0.16,
                corrector_steps: 1,
                steps: Some(500),
                denoise: true,
                ..Default::default()
            }),
        ];
        // Ten Langevin levels cannot bridge EDM's sigma from 80 down to 0.002 (NCSN
        // spaces its levels a factor of about 1.6 apart).
        if !process.is_vp_family() && name != "edm" {
            samplers.push(SamplerParams::AnnealedLangevin(
                annealed_langevin::AnnealedLangevin {
                    step_lr: 2e-5,
                    n_steps_each: 100,
                    levels: 10,
                    denoise: true,
                    init: LangevinInit::Gaussian,
                    init_range: 1.0,
                    ..Default::default()
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
        ..Default::default()
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
        ..Default::default()
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
    let spread = Spread::new(&ddpm, Spacing::UniformT, 7.0);
    let full = grid(&ddpm, None, &spread);
    assert_eq!(full.len(), 1001);
    assert_eq!(full[0].t, 1.0);
    assert_eq!(*full.last().unwrap(), State::CLEAN);
    let sub = grid(&ddpm, Some(10), &spread);
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
        ..Default::default()
    });
    let vp = Process::Vp {
        beta_min: 0.1,
        beta_max: 20.0,
    };
    assert!(annealed.check(&vp).unwrap_err().contains("VE process"));
    assert!(
        SamplerParams::Ddim(ddim::Ddim {
            eta: 2.0,
            steps: 10,
            ..Default::default()
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

/// The samplers people use today, with exact scores, on every process (and EDM's):
/// each recovers the mixture's weights, means and standard deviations within the
/// same sampling-error allowance as the older samplers (4 standard errors + 0.02).
#[test]
fn fast_samplers_with_exact_scores_recover_the_mixture() {
    let n = 4000;
    let parse = |yaml: &str| -> SamplerParams { serde_norway::from_str(yaml).unwrap() };
    let samplers = [
        "sampler: dpm_solver\norder: 1\nsteps: 50",
        "sampler: dpm_solver\norder: 2\nsteps: 40",
        "sampler: dpm_solver\norder: 3\nsteps: 20",
        "sampler: dpm_solver\nsteps: 30\nspacing: karras",
        "sampler: dpm_solver_pp\nsteps: 20",
        "sampler: dpm_solver_pp\nmethod: singlestep\nsteps: 20\nspacing: karras",
        "sampler: unipc\nsteps: 25",
        "sampler: unipc\norder: 3\nvariant: bh2\nsteps: 25",
        "sampler: edm_heun\nsteps: 18",
        "sampler: edm_heun\nsteps: 30\ns_churn: 10\ns_noise: 1.0",
        "sampler: euler_ancestral\nsteps: 200",
        "sampler: ddim\nsteps: 50\nspacing: uniform_lambda",
        "sampler: ancestral\nsteps: 300\nspacing: karras\nrho: 5",
    ];
    // A deterministic sampler carries any mismatch of its prior to the end: these
    // processes' sigma_max of 3 is about the modes' distance (2.8), which leaves the
    // flow from N(0, 9) a few points off the weights. Song & Ermon's rule (sigma_max at
    // least the largest distance between data points, with room) is met by 10.
    let wide = |process: Process| match process {
        Process::SigmaLevels { sigmas } => ScheduleParams::Geometric {
            sigma_max: 10.0,
            sigma_min: sigmas[0],
            levels: sigmas.len(),
        }
        .build(),
        Process::Ve { sigma_min, .. } => Process::Ve {
            sigma_min,
            sigma_max: 10.0,
        },
        other => other,
    };
    for (name, process) in processes() {
        let process = wide(process);
        for yaml in samplers {
            let params = parse(yaml);
            params.check(&process).unwrap();
            let out = sample(&params, &process, n, 1);
            check_matches_mixture(&out.samples, &mixture(), 0.02, &format!("{name} {yaml:?}"));
            assert_eq!(
                out.nfe as f64,
                params.evaluations(&process),
                "{name} {yaml:?}: evaluations as planned"
            );
        }
    }
}

/// A discrete chain's levels from diffusers' spacings, and grids that keep to the
/// spacing they name.
#[test]
fn spacings_pick_the_levels_and_times_they_name() {
    let ddpm = ScheduleParams::Linear {
        beta_start: 1e-4,
        beta_end: 0.02,
        steps: 1000,
    }
    .build();
    let levels = |states: &[State]| -> Vec<usize> {
        states
            .iter()
            .filter(|s| **s != State::CLEAN)
            .map(|s| (s.t * 1000.0).round() as usize)
            .collect()
    };
    let spread = |spacing| Spread::new(&ddpm, spacing, 7.0);
    // DDIM's leading: 0, 100, ..., 900 zero-indexed; trailing: 999, 899, ..., 99.
    assert_eq!(
        levels(&grid(&ddpm, Some(10), &spread(Spacing::Leading))),
        (0..10).rev().map(|k| 100 * k + 1).collect::<Vec<_>>()
    );
    assert_eq!(
        levels(&grid(&ddpm, Some(10), &spread(Spacing::Trailing))),
        (0..10).map(|k| 1000 - 100 * k).collect::<Vec<_>>()
    );
    // The multistep schedulers' leading (N // (steps + 1)) and trailing (then level 1).
    assert_eq!(
        levels(&solver_grid(&ddpm, 10, &spread(Spacing::Leading))),
        (0..=10).rev().map(|k| 90 * k + 1).collect::<Vec<_>>()
    );
    let trailing = levels(&solver_grid(&ddpm, 10, &spread(Spacing::Trailing)));
    assert_eq!(trailing.len(), 11);
    assert_eq!((trailing[0], trailing[9], trailing[10]), (1000, 100, 1));
    // Uniform lambda: equal log-SNR steps; Karras: equal steps in sigma^(1/rho).
    let vp = Process::Vp {
        beta_min: 0.1,
        beta_max: 20.0,
    };
    for (spacing, f) in [
        (
            Spacing::UniformLambda,
            Box::new(|s: State| s.lambda()) as Box<dyn Fn(State) -> f64>,
        ),
        (
            Spacing::Karras,
            Box::new(|s: State| (s.s / s.a).powf(1.0 / 7.0)),
        ),
        (Spacing::UniformT, Box::new(|s: State| s.t)),
    ] {
        let states = solver_grid(&vp, 8, &Spread::new(&vp, spacing, 7.0));
        assert_eq!(states.len(), 9);
        assert!((states[0].t - 1.0).abs() < 1e-9 && (states[8].t - 1e-3).abs() < 1e-9);
        let steps: Vec<f64> = states.windows(2).map(|w| f(w[1]) - f(w[0])).collect();
        for step in &steps {
            assert!(
                (step - steps[0]).abs() < 1e-6 * steps[0].abs(),
                "{spacing:?}: {steps:?}"
            );
        }
    }
    // Leading and trailing need a chain.
    let params: SamplerParams = serde_norway::from_str("sampler: ddim\nspacing: trailing").unwrap();
    let err = params.check(&vp).unwrap_err();
    assert!(
        err.contains("discrete chain") && err.contains("VP SDE"),
        "{err}"
    );
}

/// Order of accuracy: from the same starting noise, each deterministic solver's error
/// against a tight RK45 solution of the same probability-flow ODE (in f64, rtol 1e-10)
/// falls by about 2^order when its steps double.
#[test]
fn deterministic_solvers_converge_at_their_order() {
    let process = Process::Vp {
        beta_min: 0.1,
        beta_max: 20.0,
    };
    let dev = Device::Cpu;
    let score = MixtureScore {
        mixture: mixture(),
        process: &process,
    };
    let n = 64;
    let start = Tensor::from_vec(
        crate::rng::normals(&mut stream(11, "order"), n * 2)
            .into_iter()
            .map(f64::from)
            .collect::<Vec<f64>>(),
        (n, 2),
        &dev,
    )
    .unwrap();
    // In f64 throughout (the start, the exact score, every step), so that the
    // errors measured are the solvers' and not float32 rounding.
    let solve = |params: &SamplerParams| -> Tensor {
        let request = SampleRequest {
            start: Some(&start),
            ..request(n, &dev)
        };
        let mut rng = stream(0, "s");
        let mut progress = |_: usize, _: usize| {};
        let mut run = Run {
            score: &score,
            process: &process,
            rng: &mut rng,
            nfe: 0,
            request: &request,
            progress: &mut progress,
            snaps: family::Snapshots {
                count: 0,
                keep: 0,
                taken: Vec::new(),
            },
        };
        let x = params.draw(&mut run).unwrap();
        assert_eq!(x.dtype(), candle_core::DType::F64);
        x
    };
    let parse = |yaml: &str| -> SamplerParams { serde_norway::from_str(yaml).unwrap() };
    let tight = "sampler: ode\nrtol: 1e-10\natol: 1e-10";
    let exact = solve(&parse(&format!("{tight}\ndenoise: false")));
    // EDM's sampler ends with an Euler step to sigma = 0, which is Tweedie's
    // denoising at its smallest sigma: its reference is the ODE's, denoised there.
    let denoised = solve(&parse(tight));
    let error = |yaml: &str| -> f64 {
        let got = solve(&parse(yaml));
        let exact = if yaml.contains("edm_heun") {
            &denoised
        } else {
            &exact
        };
        (got - exact)
            .unwrap()
            .sqr()
            .unwrap()
            .mean_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
            .sqrt()
    };
    // (sampler, steps at the coarse end, expected ratio when they double)
    let cases = [
        ("sampler: dpm_solver\norder: 1", 80, 2.0),
        ("sampler: dpm_solver\norder: 2", 80, 4.0),
        ("sampler: dpm_solver\norder: 3", 160, 8.0),
        ("sampler: dpm_solver_pp\nlower_order_final: false", 80, 4.0),
        ("sampler: dpm_solver_pp\nmethod: singlestep", 80, 4.0),
        // The corrector raises UniP-2 to third order.
        (
            "sampler: unipc\norder: 2\nlower_order_final: false",
            80,
            8.0,
        ),
        (
            "sampler: unipc\norder: 2\nvariant: bh2\nlower_order_final: false",
            80,
            8.0,
        ),
        (
            "sampler: unipc\norder: 1\nlower_order_final: false",
            80,
            4.0,
        ),
        ("sampler: edm_heun\nsigma_max: 1000", 80, 4.0),
        (
            "sampler: ode\nsolver: heun\ndenoise: false\nspacing: uniform_lambda",
            80,
            4.0,
        ),
    ];
    for (yaml, coarse, ratio) in cases {
        let fine = 2 * coarse;
        let (a, b) = (
            error(&format!("{yaml}\nsteps: {coarse}")),
            error(&format!("{yaml}\nsteps: {fine}")),
        );
        let observed = a / b;
        eprintln!("{yaml:?}: {a:.3e} -> {b:.3e}, ratio {observed:.2}");
        assert!(
            observed > ratio * 0.75 && observed < ratio * 1.35,
            "{yaml:?}: error {a:.3e} at {coarse} steps, {b:.3e} at {fine}: ratio {observed:.2}, expected about {ratio}"
        );
    }
}

/// The key hashes what changes the samples and nothing else: a setting the sampler
/// ignores (rho off the Karras grid, thresholds with thresholding off, churn bounds
/// without churn, `lower_order_final` of a singlestep solver) gives the key of the
/// defaults, and each setting that is read moves it.
#[test]
fn sampler_keys_hold_only_the_settings_that_are_read() {
    let key = |yaml: &str| -> String {
        let params: SamplerParams = serde_norway::from_str(yaml).unwrap();
        serde_json::to_string(&params.canonical()).unwrap()
    };
    let same = [
        ("sampler: dpm_solver", "sampler: dpm_solver\nrho: 3"),
        ("sampler: unipc", "sampler: unipc\nrho: 3"),
        (
            "sampler: euler_ancestral\nspacing: uniform_t",
            "sampler: euler_ancestral\nspacing: uniform_t\nrho: 3",
        ),
        (
            "sampler: ddim\nspacing: uniform_lambda",
            "sampler: ddim\nspacing: uniform_lambda\nrho: 3",
        ),
        (
            "sampler: dpm_solver_pp",
            "sampler: dpm_solver_pp\nthreshold_ratio: 0.9\nthreshold_max: 2.0",
        ),
        (
            "sampler: dpm_solver_pp\nmethod: singlestep",
            "sampler: dpm_solver_pp\nmethod: singlestep\nlower_order_final: false",
        ),
        (
            "sampler: edm_heun",
            "sampler: edm_heun\ns_tmin: 0.5\ns_tmax: 10\ns_noise: 1.003",
        ),
        (
            "sampler: edm_heun\nspacing: uniform_t",
            "sampler: edm_heun\nspacing: uniform_t\nrho: 3",
        ),
    ];
    for (a, b) in same {
        assert_eq!(key(a), key(b), "{b:?} should share the key of {a:?}");
    }
    let moved = [
        (
            "sampler: dpm_solver\nspacing: karras",
            "sampler: dpm_solver\nspacing: karras\nrho: 3",
        ),
        ("sampler: edm_heun", "sampler: edm_heun\nrho: 3"),
        // Karras is euler_ancestral's default spacing.
        (
            "sampler: euler_ancestral",
            "sampler: euler_ancestral\nrho: 3",
        ),
        (
            "sampler: dpm_solver_pp\nthresholding: true",
            "sampler: dpm_solver_pp\nthresholding: true\nthreshold_ratio: 0.9",
        ),
        (
            "sampler: dpm_solver_pp\nthresholding: true",
            "sampler: dpm_solver_pp\nthresholding: true\nthreshold_max: 2.0",
        ),
        (
            "sampler: dpm_solver_pp",
            "sampler: dpm_solver_pp\nlower_order_final: false",
        ),
        (
            "sampler: edm_heun\ns_churn: 10",
            "sampler: edm_heun\ns_churn: 10\ns_tmin: 0.5",
        ),
        (
            "sampler: edm_heun\ns_churn: 10",
            "sampler: edm_heun\ns_churn: 10\ns_tmax: 10",
        ),
        (
            "sampler: edm_heun\ns_churn: 10",
            "sampler: edm_heun\ns_churn: 10\ns_noise: 1.003",
        ),
        ("sampler: edm_heun", "sampler: edm_heun\nsigma_max: 20"),
        ("sampler: unipc", "sampler: unipc\nvariant: bh2"),
        ("sampler: unipc", "sampler: unipc\ncorrector: false"),
        (
            "sampler: euler_ancestral",
            "sampler: euler_ancestral\neta: 0.5",
        ),
        ("sampler: dpm_solver", "sampler: dpm_solver\norder: 2"),
    ];
    for (a, b) in moved {
        assert_ne!(key(a), key(b), "{b:?} should not share the key of {a:?}");
    }
}
