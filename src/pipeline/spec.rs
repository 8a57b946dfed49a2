//! The pipeline file: typed, so a typo is an error with its line and column.

use std::collections::BTreeMap;
use std::path::Path;

use serde::de::{DeserializeSeed, Deserializer, Error as _, MapAccess, Visitor};
use serde::{Deserialize, Serialize};

use super::cluster::{ExecutorName, ResourcesSpec, SlurmSettings};
use super::expect::Expectation;
use super::locate::locate_expectation;
use super::report_spec::ReportSpec;
use super::sweep::{SweepSpec, normalize};
use crate::choices::expected_one_of;
use crate::error::{Location, SpecError};
use crate::stages::{Needs, StageKind, StageParams, StageSpec};

/// A whole pipeline file.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PipelineSpec {
    /// Names the results folder: `results/<name>/`.
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(deserialize_with = "read_stages")]
    pub stages: BTreeMap<String, StageSpec>,
    /// Values to vary: the pipeline runs once per point of their product.
    #[serde(default)]
    pub sweep: SweepSpec,
    /// What the report compares across the sweep.
    #[serde(default)]
    pub report: ReportSpec,
    /// What the pipeline claims to reproduce, checked after every run.
    #[serde(default)]
    pub expect: Vec<Expectation>,
    /// Named sets of overrides (`--profile NAME`), e.g. a smaller CPU version of a
    /// GPU-sized experiment.
    #[serde(default)]
    pub profiles: BTreeMap<String, Profile>,
    /// What each stage's cluster job asks for (`--executor slurm`); never in a key.
    #[serde(default)]
    pub resources: ResourcesSpec,
    /// The Slurm driver's settings.
    #[serde(default)]
    pub slurm: SlurmSettings,
    /// The executor the chosen profile names (profiles only: a file shared with
    /// others should not decide where they compute).
    #[serde(skip)]
    pub executor: Option<ExecutorName>,
}

/// A named set of `--set` overrides, with a sentence the report shows.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// What the profile changes and why, stated in the report.
    pub description: String,
    /// PATH: VALUE pairs, as `--set PATH=VALUE`.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, serde_json::Value>")]
    pub set: BTreeMap<String, serde_norway::Value>,
    /// Where the profile's runs compute (`runner run --executor` overrides it).
    #[serde(default)]
    pub executor: Option<ExecutorName>,
    /// Laid over the pipeline's `resources:`, field by field.
    #[serde(default)]
    pub resources: Option<ResourcesSpec>,
    /// Laid over the pipeline's `slurm:`.
    #[serde(default)]
    pub slurm: Option<SlurmSettings>,
}

/// A role's value: one stage id, or a list of them.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn ids(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

/// Reads `needs` with the roles a kind declares: an unknown role, a missing required
/// one or a list where one stage is expected is an error at its line and column.
struct NeedsSeed(StageKind);

impl<'de> DeserializeSeed<'de> for NeedsSeed {
    type Value = Needs;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Needs, D::Error> {
        if self.0.roles().is_empty() {
            return Err(D::Error::custom(format!(
                "a {} stage takes no inputs; remove `needs`",
                self.0
            )));
        }
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for NeedsSeed {
    type Value = Needs;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a mapping of input roles to stages")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Needs, A::Error> {
        let roles = self.0.roles();
        let mut found: Vec<Option<Vec<String>>> = vec![None; roles.len()];
        while let Some(key) = map.next_key::<String>()? {
            let Some(i) = roles.iter().position(|r| r.name == key) else {
                let names: Vec<&str> = roles.iter().map(|r| r.name).collect();
                return Err(A::Error::custom(format!(
                    "unknown field `{key}`, {}",
                    expected_one_of(&names)
                )));
            };
            if found[i].is_some() {
                return Err(A::Error::custom(format!("duplicate field `{key}`")));
            }
            found[i] = Some(if roles[i].many {
                map.next_value::<OneOrMany>()?.ids()
            } else {
                vec![map.next_value::<String>()?]
            });
        }
        if let Some(role) = roles
            .iter()
            .zip(&found)
            .find(|(r, f)| r.required && f.is_none())
        {
            return Err(A::Error::missing_field(role.0.name));
        }
        Ok(Needs(
            roles
                .iter()
                .zip(found)
                .filter_map(|(r, ids)| ids.map(|ids| (r.name, ids)))
                .collect(),
        ))
    }
}

/// Reads `params` as the type a kind expects.
struct ParamsSeed(StageKind);

impl<'de> DeserializeSeed<'de> for ParamsSeed {
    type Value = StageParams;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<StageParams, D::Error> {
        self.0.parse_params(d)
    }
}

/// Reads one stage (`{ kind, needs, params }`) by hand rather than as a serde-tagged
/// enum, so that `needs` and `params` are read straight from the YAML parser and
/// their errors keep the exact line, column and path.
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
        let params = match params {
            Some(p) => p,
            // Left out: every parameter takes its default, if each has one.
            None => ParamsSeed(kind)
                .deserialize(serde_norway::Value::Mapping(Default::default()))
                .map_err(|e| A::Error::custom(format!("missing `params` ({e})")))?,
        };
        Ok(StageSpec {
            needs: needs.unwrap_or_default(),
            params,
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
                    "no such profile; {} defines: {}{}",
                    path.display(),
                    spec.profiles.keys().cloned().collect::<Vec<_>>().join(", "),
                    crate::choices::suggestion(name, spec.profiles.keys().map(String::as_str))
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
        // Read as text, not as a value: the text parser names the full key of an error.
        let text = serde_norway::to_string(&tree).map_err(|e| SpecError::Override {
            assignment: overrides.join(" "),
            message: e.to_string(),
        })?;
        spec = serde_norway::from_str(&text).map_err(|e| {
            let message = match yaml_error(path, e) {
                SpecError::Invalid { message, .. } => message,
                other => other.to_string(),
            };
            SpecError::Override {
                assignment: culprits(overrides, &message),
                message,
            }
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
    if let Some(chosen) = profile.and_then(|name| spec.profiles.get(name)).cloned() {
        if let Some(resources) = &chosen.resources {
            spec.resources = spec.resources.overlaid(resources);
        }
        if let Some(slurm) = &chosen.slurm {
            spec.slurm = spec.slurm.overlaid(slurm);
        }
        spec.executor = chosen.executor;
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
    for (position, expectation) in spec.expect.iter_mut().enumerate() {
        expectation.position = position;
        if let Some(unknown) = expectation
            .profiles
            .iter()
            .find(|p| !spec.profiles.contains_key(*p))
        {
            return Err(SpecError::Invalid {
                path: path.to_path_buf(),
                location: locate_expectation(&source, position, "profiles"),
                message: format!(
                    "expectation {} ({}): no profile `{unknown}`; the file defines: {}",
                    position + 1,
                    expectation.stage,
                    spec.profiles.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            });
        }
    }
    spec.expect.retain(|e| {
        e.profiles.is_empty() || profile.is_some_and(|p| e.profiles.iter().any(|q| q == p))
    });
    Ok(Loaded { spec, tree, source })
}

/// The JSON Schema of pipeline files, derived from the types that read them (their
/// serde attributes included): editors complete and check keys with it.
pub fn schema() -> String {
    let mut schema = schemars::schema_for!(PipelineSpec);
    schema.insert("title".into(), "runner pipeline file".into());
    serde_json::to_string_pretty(&schema).expect("schemas serialize")
}

/// Parses pipeline text; errors carry the YAML parser's line and column.
pub fn parse(path: &Path, source: &str) -> Result<PipelineSpec, SpecError> {
    if let Some(location) = too_deep(source) {
        return Err(SpecError::Invalid {
            path: path.to_path_buf(),
            location: Some(location),
            message: format!(
                "lists and maps nest deeper than {MAX_DEPTH} levels here; no pipeline needs that many"
            ),
        });
    }
    serde_norway::from_str(source).map_err(|first| every_error(path, source, first))
}

thread_local! {
    /// Set while [`every_error`] reads a file without its stages.
    static SKIP_STAGES: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// `stages:` as [`PipelineSpec`] reads it: typed, or skipped while [`every_error`]
/// looks for the errors outside the stages.
fn read_stages<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, StageSpec>, D::Error> {
    if SKIP_STAGES.with(|skip| skip.get()) {
        serde::de::IgnoredAny::deserialize(d)?;
        return Ok(BTreeMap::new());
    }
    BTreeMap::deserialize(d)
}

/// Every error of a file that fails to parse, not only the first: the parser stops at
/// its first error, so the file is read again once without its stages and once per
/// stage with only that stage typed (a pipeline file is small; this runs only on
/// error). A file that is not YAML at all has one error, its first.
fn every_error(path: &Path, source: &str, first: serde_norway::Error) -> SpecError {
    let Ok(tree) = serde_norway::from_str::<serde_norway::Value>(source) else {
        return yaml_error(path, first);
    };
    let mut errors: Vec<SpecError> = Vec::new();
    SKIP_STAGES.with(|skip| skip.set(true));
    let outside = serde_norway::from_str::<PipelineSpec>(source);
    SKIP_STAGES.with(|skip| skip.set(false));
    errors.extend(outside.err().map(|e| yaml_error(path, e)));
    let ids = tree
        .get("stages")
        .and_then(|s| s.as_mapping())
        .map(|m| m.keys().filter_map(|k| k.as_str()).collect::<Vec<_>>())
        .unwrap_or_default();
    for id in ids {
        let one =
            OnlyStage(&["stages", id]).deserialize(serde_norway::Deserializer::from_str(source));
        errors.extend(one.err().map(|e| yaml_error(path, e)));
    }
    let mut seen = std::collections::HashSet::new();
    errors.retain(|e| seen.insert(e.to_string()));
    if errors.is_empty() {
        return yaml_error(path, first);
    }
    SpecError::all(errors)
}

/// Reads a pipeline file typing only the stage at key path `.0` (`["stages", id]`),
/// every other entry skipped, for [`every_error`].
struct OnlyStage<'a>(&'a [&'a str]);

impl<'de> DeserializeSeed<'de> for OnlyStage<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for OnlyStage<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a mapping")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<String>()? {
            match self.0 {
                [first, rest @ ..] if *first == key && !rest.is_empty() => {
                    map.next_value_seed(OnlyStage(rest))?
                }
                [first] if *first == key => {
                    map.next_value::<StageSpec>()?;
                }
                _ => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

/// Deepest nesting of flow lists and maps (`[`, `{`) a pipeline file may have: the
/// YAML parser takes time superlinear in the depth (12 s at 40,000 levels), and real
/// pipelines stay under ten.
const MAX_DEPTH: usize = 64;

/// Where flow nesting first passes [`MAX_DEPTH`], skipping quoted strings and
/// comments. (Block nesting that deep would need lines of thousands of spaces.)
fn too_deep(source: &str) -> Option<Location> {
    let mut depth = 0usize;
    for (n, line) in source.lines().enumerate() {
        let mut quote: Option<char> = None;
        let mut previous = ' ';
        for (column, c) in line.chars().enumerate() {
            match (quote, c) {
                (Some(q), c) if c == q => quote = None,
                (Some(_), _) => {}
                (None, '\'' | '"') => quote = Some(c),
                (None, '#') if previous.is_whitespace() => break,
                (None, '[' | '{') => {
                    depth += 1;
                    if depth > MAX_DEPTH {
                        return Some(Location {
                            line: n + 1,
                            column: column + 1,
                        });
                    }
                }
                (None, ']' | '}') => depth = depth.saturating_sub(1),
                _ => {}
            }
            previous = c;
        }
    }
    None
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
        message: crate::choices::in_user_terms(&crate::tagged::join_key(&message)),
    }
}

/// The assignments an error at a key (`stages.lin.params.steps: ...`) can come from:
/// those setting the key, a key inside it or the mapping around it; all of them when
/// none does (the error is then about the file itself).
fn culprits(overrides: &[String], message: &str) -> String {
    let key = message.split(": ").next().unwrap_or_default();
    let key = normalize(key);
    let within = |a: &str, b: &str| a == b || a.starts_with(&format!("{b}."));
    let named: Vec<&str> = overrides
        .iter()
        .map(String::as_str)
        .filter(|assignment| {
            let set = normalize(assignment.split_once('=').map_or("", |(k, _)| k));
            !set.is_empty() && (within(&set, &key) || within(&key, &set))
        })
        .collect();
    if named.is_empty() {
        overrides.join(" ")
    } else {
        named.join(" ")
    }
}

/// Switching a stage to sampler `name`: the settings of other samplers that `name`
/// does not take are removed from `map` (and returned), so `--set s.params.sampler=ddim`
/// on a stage written for `pc` is a clean switch, not an "unknown field" error.
fn switch_sampler(map: &mut serde_norway::Mapping, name: &str) -> Vec<String> {
    use crate::diffusion::samplers::SamplerParams;
    let fields = |sampler: &str| -> Vec<String> {
        SamplerParams::defaults(sampler)
            .and_then(|p| serde_json::to_value(p).ok())
            .and_then(|v| v.as_object().map(|o| o.keys().cloned().collect()))
            .unwrap_or_default()
    };
    let Some(_) = SamplerParams::defaults(name) else {
        // An unknown sampler: its own error, with the valid choices, comes next.
        return Vec::new();
    };
    let keep = fields(name);
    let others: Vec<String> = SamplerParams::NAMES
        .iter()
        .flat_map(|s| fields(s))
        .collect();
    let drop: Vec<String> = map
        .keys()
        .filter_map(|k| k.as_str())
        .filter(|k| others.iter().any(|o| o == k) && !keep.iter().any(|o| o == k))
        .map(String::from)
        .collect();
    for key in &drop {
        map.remove(key.as_str());
    }
    drop
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
        Some(
            &"stages"
                | &"name"
                | &"description"
                | &"sweep"
                | &"report"
                | &"profiles"
                | &"expect"
                | &"resources"
                | &"slurm"
        )
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
                "no stage `{}`; stages are: {}{}",
                parts[1],
                choices.join(", "),
                crate::choices::suggestion(parts[1], choices.iter().map(String::as_str))
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
    let key = serde_norway::Value::String(last.to_string());
    if *last == "sampler"
        && let Some(name) = value.as_str()
    {
        for dropped in switch_sampler(map, name) {
            eprintln!(
                "note: {assignment}: dropped `{dropped}`, which sampler `{name}` does not take"
            );
        }
    }
    // `~` (null) leaves the key out, so the default applies, as in sweeps.
    if value.is_null() {
        map.remove(&key);
    } else {
        map.insert(key, value);
    }
    Ok(())
}
