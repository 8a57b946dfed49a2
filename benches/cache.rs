//! What the cache costs when nothing needs computing: hashing an input file (image
//! folders and IDX files enter stage keys by content) and a no-op re-run of
//! `pipelines/smld_vs_ddpm.yaml`, timed as a user sees it, through the `runner` binary.
//!
//! `cargo bench --bench cache` hashes a 1 GiB file and re-runs the full pipeline (its
//! first run, about two minutes, is kept in `target/bench-results` and reused);
//! `-- --quick` hashes 8 MiB and re-runs a shrunken pipeline in a temporary directory.

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use runner::cache::store::sha256_file;

/// Min / median / max of `reps` timed runs of `f`, in milliseconds.
fn measure(reps: usize, f: &mut dyn FnMut()) -> [f64; 3] {
    let mut times: Vec<f64> = (0..reps)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    [times[0], times[reps / 2], times[reps - 1]]
}

/// A file of `bytes` pseudo-random bytes (the digest must not meet a run of zeros).
fn write_file(path: &Path, bytes: usize) {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).expect("create"));
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut block = vec![0u8; 1 << 20];
    for _ in 0..bytes.div_ceil(block.len()) {
        for chunk in block.chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            chunk.copy_from_slice(&state.to_le_bytes());
        }
        file.write_all(&block).expect("write");
    }
    file.flush().expect("flush");
}

/// Overrides that shrink smld_vs_ddpm to seconds for `--quick`, same stages.
const QUICK: &[&str] = &[
    "ddpm.params.steps=20",
    "smld.params.steps=20",
    "sde.params.steps=20",
    "data.params.n=600",
    "data.params.holdout=200",
    "ddpm_samples.params.n=200",
    "smld_samples.params.n=200",
    "smld_samples.params.n_steps_each=2",
    "sde_samples.params.n=200",
    "sde_samples.params.steps=20",
];

fn runner_run(results: &Path, quick: bool) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_runner"));
    cmd.args(["run", "pipelines/smld_vs_ddpm.yaml", "--results"])
        .arg(results);
    if quick {
        for set in QUICK {
            cmd.args(["--set", set]);
        }
    }
    let out = cmd.output().expect("runner starts");
    assert!(
        out.status.success(),
        "runner run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn main() {
    run(&std::env::args().collect::<Vec<_>>());
}

/// The benchmark, given its command line (tests/benches.rs runs it with `--quick`).
pub fn run(args: &[String]) {
    let quick = args.iter().any(|a| a == "--quick");
    let reps = if quick { 1 } else { 10 };
    let dir = tempfile::tempdir().expect("a temporary directory");

    let bytes = if quick { 8 << 20 } else { 1 << 30 };
    let file = dir.path().join("input.bin");
    write_file(&file, bytes);
    sha256_file(&file).expect("hash"); // from the page cache from here on, as in a re-plan
    let [min, median, max] = measure(reps, &mut || {
        sha256_file(&file).expect("hash");
    });
    println!(
        "{:<36} min {min:8.1} ms   median {median:8.1} ms   max {max:8.1} ms   {:.2} GB/s",
        format!("sha256 of a {} MiB file", bytes >> 20),
        bytes as f64 / (median / 1e3) / 1e9
    );

    let results = if quick {
        dir.path().join("results")
    } else {
        Path::new("target/bench-results").to_path_buf()
    };
    runner_run(&results, quick); // computes once; every later run finds it cached
    let [min, median, max] = measure(reps, &mut || runner_run(&results, quick));
    println!(
        "{:<36} min {min:8.1} ms   median {median:8.1} ms   max {max:8.1} ms",
        "no-op re-run of smld_vs_ddpm"
    );
}
