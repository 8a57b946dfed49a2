//! Agreement with the implementations people use: on a fixed small network and fixed
//! starting noise (`tests/fixtures/reference_samplers.json`, made once by
//! `scripts/reference_samplers.py` with diffusers and k-diffusion), runner's
//! DPM-Solver++(2M), UniPC (bh1, bh2) and EDM Heun reach the same states after the
//! first steps and the same final samples.
//!
//! Tolerance: 1e-4 relative to the state's size (plus 1e-4 absolute). Both sides run
//! in float32; diffusers computes its chain's alphas in float32 where runner uses f64
//! (a relative difference of about 1e-7 per coefficient), and the two order their
//! arithmetic differently. Over ten steps that stays below 1e-5; 1e-4 leaves room,
//! while a wrong coefficient (a 0.5 that should be 1 / (2r), a corrector that is not
//! applied) moves the states by 1e-2 or more.

use candle_core::{Device, Result, Tensor};
use serde::Deserialize;

use runner::diffusion::process::Process;
use runner::diffusion::samplers::{SampleRequest, SamplerParams, run};
use runner::diffusion::schedule::ScheduleParams;
use runner::diffusion::score::ScoreFn;
use runner::rng::stream;

#[derive(Deserialize)]
struct Fixture {
    network: Network,
    start: Vec<Vec<f32>>,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Network {
    w1: Vec<Vec<f32>>,
    b1: Vec<f32>,
    w2: Vec<Vec<f32>>,
    b2: Vec<f32>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    schedule: String,
    sampler: String,
    /// The state after each step, the last being the final samples.
    states: Vec<Vec<Vec<f32>>>,
}

/// The fixture's network: eps(x, t) = W2 tanh(W1 (x, t) + b1) + b2.
struct Tiny<'a> {
    net: &'a Network,
    process: &'a Process,
}

impl ScoreFn for Tiny<'_> {
    fn eps(&self, x: &Tensor, t: f64) -> Result<Tensor> {
        let rows = x.to_vec2::<f32>()?;
        let mut out = Vec::with_capacity(rows.len() * 2);
        for row in rows {
            let input = [row[0], row[1], t as f32];
            let hidden: Vec<f32> = self
                .net
                .w1
                .iter()
                .zip(&self.net.b1)
                .map(|(w, b)| (w.iter().zip(&input).map(|(w, v)| w * v).sum::<f32>() + b).tanh())
                .collect();
            for (w, b) in self.net.w2.iter().zip(&self.net.b2) {
                out.push(w.iter().zip(&hidden).map(|(w, h)| w * h).sum::<f32>() + b);
            }
        }
        Tensor::from_vec(out, x.dims(), x.device())
    }

    fn score(&self, x: &Tensor, t: f64) -> Result<Tensor> {
        self.eps(x, t)?.affine(-1.0 / self.process.std(t), 0.0)
    }
}

fn fixture() -> Fixture {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/reference_samplers.json"
    ))
    .unwrap();
    serde_json::from_str(&text).unwrap()
}

fn process(schedule: &str) -> Process {
    let yaml = match schedule {
        "linear" => "type: linear\nbeta_start: 1.0e-4\nbeta_end: 0.02\nsteps: 1000",
        "edm" => "type: edm\nsigma_min: 0.002\nsigma_max: 80.0",
        other => panic!("unknown schedule {other}"),
    };
    serde_norway::from_str::<ScheduleParams>(yaml)
        .unwrap()
        .build()
}

/// The states after each step (runner's snapshots at every step) and the final ones.
fn runner_states(case: &Case, fixture: &Fixture) -> Vec<Vec<f32>> {
    let process = process(&case.schedule);
    let params: SamplerParams = serde_norway::from_str(&case.sampler).unwrap();
    params.check(&process).unwrap();
    let dev = Device::Cpu;
    let n = fixture.start.len();
    let start: Vec<f32> = fixture.start.iter().flatten().copied().collect();
    // runner's prior draw at t = 1 has the process's prior std; the references start
    // from N(0, 1) (diffusers) or N(0, sigma_max^2) (k-diffusion), which is the same
    // noise scaled.
    let start = Tensor::from_vec(start, (n, 2), &dev)
        .unwrap()
        .affine(process.prior_std(), 0.0)
        .unwrap();
    let steps = case.states.len();
    let request = SampleRequest {
        n,
        dim: 2,
        snapshots: steps + 1,
        snapshot_particles: n,
        device: &dev,
        start: Some(&start),
        clip: None,
    };
    let score = Tiny {
        net: &fixture.network,
        process: &process,
    };
    let out = run(
        &params,
        &score,
        &process,
        &request,
        &mut stream(0, "reference"),
        &mut |_, _| {},
    )
    .unwrap();
    assert_eq!(
        out.nfe as f64,
        params.evaluations(&process),
        "{}",
        case.name
    );
    let mut states: Vec<Vec<f32>> = out.trajectory.into_iter().skip(1).map(|(_, x)| x).collect();
    assert_eq!(states.len(), steps, "{}: one snapshot per step", case.name);
    states.pop();
    states.push(out.samples);
    states
}

#[test]
fn fast_samplers_match_diffusers_and_k_diffusion() {
    let fixture = fixture();
    assert_eq!(fixture.cases.len(), 4);
    for case in &fixture.cases {
        let ours = runner_states(case, &fixture);
        // The first two steps and the final samples.
        let steps = case.states.len();
        let mut worst = 0f32;
        for k in [0, 1, steps - 1] {
            let want: Vec<f32> = case.states[k].iter().flatten().copied().collect();
            let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
            for (got, want) in ours[k].iter().zip(&want) {
                worst = worst.max((got - want).abs() / scale.max(1.0));
                assert!(
                    (got - want).abs() <= 1e-4 * scale + 1e-4,
                    "{} after step {}: runner {got}, reference {want} (scale {scale})",
                    case.name,
                    k + 1
                );
            }
        }
        eprintln!(
            "{}: largest difference {worst:.1e} of the state's size",
            case.name
        );
    }
}
