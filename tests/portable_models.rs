//! Trained weights stand alone: each weights file carries model.json in its metadata
//! and every tensor the network needs (the Fourier frequencies too), and
//! `scripts/load_mlp.py` rebuilds the MLP from the file with numpy and matches runner.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use candle_core::{Device, Tensor};
use common::{runner, stderr, write_pipeline};
use runner::nn::models::network::{DataShape, Network, NetworkConfig};
use runner::stages::model::ModelParams;

const PIPELINE: &str = r#"name: portable
stages:
  data:   { kind: dataset,  params: { name: gmm, n: 500, holdout: 100 } }
  linear: { kind: schedule, params: { type: linear, steps: 20 } }
  vp:     { kind: schedule, params: { type: vp_sde } }
  mlp:    { kind: model,    params: { arch: mlp, hidden: [16, 16], embedding_dim: 8 } }
  mlpf:   { kind: model,    params: { arch: mlp, hidden: [16, 16], embedding_dim: 8, embedding: fourier } }
  ddpm:   { kind: train, needs: { data: data, schedule: linear, model: mlp },  params: { objective: eps, steps: 30, batch: 32 } }
  sde:    { kind: train, needs: { data: data, schedule: vp,     model: mlpf }, params: { objective: dsm, steps: 30, batch: 32 } }
"#;

/// An interpreter that has numpy (the pyenv shim may not, Debian's may), if any.
fn python_with_numpy() -> Option<&'static str> {
    ["python3", "/usr/bin/python3"].into_iter().find(|p| {
        Command::new(p)
            .args(["-c", "import numpy"])
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

fn read(path: &Path) -> (HashMap<String, Tensor>, HashMap<String, String>) {
    let bytes = std::fs::read(path).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let metadata = header.metadata().clone().unwrap_or_default();
    let tensors = candle_core::safetensors::load(path, &Device::Cpu).unwrap();
    (tensors, metadata)
}

#[test]
fn weights_carry_their_model_and_rebuild_outside_runner() {
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("results");
    let file = write_pipeline(dir.path(), "portable", PIPELINE);
    let run = runner(&results, &["run", file.to_str().unwrap()]);
    assert!(run.status.success(), "{}", stderr(&run));
    let python = python_with_numpy();
    for (stage, fourier) in [("ddpm", false), ("sde", true)] {
        let entry = results.join("portable/stages").join(stage);
        let model_json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(entry.join("model.json")).unwrap())
                .unwrap();
        for weights in ["weights.safetensors", "ema.safetensors"] {
            let (tensors, metadata) = read(&entry.join(weights));
            let carried: serde_json::Value =
                serde_json::from_str(&metadata["runner.model"]).unwrap();
            assert_eq!(carried, model_json, "{stage}/{weights}");
            assert_eq!(metadata["format"], "pt");
            assert_eq!(
                tensors.contains_key("embedding.frequencies"),
                fourier,
                "{stage}/{weights}"
            );
        }
        // Runner's own output on a few points, from the file alone.
        let (tensors, _) = read(&entry.join("ema.safetensors"));
        let model: ModelParams = serde_json::from_value(model_json["model"].clone()).unwrap();
        let config: NetworkConfig = model.network().unwrap();
        let shape = DataShape {
            dim: 2,
            image: None,
        };
        let std: Arc<dyn Fn(f64) -> f64 + Send + Sync> = Arc::new(|t| t);
        let net = Network::load(&config, shape, &std, tensors, &Device::Cpu).unwrap();
        let x = vec![0.5f32, -1.0, 2.0, 0.25, -0.75, 0.0];
        let t = vec![0.1f32, 0.5, 0.9];
        let out = net
            .forward(
                &Tensor::from_vec(x.clone(), (3, 2), &Device::Cpu).unwrap(),
                &Tensor::from_vec(t.clone(), 3, &Device::Cpu).unwrap(),
            )
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        let Some(python) = python else {
            eprintln!("skipped the numpy rebuild: no python3 with numpy here");
            continue;
        };
        let points = dir.path().join(format!("{stage}-points.json"));
        let rows: Vec<Vec<f32>> = x.chunks(2).map(<[f32]>::to_vec).collect();
        std::fs::write(
            &points,
            serde_json::json!({ "x": rows, "t": t, "expected": out }).to_string(),
        )
        .unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/load_mlp.py");
        let check = Command::new(python)
            .arg(script)
            .arg(entry.join("ema.safetensors"))
            .arg("--check")
            .arg(&points)
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "{stage}: {}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
    }
}
