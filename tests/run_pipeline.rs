//! The runner end to end on tiny pipelines: computing, caching, overrides, failures,
//! interruption and concurrent runs.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::{
    computed, plan_line, run_twice_concurrently, runner, stderr, stdout, tiny_pipeline,
    write_pipeline,
};

#[test]
fn first_run_computes_second_is_cached_and_set_reruns_only_downstream() {
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("results");
    let path = write_pipeline(dir.path(), "tiny", &tiny_pipeline("tiny", 30));
    let file = path.to_str().unwrap();

    let first = runner(&results, &["run", file, "--jobs", "2"]);
    assert!(first.status.success(), "{}", stderr(&first));
    let mut ran = computed(&first);
    ran.sort();
    assert_eq!(
        ran,
        [
            "compare",
            "data",
            "ddpm",
            "ddpm_samples",
            "linear",
            "mlp",
            "sigmas",
            "smld",
            "smld_samples"
        ]
    );

    // Every artifact the design promises is there, reachable by stage name.
    let out = results.join("tiny");
    for file in [
        "report.html",
        "metrics.csv",
        "stages/data/data.safetensors",
        "stages/data/meta.json",
        "stages/linear/schedule.csv",
        "stages/linear/schedule.png",
        "stages/mlp/config.json",
        "stages/ddpm/weights.safetensors",
        "stages/ddpm/ema.safetensors",
        "stages/ddpm/loss.csv",
        "stages/ddpm/loss.png",
        "stages/ddpm_samples/samples.safetensors",
        "stages/ddpm_samples/trajectory.safetensors",
        "stages/ddpm_samples/sampling.json",
        "stages/compare/metrics.csv",
        "stages/compare/scatter_smld_samples.png",
        "stages/compare/manifest.json",
    ] {
        assert!(out.join(file).is_file(), "missing {file}");
    }
    // Every figure of the report is also an SVG, drawn as vectors, and linked.
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    let mut pngs = 0;
    for entry in std::fs::read_dir(out.join("figures")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "png") {
            pngs += 1;
            let svg = std::fs::read_to_string(path.with_extension("svg"))
                .unwrap_or_else(|e| panic!("no SVG beside {}: {e}", path.display()));
            assert!(
                svg.starts_with("<svg") && svg.contains("<text"),
                "{}",
                path.display()
            );
            let name = path.with_extension("svg");
            let name = name.file_name().unwrap().to_string_lossy();
            assert!(html.contains(name.as_ref()), "{name} not linked");
        }
    }
    assert!(pngs >= 4, "{pngs} figures");
    // Points are not clipped, and their keys say nothing of clipping.
    let manifest = std::fs::read_to_string(out.join("stages/ddpm_samples/manifest.json")).unwrap();
    assert!(!manifest.contains("clip_denoised"), "{manifest}");
    let metrics = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    assert!(
        metrics.starts_with("evaluate,stage,metric,value"),
        "{metrics}"
    );
    for row in [
        "compare,ddpm_samples,sliced_wasserstein,",
        "compare,smld_samples,mmd2,",
        "compare,ddpm_samples,mode_weight_0,",
        "compare,smld_samples,nfe,16",
    ] {
        assert!(metrics.contains(row), "no {row} in {metrics}");
    }
    // The manifest records the keys of the inputs (the entries the links point at).
    let manifest = std::fs::read_to_string(out.join("stages/ddpm/manifest.json")).unwrap();
    let data_key = std::fs::read_link(out.join("stages/data")).unwrap();
    let data_key = data_key.file_name().unwrap().to_str().unwrap();
    assert!(
        manifest.contains(&format!("\"data\": [\n      \"{data_key}\"")),
        "{manifest}"
    );
    assert!(manifest.contains("\"device\": \"cpu\""), "{manifest}");
    // The EMA weights are a separate average, not a copy of the final weights.
    let raw = std::fs::read(out.join("stages/ddpm/weights.safetensors")).unwrap();
    let ema = std::fs::read(out.join("stages/ddpm/ema.safetensors")).unwrap();
    assert_eq!(raw.len(), ema.len());
    assert_ne!(raw, ema);
    let loss = std::fs::read_to_string(out.join("stages/ddpm/loss.csv")).unwrap();
    assert_eq!(loss.lines().count(), 31, "header + one row per step");
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    for needle in [
        "compare-scatter_ddpm_samples.png",
        "ddpm-loss.png",
        "sliced_wasserstein",
        "computed",
        "tiny test pipeline",
    ] {
        assert!(html.contains(needle), "report lacks {needle}");
    }

    let second = runner(&results, &["run", file]);
    assert!(second.status.success(), "{}", stderr(&second));
    assert!(computed(&second).is_empty(), "{}", stderr(&second));
    assert!(
        stderr(&second).contains("all 9 stages cached: nothing to compute"),
        "{}",
        stderr(&second)
    );
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("cached"));

    let plan = runner(&results, &["plan", file, "--set", "ddpm.params.lr=3e-4"]);
    let plan = stdout(&plan);
    assert!(plan.contains("param lr changed"), "{plan}");
    assert!(plan.contains("input ddpm changed"), "{plan}");
    assert!(plan.contains("3 to run, 6 cached"), "{plan}");

    let third = runner(&results, &["run", file, "--set", "ddpm.params.lr=3e-4"]);
    assert!(third.status.success(), "{}", stderr(&third));
    let mut ran = computed(&third);
    ran.sort();
    assert_eq!(ran, ["compare", "ddpm", "ddpm_samples"]);

    let forced = runner(&results, &["run", file, "--force", "data"]);
    assert!(forced.status.success(), "{}", stderr(&forced));
    assert_eq!(
        computed(&forced),
        ["data"],
        "forcing recomputes only that stage"
    );
}

#[test]
fn dry_run_and_graph_run_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("results");
    let path = write_pipeline(dir.path(), "tiny", &tiny_pipeline("tiny", 5));
    let file = path.to_str().unwrap();
    let dry = runner(&results, &["run", file, "--dry-run"]);
    assert!(dry.status.success());
    assert!(
        stdout(&dry).contains("9 to run, 0 cached"),
        "{}",
        stdout(&dry)
    );
    assert!(stdout(&dry).contains("not computed"));
    let graph = runner(&results, &["graph", file]);
    let dot = stdout(&graph);
    assert!(dot.starts_with("digraph \"tiny\""), "{dot}");
    assert!(
        dot.contains("\"ddpm\" -> \"ddpm_samples\" [label=\"train\"]"),
        "{dot}"
    );
    assert!(
        !results
            .join(".cache")
            .read_dir()
            .map(|d| d
                .filter_map(Result::ok)
                .any(|e| e.path().join("manifest.json").exists()))
            .unwrap_or(false)
    );
    // A CPU-only build refuses --device cuda before running anything, saying why.
    if !cfg!(feature = "cuda") {
        let cuda = runner(&results, &["run", file, "--device", "cuda"]);
        assert_eq!(cuda.status.code(), Some(2), "{}", stderr(&cuda));
        assert!(
            stderr(&cuda).contains("built without CUDA"),
            "{}",
            stderr(&cuda)
        );
        assert!(!results.join("tiny").exists());
    }
    let list = runner(&results, &["list"]);
    assert!(stdout(&list).contains("annealed_langevin") && stdout(&list).contains("two_gaussians"));
}

#[test]
fn a_failing_stage_fails_only_itself_and_its_dependents() {
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("results");
    let text = tiny_pipeline("fails", 20).replace(
        "params: { objective: eps, steps: 20, batch: 64 }",
        "params: { objective: eps, steps: 20, batch: 64, lr: 1.0e30 }",
    );
    let path = write_pipeline(dir.path(), "fails", &text);
    let out = runner(&results, &["run", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("ddpm") && err.contains("loss became") && err.contains("at step"),
        "{err}"
    );
    assert!(
        err.contains("skipped ddpm_samples") && err.contains("skipped compare"),
        "{err}"
    );
    let mut ran = computed(&out);
    ran.sort();
    assert_eq!(
        ran,
        ["data", "linear", "mlp", "sigmas", "smld", "smld_samples"]
    );
    // The stages that succeeded are cached: planning again runs only the failed branch.
    let plan = stdout(&runner(&results, &["plan", path.to_str().unwrap()]));
    assert!(plan.contains("3 to run, 6 cached"), "{plan}");
    assert!(results.join("fails/report.html").is_file());
}

#[test]
fn a_killed_stage_leaves_no_entry_and_the_next_run_completes() {
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("results");
    let path = write_pipeline(dir.path(), "killed", &tiny_pipeline("killed", 1500));
    let mut child = Command::new(env!("CARGO_BIN_EXE_runner"))
        .arg("--results")
        .arg(&results)
        .args(["run", path.to_str().unwrap(), "--jobs", "1"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let reader = BufReader::new(child.stderr.take().unwrap());
    for line in reader.lines() {
        let line = line.unwrap();
        // The first progress line of a training stage: it is mid-run.
        if line.starts_with("[ddpm]") || line.starts_with("[smld]") {
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();

    let plan = stdout(&runner(&results, &["plan", path.to_str().unwrap()]));
    let trains: Vec<&str> = plan.lines().filter(|l| l.contains(" train ")).collect();
    assert!(trains.iter().any(|l| l.ends_with("not computed")), "{plan}");
    // No entry without a manifest: every directory in the cache is complete.
    for entry in std::fs::read_dir(results.join(".cache")).unwrap() {
        let p = entry.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        if !name.starts_with('.') {
            assert!(p.join("manifest.json").is_file(), "{name} has no manifest");
        }
    }
    let again = runner(&results, &["run", path.to_str().unwrap()]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(computed(&again).contains(&"ddpm".to_string()));
}

#[test]
fn concurrent_runs_compute_each_stage_once() {
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("results");
    let path = write_pipeline(dir.path(), "both", &tiny_pipeline("both", 200));
    let (a, b) = run_twice_concurrently(&results, &path, "1");
    assert!(
        a.status.success() && b.status.success(),
        "{}\n{}",
        stderr(&a),
        stderr(&b)
    );
    let mut all = computed(&a);
    all.extend(computed(&b));
    all.sort();
    assert_eq!(
        all,
        [
            "compare",
            "data",
            "ddpm",
            "ddpm_samples",
            "linear",
            "mlp",
            "sigmas",
            "smld",
            "smld_samples"
        ]
    );
    let metrics = std::fs::read_to_string(results.join("both/metrics.csv")).unwrap();
    assert!(metrics.contains("compare,ddpm_samples,mmd2,"));
}

#[test]
fn an_exploding_loss_fails_its_training_by_step_instead_of_feeding_a_hanging_solver() {
    // sigma_max 1e18: the weighted loss starts near 1e32. Once, training "succeeded"
    // and the likelihood's adaptive solver then looped on NaN for ever.
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("results");
    let text = tiny_pipeline("explodes", 20)
        .replace(
            "{ type: geometric, levels: 3 }",
            "{ type: geometric, levels: 3, sigma_max: 1.0e18 }",
        )
        .replace(
            "needs: { reference: data, samples: [ddpm_samples, smld_samples] }",
            "needs: { reference: data, samples: [ddpm_samples, smld_samples], models: smld }",
        )
        .replace(
            "metrics: [sliced_wasserstein, mmd, mode_weights]",
            "metrics: [sliced_wasserstein, nll]",
        );
    assert!(
        text.contains("1.0e18") && text.contains("models: smld"),
        "{text}"
    );
    let path = write_pipeline(dir.path(), "explodes", &text);
    let out = runner(&results, &["run", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("failed  smld: loss ") && err.contains("at step 1 of 20 is above 1e10"),
        "{err}"
    );
    assert!(
        err.contains("sigma_max"),
        "the message suggests the fix: {err}"
    );
    // The DDPM half of the pipeline is untouched.
    assert!(
        computed(&out).contains(&"ddpm_samples".to_string()),
        "{err}"
    );
}

/// `plan` lists stages as the file does (not in dependency order), takes `run`'s
/// flags so a run's command line can be planned as it is, and shows `--force`.
#[test]
fn plan_takes_runs_flags_and_lists_stages_in_file_order() {
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("results");
    // The evaluation first, the data last: the file's order is not the run's.
    let text = tiny_pipeline("order", 5);
    let (head, stages) = text.split_once("stages:\n").unwrap();
    let (before, compare) = stages.split_once("  compare:\n").unwrap();
    let (data, rest) = before.split_once('\n').unwrap();
    let reordered = format!("{head}stages:\n  compare:\n{compare}{rest}{data}\n");
    let path = write_pipeline(dir.path(), "order", &reordered);
    let file = path.to_str().unwrap();
    let plan = stdout(&runner(&results, &["plan", file]));
    let listed: Vec<&str> = plan
        .lines()
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(
        listed,
        [
            "compare",
            "linear",
            "sigmas",
            "mlp",
            "ddpm",
            "smld",
            "ddpm_samples",
            "smld_samples",
            "data"
        ],
        "{plan}"
    );
    let run = runner(&results, &["run", file]);
    assert!(run.status.success(), "{}", stderr(&run));
    let flags = [
        "--jobs", "1", "--force", "ddpm", "--check", "--device", "cpu",
    ];
    let plan = runner(&results, &[&["plan", file][..], &flags].concat());
    assert!(plan.status.success(), "{}", stderr(&plan));
    let plan = stdout(&plan);
    assert!(
        plan_line(&plan, "ddpm").contains("forced (--force)"),
        "{plan}"
    );
    assert!(plan_line(&plan, "smld").ends_with("cached"), "{plan}");
    assert!(plan.contains("1 to run, 8 cached"), "{plan}");
    // `run --dry-run` with the same flags prints the same plan.
    let dry = stdout(&runner(
        &results,
        &[&["run", file, "--dry-run"][..], &flags].concat(),
    ));
    assert_eq!(dry, plan);
    let bad = runner(&results, &["plan", file, "--force", "dta"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        stderr(&bad).contains("did you mean `data`?"),
        "{}",
        stderr(&bad)
    );
}

/// A mistyped `RUNNER_CPU_FEATURES` stops the binary before anything runs, naming the
/// levels: running on would measure or test the CPU's own path while the user believes
/// another is forced. A level it names is taken.
#[test]
fn an_unknown_cpu_level_is_refused_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("results");
    let path = write_pipeline(dir.path(), "tiny", &tiny_pipeline("tiny", 5));
    let with_level = |level: &str| {
        Command::new(env!("CARGO_BIN_EXE_runner"))
            .env("RUNNER_CPU_FEATURES", level)
            .arg("--results")
            .arg(&results)
            .args(["run", path.to_str().unwrap()])
            .output()
            .expect("runner binary starts")
    };
    let typo = with_level("avx9");
    assert_eq!(typo.status.code(), Some(2), "{}", stderr(&typo));
    assert!(
        stderr(&typo)
            .contains("RUNNER_CPU_FEATURES=avx9 is not a level: use avx512, avx2, neon or scalar"),
        "{}",
        stderr(&typo)
    );
    assert!(!results.join(".cache").exists(), "nothing may run");
    let scalar = with_level("scalar");
    assert!(scalar.status.success(), "{}", stderr(&scalar));
    assert_eq!(computed(&scalar).len(), 9, "{}", stdout(&scalar));
}
