//! Planning speed: reading, expanding and keying a 1,000-point sweep (and the plain
//! smld_vs_ddpm pipeline). `cargo bench --bench plan` prints min / median / max;
//! `-- --quick` runs one iteration (a smoke test that the benchmark still works).

use std::path::Path;
use std::time::Instant;

/// smld_vs_ddpm with a 10 x 10 x 10 sweep over the learning rate, the sample count and
/// the sampling seed: 1,000 points.
fn thousand_point_sweep() -> String {
    let base = std::fs::read_to_string("pipelines/smld_vs_ddpm.yaml")
        .expect("run from the repository root");
    let list = |f: &dyn Fn(usize) -> String| (0..10).map(f).collect::<Vec<_>>().join(", ");
    format!(
        "{base}sweep:\n  ddpm.params.lr: [{}]\n  ddpm_samples.params.n: [{}]\n  ddpm_samples.params.seed: [{}]\n",
        list(&|i| format!("{}e-4", i + 1)),
        list(&|i| format!("{}", 1000 * (i + 1))),
        list(&|i| format!("{i}")),
    )
}

fn measure(name: &str, reps: usize, f: &dyn Fn() -> usize) {
    let mut times = Vec::with_capacity(reps);
    let mut size = 0;
    for _ in 0..reps {
        let start = Instant::now();
        size = f();
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    println!(
        "{name:<40} {size:>6} stages   min {:8.2} ms   median {:8.2} ms   max {:8.2} ms   ({reps} runs)",
        times[0],
        times[reps / 2],
        times[reps - 1]
    );
}

fn main() {
    run(&std::env::args().collect::<Vec<_>>());
}

/// The benchmark, given its command line (tests/benches.rs runs it with `--quick`).
pub fn run(args: &[String]) {
    let quick = args.iter().any(|a| a == "--quick");
    let reps = if quick { 1 } else { 20 };
    let dir = tempfile::tempdir().expect("a temporary directory");
    let sweep = dir.path().join("sweep.yaml");
    std::fs::write(&sweep, thousand_point_sweep()).expect("write the sweep");
    let plain = Path::new("pipelines/smld_vs_ddpm.yaml");
    measure("plan smld_vs_ddpm.yaml", reps, &|| {
        runner::pipeline::load(plain, None, &[], &[])
            .expect("plans")
            .order
            .len()
    });
    measure("plan a 1,000-point sweep", reps, &|| {
        let plan = runner::pipeline::load(&sweep, None, &[], &[]).expect("plans");
        assert_eq!(plan.points.len(), 1000);
        plan.order.len()
    });
}
