//! The pipeline file: typed, so a typo is an error with its line and column.

use std::collections::BTreeMap;
use std::path::Path;

use serde::de::{DeserializeSeed, Deserializer, Error as _, MapAccess, Visitor};
use serde::{Deserialize, Serialize};

use super::sweep::{SweepSpec, normalize};
use crate::error::{Location, SpecError};
use crate::report::compare::ReportSpec;
use crate::stages::classifier::ClassifierParams;
use crate::stages::{
    dataset::DatasetParams, evaluate::EvaluateParams, model::ModelParams, sample::SampleParams,
    schedule::ScheduleParams, train::TrainParams,
};

/// A whole pipeline file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineSpec {
    /// Names the results folder: `results/<name>/`.
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub stages: BTreeMap<String, StageSpec>,
    /// Values to vary: the pipeline runs once per point of their product.
    #[serde(default)]
    pub sweep: SweepSpec,
    /// What the report compares across the sweep.
    #[serde(default)]
    pub report: ReportSpec,
    /// Named sets of overrides (`--profile NAME`), e.g. a smaller CPU version of a
    /// GPU-sized experiment.
    #[serde(default)]
    pub profiles: BTreeMap<String, Profile>,
}

/// A named set of `--set` overrides, with a sentence the report shows.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// What the profile changes and why, stated in the report.
    pub description: String,
    /// PATH: VALUE pairs, as `--set PATH=VALUE`.
    pub set: BTreeMap<String, serde_norway::Value>,
}

/// One stage: its kind decides which inputs (`needs`) and `params` it takes.
///
/// Deserialized by hand (see `StageVisitor`) rather than as a serde-tagged enum, so
/// that `needs` and `params` are read straight from the YAML parser and their errors
/// keep the exact line, column and path.
#[derive(Debug, Clone)]
pub enum StageSpec {
    Dataset {
        params: DatasetParams,
    },
    Schedule {
        params: ScheduleParams,
    },
    Model {
        params: ModelParams,
    },
    Train {
        needs: TrainNeeds,
        params: TrainParams,
    },
    Sample {
        needs: SampleNeeds,
        params: SampleParams,
    },
    Classifier {
        needs: ClassifierNeeds,
        params: ClassifierParams,
    },
    Evaluate {
        needs: EvaluateNeeds,
        params: EvaluateParams,
    },
}

/// Inputs of a classifier stage: the labelled dataset it learns.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifierNeeds {
    pub data: String,
}

/// Inputs of a train stage, by role.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TrainNeeds {
    pub data: String,
    pub schedule: String,
    pub model: String,
}

/// Inputs of a sample stage, by role.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SampleNeeds {
    pub train: String,
}

/// Inputs of an evaluate stage, by role.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EvaluateNeeds {
    pub reference: String,
    /// Sample stages whose samples are compared with the reference.
    #[serde(default)]
    pub samples: Option<OneOrMany>,
    /// Train stages whose scores are evaluated directly (score error, likelihood).
    #[serde(default)]
    pub models: Option<OneOrMany>,
    /// A classifier stage, whose features the image metrics (FID, KID, IS,
    /// precision/recall) are computed in.
    #[serde(default)]
    pub classifier: Option<String>,
}

/// A role may name one stage or a list of stages.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn ids(&self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

/// The stage kinds, as named in pipeline files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StageKind {
    Dataset,
    Schedule,
    Model,
    Train,
    Sample,
    Classifier,
    Evaluate,
}

impl StageKind {
    pub const ALL: [StageKind; 7] = [
        StageKind::Dataset,
        StageKind::Schedule,
        StageKind::Model,
        StageKind::Train,
        StageKind::Sample,
        StageKind::Classifier,
        StageKind::Evaluate,
    ];

    pub fn name(self) -> &'static str {
        match self {
            StageKind::Dataset => "dataset",
            StageKind::Schedule => "schedule",
            StageKind::Model => "model",
            StageKind::Train => "train",
            StageKind::Sample => "sample",
            StageKind::Classifier => "classifier",
            StageKind::Evaluate => "evaluate",
        }
    }

    /// Stages that keep every core busy on their own (training, sampling): the
    /// scheduler runs one of them at a time so they do not oversubscribe the machine.
    /// On a GPU too: three U-Net trainings sharing an H100 ran at 156 img/s each,
    /// one alone at 740 img/s (candle's CUDA path is bound by kernel launches).
    pub fn uses_all_cores(self) -> bool {
        matches!(self, StageKind::Train | StageKind::Sample)
    }

    /// Input roles this kind takes and the kind each role must point to.
    pub fn roles(self) -> &'static [(&'static str, StageKind)] {
        match self {
            StageKind::Dataset | StageKind::Schedule | StageKind::Model => &[],
            StageKind::Train => &[
                ("data", StageKind::Dataset),
                ("schedule", StageKind::Schedule),
                ("model", StageKind::Model),
            ],
            StageKind::Sample => &[("train", StageKind::Train)],
            StageKind::Classifier => &[("data", StageKind::Dataset)],
            StageKind::Evaluate => &[
                ("reference", StageKind::Dataset),
                ("samples", StageKind::Sample),
                ("models", StageKind::Train),
                ("classifier", StageKind::Classifier),
            ],
        }
    }
}

impl std::fmt::Display for StageKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl StageSpec {
    pub fn kind(&self) -> StageKind {
        match self {
            StageSpec::Dataset { .. } => StageKind::Dataset,
            StageSpec::Schedule { .. } => StageKind::Schedule,
            StageSpec::Model { .. } => StageKind::Model,
            StageSpec::Train { .. } => StageKind::Train,
            StageSpec::Sample { .. } => StageKind::Sample,
            StageSpec::Classifier { .. } => StageKind::Classifier,
            StageSpec::Evaluate { .. } => StageKind::Evaluate,
        }
    }

    /// Inputs as (role, stage ids), in the kind's role order.
    pub fn needs(&self) -> Vec<(&'static str, Vec<String>)> {
        match self {
            StageSpec::Dataset { .. } | StageSpec::Schedule { .. } | StageSpec::Model { .. } => {
                vec![]
            }
            StageSpec::Train { needs, .. } => vec![
                ("data", vec![needs.data.clone()]),
                ("schedule", vec![needs.schedule.clone()]),
                ("model", vec![needs.model.clone()]),
            ],
            StageSpec::Sample { needs, .. } => vec![("train", vec![needs.train.clone()])],
            StageSpec::Classifier { needs, .. } => vec![("data", vec![needs.data.clone()])],
            StageSpec::Evaluate { needs, .. } => {
                let mut roles = vec![("reference", vec![needs.reference.clone()])];
                roles.extend(needs.samples.as_ref().map(|s| ("samples", s.ids())));
                roles.extend(needs.models.as_ref().map(|m| ("models", m.ids())));
                roles.extend(
                    needs
                        .classifier
                        .as_ref()
                        .map(|c| ("classifier", vec![c.clone()])),
                );
                roles
            }
        }
    }

    /// Parameters with every default filled in: what the key hashes.
    pub fn resolved_params(&self) -> serde_json::Value {
        let value = match self {
            StageSpec::Dataset { params } => serde_json::to_value(params.canonical()),
            StageSpec::Schedule { params } => serde_json::to_value(params),
            StageSpec::Model { params } => serde_json::to_value(params),
            StageSpec::Train { params, .. } => serde_json::to_value(params.canonical()),
            StageSpec::Sample { params, .. } => serde_json::to_value(params.canonical()),
            StageSpec::Classifier { params, .. } => serde_json::to_value(params),
            StageSpec::Evaluate { params, .. } => serde_json::to_value(params),
        };
        value.expect("stage parameters always serialize to JSON")
    }
}

/// Typed `needs` of any kind, before they are matched with the kind's params.
enum AnyNeeds {
    None,
    Train(TrainNeeds),
    Sample(SampleNeeds),
    Classifier(ClassifierNeeds),
    Evaluate(EvaluateNeeds),
}

/// Typed `params` of any kind.
enum AnyParams {
    Dataset(DatasetParams),
    Schedule(ScheduleParams),
    Model(ModelParams),
    Train(TrainParams),
    Sample(SampleParams),
    Classifier(ClassifierParams),
    Evaluate(EvaluateParams),
}

/// Reads `needs` as the type a kind expects.
struct NeedsSeed(StageKind);

impl<'de> DeserializeSeed<'de> for NeedsSeed {
    type Value = AnyNeeds;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<AnyNeeds, D::Error> {
        Ok(match self.0 {
            StageKind::Train => AnyNeeds::Train(TrainNeeds::deserialize(d)?),
            StageKind::Sample => AnyNeeds::Sample(SampleNeeds::deserialize(d)?),
            StageKind::Classifier => AnyNeeds::Classifier(ClassifierNeeds::deserialize(d)?),
            StageKind::Evaluate => AnyNeeds::Evaluate(EvaluateNeeds::deserialize(d)?),
            kind => {
                return Err(D::Error::custom(format!(
                    "a {kind} stage takes no inputs; remove `needs`"
                )));
            }
        })
    }
}

/// Reads `params` as the type a kind expects.
struct ParamsSeed(StageKind);

impl<'de> DeserializeSeed<'de> for ParamsSeed {
    type Value = AnyParams;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<AnyParams, D::Error> {
        Ok(match self.0 {
            StageKind::Dataset => AnyParams::Dataset(DatasetParams::deserialize(d)?),
            StageKind::Schedule => AnyParams::Schedule(ScheduleParams::deserialize(d)?),
            StageKind::Model => AnyParams::Model(ModelParams::deserialize(d)?),
            StageKind::Train => AnyParams::Train(TrainParams::deserialize(d)?),
            StageKind::Sample => AnyParams::Sample(SampleParams::deserialize(d)?),
            StageKind::Classifier => AnyParams::Classifier(ClassifierParams::deserialize(d)?),
            StageKind::Evaluate => AnyParams::Evaluate(EvaluateParams::deserialize(d)?),
        })
    }
}

struct StageVisitor;

const STAGE_FIELDS: &[&str] = &["kind", "needs", "params"];

impl<'de> Visitor<'de> for StageVisitor {
    type Value = StageSpec;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a stage mapping `{ kind: ..., needs: {...}, params: {...} }`")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<StageSpec, A::Error> {
        let mut kind: Option<StageKind> = None;
        let (mut needs, mut params) = (None, None);
        // `needs`/`params` written before `kind` are buffered and typed afterwards.
        let (mut early_needs, mut early_params): (
            Option<serde_norway::Value>,
            Option<serde_norway::Value>,
        ) = (None, None);
        while let Some(key) = map.next_key::<String>()? {
            match (key.as_str(), kind) {
                ("kind", _) => kind = Some(map.next_value()?),
                ("needs", Some(k)) => needs = Some(map.next_value_seed(NeedsSeed(k))?),
                ("needs", None) => early_needs = Some(map.next_value()?),
                ("params", Some(k)) => params = Some(map.next_value_seed(ParamsSeed(k))?),
                ("params", None) => early_params = Some(map.next_value()?),
                (other, _) => return Err(A::Error::unknown_field(other, STAGE_FIELDS)),
            }
        }
        let kind = kind.ok_or_else(|| A::Error::missing_field("kind"))?;
        if let Some(value) = early_needs {
            needs = Some(
                NeedsSeed(kind)
                    .deserialize(value)
                    .map_err(A::Error::custom)?,
            );
        }
        if let Some(value) = early_params {
            params = Some(
                ParamsSeed(kind)
                    .deserialize(value)
                    .map_err(A::Error::custom)?,
            );
        }
        if !kind.roles().is_empty() && needs.is_none() {
            return Err(A::Error::missing_field("needs"));
        }
        let params = match (params, kind) {
            (Some(p), _) => p,
            // Left out: every parameter takes its default, if each has one.
            (None, _) => ParamsSeed(kind)
                .deserialize(serde_norway::Value::Mapping(Default::default()))
                .map_err(|e| A::Error::custom(format!("missing `params` ({e})")))?,
        };
        Ok(match (params, needs.unwrap_or(AnyNeeds::None)) {
            (AnyParams::Dataset(params), _) => StageSpec::Dataset { params },
            (AnyParams::Schedule(params), _) => StageSpec::Schedule { params },
            (AnyParams::Model(params), _) => StageSpec::Model { params },
            (AnyParams::Train(params), AnyNeeds::Train(needs)) => {
                StageSpec::Train { needs, params }
            }
            (AnyParams::Sample(params), AnyNeeds::Sample(needs)) => {
                StageSpec::Sample { needs, params }
            }
            (AnyParams::Classifier(params), AnyNeeds::Classifier(needs)) => {
                StageSpec::Classifier { needs, params }
            }
            (AnyParams::Evaluate(params), AnyNeeds::Evaluate(needs)) => {
                StageSpec::Evaluate { needs, params }
            }
            _ => unreachable!("needs and params are both typed by the same kind"),
        })
    }
}

impl<'de> Deserialize<'de> for StageSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<StageSpec, D::Error> {
        d.deserialize_map(StageVisitor)
    }
}

/// A pipeline file as read: typed, and as a YAML tree (sweeps re-read single stages
/// from it with their swept values written in).
#[derive(Debug, Clone)]
pub struct Loaded {
    pub spec: PipelineSpec,
    pub tree: serde_norway::Value,
    pub source: String,
}

/// Reads and parses a pipeline file, applying `--set path=value` overrides (a swept
/// path set this way leaves the sweep) and `--sweep path=v1,v2` axes.
pub fn load(
    path: &Path,
    profile: Option<&str>,
    overrides: &[String],
    sweeps: &[String],
) -> Result<Loaded, SpecError> {
    let source = std::fs::read_to_string(path).map_err(|source| SpecError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut spec = parse(path, &source)?;
    // A profile's overrides come first, so `--set` can still change them.
    let mut all = Vec::new();
    let mut stated = None;
    if let Some(name) = profile {
        let chosen = spec.profiles.get(name).ok_or_else(|| SpecError::Override {
            assignment: format!("--profile {name}"),
            message: if spec.profiles.is_empty() {
                format!("{} defines no profiles", path.display())
            } else {
                format!(
                    "no such profile; {} defines: {}",
                    path.display(),
                    spec.profiles.keys().cloned().collect::<Vec<_>>().join(", ")
                )
            },
        })?;
        for (key, value) in &chosen.set {
            let text = serde_json::to_string(value).expect("YAML values serialize as JSON");
            all.push(format!("{key}={text}"));
        }
        stated = Some(format!("Profile `{name}`: {}", chosen.description));
    }
    all.extend(overrides.iter().cloned());
    let overrides = all.as_slice();
    let mut tree: serde_norway::Value =
        serde_norway::from_str(&source).map_err(|e| yaml_error(path, e))?;
    if !overrides.is_empty() {
        for assignment in overrides {
            apply_override(&mut tree, assignment)?;
        }
        spec = serde_norway::from_value(tree.clone()).map_err(|e| SpecError::Override {
            assignment: overrides.join(" "),
            message: e.to_string(),
        })?;
        for assignment in overrides {
            let Some((key, _)) = assignment.split_once('=') else {
                continue;
            };
            let path = normalize(key);
            if spec.sweep.remove(&path) {
                // Plots along a fixed axis have nothing left to compare.
                let parts: Vec<&str> = path.split('.').collect();
                let names = [
                    parts[parts.len() - 1].to_string(),
                    format!("{}.{}", parts[0], parts[parts.len() - 1]),
                ];
                spec.report.plots.retain(|p| {
                    !std::iter::once(&p.x)
                        .chain(p.series.iter().flatten())
                        .any(|a| names.contains(a))
                });
            }
        }
    }
    for axis in sweeps {
        spec.sweep
            .add_axis(axis)
            .map_err(|message| SpecError::Override {
                assignment: format!("--sweep {axis}"),
                message,
            })?;
    }
    if let Some(stated) = stated {
        spec.description = format!("{} {stated}", spec.description.trim_end());
    }
    Ok(Loaded { spec, tree, source })
}

/// Parses pipeline text; errors carry the YAML parser's line and column.
pub fn parse(path: &Path, source: &str) -> Result<PipelineSpec, SpecError> {
    serde_norway::from_str(source).map_err(|e| yaml_error(path, e))
}

fn yaml_error(path: &Path, error: serde_norway::Error) -> SpecError {
    let location = error.location().map(|l| Location {
        line: l.line(),
        column: l.column(),
    });
    // serde_norway appends "at line X column Y" itself; we print the location up front.
    let mut message = error.to_string();
    if let Some(cut) = message.find(" at line ") {
        message.truncate(cut);
    }
    SpecError::Invalid {
        path: path.to_path_buf(),
        location,
        message,
    }
}

/// `stages.ddpm.params.lr=3e-4` or the short form `ddpm.params.lr=3e-4`.
fn apply_override(tree: &mut serde_norway::Value, assignment: &str) -> Result<(), SpecError> {
    let fail = |message: String| SpecError::Override {
        assignment: assignment.to_string(),
        message,
    };
    let (path, raw) = assignment
        .split_once('=')
        .ok_or_else(|| fail("expected PATH=VALUE, e.g. ddpm.params.lr=3e-4".into()))?;
    let value: serde_norway::Value =
        serde_norway::from_str(raw).map_err(|e| fail(format!("value is not valid YAML: {e}")))?;
    let mut parts: Vec<&str> = path.split('.').collect();
    if !matches!(
        parts.first(),
        Some(&"stages" | &"name" | &"description" | &"sweep" | &"report" | &"profiles")
    ) {
        parts.insert(0, "stages");
    }
    if parts.len() >= 2 && parts[0] == "stages" {
        let stages = tree.get("stages").and_then(|s| s.as_mapping());
        let known = stages.map(|m| m.contains_key(parts[1])).unwrap_or(false);
        if !known {
            let choices: Vec<String> = stages
                .map(|m| {
                    m.keys()
                        .filter_map(|k| k.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            return Err(fail(format!(
                "no stage `{}`; stages are: {}",
                parts[1],
                choices.join(", ")
            )));
        }
    }
    let (last, parents) = parts
        .split_last()
        .ok_or_else(|| fail("empty path".into()))?;
    let mut node = tree;
    for part in parents {
        let map = node
            .as_mapping_mut()
            .ok_or_else(|| fail(format!("`{part}` is inside a value that is not a mapping")))?;
        node = map
            .entry(serde_norway::Value::String(part.to_string()))
            .or_insert_with(|| serde_norway::Value::Mapping(Default::default()));
    }
    let map = node
        .as_mapping_mut()
        .ok_or_else(|| fail(format!("the parent of `{last}` is not a mapping")))?;
    map.insert(serde_norway::Value::String(last.to_string()), value);
    Ok(())
}

/// Finds where a stage (and optionally a key inside it) is written, for errors found
/// after parsing (unknown input stage, wrong input kind, cycles).
pub fn locate(source: &str, stage: &str, key: Option<&str>) -> Option<Location> {
    let mut in_stages = false;
    let mut stage_indent = None;
    for (n, line) in source.lines().enumerate() {
        let indent = line.len() - line.trim_start().len();
        let trimmed = line.trim_start();
        if indent == 0 && !trimmed.is_empty() && !trimmed.starts_with('#') {
            in_stages = trimmed.starts_with("stages:");
            if stage_indent.is_some() {
                break;
            }
            continue;
        }
        if !in_stages {
            continue;
        }
        match stage_indent {
            None => {
                let name = trimmed.trim_start_matches(['"', '\'']);
                if name.starts_with(stage)
                    && name[stage.len()..]
                        .trim_start_matches(['"', '\''])
                        .starts_with(':')
                {
                    let Some(key) = key else {
                        return Some(Location {
                            line: n + 1,
                            column: indent + 1,
                        });
                    };
                    stage_indent = Some(indent);
                    if let Some(col) = find_key(line, key) {
                        return Some(Location {
                            line: n + 1,
                            column: col + 1,
                        });
                    }
                }
            }
            Some(si) => {
                if indent <= si && !trimmed.is_empty() && !trimmed.starts_with('#') {
                    break;
                }
                if let Some(col) = find_key(line, key?) {
                    return Some(Location {
                        line: n + 1,
                        column: col + 1,
                    });
                }
            }
        }
    }
    None
}

/// Finds where a sweep path is written under `sweep:`.
pub fn locate_sweep(source: &str, path: &str) -> Option<Location> {
    let mut in_sweep = false;
    for (n, line) in source.lines().enumerate() {
        let trimmed = line.trim_start();
        if line.len() == trimmed.len() && !trimmed.is_empty() && !trimmed.starts_with('#') {
            in_sweep = trimmed.starts_with("sweep:");
            continue;
        }
        if in_sweep {
            for candidate in [path.to_string(), format!("stages.{path}")] {
                if let Some(col) = find_key(line, &candidate) {
                    return Some(Location {
                        line: n + 1,
                        column: col + 1,
                    });
                }
            }
        }
    }
    None
}

fn find_key(line: &str, key: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(pos) = line[from..].find(key) {
        let at = from + pos;
        let before_ok = at == 0
            || !line.as_bytes()[at - 1].is_ascii_alphanumeric() && line.as_bytes()[at - 1] != b'_';
        let after = line[at + key.len()..].trim_start();
        if before_ok && after.starts_with(':') {
            return Some(at);
        }
        from = at + key.len();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locate_finds_stage_and_nested_key() {
        let src = "name: x\nstages:\n  data: { kind: dataset, params: { name: gmm } }\n  t:\n    kind: train\n    needs: { data: nope }\n";
        assert_eq!(
            locate(src, "data", None),
            Some(Location { line: 3, column: 3 })
        );
        assert_eq!(
            locate(src, "t", Some("needs")),
            Some(Location { line: 6, column: 5 })
        );
        assert_eq!(
            locate(src, "data", Some("params")),
            Some(Location {
                line: 3,
                column: 26
            })
        );
        assert_eq!(locate(src, "missing", None), None);
    }

    #[test]
    fn locate_sweep_finds_axes_and_zipped_axes() {
        let src = "name: x\nstages: {}\nsweep:\n  a.params.x: [1]\n  zip:\n    b.params.y: [1]\n";
        assert_eq!(
            locate_sweep(src, "a.params.x"),
            Some(Location { line: 4, column: 3 })
        );
        assert_eq!(
            locate_sweep(src, "b.params.y"),
            Some(Location { line: 6, column: 5 })
        );
        assert_eq!(locate_sweep(src, "c.params.z"), None);
    }
}
