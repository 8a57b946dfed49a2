//! Every kind of pipeline-file mistake is an error naming the file, the line and
//! column, the stage, and the valid choices, with a non-zero exit and no backtrace.

mod common;

use common::{plan_key, plan_line, runner, stderr, stdout, write_pipeline};

const BASE: &str = "name: t
stages:
  data: { kind: dataset, params: { name: gmm, n: 100 } }
  lin: { kind: schedule, params: { type: linear, steps: 10 } }
  mlp: { kind: model, params: { arch: mlp } }
";

/// Runs `runner plan` on BASE + `extra` and returns stderr, checking exit code 2.
fn plan_error(extra: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = write_pipeline(dir.path(), "p", &format!("{BASE}{extra}"));
    let out = runner(
        &dir.path().join("results"),
        &["plan", path.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(2), "stderr: {}", stderr(&out));
    let err = stderr(&out);
    assert!(err.starts_with("error: "), "{err}");
    assert!(
        !err.contains("panicked") && !err.contains("backtrace"),
        "{err}"
    );
    assert!(err.contains("p.yaml:"), "no file in {err}");
    err
}

#[test]
fn unknown_param_key_names_line_stage_and_choices() {
    let err = plan_error(
        "  tr:\n    kind: train\n    needs: { data: data, schedule: lin, model: mlp }\n    params: { objective: eps, stpes: 10 }\n",
    );
    assert!(err.contains("p.yaml:9:"), "{err}");
    assert!(err.contains("stages.tr.params"), "{err}");
    assert!(
        err.contains("unknown field `stpes`") && err.contains("`steps`"),
        "{err}"
    );
}

#[test]
fn wrong_type_names_the_key() {
    let err = plan_error(
        "  tr:\n    kind: train\n    needs: { data: data, schedule: lin, model: mlp }\n    params: { objective: eps, steps: ten }\n",
    );
    assert!(err.contains("p.yaml:9:38"), "{err}");
    assert!(
        err.contains("stages.tr.params.steps")
            && err.contains("expected a whole number (0 or more)"),
        "{err}"
    );
}

#[test]
fn unknown_stage_kind_lists_kinds() {
    let err = plan_error("  tr:\n    kind: trian\n");
    assert!(
        err.contains("p.yaml:7:11") && err.contains("stages.tr.kind"),
        "{err}"
    );
    assert!(
        err.contains("unknown variant `trian`") && err.contains("`evaluate`"),
        "{err}"
    );
}

#[test]
fn unknown_dataset_lists_datasets() {
    let err = plan_error("  d2: { kind: dataset, params: { name: gmmm } }\n");
    assert!(
        err.contains("p.yaml:6:") && err.contains("stages.d2.params"),
        "{err}"
    );
    assert!(err.contains("`circle`") && err.contains("`moons`"), "{err}");
}

#[test]
fn missing_input_is_named() {
    let err = plan_error(
        "  tr:\n    kind: train\n    needs: { data: data, schedule: lin }\n    params: { objective: eps }\n",
    );
    assert!(
        err.contains("p.yaml:8:") && err.contains("stages.tr.needs"),
        "{err}"
    );
    assert!(err.contains("missing field `model`"), "{err}");
}

#[test]
fn wrong_input_role_lists_roles() {
    let err = plan_error(
        "  tr:\n    kind: train\n    needs: { data: data, schedule: lin, model: mlp, sampler: x }\n    params: { objective: eps }\n",
    );
    assert!(
        err.contains("p.yaml:8:") && err.contains("unknown field `sampler`"),
        "{err}"
    );
    assert!(err.contains("`data`, `schedule`, `model`"), "{err}");
}

#[test]
fn input_of_the_wrong_kind_lists_stages_of_the_right_kind() {
    let err = plan_error(
        "  tr:\n    kind: train\n    needs: { data: data, schedule: mlp, model: mlp }\n    params: { objective: eps }\n",
    );
    assert!(err.contains("p.yaml:8:26"), "{err}");
    assert!(
        err.contains("stage `tr`")
            && err.contains("must be a schedule stage")
            && err.contains("schedule stages: lin"),
        "{err}"
    );
}

#[test]
fn unknown_input_stage_lists_candidates() {
    let err = plan_error(
        "  tr:\n    kind: train\n    needs: { data: dta, schedule: lin, model: mlp }\n    params: { objective: eps }\n",
    );
    assert!(err.contains("p.yaml:8:14"), "{err}");
    assert!(
        err.contains("`dta`, which is not a stage") && err.contains("dataset stages: data"),
        "{err}"
    );
}

#[test]
fn a_stage_cannot_depend_on_itself() {
    // Input roles only accept upstream kinds, so a cycle is caught as a wrong input.
    let err = plan_error(
        "  s:\n    kind: sample\n    needs: { train: s }\n    params: { sampler: ancestral }\n",
    );
    assert!(
        err.contains("stage `s`") && err.contains("must be a train stage"),
        "{err}"
    );
}

#[test]
fn a_sampler_that_does_not_fit_the_process_is_explained() {
    let err = plan_error(
        "  tr:\n    kind: train\n    needs: { data: data, schedule: lin, model: mlp }\n    params: { objective: eps }\n  s:\n    kind: sample\n    needs: { train: tr }\n    params: { sampler: annealed_langevin }\n",
    );
    assert!(
        err.contains("p.yaml:13:5") && err.contains("stage `s`"),
        "{err}"
    );
    assert!(
        err.contains("needs a VE process")
            && err.contains("use `ancestral`, `ddim`, `pc` or `ode`"),
        "{err}"
    );
    let err = plan_error(
        "  tr:\n    kind: train\n    needs: { data: data, schedule: lin, model: mlp }\n    params: { objective: eps, weighting: likelihood }\n",
    );
    assert!(
        err.contains("p.yaml:9:5") && err.contains("`weighting` applies to `objective: dsm`"),
        "{err}"
    );
}

#[test]
fn interpolations_need_a_deterministic_sampler_and_image_data() {
    let evaluate = |params: &str| {
        format!(
            "  tr:\n    kind: train\n    needs: {{ data: data, schedule: lin, model: mlp }}\n    params: {{ objective: eps }}\n  e:\n    kind: evaluate\n    needs: {{ reference: data, models: tr }}\n    params: {params}\n"
        )
    };
    let err = plan_error(&evaluate(
        "{ plots: [interpolation], interpolation_sampler: { sampler: ddim, eta: 1.0 } }",
    ));
    assert!(
        err.contains("stage `e`")
            && err.contains("`interpolation_sampler` must be deterministic")
            && err.contains("`ode`"),
        "{err}"
    );
    let err = plan_error(&evaluate("{ plots: [mix] }"));
    assert!(
        err.contains("plot `mix` draws images; the reference is not an image dataset"),
        "{err}"
    );
}

#[test]
fn nesting_too_deep_is_refused_at_once_with_its_place() {
    // 40,000 levels took the YAML parser 12 s; the check answers before it starts.
    let deep = format!(
        "  x: {{ kind: model, params: {{ arch: mlp, hidden: {}{} }} }}\n",
        "[".repeat(40_000),
        "]".repeat(40_000)
    );
    let err = plan_error(&deep);
    assert!(
        err.contains("p.yaml:6:") && err.contains("deeper than 64 levels"),
        "{err}"
    );
    // Brackets inside quotes and comments do not count.
    let quoted = format!(
        "  # {}\n  data2: {{ kind: dataset, params: {{ name: \"{}\" }} }}\n",
        "[".repeat(100),
        "[".repeat(100)
    );
    let err = plan_error(&quoted);
    assert!(!err.contains("deeper than"), "{err}");
}

#[test]
fn the_exact_model_takes_no_parameters() {
    let err = plan_error("  oracle: { kind: model, params: { arch: exact, hidden: [8] } }\n");
    assert!(err.contains("unknown field `hidden`"), "{err}");
}

#[test]
fn a_name_too_long_for_a_folder_is_refused_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let long = "n".repeat(5000);
    let path = write_pipeline(
        dir.path(),
        "p",
        &BASE.replacen("name: t", &format!("name: {long}"), 1),
    );
    let out = runner(
        &dir.path().join("results"),
        &["plan", path.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("must be 1 to 100 letters") && err.contains("(5000 characters)"),
        "{err}"
    );
    assert!(
        err.len() < 400,
        "the message shows the start of the name only: {err}"
    );
    let id = "s".repeat(101);
    let err = plan_error(&format!(
        "  {id}: {{ kind: model, params: {{ arch: exact }} }}\n"
    ));
    assert!(
        err.contains("stage id `sssss") && err.contains("(101 characters)"),
        "{err}"
    );
}

#[test]
fn unknown_top_level_key_and_bad_set_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_pipeline(dir.path(), "p", &format!("{BASE}stagse: {{}}\n"));
    let out = runner(dir.path(), &["plan", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("unknown field `stagse`"),
        "{}",
        stderr(&out)
    );

    let path = write_pipeline(dir.path(), "q", BASE);
    let out = runner(
        dir.path(),
        &["plan", path.to_str().unwrap(), "--set", "nope.params.n=3"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("no stage `nope`") && stderr(&out).contains("data, lin, mlp"),
        "{}",
        stderr(&out)
    );
    let out = runner(
        dir.path(),
        &[
            "plan",
            path.to_str().unwrap(),
            "--set",
            "data.params.n=lots",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("--set data.params.n=lots"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn missing_file_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let out = runner(dir.path(), &["run", "does/not/exist.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("cannot read does/not/exist.yaml"),
        "{}",
        stderr(&out)
    );
}

/// Every pipeline shipped in `pipelines/` loads and plans, with the sweep sizes the
/// README promises (a pipeline that stops parsing would otherwise go unnoticed).
#[test]
fn every_shipped_pipeline_plans() {
    let dir = tempfile::tempdir().unwrap();
    let idx_dir = dir.path().join("idx");
    std::fs::create_dir_all(&idx_dir).unwrap();
    for (prefix, n) in [("train", 20usize), ("t10k", 10)] {
        let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
        std::fs::write(
            idx_dir.join(format!("{prefix}-images-idx3-ubyte")),
            runner::data::idx::encode(&[n, 28, 28], &vec![128; n * 784]),
        )
        .unwrap();
        std::fs::write(
            idx_dir.join(format!("{prefix}-labels-idx1-ubyte")),
            runner::data::idx::encode(&[n], &labels),
        )
        .unwrap();
    }
    let folder = dir.path().join("flowers");
    std::fs::create_dir_all(&folder).unwrap();
    for i in 0..3u8 {
        image::RgbImage::from_pixel(8, 8, image::Rgb([i, 0, 0]))
            .save(folder.join(format!("{i}.png")))
            .unwrap();
    }
    let pipelines = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines");
    let mut seen = Vec::new();
    for entry in std::fs::read_dir(&pipelines).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
        // Image pipelines read user files: point them at small generated ones.
        let data = match stem.as_str() {
            "mnist_smld_ddpm_sde" | "fashion_mnist_samplers" | "fast_samplers_mnist" => {
                Some(("data", &idx_dir))
            }
            "toys" => Some(("mnist", &idx_dir)),
            "flowers64" => Some(("data", &folder)),
            _ => None,
        };
        let mut args = vec!["plan".to_string(), path.to_str().unwrap().to_string()];
        if let Some((stage, data)) = data {
            args.push("--set".into());
            args.push(format!("{stage}.params.path={}", data.display()));
        }
        let args: Vec<&str> = args.iter().map(|a| a.as_str()).collect();
        let out = runner(dir.path(), &args);
        assert!(out.status.success(), "{}: {}", path.display(), stderr(&out));
        // Every profile plans too (its overrides and its claims are checked then).
        let text = std::fs::read_to_string(&path).unwrap();
        let spec: serde_norway::Value = serde_norway::from_str(&text).unwrap();
        if let Some(profiles) = spec.get("profiles").and_then(|p| p.as_mapping()) {
            for name in profiles.keys().filter_map(|k| k.as_str()) {
                let mut with = args.clone();
                with.extend(["--profile", name]);
                let out = runner(dir.path(), &with);
                assert!(
                    out.status.success(),
                    "{stem} --profile {name}: {}",
                    stderr(&out)
                );
            }
        }
        seen.push((
            path.file_stem().unwrap().to_string_lossy().into_owned(),
            stdout(&out),
        ));
    }
    let plan = |name: &str| {
        &seen
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no pipelines/{name}.yaml"))
            .1
    };
    for name in [
        "smld_vs_ddpm",
        "schedules",
        "langevin_mixing",
        "stochastic_vs_deterministic",
        "mnist_smld_ddpm_sde",
        "flowers64",
        "fashion_mnist_samplers",
        "thesis_circle",
        "thesis_3d",
        "lecture_1d",
        "toys",
        "fast_samplers",
        "fast_samplers_mnist",
    ] {
        plan(name);
    }
    // 3 models x 7 sampler settings x 5 step counts.
    assert!(
        plan("samplers").contains(
            "105 sweep points over train (3) x zip(sampler, eta, solver) (7) x steps (5)"
        ),
        "{}",
        plan("samplers")
    );
}

#[test]
fn profiles_apply_their_overrides_and_unknown_ones_are_listed() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "{BASE}profiles:\n  small:\n    description: fewer points\n    set:\n      data.params.n: 50\n"
    );
    let path = write_pipeline(dir.path(), "p", &text);
    let plain = stdout(&runner(dir.path(), &["plan", path.to_str().unwrap()]));
    let small = runner(
        dir.path(),
        &["plan", path.to_str().unwrap(), "--profile", "small"],
    );
    assert!(small.status.success(), "{}", stderr(&small));
    let key = |text: &str| plan_line(text, "data").to_string();
    assert_ne!(key(&plain), key(&stdout(&small)));
    let out = runner(
        dir.path(),
        &["plan", path.to_str().unwrap(), "--profile", "big"],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no such profile") && stderr(&out).contains("small"),
        "{}",
        stderr(&out)
    );
}

/// Misspelt names get the closest valid one; numbers are named in a user's terms.
#[test]
fn typos_get_a_suggestion_and_types_are_named_in_user_terms() {
    let err = plan_error(
        "  tr:\n    kind: train\n    needs: { data: data, schedule: lin, model: mlp }\n    params: { objective: eps, stpes: 10 }\n",
    );
    assert!(err.contains("did you mean `steps`?"), "{err}");
    let err = plan_error(
        "  tr:\n    kind: train\n    needs: { data: data, schedule: lin, model: mlp }\n    params: { objective: eps }\n  s: { kind: sample, needs: { train: tr }, params: { sampler: ancestrl } }\n",
    );
    assert!(err.contains("did you mean `ancestral`?"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let path = write_pipeline(dir.path(), "p", BASE);
    let file = path.to_str().unwrap();
    let results = dir.path().join("results");
    for (args, want) in [
        (
            vec!["plan", file, "--set", "lni.params.steps=3"],
            "did you mean `lin`?",
        ),
        (vec!["run", file, "--force", "dat"], "did you mean `data`?"),
        (
            vec!["plan", file, "--set", "lin.params.steps=-5"],
            "integer `-5`, expected a whole number (0 or more)",
        ),
    ] {
        let out = runner(&results, &args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(stderr(&out).contains(want), "{args:?}: {}", stderr(&out));
    }
    // A name far from every choice gets none.
    let out = runner(&results, &["plan", file, "--set", "zzzzzzzz.params.x=1"]);
    assert!(!stderr(&out).contains("did you mean"), "{}", stderr(&out));
}

/// `~` in `--set` leaves the key out (its default), as it does in sweeps.
#[test]
fn a_tilde_in_set_means_the_default() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_pipeline(
        dir.path(),
        "p",
        &BASE.replace("name: gmm, n: 100", "name: gmm, n: 100, seed: 5"),
    );
    let file = path.to_str().unwrap();
    let results = dir.path().join("results");
    let key = |args: &[&str]| {
        let mut all = vec!["plan", file];
        all.extend_from_slice(args);
        plan_key(&stdout(&runner(&results, &all)), "data")
    };
    let written = key(&[]);
    let defaulted = key(&["--set", "data.params.seed=~"]);
    let explicit = key(&["--set", "data.params.seed=0"]);
    assert_ne!(written, defaulted);
    assert_eq!(defaulted, explicit, "the seed's default is 0");
}

/// `plan` (and `--dry-run`) write nothing: no results folder, no cache.
#[test]
fn plan_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_pipeline(dir.path(), "p", BASE);
    let results = dir.path().join("results");
    for args in [vec!["plan"], vec!["run", "--dry-run"]] {
        let mut all = args.clone();
        all.push(path.to_str().unwrap());
        let out = runner(&results, &all);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(!results.exists(), "{args:?} wrote {}", results.display());
    }
}

/// `--set S.params.sampler=X` switches samplers cleanly: settings only the old one
/// takes are dropped (and named), shared and stage settings stay.
#[test]
fn setting_another_sampler_drops_what_it_does_not_take() {
    let dir = tempfile::tempdir().unwrap();
    let stages = "  tr:\n    kind: train\n    needs: { data: data, schedule: lin, model: mlp }\n    params: { objective: eps }\n";
    let pc = write_pipeline(
        dir.path(),
        "pc",
        &format!(
            "{BASE}{stages}  s: {{ kind: sample, needs: {{ train: tr }}, params: {{ sampler: pc, snr: 0.2, corrector: langevin, steps: 7, n: 50 }} }}\n"
        ),
    );
    let ddim = write_pipeline(
        dir.path(),
        "ddim",
        &format!(
            "{BASE}{stages}  s: {{ kind: sample, needs: {{ train: tr }}, params: {{ sampler: ddim, steps: 7, n: 50 }} }}\n"
        ),
    );
    let results = dir.path().join("results");
    let switched = runner(
        &results,
        &[
            "plan",
            pc.to_str().unwrap(),
            "--set",
            "s.params.sampler=ddim",
        ],
    );
    assert!(switched.status.success(), "{}", stderr(&switched));
    let err = stderr(&switched);
    assert!(
        err.contains("dropped `snr`") && err.contains("dropped `corrector`"),
        "{err}"
    );
    assert!(
        !err.contains("dropped `steps`") && !err.contains("dropped `n`"),
        "{err}"
    );
    let key = |out: &std::process::Output| plan_key(&stdout(out), "s");
    let written = runner(&results, &["plan", ddim.to_str().unwrap()]);
    assert_eq!(
        key(&switched),
        key(&written),
        "the same stage as one written for ddim"
    );
}

/// Errors inside parameters chosen by a tag (`type:`, `arch:`, `name:`, `sampler:`)
/// name the full key and the place of the value, like every other parameter.
#[test]
fn errors_in_tagged_parameters_name_the_full_key_and_its_place() {
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("results");
    for (text, want) in [
        (
            "  lin2: { kind: schedule, params: { type: linear, steps: -5 } }\n",
            "p.yaml:6:58: stages.lin2.params.steps: invalid type: integer `-5`, expected a whole number (0 or more)",
        ),
        (
            "  lin2: { kind: schedule, params: { type: lnear } }\n",
            "p.yaml:6:43: stages.lin2.params.type: unknown variant `lnear`",
        ),
        (
            "  m2: { kind: model, params: { arch: mlp, hidden: x } }\n",
            "p.yaml:6:51: stages.m2.params.hidden: invalid type: string \"x\", expected a list",
        ),
        (
            "  m2: { kind: model, params: { arch: exact, depth: 1 } }\n",
            "p.yaml:6:45: stages.m2.params: unknown field `depth`, there are no fields",
        ),
        (
            "  d2: { kind: dataset, params: { name: gmm, std: a } }\n",
            "p.yaml:6:50: stages.d2.params.std: invalid type: string \"a\", expected a number",
        ),
        (
            "  d2: { kind: dataset, params: { name: gmm, sdt: 1 } }\n",
            "p.yaml:6:45: stages.d2.params: unknown field `sdt`, expected one of `means`, `weights`, `std`, `n`, `holdout`, `seed`; did you mean `std`?",
        ),
        (
            "  tr: { kind: train, needs: { data: data, schedule: lin, model: mlp } }\n  s: { kind: sample, needs: { train: tr }, params: { sampler: ddim, n: -3 } }\n",
            "p.yaml:7:72: stages.s.params.n: invalid type: integer `-3`",
        ),
        (
            "  tr: { kind: train, needs: { data: data, schedule: lin, model: mlp } }\n  s: { kind: sample, needs: { train: tr }, params: { sampler: ancestral, variance: bta } }\n",
            "p.yaml:7:84: stages.s.params.variance: unknown variant `bta`, expected `beta` or `posterior`; did you mean `beta`?",
        ),
        // Written before the tag: the key is still named.
        (
            "  tr: { kind: train, needs: { data: data, schedule: lin, model: mlp } }\n  s: { kind: sample, needs: { train: tr }, params: { variance: bta, sampler: ancestral } }\n",
            "stages.s.params.variance: unknown variant `bta`",
        ),
        (
            "  c: { kind: classifier, needs: { data: data }, params: { width: -1 } }\n",
            "p.yaml:6:66: stages.c.params.width: invalid type: integer `-1`",
        ),
    ] {
        let path = write_pipeline(dir.path(), "p", &format!("{BASE}{text}"));
        let out = runner(&results, &["plan", path.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "{text}");
        assert!(
            stderr(&out).contains(want),
            "{text}\nwant {want}\ngot {}",
            stderr(&out)
        );
    }
    // Through `--set` the full key is named too, with the assignment it came from.
    let path = write_pipeline(dir.path(), "p", BASE);
    let out = runner(
        &results,
        &[
            "plan",
            path.to_str().unwrap(),
            "--set",
            "data.params.n=5",
            "--set",
            "lin.params.steps=-5",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains(
            "--set lin.params.steps=-5: stages.lin.params.steps: invalid type: integer `-5`"
        ),
        "{}",
        stderr(&out)
    );
}

/// A file with several mistakes gets all of them at once, in file order, each with
/// its place; a stage that reads a broken one is not reported again.
#[test]
fn every_error_of_a_file_is_reported_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("results");
    let text = "name: t
stages:
  data: { kind: dataset, params: { name: gmm, n: 100, std: x } }
  lin: { kind: schedule, params: { type: linear, steps: -5 } }
  mlp: { kind: model, params: { arch: mlp, hiden: [8] } }
  tr: { kind: train, needs: { data: data, schedule: lin, model: mlp }, params: { stpes: 3 } }
report: { nope: 1 }
";
    let path = write_pipeline(dir.path(), "p", text);
    let out = runner(&results, &["plan", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    let lines: Vec<&str> = err.lines().collect();
    let wanted = [
        "p.yaml:3:60: stages.data.params.std:",
        "p.yaml:4:57: stages.lin.params.steps:",
        "p.yaml:5:44: stages.mlp.params: unknown field `hiden`",
        "stages.tr.params: unknown field `stpes`",
        "p.yaml:7:11: report: unknown field `nope`",
    ];
    assert_eq!(lines.len(), wanted.len() + 1, "{err}");
    for (line, want) in lines.iter().zip(wanted) {
        assert!(
            line.starts_with("error: ") && line.contains(want),
            "want {want} in {err}"
        );
    }
    assert_eq!(lines[wanted.len()], "(5 errors)");

    // After parsing: each stage's own checks, but not those of stages reading a broken one.
    let text = "name: t
stages:
  data: { kind: dataset, params: { name: gmm, n: 100, std: -1 } }
  lin: { kind: schedule, params: { type: linear, beta_end: 2 } }
  lin2: { kind: schedule, params: { type: linear, beta_start: 0.5, beta_end: 0.1 } }
  mlp: { kind: model, params: { arch: mlp } }
  tr: { kind: train, needs: { data: data, schedule: lin, model: mlp }, params: { steps: 3 } }
  s: { kind: sample, needs: { train: tr }, params: { sampler: annealed_langevin, step_lr: -1 } }
";
    let path = write_pipeline(dir.path(), "p", text);
    let out = runner(&results, &["plan", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 4, "{err}");
    assert!(lines[0].contains("p.yaml:3:") && lines[0].contains("`std` must be positive"));
    assert!(lines[1].contains("p.yaml:4:") && lines[1].contains("stage `lin`"));
    assert!(lines[2].contains("p.yaml:5:") && lines[2].contains("stage `lin2`"));
    assert_eq!(lines[3], "(3 errors)");
    assert!(!err.contains("step_lr"), "{err}");
}

/// `resources:` (for `--executor slurm`): a bad time, GPU count, memory, key or stage
/// id is an error at its line and column with the forms that are valid.
#[test]
fn bad_resources_name_line_column_and_the_valid_forms() {
    for (section, expected) in [
        (
            "resources:\n  default: { time: 25 hours }\n",
            "p.yaml:7:20: resources.default.time: `25 hours` is not a time: write it with units (45s, 90m, 12h, 2d, 1h30m) or as Slurm does (90 minutes, 1:30:00, 1-12:00:00)",
        ),
        (
            "resources:\n  train: { gpus: -1 }\n",
            "p.yaml:7:18: resources.train.gpus: `-1` is not a number of GPUs: write a whole number (0 or more) or type:count, e.g. a100:2",
        ),
        (
            "resources:\n  evaluate: { cpu: 2 }\n",
            "p.yaml:7:15: resources.evaluate: unknown field `cpu`, expected one of `cpus`",
        ),
        (
            "resources:\n  trian: { mem: 4G }\n",
            "p.yaml:7:3: resources: unknown field `trian`, expected one of `default`, `stages`, `dataset`",
        ),
        (
            "resources:\n  trian: { mem: 4G }\n",
            "did you mean `train`?",
        ),
        (
            "resources:\n  stages: { data: { mem: 4X } }\n",
            "p.yaml:7:26: resources.stages.data.mem: `4X` is not an amount of memory: write a whole number with a unit, e.g. 512M, 4G, 16GB or 1T",
        ),
        (
            "resources:\n  default: { extra: [--output=x.log] }\n",
            "p.yaml:7:22: resources.default.extra[0]: `--output` is set by runner itself",
        ),
        (
            "slurm: { poll: 0s }\n",
            "p.yaml:6:16: slurm.poll: `0s` is no time at all",
        ),
        (
            "resources:\n  stages: { dta: { mem: 4G } }\n",
            "p.yaml:7:13: resources.stages.dta: no stage `dta`; stages are: data, lin, mlp; did you mean `data`?",
        ),
        (
            "profiles:\n  cluster:\n    description: on the cluster\n    executor: slurm\n    resources: { stages: { mpl: { cpus: 2 } } }\n",
            "p.yaml:10:28: profiles.cluster.resources.stages.mpl: no stage `mpl`",
        ),
        (
            "profiles:\n  cluster:\n    description: on the cluster\n    executor: slurn\n",
            "p.yaml:9:15: profiles.cluster.executor: unknown variant `slurn`, expected `local` or `slurm`",
        ),
    ] {
        let err = plan_error(section);
        assert!(err.contains(expected), "no {expected:?} in\n{err}");
    }
}
