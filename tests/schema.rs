//! `runner schema` describes pipeline files as the parser reads them: every shipped
//! pipeline validates against it, and mistakes the parser refuses, it refuses too.

mod common;

use common::{runner, stdout};

fn schema() -> jsonschema::Validator {
    let dir = tempfile::tempdir().unwrap();
    let out = runner(&dir.path().join("results"), &["schema"]);
    assert!(out.status.success());
    let schema: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    jsonschema::validator_for(&schema).expect("a valid JSON Schema")
}

fn as_json(yaml: &str) -> serde_json::Value {
    let value: serde_norway::Value = serde_norway::from_str(yaml).unwrap();
    serde_json::to_value(value).unwrap()
}

#[test]
fn every_shipped_pipeline_validates() {
    let validator = schema();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines");
    let mut checked = 0;
    for entry in std::fs::read_dir(root).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let file = as_json(&std::fs::read_to_string(&path).unwrap());
        let errors: Vec<String> = validator
            .iter_errors(&file)
            .map(|e| format!("{} at {}", e, e.instance_path))
            .collect();
        assert!(errors.is_empty(), "{}: {errors:#?}", path.display());
        checked += 1;
    }
    assert!(checked >= 5, "{checked} pipelines");
}

#[test]
fn mistakes_the_parser_refuses_are_refused() {
    let validator = schema();
    let good = "name: t
stages:
  data: { kind: dataset, params: { name: gmm, n: 100 } }
  lin: { kind: schedule, params: { type: linear, steps: 10 } }
  mlp: { kind: model, params: { arch: mlp, hidden: [8] } }
  tr: { kind: train, needs: { data: data, schedule: lin, model: mlp }, params: { objective: eps } }
  s: { kind: sample, needs: { train: tr }, params: { sampler: ddim, eta: 0.0, n: 10 } }
  e: { kind: evaluate, needs: { reference: data, samples: [s] }, params: { metrics: [mmd] } }
sweep:
  tr.params.lr: [0.001, 0.002]
";
    assert!(validator.is_valid(&as_json(good)));
    for (from, to) in [
        ("steps: 10", "stpes: 10"),
        ("steps: 10", "steps: ten"),
        ("type: linear", "type: lnear"),
        ("sampler: ddim", "sampler: ddmi"),
        ("eta: 0.0", "bogus: 0.0"),
        ("arch: mlp", "arch: mpl"),
        ("kind: train", "kind: trian"),
        ("schedule: lin, ", ""),
        ("metrics: [mmd]", "metrics: [mdm]"),
        ("name: gmm, n: 100", "name: gmm, n: 100, sdt: 1"),
        ("name: t", "nmae: t"),
        ("hidden: [8]", "hiden: [8]"),
        ("objective: eps", "objective: eps, lrr: 1"),
        ("samples: [s]", "samples: [s], sample: [s]"),
    ] {
        let bad = good.replace(from, to);
        assert_ne!(bad, good);
        assert!(
            !validator.is_valid(&as_json(&bad)),
            "accepted: {from} -> {to}"
        );
    }
}
