//! The benchmarks run in their quick mode (tiny sizes, one iteration), so that they
//! cannot rot between the times someone measures with them.

#[allow(dead_code)]
#[path = "../benches/cache.rs"]
mod cache;
#[allow(dead_code)]
#[path = "../benches/plan.rs"]
mod plan;
#[allow(dead_code)]
#[path = "../benches/slurm.rs"]
mod slurm;
#[allow(dead_code)]
#[path = "../benches/train.rs"]
mod train;

#[test]
fn the_planning_benchmark_runs() {
    plan::run(&["plan".into(), "--quick".into()]);
}

#[test]
fn the_slurm_driver_benchmark_runs_a_sweep_through_stand_in_slurm() {
    slurm::run(&["slurm".into(), "--quick".into()]);
}

#[test]
fn the_cache_benchmark_hashes_and_reruns() {
    cache::run(&["cache".into(), "--quick".into()]);
}

#[test]
fn the_training_benchmark_runs_every_case_and_writes_its_figures() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("train.json");
    let args: Vec<String> = ["train", "--quick", "--json", json.to_str().unwrap()]
        .iter()
        .map(|s| s.to_string())
        .collect();
    train::run(&args).unwrap();
    let text = std::fs::read_to_string(&json).unwrap();
    for case in [
        "matmul_f32/64",
        "mlp_step/4x64/b16",
        "mlp_step/3x128/b16",
        "mlp_sampling/100x10",
        "unet_step/b2",
        "unet_sample_step/b2",
    ] {
        assert!(
            text.contains(&format!("\"case\": \"{case}\"")),
            "{case} missing: {text}"
        );
    }
    // The 4x64 MLP on 2D data with a 32-wide time embedding: (34*64 + 64) + 3 * (64*64
    // + 64) + (64*2 + 2) parameters, as PyTorch's nn.Linear stack counts them.
    let params = 34 * 64 + 64 + 3 * (64 * 64 + 64) + 64 * 2 + 2;
    assert!(text.contains(&format!("\"params\": {params}")), "{text}");
}
