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
use crate::stages::classifier::ClassifierParams;
use crate::stages::evaluate::{EvaluateParams, Plot};
use crate::stages::{
    dataset::DatasetParams, model::ModelParams, sample::SampleParams, train::TrainParams,
};

/// The parameters (defaults filled in) of the value that `yaml` names, without the
/// tag that `yaml` sets.
fn defaults<T: DeserializeOwned + Serialize>(yaml: &str) -> String {
    let tag = yaml.split(':').next().unwrap_or_default().trim();
    let value: T = serde_norway::from_str(yaml).expect("catalog entries parse");
    fields(&value, tag)
}

/// A value's parameters as `key: value` pairs, without its tag.
fn fields(value: &impl Serialize, tag: &str) -> String {
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
    for &kind in StageKind::ALL {
        out.push_str(&format!("  {:<18} {}\n", kind.name(), roles(kind)));
        out.push_str(&format!(
            "  {:<18} writes {}\n",
            "",
            kind.writes().replace('`', "")
        ));
    }
    out.push_str("  (evaluate needs `samples`, `models` or both)\n");
    section::<Distribution>(&mut out, "datasets", "name", &Distribution::NAMES);
    section::<ImageSource>(&mut out, "image datasets", "name", &ImageSource::NAMES);
    out.push_str(&format!(
        "  every dataset also takes: {}\n",
        common_dataset()
    ));
    section::<ScheduleParams>(&mut out, "schedules", "type", ScheduleParams::NAMES);
    out.push_str("  (linear betas left out are 1e-4 and 0.02 times 1000/steps, capped at 0.999)\n");
    section::<ModelParams>(&mut out, "models", "arch", ModelParams::NAMES);
    out.push_str("  (exact: the dataset's exact score, no network; needs gmm or two_gaussians)\n");
    out.push_str(&format!(
        "\ntrain params: {}\n",
        defaults::<TrainParams>("objective: eps")
    ));
    out.push_str("  objective: eps (DDPM L_simple) | dsm (score matching; weighting: sigma2 | likelihood); optimizer: adam | adamw\n");
    out.push_str(&format!(
        "\nclassifier params: {}\n",
        defaults::<ClassifierParams>("{}")
    ));
    out.push_str("\nsamplers (sampler: ...):\n");
    for name in SamplerParams::NAMES {
        let sampler = SamplerParams::defaults(name).expect("every registered sampler has defaults");
        out.push_str(&format!(
            "  {name:<18} {}\n  {:<18} on {}\n",
            fields(&sampler, "sampler"),
            "",
            sampler.processes()
        ));
    }
    out.push_str("  pc predictor: reverse_diffusion | euler_maruyama | ancestral | none; corrector: langevin | none\n");
    out.push_str("  ode solver: euler | heun | rk45\n");
    let sample = defaults::<SampleParams>("sampler: ancestral");
    let common: Vec<&str> = sample
        .split(", ")
        .filter(|p| !p.starts_with("variance:") && !p.starts_with("steps:"))
        .collect();
    out.push_str(&format!(
        "  every sampler also takes: {}\n",
        common.join(", ")
    ));
    let names = |f: &dyn Fn(Metric) -> bool| chosen(Metric::ALL, Metric::name, f);
    out.push_str(&format!("\nmetrics: {}\n", Metric::NAMES.join(", ")));
    out.push_str(&format!(
        "  of samples: {}; in a classifier's feature space: {}; of models: {} (score_error needs a mixture)\n",
        names(&|m| !m.of_models() && !m.needs_classifier()),
        names(&|m| m.needs_classifier()),
        names(&|m| m.of_models()),
    ));
    let plots = |f: &dyn Fn(Plot) -> bool| chosen(Plot::ALL, Plot::name, f);
    out.push_str(&format!(
        "plots: of points: {} (from samples), {} (from models); of images: {} (from samples), {} (from models)\n",
        plots(&|p| p.fits(false) && !p.of_models()),
        plots(&|p| p.fits(false) && p.of_models()),
        plots(&|p| p.fits(true) && !p.of_models()),
        plots(&|p| p.fits(true) && p.of_models()),
    ));
    out.push_str(&format!(
        "evaluate params: {}\n",
        defaults::<EvaluateParams>("{}")
    ));
    out.push_str("\nsweep: STAGE.params.KEY: [values] (axes multiply); zip: {PATH: [values], ...} (vary together);\n");
    out.push_str(
        "  STAGE.needs.ROLE: [stages] swaps an input; a value ~ (null) leaves the key out\n",
    );
    out.push_str("report: plots: [{ metric, x: AXIS or METRIC (e.g. nfe), series: [AXIS, ...], where: {AXIS: value}, log_x, log_y }]\n");
    out.push_str("expect: [{ stage, metric, below | above | below_stage | above_stage, at: {AXIS: value}, evaluate, note }] (run --check: exit 3 when one fails)\n");
    out
}

/// The names of the choices `keep` selects, as a list.
fn chosen<T: Copy>(all: &[T], name: fn(T) -> &'static str, keep: &dyn Fn(T) -> bool) -> String {
    all.iter()
        .filter(|&&c| keep(c))
        .map(|&c| name(c))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A kind's input roles, as `runner list` and README's table of kinds state them.
pub fn roles(kind: StageKind) -> String {
    if kind.roles().is_empty() {
        return "no inputs".into();
    }
    kind.roles()
        .iter()
        .map(|role| role.to_string())
        .collect::<Vec<_>>()
        .join(", ")
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
            "unet",
            "channel_mult",
            "classifier params",
            "width: 32",
            "forward_noising",
            "writes metrics.csv",
            "on VE processes",
            "below_stage",
        ] {
            assert!(text.contains(needle), "missing {needle} in:\n{text}");
        }
    }

    /// The hand-kept name lists that `runner list` and errors use name exactly the
    /// variants serde reads, in declaration order (the schedules' are checked beside
    /// their private reader).
    #[test]
    fn lists_match_the_variants_serde_knows() {
        use crate::tagged::serde_variants;
        assert_eq!(
            serde_variants::<super::ModelParams>(),
            super::ModelParams::NAMES
        );
        assert_eq!(
            serde_variants::<super::SamplerParams>(),
            super::SamplerParams::NAMES
        );
        assert_eq!(
            serde_variants::<super::Distribution>(),
            super::Distribution::NAMES
        );
        assert_eq!(
            serde_variants::<super::ImageSource>(),
            super::ImageSource::NAMES
        );
    }

    /// Every registered sampler parses by its name and reports it back.
    #[test]
    fn every_registered_sampler_parses_by_its_name() {
        for name in super::SamplerParams::NAMES {
            let parsed: super::SamplerParams =
                serde_norway::from_str(&format!("sampler: {name}")).unwrap();
            assert_eq!(parsed.name(), *name);
            assert_eq!(Some(parsed), super::SamplerParams::defaults(name));
        }
    }
}
