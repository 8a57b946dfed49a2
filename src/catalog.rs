//! `runner list`: every choice a pipeline file can make, with its defaults, read off
//! the parameter types themselves so the list cannot drift from the code.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::data::images::ImageSource;
use crate::data::toy::Distribution;
use crate::diffusion::samplers::SamplerParams;
use crate::diffusion::schedule::ScheduleParams;
use crate::metrics::Metric;
use crate::stages::StageKind;
use crate::stages::{
    dataset::DatasetParams, evaluate::EvaluateParams, model::ModelParams, sample::SampleParams,
    train::TrainParams,
};

/// The parameters (defaults filled in) of the value that `yaml` names, without the
/// tag that `yaml` sets.
fn defaults<T: DeserializeOwned + Serialize>(yaml: &str) -> String {
    let tag = yaml.split(':').next().unwrap_or_default().trim();
    let value: T = serde_norway::from_str(yaml).expect("catalog entries parse");
    let json = serde_json::to_value(value).expect("parameters serialize");
    let mut out = Vec::new();
    if let Some(map) = json.as_object() {
        for (k, v) in map.iter().filter(|(k, _)| k.as_str() != tag) {
            out.push(format!("{k}: {v}"));
        }
    }
    out.join(", ")
}

fn section<T: DeserializeOwned + Serialize>(
    out: &mut String,
    title: &str,
    tag: &str,
    names: &[&str],
) {
    out.push_str(&format!("\n{title} ({tag}: ...):\n"));
    for name in names {
        out.push_str(&format!(
            "  {name:<18} {}\n",
            defaults::<T>(&format!("{tag}: {name}"))
        ));
    }
}

/// The text `runner list` prints.
pub fn describe() -> String {
    let mut out = String::from("stage kinds (kind: ..., needs: {role: stage}):\n");
    for kind in StageKind::ALL {
        let roles: Vec<String> = kind
            .roles()
            .iter()
            .map(|role| role.to_string())
            .collect();
        let roles = if roles.is_empty() {
            "no inputs".to_string()
        } else {
            roles.join(", ")
        };
        out.push_str(&format!("  {:<18} {roles}\n", kind.name()));
    }
    out.push_str(
        "  (evaluate's `samples` and `models` take one stage or a list; at least one of them)\n",
    );
    section::<Distribution>(&mut out, "datasets", "name", &Distribution::NAMES);
    section::<ImageSource>(&mut out, "image datasets", "name", &ImageSource::NAMES);
    out.push_str(&format!(
        "  every dataset also takes: {}\n",
        common_dataset()
    ));
    section::<ScheduleParams>(
        &mut out,
        "schedules",
        "type",
        &[
            "linear",
            "cosine",
            "quadratic",
            "sigmoid",
            "geometric",
            "vp_sde",
            "sub_vp_sde",
            "ve_sde",
        ],
    );
    out.push_str("  (linear betas left out are 1e-4 and 0.02 times 1000/steps, capped at 0.999)\n");
    section::<ModelParams>(&mut out, "models", "arch", &["mlp", "exact"]);
    out.push_str("  (exact: the dataset's exact score, no network; needs gmm or two_gaussians)\n");
    out.push_str(&format!(
        "\ntrain params: {}\n",
        defaults::<TrainParams>("objective: eps")
    ));
    out.push_str("  objective: eps (DDPM L_simple) | dsm (score matching; weighting: sigma2 | likelihood); optimizer: adam | adamw\n");
    section::<SamplerParams>(
        &mut out,
        "samplers",
        "sampler",
        &[
            "ancestral",
            "ddim",
            "langevin",
            "annealed_langevin",
            "pc",
            "ode",
        ],
    );
    out.push_str("  pc predictor: reverse_diffusion | euler_maruyama | ancestral | none; corrector: langevin | none\n");
    out.push_str("  ode solver: euler | heun | rk45; annealed_langevin needs a VE process (geometric, ve_sde)\n");
    let sample = defaults::<SampleParams>("sampler: ancestral");
    let common: Vec<&str> = sample
        .split(", ")
        .filter(|p| !p.starts_with("variance:") && !p.starts_with("steps:"))
        .collect();
    out.push_str(&format!(
        "  every sampler also takes: {}\n",
        common.join(", ")
    ));
    let metrics: Vec<&str> = Metric::ALL.iter().map(|m| m.name()).collect();
    out.push_str(&format!("\nmetrics: {}\n", metrics.join(", ")));
    out.push_str("  of samples: sliced_wasserstein, mmd, mode_weights; of models: score_error (needs a mixture), nll\n");
    out.push_str("plots: scatter, timeline (samples); score_field (models, 2D)\n");
    out.push_str(&format!(
        "evaluate params: {}\n",
        defaults::<EvaluateParams>("{}")
    ));
    out.push_str("\nsweep: STAGE.params.KEY: [values] (axes multiply); zip: {PATH: [values], ...} (vary together);\n");
    out.push_str(
        "  STAGE.needs.ROLE: [stages] swaps an input; a value ~ (null) leaves the key out\n",
    );
    out.push_str("report: plots: [{ metric, x: AXIS or METRIC (e.g. nfe), series: [AXIS, ...], where: {AXIS: value}, log_x, log_y }]\n");
    out
}

fn common_dataset() -> String {
    let toy: DatasetParams = serde_norway::from_str("name: moons").expect("catalog entries parse");
    let toy = toy.canonical();
    format!(
        "n: {} (images: all, or a subset), holdout: {} (MNIST: the test split; folders: a tenth), seed: {}",
        toy.n.unwrap_or_default(),
        toy.holdout.unwrap_or_default(),
        toy.seed
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn describe_lists_every_choice_with_defaults() {
        let text = super::describe();
        for needle in [
            "gmm",
            "weights: [0.1,0.9]",
            "cosine",
            "s: 0.008",
            "geometric",
            "annealed_langevin",
            "step_lr: 0.00002",
            "sliced_wasserstein",
            "holdout: 10000",
            "train params",
            "zip:",
            "times 1000/steps",
            "ve_sde",
            "beta_max: 20.0",
            "rk45",
            "snr: 0.16",
            "exact",
            "score_field",
            "nll",
            "where:",
            "init_range: 1.0",
            "divergence: \"auto\"",
        ] {
            assert!(text.contains(needle), "missing {needle} in:\n{text}");
        }
    }
}
