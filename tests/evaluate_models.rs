//! Evaluating models and samplers end to end: score error and likelihood of trained and
//! exact models, score fields and timelines, metric-against-NFE plots, and the
//! slow-mixing experiment of `pipelines/langevin_mixing.yaml`.

mod common;

use std::collections::HashMap;
use std::path::Path;

use common::{runner, stderr, write_pipeline};

/// `metrics.csv` of a report as (stage, metric) -> value (rows of one point).
fn metrics(results: &Path, pipeline: &str) -> HashMap<(String, String), f64> {
    let text = std::fs::read_to_string(results.join(pipeline).join("metrics.csv")).unwrap();
    let mut lines = text.lines();
    let header = cells(lines.next().unwrap());
    let column = |name: &str| header.iter().position(|h| h == name).unwrap();
    let (stage, metric, value) = (column("stage"), column("metric"), column("value"));
    lines
        .map(|l| {
            let c = cells(l);
            // Every value the stage writes is one the metric table declares.
            assert!(
                runner::metrics::is_column(&c[metric]),
                "{} is undeclared",
                c[metric]
            );
            (
                (c[stage].clone(), c[metric].clone()),
                c[value].parse().unwrap(),
            )
        })
        .collect()
}

const MODELS: &str = r#"name: models
description: a tiny network and the exact score, judged directly
stages:
  data:   { kind: dataset,  params: { name: gmm, means: [[-1.5, 0.0], [1.5, 0.0]], weights: [0.3, 0.7], std: 0.3, n: 2000, holdout: 400, seed: 0 } }
  vp:     { kind: schedule, params: { type: vp_sde } }
  mlp:    { kind: model,    params: { arch: mlp, hidden: [16, 16], embedding_dim: 8, embedding: fourier } }
  exact:  { kind: model,    params: { arch: exact } }
  net:
    kind: train
    needs: { data: data, schedule: vp, model: mlp }
    params: { objective: dsm, steps: 100, batch: 64 }
  oracle:
    kind: train
    needs: { data: data, schedule: vp, model: exact }
  judge:
    kind: evaluate
    needs: { reference: data, models: [net, oracle] }
    params: { metrics: [score_error, nll], plots: [score_field], score_points: 300, nll_points: 60 }
"#;

#[test]
fn models_are_judged_by_score_error_and_likelihood() {
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("results");
    let path = write_pipeline(dir.path(), "models", MODELS);
    let out = runner(&results, &["run", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let m = metrics(&results, "models");
    let get = |stage: &str, metric: &str| {
        *m.get(&(stage.to_string(), metric.to_string()))
            .unwrap_or_else(|| panic!("no {stage}/{metric} in {m:?}"))
    };

    // The exact score has no error at any time; a network trained for 100 steps has.
    let times: Vec<&String> = m
        .keys()
        .filter(|(s, k)| s == "oracle" && k.starts_with("score_mse_t"))
        .map(|(_, k)| k)
        .collect();
    assert_eq!(times.len(), 6, "{times:?}");
    for t in &times {
        assert_eq!(get("oracle", t), 0.0);
        assert!(get("net", t) > 0.0);
    }
    assert_eq!(get("oracle", "eps_mse"), 0.0);
    assert!(get("net", "eps_mse") > 1e-3);

    // The exact model's likelihood beats the barely trained one's; bits per
    // dimension are nats / (d ln 2).
    let (exact, net) = (get("oracle", "nll"), get("net", "nll"));
    assert!(
        exact.is_finite() && exact < net,
        "oracle {exact} vs net {net}"
    );
    assert!((get("oracle", "bits_per_dim") - exact / (2.0 * std::f64::consts::LN_2)).abs() < 1e-9);
    assert!(get("oracle", "nll_nfe") > 10.0);

    let figures = results.join("models").join("figures");
    for file in [
        "judge-score_field_net.png",
        "judge-score_field_oracle.png",
        "judge-score_error.png",
    ] {
        assert!(figures.join(file).is_file(), "missing {file}");
    }
    let html = std::fs::read_to_string(results.join("models").join("report.html")).unwrap();
    assert!(
        html.contains("Score fields, learned against exact")
            && html.contains("Score error per noise level")
    );
}

#[test]
fn model_metrics_without_models_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("results");
    let text = MODELS.replace(
        "needs: { reference: data, models: [net, oracle] }",
        "needs: { reference: data }",
    );
    let path = write_pipeline(dir.path(), "models", &text);
    let out = runner(&results, &["plan", path.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("nothing to evaluate"),
        "{}",
        stderr(&out)
    );

    let text = MODELS.replace(
        "params: { objective: dsm, steps: 100, batch: 64 }",
        "params: { steps: 100 }",
    );
    let path = write_pipeline(dir.path(), "models", &text);
    let out = runner(&results, &["plan", path.to_str().unwrap()]);
    assert!(
        stderr(&out).contains("`objective` is required"),
        "{}",
        stderr(&out)
    );
}

/// The cells of a CSV line; quoted cells (point labels) may hold commas.
fn cells(line: &str) -> Vec<String> {
    let (mut out, mut cell, mut quoted) = (Vec::new(), String::new(), false);
    for c in line.chars() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut cell)),
            c => cell.push(c),
        }
    }
    out.push(cell);
    out
}

/// A sampler sweep on one tiny model, plotted against the NFE each point spent.
const SAMPLERS: &str = r#"name: nfe
description: samplers against their cost
stages:
  data:   { kind: dataset,  params: { name: gmm, n: 2000, holdout: 400, seed: 0 } }
  linear: { kind: schedule, params: { type: linear, steps: 20 } }
  mlp:    { kind: model,    params: { arch: mlp, hidden: [16, 16], embedding_dim: 8 } }
  ddpm:
    kind: train
    needs: { data: data, schedule: linear, model: mlp }
    params: { objective: eps, steps: 50, batch: 64 }
  s: { kind: sample, needs: { train: ddpm }, params: { sampler: ancestral, n: 200 } }
  ev:
    kind: evaluate
    needs: { reference: data, samples: s }
    params: { metrics: [sliced_wasserstein], projections: 16, plots: [scatter, timeline] }
sweep:
  zip:
    s.params.sampler: [ancestral, ddim, ode, ode]
    s.params.eta: [~, 0.0, ~, ~]
    s.params.solver: [~, ~, euler, rk45]
  s.params.steps: [5, 10]
report:
  plots:
    - { metric: sliced_wasserstein, x: nfe, where: { steps: "10" } }
    - { metric: sliced_wasserstein, x: nfe }
"#;

#[test]
fn a_sampler_sweep_plots_metrics_against_nfe() {
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("results");
    let path = write_pipeline(dir.path(), "nfe", SAMPLERS);
    let out = runner(&results, &["run", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    // rk45 ignores `steps`: its two points share one sample stage.
    let sampled = common::computed(&out)
        .into_iter()
        .filter(|s| s.starts_with("s["))
        .count();
    assert_eq!(sampled, 7, "{}", stderr(&out));

    let csv = std::fs::read_to_string(results.join("nfe").join("metrics.csv")).unwrap();
    let header = cells(csv.lines().next().unwrap());
    let column = |name: &str| {
        header
            .iter()
            .position(|h| h == name)
            .unwrap_or_else(|| panic!("no column {name} in {header:?}"))
    };
    let (sampler, solver, steps, metric, value) = (
        column("sampler"),
        column("solver"),
        column("steps"),
        column("metric"),
        column("value"),
    );
    // The NFE at the first row whose sampler (or solver) and steps match.
    let nfe = |which: &str, n: &str| -> f64 {
        csv.lines()
            .map(cells)
            .find(|c| {
                (c[sampler] == which || c[solver] == which) && c[steps] == n && c[metric] == "nfe"
            })
            .unwrap_or_else(|| panic!("no nfe row for {which} {n} in\n{csv}"))[value]
            .parse()
            .unwrap()
    };
    assert_eq!(nfe("ddim", "5"), 5.0);
    assert_eq!(nfe("ddim", "10"), 10.0);
    // Euler's steps plus the final denoising evaluation.
    assert_eq!(nfe("euler", "10"), 11.0);

    let figures = results.join("nfe").join("figures");
    for file in [
        "sweep-0-sliced_wasserstein-by-nfe.png",
        "sweep-1-sliced_wasserstein-by-nfe.png",
    ] {
        assert!(figures.join(file).is_file(), "missing {file}");
    }
    let html = std::fs::read_to_string(results.join("nfe").join("report.html")).unwrap();
    assert!(
        html.contains("sliced_wasserstein against nfe (steps=10)"),
        "caption of the filtered plot"
    );
    assert!(html.contains("Sampling timelines"));
    assert!(std::fs::read_dir(&figures).unwrap().any(|e| {
        e.unwrap()
            .file_name()
            .to_string_lossy()
            .contains("timeline_s")
    }));
}

#[test]
fn langevin_mixing_gets_weights_wrong_and_annealing_recovers_them() {
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("results");
    let pipeline = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/langevin_mixing.yaml");
    let out = runner(&results, &["run", pipeline.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let m = metrics(&results, "langevin_mixing");
    let tv = |stage: &str| m[&(stage.to_string(), "mode_weight_tv".to_string())];
    // True weights 0.2 / 0.8. Plain Langevin keeps the uniform start's split (about
    // 0.5 / 0.5); annealing gets within a few hundredths (standard error 0.004).
    assert!(
        tv("plain") > 0.2,
        "plain Langevin's weight error {}",
        tv("plain")
    );
    assert!(
        tv("annealed") < 0.05,
        "annealed Langevin's weight error {}",
        tv("annealed")
    );
    let figures = results.join("langevin_mixing").join("figures");
    for file in [
        "compare-scatter_plain.png",
        "compare-scatter_annealed.png",
        "compare-timeline_plain.png",
        "compare-timeline_annealed.png",
    ] {
        assert!(figures.join(file).is_file(), "missing {file}");
    }
}

/// Score errors per noise level are named by the time asked for, so models of
/// different processes (a 50-step DDPM chain, 10 SMLD levels) line up in their own
/// table, with the noise std of the level each process measured at.
#[test]
fn score_errors_line_up_across_processes_in_their_own_table() {
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("results");
    let text = r#"name: levels
stages:
  data:   { kind: dataset,  params: { name: gmm, n: 1000, holdout: 200 } }
  chain:  { kind: schedule, params: { type: linear, steps: 50 } }
  sigmas: { kind: schedule, params: { type: geometric, levels: 10 } }
  mlp:    { kind: model,    params: { arch: mlp, hidden: [16], embedding_dim: 8 } }
  ddpm:   { kind: train, needs: { data: data, schedule: chain, model: mlp }, params: { objective: eps, steps: 20, batch: 32 } }
  smld:   { kind: train, needs: { data: data, schedule: sigmas, model: mlp }, params: { objective: dsm, steps: 20, batch: 32 } }
  judge:
    kind: evaluate
    needs: { reference: data, models: [ddpm, smld] }
    params: { metrics: [score_error], plots: [], score_points: 100, score_times: [0.05, 0.5, 1.0] }
"#;
    let path = write_pipeline(dir.path(), "levels", text);
    let out = runner(&results, &["run", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let m = metrics(&results, "levels");
    let names = |stage: &str| {
        let mut v: Vec<String> = m
            .keys()
            .filter(|(s, k)| s == stage && k.starts_with("score_"))
            .map(|(_, k)| k.clone())
            .collect();
        v.sort();
        v
    };
    let want = [
        "score_mse_t0.050",
        "score_mse_t0.500",
        "score_mse_t1.000",
        "score_sigma_t0.050",
        "score_sigma_t0.500",
        "score_sigma_t1.000",
    ];
    assert_eq!(names("ddpm"), want);
    assert_eq!(names("smld"), want);
    // SMLD's level nearest t = 1 is its largest sigma, 1 by default; the chain's last
    // level has std close to 1 but not 1.
    let sigma = |stage: &str, t: &str| m[&(stage.to_string(), format!("score_sigma_t{t}"))];
    assert!((sigma("smld", "1.000") - 1.0).abs() < 1e-9);
    assert_ne!(sigma("ddpm", "0.050"), sigma("smld", "0.050"));

    let shown: serde_json::Value = serde_json::from_str(&common::stdout(&runner(
        &results,
        &["show", "levels", "--json"],
    )))
    .unwrap();
    let tables = shown["tables"].as_array().unwrap();
    let levels = tables
        .iter()
        .find(|t| t["of"] == "noise levels")
        .expect("a table of noise levels");
    assert_eq!(levels["axes"], serde_json::json!(["t"]));
    assert_eq!(
        levels["metrics"],
        serde_json::json!(["score_mse", "score_sigma"])
    );
    assert_eq!(levels["rows"].as_array().unwrap().len(), 6);
    let models = tables.iter().find(|t| t["of"] == "models").unwrap();
    assert_eq!(models["metrics"], serde_json::json!(["eps_mse"]));
    let text = common::stdout(&runner(&results, &["show", "levels"]));
    let header = text
        .lines()
        .skip_while(|l| !l.contains("(noise levels)"))
        .nth(1)
        .unwrap();
    assert!(
        header
            .split_whitespace()
            .eq(["t", "model", "score_mse", "score_sigma"]),
        "{text}"
    );
    let html = std::fs::read_to_string(results.join("levels/report.html")).unwrap();
    assert!(
        html.contains("judge (noise levels)"),
        "no levels table in the report"
    );
}

const EDM: &str = r#"name: edm
description: Karras et al.'s preconditioned denoiser, trained and judged against the exact score
stages:
  data:   { kind: dataset,  params: { name: gmm, means: [[-1.5, 0.0], [1.5, 0.0]], weights: [0.3, 0.7], std: 0.3, n: 4000, holdout: 1000, seed: 0 } }
  karras: { kind: schedule, params: { type: edm, sigma_min: 0.002, sigma_max: 20.0, sigma_data: 1.0 } }
  mlp:    { kind: model,    params: { arch: mlp, hidden: [128, 128, 128], embedding_dim: 32, embedding: fourier } }
  exact:  { kind: model,    params: { arch: exact } }
  edm:
    kind: train
    needs: { data: data, schedule: karras, model: mlp }
    params: { objective: edm, steps: 3000, batch: 512, lr: 1.0e-3, ema_decay: 0.995, seed: 0 }
  barely:
    kind: train
    needs: { data: data, schedule: karras, model: mlp }
    params: { objective: edm, steps: 5, batch: 512, lr: 1.0e-3, ema_decay: 0.995, seed: 0 }
  oracle:
    kind: train
    needs: { data: data, schedule: karras, model: exact }
  heun:
    kind: sample
    needs: { train: edm }
    params: { sampler: edm_heun, steps: 18, n: 3000, seed: 1 }
  exact_heun:
    kind: sample
    needs: { train: oracle }
    params: { sampler: edm_heun, steps: 18, n: 3000, seed: 1 }
  judge:
    kind: evaluate
    needs: { reference: data, models: [edm, barely, oracle] }
    params: { metrics: [score_error], plots: [], score_points: 400, score_times: [0.3, 0.5, 0.7, 0.9] }
  compare:
    kind: evaluate
    needs: { reference: data, samples: [heun, exact_heun] }
    params: { metrics: [sliced_wasserstein, mode_weights] }
"#;

/// The EDM objective through the binary: a trained denoiser's score is close to the
/// mixture's exact one at every noise level its training distribution covers (far
/// closer than after 5 steps), and EDM's Heun sampler draws the mixture from it about
/// as well as from the exact score, with the right mode weights. (Below sigma ~ 0.02,
/// more than 3 standard deviations under ln sigma ~ N(-1.2, 1.2^2), training sees
/// almost no samples, and score errors, which grow like 1/sigma^2, are not judged.)
#[test]
fn an_edm_model_learns_the_score_and_samples_the_mixture() {
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("results");
    let path = write_pipeline(dir.path(), "edm", EDM);
    let out = runner(&results, &["run", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let m = metrics(&results, "edm");
    let get = |stage: &str, metric: &str| {
        *m.get(&(stage.to_string(), metric.to_string()))
            .unwrap_or_else(|| panic!("no {stage}/{metric} in {m:?}"))
    };
    for t in ["0.300", "0.500", "0.700", "0.900"] {
        let key = format!("score_mse_t{t}");
        let (trained, barely) = (get("edm", &key), get("barely", &key));
        // Per coordinate, in units of the noise: sigma^2 times the score's error.
        let sigma = get("oracle", &format!("score_sigma_t{t}"));
        let relative = trained * sigma * sigma;
        eprintln!(
            "t {t}: sigma {sigma:.4} trained {trained:.4e} ({relative:.4}) barely {barely:.4e}"
        );
        assert_eq!(get("oracle", &key), 0.0);
        // Seen: 0.0004 to 0.0013.
        assert!(relative < 0.01, "t {t}: relative score error {relative}");
        // Seen: 0.003 to 0.1.
        assert!(
            trained < 0.2 * barely,
            "t {t}: {trained} vs {barely} after 5 steps"
        );
    }
    let (sw, exact_sw, tv) = (
        get("heun", "sliced_wasserstein"),
        get("exact_heun", "sliced_wasserstein"),
        get("heun", "mode_weight_tv"),
    );
    eprintln!("edm_heun: sliced W {sw:.4} (exact score {exact_sw:.4}), mode-weight TV {tv:.4}");
    assert!(
        sw < exact_sw + 0.05,
        "sliced Wasserstein {sw} against {exact_sw} from the exact score"
    );
    // One standard deviation of a mode's weight over 3000 samples is 0.0084.
    assert!(tv < 0.03, "mode-weight total variation {tv}");
}
