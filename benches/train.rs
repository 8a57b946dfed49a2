//! Training and sampling speed, the cases `bench/reference/reference.py` runs in
//! PyTorch with the same shapes: MLP training steps on 2D data, the MLP ancestral
//! sampling loop, U-Net training and sampling steps at MNIST size, and the device's
//! matmul peak.
//!
//! `cargo bench --bench train -- [--quick] [--device cpu|cuda] [--json FILE] [--only PREFIX]
//! [--reps N]` prints min / median / max per case; `--quick` runs tiny sizes once (CI
//! runs it so the benchmark cannot rot); `--json` writes the figures for
//! `bench/compare.py`; `--reps` times exactly N runs (a profiler's steady state)
//! instead of at least 15 and at least a second of them.

use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};
use runner::data::images::ImageShape;
use runner::diffusion::process::Process;
use runner::diffusion::samplers::ancestral::{Ancestral, Variance};
use runner::diffusion::samplers::{self, SampleRequest, SamplerParams};
use runner::diffusion::schedule::ScheduleParams;
use runner::diffusion::score::NetworkScore;
use runner::diffusion::score::Prediction;
use runner::nn::kernels::adamw::{AdamW, AdamWConfig};
use runner::nn::models::mlp::MlpConfig;
use runner::nn::models::network::{DataShape, Network, NetworkConfig};
use runner::nn::models::unet::UNetConfig;
use runner::rng::{normals, stream};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// One measured case.
struct Case {
    name: String,
    /// Milliseconds per iteration, sorted.
    times: Vec<f64>,
    /// Items (points, images or particle-steps) per iteration.
    items: f64,
    unit: &'static str,
    /// Floating-point operations per iteration, where counted here.
    flops: Option<f64>,
    /// Trainable parameters of the network (0 where there is none), to check that
    /// the reference builds the same one.
    params: usize,
}

impl Case {
    fn median(&self) -> f64 {
        self.times[self.times.len() / 2]
    }

    fn print(&self) {
        let rate = self.items / (self.median() / 1e3);
        let gflops = self
            .flops
            .map(|f| format!("   {:7.1} GFLOP/s", f / (self.median() / 1e3) / 1e9))
            .unwrap_or_default();
        println!(
            "{:<28} min {:9.3} ms   median {:9.3} ms   max {:9.3} ms   {:12.0} {}/s{gflops}",
            self.name,
            self.times[0],
            self.median(),
            self.times[self.times.len() - 1],
            rate,
            self.unit
        );
    }

    fn json(&self) -> String {
        format!(
            "{{\"case\": \"{}\", \"min_ms\": {}, \"median_ms\": {}, \"max_ms\": {}, \"items\": {}, \"unit\": \"{}\", \"flops\": {}, \"params\": {}}}",
            self.name,
            self.times[0],
            self.median(),
            self.times[self.times.len() - 1],
            self.items,
            self.unit,
            self.flops.map_or("null".into(), |f| f.to_string()),
            self.params
        )
    }
}

/// How many runs a case times. A case of a few milliseconds timed 15 times measured
/// 60 ms of the machine, and one burst of another process's work there moved the
/// median: `at_least` keeps timing until the runs add up to that long.
#[derive(Clone, Copy)]
struct Reps {
    /// Untimed runs first (caches, allocator, lazily built kernels).
    warmup: usize,
    /// Timed runs, at least.
    runs: usize,
    /// Timed runs go on until they add up to this.
    at_least: Duration,
}

impl Reps {
    /// The same counts with `runs` timed runs at least.
    fn with_runs(self, runs: usize) -> Reps {
        Reps { runs, ..self }
    }
}

/// Times runs of `f` as `reps` says; the device is synchronised around each run so
/// that GPU work is counted where it happens.
fn time(device: &Device, reps: Reps, f: &mut dyn FnMut() -> Result<()>) -> Result<Vec<f64>> {
    for _ in 0..reps.warmup {
        f()?;
    }
    device.synchronize()?;
    let mut times = Vec::with_capacity(reps.runs);
    let mut total = Duration::ZERO;
    while times.len() < reps.runs || total < reps.at_least {
        let start = Instant::now();
        f()?;
        device.synchronize()?;
        let elapsed = start.elapsed();
        total += elapsed;
        times.push(elapsed.as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    Ok(times)
}

fn ddpm() -> Process {
    ScheduleParams::Linear {
        beta_start: 1e-4,
        beta_end: 0.02,
        steps: 1000,
    }
    .build()
}

/// The network both kinds of case start from: seeded, for the DDPM process, with its
/// trainable variables by name.
fn fresh(
    config: &NetworkConfig,
    shape: DataShape,
    device: &Device,
) -> Result<(Network, Vec<(String, candle_core::Var)>)> {
    Ok(Network::fresh(
        config,
        shape,
        &ddpm().noise_std(),
        &mut stream(0, "bench/init"),
        device,
    )?)
}

/// A fresh network, its optimiser, and one training step (forward, MSE against the
/// noise, backward, AdamW) on a fixed batch, as the train stage takes it.
fn step_case(
    name: String,
    config: &NetworkConfig,
    shape: DataShape,
    batch: usize,
    device: &Device,
    reps: Reps,
    flops: Option<f64>,
) -> Result<Case> {
    let (net, named) = fresh(config, shape, device)?;
    let params = named.iter().map(|(_, v)| v.elem_count()).sum();
    let vars = named.into_iter().map(|(_, v)| v).collect();
    let mut opt = AdamW::new(vars, AdamWConfig::new(1e-4, 0.0))?;
    let mut rng = stream(0, "bench/data");
    let x = Tensor::from_vec(
        normals(&mut rng, batch * shape.dim),
        (batch, shape.dim),
        device,
    )?;
    let eps = Tensor::from_vec(
        normals(&mut rng, batch * shape.dim),
        (batch, shape.dim),
        device,
    )?;
    let t = Tensor::rand(0f32, 1f32, batch, device)?;
    let times = time(device, reps, &mut || {
        let loss = (net.forward(&x, &t)? - &eps)?.sqr()?.mean_all()?;
        let grads = loss.backward()?;
        opt.step(&grads, 1e-4, 1.0)?;
        Ok(())
    })?;
    Ok(Case {
        name,
        times,
        items: batch as f64,
        unit: if shape.image.is_some() { "img" } else { "pts" },
        flops,
        params,
    })
}

/// A freshly initialised network whose weights are plain tensors, as the sample stage
/// loads them: built from `Var`s, every output would record the autograd graph, and a
/// sampling loop would keep all of its steps alive.
fn frozen(config: &NetworkConfig, shape: DataShape, device: &Device) -> Result<Network> {
    let (_, named) = fresh(config, shape, device)?;
    let weights = named
        .into_iter()
        .map(|(name, var)| (name, var.as_tensor().detach()))
        .collect();
    Ok(Network::load(
        config,
        shape,
        &ddpm().noise_std(),
        weights,
        device,
    )?)
}

/// A case timing one n x n by n x n product.
fn square_product(name: String, n: usize, times: Vec<f64>) -> Case {
    Case {
        name,
        times,
        items: 1.0,
        unit: "matmul",
        flops: Some(2.0 * (n as f64).powi(3)),
        params: 0,
    }
}

/// Forward FLOPs of an MLP on `dim`-dimensional data (multiply-adds count two).
fn mlp_flops(config: &MlpConfig, dim: usize, batch: usize) -> f64 {
    let mut fan_in = dim + config.embedding_dim;
    let mut total = 0.0;
    for &width in config.hidden.iter().chain(std::iter::once(&dim)) {
        total += 2.0 * (fan_in * width) as f64;
        fan_in = width;
    }
    total * batch as f64
}

fn mlp(hidden: Vec<usize>) -> MlpConfig {
    MlpConfig {
        hidden,
        ..MlpConfig::default()
    }
}

/// Table 1's MNIST U-Net (pipelines/mnist_smld_ddpm_sde.yaml).
fn mnist_unet() -> UNetConfig {
    UNetConfig {
        channels: 32,
        channel_mult: vec![1, 2, 2],
        res_blocks: 2,
        attention: vec![7],
        ..UNetConfig::default()
    }
}

const MNIST: ImageShape = ImageShape {
    channels: 1,
    height: 28,
    width: 28,
};

fn main() -> Result<()> {
    runner::alloc::keep_freed_memory();
    run(&std::env::args().collect::<Vec<_>>())
}

/// The benchmark, given its command line (tests/benches.rs runs it with `--quick`).
pub fn run(args: &[String]) -> Result<()> {
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1).cloned())
    };
    // A mistyped level would time the CPU's own path under the name of another.
    if let Some(message) = runner::nn::kernels::cpu::environment_error() {
        return Err(message.into());
    }
    let quick = args.iter().any(|a| a == "--quick");
    let only = value("--only").unwrap_or_default();
    let device = match value("--device").as_deref() {
        None | Some("cpu") => Device::Cpu,
        Some("cuda") => Device::new_cuda(0)?,
        Some(other) => return Err(format!("--device {other}: use cpu or cuda").into()),
    };
    let reps = match value("--reps") {
        Some(n) => Reps {
            warmup: 3,
            runs: n.parse().map_err(|_| format!("--reps {n}: give a count"))?,
            at_least: Duration::ZERO,
        },
        None if quick => Reps {
            warmup: 0,
            runs: 1,
            at_least: Duration::ZERO,
        },
        None => Reps {
            warmup: 3,
            runs: 15,
            at_least: Duration::from_secs(1),
        },
    };
    let mut cases = Vec::new();
    let wanted = |name: &str| name.starts_with(&only);

    // The device's matmul peak, the ceiling for the GFLOP/s of the steps.
    let n = if quick {
        64
    } else if device.is_cuda() {
        8192
    } else {
        2048
    };
    if wanted("matmul") {
        let a = Tensor::rand(0f32, 1f32, (n, n), &device)?;
        let b = Tensor::rand(0f32, 1f32, (n, n), &device)?;
        let times = time(&device, reps, &mut || {
            a.matmul(&b)?;
            Ok(())
        })?;
        cases.push(square_product(format!("matmul_f32/{n}"), n, times));
    }

    // The GEMM of runner's own CPU kernels (AVX-512 where the CPU has it), on both
    // cores: the ceiling for the MLP and convolution kernels.
    if wanted("gemm") && device.is_cpu() {
        use runner::nn::kernels::gemm::{View, matmul};
        let a = normals(&mut stream(0, "bench/gemm"), n * n);
        let mut out = vec![0f32; n * n];
        let threads = rayon::current_num_threads();
        let times = time(&device, reps, &mut || {
            matmul(
                &mut out,
                View::rows(&a, n, n),
                View::rows(&a, n, n),
                false,
                threads,
            );
            Ok(())
        })?;
        cases.push(square_product(format!("gemm_f32/{n}"), n, times));
    }

    for (label, hidden) in [("4x64", vec![64; 4]), ("3x128", vec![128; 3])] {
        for batch in if quick { vec![16] } else { vec![512, 2048] } {
            let name = format!("mlp_step/{label}/b{batch}");
            if !wanted(&name) {
                continue;
            }
            let cfg = mlp(hidden.clone());
            let flops = 3.0 * mlp_flops(&cfg, 2, batch);
            let shape = DataShape {
                dim: 2,
                image: None,
            };
            cases.push(step_case(
                name,
                &NetworkConfig::Mlp(cfg),
                shape,
                batch,
                &device,
                reps,
                Some(flops),
            )?);
        }
    }

    let (particles, steps) = if quick { (100, 10) } else { (10_000, 1000) };
    let name = format!("mlp_sampling/{particles}x{steps}");
    if wanted(&name) {
        let process = ddpm();
        let cfg = NetworkConfig::Mlp(mlp(vec![128; 3]));
        let shape = DataShape {
            dim: 2,
            image: None,
        };
        let net = frozen(&cfg, shape, &device)?;
        let score = NetworkScore {
            net,
            prediction: Prediction::Epsilon,
            process: &process,
        };
        let sampler = SamplerParams::Ancestral(Ancestral {
            variance: Variance::Beta,
            steps: Some(steps),
            ..Default::default()
        });
        let request = SampleRequest {
            clip: None,
            n: particles,
            dim: 2,
            snapshots: 0,
            snapshot_particles: 0,
            device: &device,
            start: None,
        };
        let mut rng = stream(0, "bench/sample");
        let sampling = Reps {
            warmup: 0,
            ..reps.with_runs(if quick { 1 } else { 3 })
        };
        let times = time(&device, sampling, &mut || {
            samplers::run(
                &sampler,
                &score,
                &process,
                &request,
                &mut rng,
                &mut |_, _| {},
            )?;
            Ok(())
        })?;
        cases.push(Case {
            name,
            times,
            items: (particles * steps) as f64,
            unit: "particle-steps",
            flops: None,
            params: 0,
        });
    }

    let image = DataShape {
        dim: MNIST.dim(),
        image: Some(MNIST),
    };
    for batch in if quick { vec![2] } else { vec![64, 128] } {
        let name = format!("unet_step/b{batch}");
        if wanted(&name) {
            let unet_reps = if quick {
                reps
            } else {
                Reps {
                    warmup: 2,
                    ..reps.with_runs(7)
                }
            };
            cases.push(step_case(
                name,
                &NetworkConfig::UNet(mnist_unet()),
                image,
                batch,
                &device,
                unet_reps,
                None,
            )?);
        }
        let name = format!("unet_sample_step/b{batch}");
        if wanted(&name) {
            let net = frozen(&NetworkConfig::UNet(mnist_unet()), image, &device)?;
            let x = Tensor::from_vec(
                normals(&mut stream(1, "bench/x"), batch * image.dim),
                (batch, image.dim),
                &device,
            )?;
            let t = Tensor::full(0.5f32, batch, &device)?;
            let times = time(&device, reps, &mut || {
                net.forward(&x, &t)?;
                Ok(())
            })?;
            cases.push(Case {
                name,
                times,
                items: batch as f64,
                unit: "img",
                flops: None,
                params: 0,
            });
        }
    }

    for case in &cases {
        case.print();
    }
    if let Some(path) = value("--json") {
        let body: Vec<String> = cases.iter().map(Case::json).collect();
        std::fs::write(&path, format!("[\n{}\n]\n", body.join(",\n")))?;
    }
    Ok(())
}
