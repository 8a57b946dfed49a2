//! Sweeps: the parameter values a pipeline varies, and the points of their product.
//!
//! ```yaml
//! sweep:
//!   samples.params.sampler: [ancestral, annealed_langevin]   # an axis
//!   zip:                                                     # axes that vary together
//!     betas.params.steps: [50, 200, 1000]
//!     tr.params.steps: [1000, 2000, 4000]
//! ```
//! The points are the cartesian product of the groups (a plain axis is a group of one,
//! a `zip` group's lists are walked in step). Which stages fork is decided in
//! [`crate::pipeline::graph`].

use std::collections::BTreeMap;

use serde::Deserialize;
use serde::de::{Deserializer, Error as _, MapAccess, Visitor};
use serde_norway::Value;

use crate::stages::StageSpec;

/// Sweeps larger than this are almost certainly a mistake (and would not fit a report).
pub const MAX_POINTS: usize = 100_000;

/// The `sweep:` section as written: groups of axes in file order.
#[derive(Debug, Clone, Default)]
pub struct SweepSpec {
    pub groups: Vec<Vec<AxisSpec>>,
}

/// One swept path and its values, as written.
#[derive(Debug, Clone)]
pub struct AxisSpec {
    /// `stage.params.key` (or `stage.needs.role`).
    pub path: String,
    pub values: Vec<Value>,
}

/// `stages.x.params.y` and `x.params.y` name the same value.
pub fn normalize(path: &str) -> String {
    path.strip_prefix("stages.").unwrap_or(path).to_string()
}

impl SweepSpec {
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// `--set` on a swept path fixes it: the axis leaves the sweep (a sweep of one).
    /// Returns whether the path was swept.
    pub fn remove(&mut self, path: &str) -> bool {
        let path = normalize(path);
        let before: usize = self.groups.iter().map(Vec::len).sum();
        for group in &mut self.groups {
            group.retain(|a| a.path != path);
        }
        self.groups.retain(|g| !g.is_empty());
        before != self.groups.iter().map(Vec::len).sum::<usize>()
    }

    /// `--sweep path=v1,v2`: a new axis (replacing one on the same path). Each value is
    /// read as YAML, so `hidden=[64,64],[128,128]` gives two lists.
    pub fn add_axis(&mut self, assignment: &str) -> Result<(), String> {
        let (path, raw) = assignment.split_once('=').ok_or(
            "expected PATH=V1,V2,..., e.g. samples.params.sampler=ancestral,annealed_langevin",
        )?;
        let values: Vec<Value> = serde_norway::from_str(&format!("[{raw}]"))
            .map_err(|e| format!("values are not valid YAML: {e}"))?;
        if values.is_empty() {
            return Err("give at least one value".into());
        }
        self.remove(path);
        self.groups.push(vec![AxisSpec {
            path: normalize(path),
            values,
        }]);
        Ok(())
    }
}

/// `stage.params.key: [values]` entries, and `zip:` groups of them.
impl schemars::JsonSchema for SweepSpec {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "SweepSpec".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let values = serde_json::json!({ "type": "array", "minItems": 1 });
        let group = serde_json::json!({ "type": "object", "additionalProperties": values });
        schemars::json_schema!({
            "type": "object",
            "description": "values to vary: `stage.params.key: [v1, v2]`; `zip:` axes vary together",
            "properties": { "zip": { "oneOf": [group, { "type": "array", "items": group }] } },
            "additionalProperties": values
        })
    }
}

impl<'de> Deserialize<'de> for SweepSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<SweepSpec, D::Error> {
        d.deserialize_map(SweepVisitor)
    }
}

struct SweepVisitor;

impl<'de> Visitor<'de> for SweepVisitor {
    type Value = SweepSpec;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a mapping of `stage.params.key: [values]` (and optionally `zip: {path: [values], ...}`)")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<SweepSpec, A::Error> {
        let mut groups = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            if key == "zip" {
                let value: Value = map.next_value()?;
                let members: Vec<Value> = match value {
                    Value::Sequence(items) => items,
                    other => vec![other],
                };
                for member in members {
                    groups.push(zip_group(member).map_err(A::Error::custom)?);
                }
            } else {
                let values: Vec<Value> = map.next_value()?;
                groups.push(vec![axis(&key, values).map_err(A::Error::custom)?]);
            }
        }
        Ok(SweepSpec { groups })
    }
}

fn axis(path: &str, values: Vec<Value>) -> Result<AxisSpec, String> {
    if values.is_empty() {
        return Err(format!("sweep axis `{path}` has no values"));
    }
    Ok(AxisSpec {
        path: normalize(path),
        values,
    })
}

fn zip_group(value: Value) -> Result<Vec<AxisSpec>, String> {
    let Value::Mapping(map) = value else {
        return Err("`zip` takes a mapping of `stage.params.key: [values]` with lists of equal length (or a list of such mappings)".into());
    };
    let mut group = Vec::new();
    for (k, v) in map {
        let path = k
            .as_str()
            .ok_or("zip keys must be paths like `stage.params.key`")?
            .to_string();
        let Value::Sequence(values) = v else {
            return Err(format!("zip axis `{path}` must be a list of values"));
        };
        group.push(axis(&path, values)?);
    }
    if let Some(first) = group.first() {
        if let Some(other) = group.iter().find(|a| a.values.len() != first.values.len()) {
            return Err(format!(
                "zipped axes vary together, so their lists need equal lengths: `{}` has {} values, `{}` has {}",
                first.path,
                first.values.len(),
                other.path,
                other.values.len()
            ));
        }
    } else {
        return Err("`zip` group is empty".into());
    }
    Ok(group)
}

/// One swept value, resolved against the pipeline's stages.
#[derive(Debug, Clone)]
pub struct Axis {
    /// `stage.params.key`.
    pub path: String,
    pub stage: String,
    /// Path inside the stage's mapping, e.g. `["params", "steps"]`.
    pub field: Vec<String>,
    /// Short name for labels and table columns: the last path segment, qualified with
    /// the stage when two axes would share it.
    pub name: String,
    pub values: Vec<Value>,
    /// Values as labels show them.
    pub shown: Vec<String>,
    /// The group (cartesian factor) this axis belongs to.
    pub group: usize,
}

impl Axis {
    /// True when every value is a number: such an axis can be a plot's x axis.
    pub fn is_numeric(&self) -> bool {
        self.values.iter().all(|v| v.is_number())
    }

    /// A seed (`ddpm.params.seed`): its values repeat an experiment rather than vary
    /// it, so reports average over it and draw the spread.
    pub fn is_seed(&self) -> bool {
        self.field.last().is_some_and(|f| f == "seed")
    }

    pub fn number(&self, index: usize) -> Option<f64> {
        self.values[index].as_f64()
    }
}

/// The resolved sweep of a plan (empty when the pipeline has none).
#[derive(Debug, Clone, Default)]
pub struct Sweep {
    pub axes: Vec<Axis>,
    /// Number of values of each group.
    pub group_sizes: Vec<usize>,
}

impl Sweep {
    /// The position of the axis named `name` (as labels and `where:`/`at:` name it).
    pub fn axis_index(&self, name: &str) -> Option<usize> {
        self.axes.iter().position(|a| a.name == name)
    }

    /// Checks every path against the stages. Errors are (path, message).
    pub fn resolve(
        spec: &SweepSpec,
        stages: &BTreeMap<String, StageSpec>,
    ) -> Result<Sweep, (String, String)> {
        let mut axes = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (group, members) in spec.groups.iter().enumerate() {
            for a in members {
                let fail = |m: String| (a.path.clone(), m);
                if !seen.insert(a.path.clone()) {
                    return Err(fail(format!("`{}` is swept twice; keep one list", a.path)));
                }
                let parts: Vec<&str> = a.path.split('.').collect();
                let stage = parts[0];
                if !stages.contains_key(stage) {
                    let names: Vec<&str> = stages.keys().map(String::as_str).collect();
                    return Err(fail(format!(
                        "sweep path `{}`: no stage `{stage}`; stages are: {}",
                        a.path,
                        names.join(", ")
                    )));
                }
                if parts.len() < 3
                    || !matches!(parts[1], "params" | "needs")
                    || parts.iter().any(|p| p.is_empty())
                {
                    return Err(fail(format!(
                        "sweep path `{}` must look like `{stage}.params.KEY` (or `{stage}.needs.ROLE` to swap an input)",
                        a.path
                    )));
                }
                axes.push(Axis {
                    path: a.path.clone(),
                    stage: stage.to_string(),
                    field: parts[1..].iter().map(|s| s.to_string()).collect(),
                    name: parts[parts.len() - 1].to_string(),
                    shown: a.values.iter().map(show).collect(),
                    values: a.values.clone(),
                    group,
                });
            }
        }
        // Qualify names that would clash (`a.steps` and `b.steps`).
        let names: Vec<String> = axes.iter().map(|a| a.name.clone()).collect();
        for a in &mut axes {
            if names.iter().filter(|n| **n == a.name).count() > 1 {
                a.name = format!("{}.{}", a.stage, a.name);
            }
        }
        let sweep = Sweep {
            axes,
            group_sizes: spec.groups.iter().map(|g| g[0].values.len()).collect(),
        };
        let points = sweep
            .group_sizes
            .iter()
            .try_fold(1usize, |acc, &n| acc.checked_mul(n));
        if points.is_none_or(|n| n > MAX_POINTS) {
            let path = spec
                .groups
                .last()
                .map(|g| g[0].path.clone())
                .unwrap_or_default();
            return Err((
                path,
                format!(
                    "the sweep has more than {MAX_POINTS} points; split it into smaller sweeps"
                ),
            ));
        }
        Ok(sweep)
    }

    pub fn is_empty(&self) -> bool {
        self.axes.is_empty()
    }

    /// Number of points (1 without a sweep).
    pub fn len(&self) -> usize {
        self.group_sizes.iter().product()
    }

    /// The value index of every group at point `p`; the last group varies fastest,
    /// like nested loops written in file order.
    pub fn point(&self, mut p: usize) -> Vec<usize> {
        let mut indices = vec![0; self.group_sizes.len()];
        for (g, &size) in self.group_sizes.iter().enumerate().rev() {
            indices[g] = p % size;
            p /= size;
        }
        indices
    }

    /// Every axis at point `groups` as (axis, value index).
    pub fn coords(&self, groups: &[usize]) -> Vec<(usize, usize)> {
        self.axes
            .iter()
            .enumerate()
            .map(|(i, a)| (i, groups[a.group]))
            .collect()
    }

    /// `sampler=ancestral,steps=50`.
    pub fn label(&self, coords: &[(usize, usize)]) -> String {
        coords
            .iter()
            .filter(|&&(a, v)| !self.axes[a].values[v].is_null())
            .map(|&(a, v)| format!("{}={}", self.axes[a].name, self.axes[a].shown[v]))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// A stage's mapping with the swept values of `coords` written into it; a null
    /// value leaves the key out, so that point gets the default (zipped axes use it
    /// for settings only some of their values take, e.g. `eta` of `ddim`).
    pub fn apply(&self, stage: &Value, coords: &[(usize, usize)]) -> Value {
        let mut value = stage.clone();
        for &(a, v) in coords {
            let axis = &self.axes[a];
            let mut node = &mut value;
            for (i, part) in axis.field.iter().enumerate() {
                if !node.is_mapping() {
                    *node = Value::Mapping(Default::default());
                }
                let map = node.as_mapping_mut().expect("made a mapping above");
                let key = Value::String(part.clone());
                if i + 1 == axis.field.len() {
                    match &axis.values[v] {
                        Value::Null => map.remove(&key),
                        value => map.insert(key, value.clone()),
                    };
                    break;
                }
                node = map
                    .entry(key)
                    .or_insert_with(|| Value::Mapping(Default::default()));
            }
        }
        value
    }
}

/// A value as a label shows it: scalars bare, lists and mappings as compact JSON.
pub fn show(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => "-".into(),
        other => serde_json::to_string(other).unwrap_or_else(|_| "?".into()),
    }
}

/// A label made safe as a folder name.
pub fn folder_name(label: &str) -> String {
    label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._=,+-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> Result<SweepSpec, serde_norway::Error> {
        serde_norway::from_str(yaml)
    }

    #[test]
    fn axes_and_zip_groups_are_read_in_file_order() {
        let s =
            spec("b.params.x: [1, 2]\nzip:\n  a.params.y: [3, 4, 5]\n  a.params.z: [a, b, c]\n")
                .unwrap();
        assert_eq!(s.groups.len(), 2);
        assert_eq!(s.groups[0][0].path, "b.params.x");
        assert_eq!(s.groups[1].len(), 2);
        let several = spec("zip:\n  - { a.params.y: [1, 2] }\n  - { a.params.z: [3] }\n").unwrap();
        assert_eq!(several.groups.len(), 2);
    }

    #[test]
    fn bad_sweeps_say_what_is_wrong() {
        let e = spec("zip:\n  a.params.y: [1, 2]\n  a.params.z: [1]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("equal lengths"), "{e}");
        let e = spec("a.params.y: []\n").unwrap_err().to_string();
        assert!(e.contains("no values"), "{e}");
        let e = spec("a.params.y: 3\n").unwrap_err().to_string();
        assert!(e.contains("sequence"), "{e}");
    }

    #[test]
    fn points_walk_the_product_last_group_fastest() {
        let sweep = Sweep {
            axes: vec![],
            group_sizes: vec![2, 3],
        };
        assert_eq!(sweep.len(), 6);
        let all: Vec<Vec<usize>> = (0..6).map(|p| sweep.point(p)).collect();
        assert_eq!(
            all,
            vec![
                vec![0, 0],
                vec![0, 1],
                vec![0, 2],
                vec![1, 0],
                vec![1, 1],
                vec![1, 2]
            ]
        );
    }

    #[test]
    fn command_line_axes_replace_and_remove() {
        let mut s = spec("a.params.y: [1, 2]\n").unwrap();
        s.add_axis("stages.a.params.y=[8,8],[16,16]").unwrap();
        assert_eq!(s.groups.len(), 1);
        assert_eq!(s.groups[0][0].values.len(), 2);
        assert_eq!(show(&s.groups[0][0].values[1]), "[16,16]");
        s.add_axis("a.params.z=x,y,z").unwrap();
        s.remove("a.params.y");
        assert_eq!(s.groups.len(), 1);
        assert_eq!(s.groups[0][0].path, "a.params.z");
        assert!(s.add_axis("nonsense").is_err());
    }

    #[test]
    fn folder_names_are_safe() {
        assert_eq!(
            folder_name("hidden=[64,64],lr=0.001"),
            "hidden=_64,64_,lr=0.001"
        );
        assert_eq!(folder_name("x=a/b"), "x=a_b");
    }
}
