//! The stage DAG: inputs resolved and checked, cycles rejected, keys computed in
//! dependency order.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use petgraph::algo::toposort;
use petgraph::graph::{DiGraph, NodeIndex};
use serde::Deserialize;

use super::key::{KeyInput, stage_key};
use super::locate::{locate, locate_expectation, locate_keys, locate_sweep};
use super::report_spec::ReportSpec;
use super::spec::Loaded;
use super::sweep::{Sweep, folder_name};
use crate::error::SpecError;
use crate::stages::{Cost, Neighbours, StageKind, StageSpec};

/// One stage at one or more sweep points, ready to run.
#[derive(Debug, Clone)]
pub struct StageNode {
    pub id: String,
    /// The sweep coordinates that reach this stage, e.g. `sampler=ancestral,steps=50`;
    /// empty when no swept value does (the stage is shared by every point).
    pub label: String,
    /// The (axis, value index) pairs behind `label`.
    pub coords: Vec<(usize, usize)>,
    pub spec: StageSpec,
    pub params: serde_json::Value,
    /// (role, input nodes).
    pub needs: Vec<(String, Vec<NodeIndex>)>,
    pub key: String,
    /// Its estimated memory and arithmetic, checked against this machine at planning.
    pub cost: Cost,
}

impl StageNode {
    pub fn kind(&self) -> StageKind {
        self.spec.kind()
    }

    /// `id`, or `id[label]` for a forked stage: how logs and tables name it.
    pub fn name(&self) -> String {
        if self.label.is_empty() {
            self.id.clone()
        } else {
            format!("{}[{}]", self.id, self.label)
        }
    }
}

/// One point of the sweep: its value index per group and the node of every stage.
#[derive(Debug, Clone)]
pub struct Point {
    pub groups: Vec<usize>,
    /// Indexed like `Plan::stages`.
    pub nodes: Vec<NodeIndex>,
}

/// A validated pipeline: the expanded graph and a dependency order over it.
#[derive(Debug)]
pub struct Plan {
    pub name: String,
    pub description: String,
    pub path: PathBuf,
    pub source: String,
    pub graph: DiGraph<StageNode, String>,
    /// Topological order (inputs before the stages that need them).
    pub order: Vec<NodeIndex>,
    /// Stage ids in dependency order.
    pub stages: Vec<String>,
    pub sweep: Sweep,
    /// Every sweep point (one without a sweep).
    pub points: Vec<Point>,
    pub report: ReportSpec,
    /// The pipeline's claims (`expect:`), judged by the report.
    pub expect: Vec<super::expect::Expectation>,
    /// What each stage's cluster job asks for (profile laid over the file).
    pub resources: super::cluster::ResourcesSpec,
    /// The Slurm driver's settings (profile laid over the file).
    pub slurm: super::cluster::SlurmSettings,
    /// The executor the chosen profile names, if any.
    pub executor: Option<super::cluster::ExecutorName>,
    /// Number of nodes per stage id (more than one: the stage forks).
    forks: HashMap<String, usize>,
}

impl Plan {
    /// Nodes in dependency order.
    pub fn nodes(&self) -> impl Iterator<Item = &StageNode> {
        self.order.iter().map(|&i| &self.graph[i])
    }

    /// The nodes as the file lists their stages (a stage's sweep forks together, in
    /// the order they run), which is how a user reads the pipeline.
    pub fn nodes_in_file_order(&self) -> Vec<&StageNode> {
        let line = |id: &str| locate(&self.source, id, None).map_or(usize::MAX, |l| l.line);
        let mut ids: Vec<&String> = self.stages.iter().collect();
        ids.sort_by_key(|id| line(id));
        ids.iter().flat_map(|id| self.nodes_of(id)).collect()
    }

    /// The nodes of one stage id (several when the sweep forks it).
    pub fn nodes_of<'p>(&'p self, id: &'p str) -> impl Iterator<Item = &'p StageNode> + 'p {
        self.nodes().filter(move |n| n.id == id)
    }

    pub fn has_stage(&self, id: &str) -> bool {
        self.forks.contains_key(id)
    }

    /// Does the sweep give this stage more than one node?
    pub fn is_forked(&self, id: &str) -> bool {
        self.forks.get(id).copied().unwrap_or(0) > 1
    }

    /// Where the report links a node: `stages/<id>`, or `stages/<id>/<label>` when forked.
    pub fn link(&self, node: &StageNode) -> String {
        if self.is_forked(&node.id) {
            let label = if node.label.is_empty() {
                "base".to_string()
            } else {
                folder_name(&node.label)
            };
            format!("stages/{}/{label}", node.id)
        } else {
            format!("stages/{}", node.id)
        }
    }

    /// A point's full coordinates, e.g. `sampler=ancestral,steps=50` (empty without a sweep).
    pub fn point_label(&self, point: &Point) -> String {
        self.sweep.label(&self.sweep.coords(&point.groups))
    }

    /// The node of stage `id` at `point`.
    pub fn node_at(&self, point: &Point, id: &str) -> Option<&StageNode> {
        let position = self.stages.iter().position(|s| s == id)?;
        Some(&self.graph[point.nodes[position]])
    }
}

/// Checks the pipeline, expands its sweep and builds the DAG. Every error names the
/// file, where possible the line and column, the stage, and the valid choices.
pub fn build(path: &Path, loaded: Loaded) -> Result<Plan, SpecError> {
    let Loaded { spec, tree, source } = loaded;
    let source = source.as_str();
    let err = |stage: Option<&str>, key: Option<&str>, message: String| SpecError::Invalid {
        path: path.to_path_buf(),
        location: stage.and_then(|s| locate(source, s, key).or_else(|| locate(source, s, None))),
        message,
    };
    let sweep_err = |axis: &str, message: String| SpecError::Invalid {
        path: path.to_path_buf(),
        location: locate_sweep(source, axis),
        message,
    };
    // Every error found before the graph is built is reported, not only the first.
    let mut errors: Vec<SpecError> = Vec::new();
    if !is_safe_name(&spec.name) {
        errors.push(err(
            None,
            None,
            format!(
                "pipeline name `{}` must be 1 to {MAX_NAME} letters, digits, `_` and `-` (it names a folder)",
                short(&spec.name)
            ),
        ));
    }
    if spec.stages.is_empty() {
        errors.push(err(None, None, "the pipeline has no stages".into()));
        return Err(SpecError::all(errors));
    }
    for (id, stage) in &spec.stages {
        if !is_safe_name(id) {
            errors.push(err(
                Some(id),
                None,
                format!(
                    "stage id `{}` must be 1 to {MAX_NAME} letters, digits, `_` and `-` (it names a folder)",
                    short(id)
                ),
            ));
            continue;
        }
        if let Err((role, m)) = check_needs(id, stage, &spec.stages) {
            errors.push(err(Some(id), Some(role), m));
        }
    }
    // `resources.stages` (of the file or a profile) must name stages.
    let named = std::iter::once((None, &spec.resources)).chain(
        spec.profiles
            .iter()
            .filter_map(|(p, prof)| Some((Some(p), prof.resources.as_ref()?))),
    );
    for (profile, resources) in named {
        for id in resources
            .stages
            .keys()
            .filter(|id| !spec.stages.contains_key(*id))
        {
            let mut keys = vec!["resources", "stages", id.as_str()];
            if let Some(p) = profile {
                keys.splice(0..0, ["profiles", p.as_str()]);
            }
            let stages: Vec<&str> = spec.stages.keys().map(String::as_str).collect();
            errors.push(SpecError::Invalid {
                path: path.to_path_buf(),
                location: locate_keys(source, &keys),
                message: format!(
                    "{}: no stage `{id}`; stages are: {}{}",
                    keys.join("."),
                    stages.join(", "),
                    crate::choices::suggestion(id, stages.iter().copied())
                ),
            });
        }
    }
    let sweep = match Sweep::resolve(&spec.sweep, &spec.stages) {
        Ok(sweep) => sweep,
        Err((axis, m)) => {
            errors.push(sweep_err(&axis, m));
            return Err(SpecError::all(errors));
        }
    };
    if let Err(m) = spec.report.validate(&sweep) {
        errors.push(SpecError::Invalid {
            path: path.to_path_buf(),
            location: None,
            message: m,
        });
    }
    let evaluates: Vec<String> = spec
        .stages
        .iter()
        .filter(|(_, s)| s.kind() == StageKind::Evaluate)
        .map(|(id, _)| id.clone())
        .collect();
    let mut evaluated: Vec<String> = Vec::new();
    for id in &evaluates {
        let needs = &spec.stages[id].needs;
        // The reference and classifier have rows too (fid_floor, classifier_accuracy).
        let roles = ["samples", "models", "reference", "classifier"];
        for judged in roles.iter().flat_map(|role| needs.ids(role)) {
            if !evaluated.contains(judged) {
                evaluated.push(judged.clone());
            }
        }
    }
    for expectation in &spec.expect {
        let i = expectation.position;
        if let Err((key, m)) = expectation.validate(&evaluated, &evaluates, &sweep) {
            errors.push(SpecError::Invalid {
                path: path.to_path_buf(),
                location: locate_expectation(source, i, key),
                message: format!("expectation {} ({}): {m}", i + 1, expectation.stage),
            });
        }
    }
    SpecError::gathered(std::mem::take(&mut errors))?;

    // Stage ids in dependency order, counting inputs a sweep may swap in.
    let ids: Vec<&String> = spec.stages.keys().collect();
    let position: HashMap<&str, usize> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.as_str(), i))
        .collect();
    let mut possible: Vec<Vec<usize>> = ids
        .iter()
        .map(|id| {
            spec.stages[*id]
                .needs
                .0
                .clone()
                .into_iter()
                .flat_map(|(_, v)| v)
                .map(|n| position[n.as_str()])
                .collect()
        })
        .collect();
    for axis in sweep.axes.iter().filter(|a| a.field[0] == "needs") {
        for value in &axis.values {
            let named = value.as_str().and_then(|v| position.get(v));
            let Some(&input) = named else {
                let names: Vec<&str> = ids.iter().map(|s| s.as_str()).collect();
                return Err(sweep_err(
                    &axis.path,
                    format!(
                        "sweep `{}`: `{}` is not a stage; stages are: {}",
                        axis.path,
                        super::sweep::show(value),
                        names.join(", ")
                    ),
                ));
            };
            possible[position[axis.stage.as_str()]].push(input);
        }
    }
    let mut id_graph = DiGraph::<usize, ()>::new();
    let id_nodes: Vec<NodeIndex> = (0..ids.len()).map(|i| id_graph.add_node(i)).collect();
    for (to, froms) in possible.iter().enumerate() {
        for &from in froms {
            id_graph.add_edge(id_nodes[from], id_nodes[to], ());
        }
    }
    let id_order: Vec<usize> = toposort(&id_graph, None)
        .map_err(|cycle| {
            let id = ids[id_graph[cycle.node_id()]];
            err(Some(id), Some("needs"), format!("stage `{id}` depends on itself through its inputs (a cycle); remove one of the inputs in the cycle"))
        })?
        .into_iter()
        .map(|n| id_graph[n])
        .collect();
    let stage_ids: Vec<String> = id_order.iter().map(|&i| ids[i].clone()).collect();
    let pos: HashMap<&str, usize> = stage_ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.as_str(), i))
        .collect();
    // Per stage (in order): its possible inputs, the axes and groups that touch it.
    let possible: Vec<Vec<usize>> = id_order
        .iter()
        .map(|&i| {
            let mut v: Vec<usize> = possible[i].iter().map(|&q| pos[ids[q].as_str()]).collect();
            v.sort_unstable();
            v.dedup();
            v
        })
        .collect();
    let touching: Vec<Vec<usize>> = stage_ids
        .iter()
        .map(|id| {
            (0..sweep.axes.len())
                .filter(|&a| &sweep.axes[a].stage == id)
                .collect()
        })
        .collect();
    let groups_touching: Vec<Vec<usize>> = touching
        .iter()
        .map(|axes| {
            let mut g: Vec<usize> = axes.iter().map(|&a| sweep.axes[a].group).collect();
            g.dedup();
            g
        })
        .collect();
    let stage_values = tree.get("stages");

    let mut graph: DiGraph<StageNode, String> = DiGraph::new();
    let mut order = Vec::new();
    let mut memo: HashMap<(usize, Vec<usize>, Vec<NodeIndex>), NodeIndex> = HashMap::new();
    let mut by_key: HashMap<(usize, String), NodeIndex> = HashMap::new();
    let mut points = Vec::with_capacity(sweep.len());
    for p in 0..sweep.len() {
        let groups = sweep.point(p);
        let mut chosen: Vec<NodeIndex> = Vec::with_capacity(stage_ids.len());
        // Stages of this point that failed their checks, or read one that did: they
        // get no node, and are not checked (their errors would only repeat).
        let mut failed = vec![false; stage_ids.len()];
        for (s, id) in stage_ids.iter().enumerate() {
            // Records the stage's error and goes on with the next stage.
            macro_rules! fail {
                ($error:expr) => {{
                    let error: SpecError = $error;
                    let text = error.to_string();
                    if !errors.iter().any(|e| e.to_string() == text) {
                        errors.push(error);
                    }
                    failed[s] = true;
                    chosen.push(NodeIndex::end());
                    continue;
                }};
            }
            if possible[s].iter().any(|&q| failed[q]) {
                failed[s] = true;
                chosen.push(NodeIndex::end());
                continue;
            }
            let own: Vec<usize> = groups_touching[s].iter().map(|&g| groups[g]).collect();
            let inputs: Vec<NodeIndex> = possible[s].iter().map(|&q| chosen[q]).collect();
            let memo_key = (s, own, inputs);
            if let Some(&ix) = memo.get(&memo_key) {
                chosen.push(ix);
                continue;
            }
            let own_coords: Vec<(usize, usize)> = touching[s]
                .iter()
                .map(|&a| (a, groups[sweep.axes[a].group]))
                .collect();
            let at = || format!("at sweep point `{}`", sweep.label(&own_coords));
            let stage = if own_coords.is_empty() {
                spec.stages[id].clone()
            } else {
                let base = stage_values
                    .and_then(|m| m.get(id.as_str()))
                    .cloned()
                    .unwrap_or_default();
                let value = sweep.apply(&base, &own_coords);
                let first = &sweep.axes[own_coords[0].0].path;
                let stage = match StageSpec::deserialize(value) {
                    Ok(stage) => stage,
                    Err(e) => fail!(sweep_err(first, format!("stage `{id}` {}: {e}", at()))),
                };
                if let Err((_, m)) = check_needs(id, &stage, &spec.stages) {
                    fail!(sweep_err(first, format!("{} {m}", at())));
                }
                stage
            };
            let needs: Vec<(String, Vec<NodeIndex>)> = stage
                .needs
                .0
                .clone()
                .into_iter()
                .map(|(role, inputs)| {
                    (
                        role.to_string(),
                        inputs.iter().map(|i| chosen[pos[i.as_str()]]).collect(),
                    )
                })
                .collect();
            // Other stages as this point of the sweep sees them.
            let lookup = |other: &str| {
                pos.get(other)
                    .and_then(|&q| chosen.get(q))
                    .map(|&ix| &graph[ix].spec)
                    .map(|s: &StageSpec| (&s.needs, s.params.as_any()))
            };
            let neighbours = Neighbours::new(&stage.needs, &lookup);
            let about = |m: String| {
                let message = if own_coords.is_empty() {
                    format!("stage `{id}`: {m}")
                } else {
                    format!("stage `{id}` {}: {m}", at())
                };
                err(Some(id), Some("params"), message)
            };
            if let Err(m) = stage.params.validate(&neighbours) {
                fail!(about(m));
            }
            let cost = stage.params.cost(&neighbours);
            if let Some(m) = too_big(&cost, crate::machine::memory_limit(), "this machine has") {
                fail!(about(m));
            }
            let params = match stage.params.resolved(&neighbours) {
                Ok(params) => params,
                Err(m) => fail!(about(m)),
            };
            let input_keys: Vec<(String, Vec<String>)> = needs
                .iter()
                .map(|(role, ixs)| {
                    (
                        role.clone(),
                        ixs.iter().map(|&ix| graph[ix].key.clone()).collect(),
                    )
                })
                .collect();
            let key = stage_key(&KeyInput {
                kind: stage.kind().name(),
                stage_version: stage.kind().version(),
                params: &params,
                inputs: &input_keys,
            });
            if let Some(&ix) = by_key.get(&(s, key.clone())) {
                memo.insert(memo_key, ix);
                chosen.push(ix);
                continue;
            }
            let mut coords = own_coords.clone();
            for (_, ixs) in &needs {
                for &ix in ixs {
                    coords.extend(graph[ix].coords.iter().copied());
                }
            }
            coords.sort_unstable();
            coords.dedup();
            let node = StageNode {
                id: id.clone(),
                label: sweep.label(&coords),
                coords,
                spec: stage,
                params,
                needs: needs.clone(),
                key: key.clone(),
                cost,
            };
            let ix = graph.add_node(node);
            for (role, ixs) in &needs {
                for &from in ixs {
                    graph.add_edge(from, ix, role.clone());
                }
            }
            order.push(ix);
            by_key.insert((s, key), ix);
            memo.insert(memo_key, ix);
            chosen.push(ix);
        }
        points.push(Point {
            groups,
            nodes: chosen,
        });
    }
    SpecError::gathered(errors)?;
    let mut forks = HashMap::new();
    for node in graph.node_weights() {
        *forks.entry(node.id.clone()).or_insert(0) += 1;
    }
    Ok(Plan {
        name: spec.name,
        description: spec.description,
        path: path.to_path_buf(),
        source: source.to_string(),
        graph,
        order,
        stages: stage_ids,
        sweep,
        points,
        report: spec.report,
        expect: spec.expect,
        resources: spec.resources,
        slurm: spec.slurm,
        executor: spec.executor,
        forks,
    })
}

/// Inputs must name stages of the right kind. Errors are (role, message).
fn check_needs(
    id: &str,
    stage: &StageSpec,
    all: &BTreeMap<String, StageSpec>,
) -> Result<(), (&'static str, String)> {
    let kind = stage.kind();
    for (role, inputs) in stage.needs.0.iter().cloned() {
        let want = kind
            .roles()
            .iter()
            .find(|r| r.name == role)
            .map(|r| r.kind)
            .expect("roles match needs");
        if inputs.is_empty() {
            return Err((role, format!("stage `{id}`: input `{role}` names no stage")));
        }
        let choices = || {
            let names: Vec<&str> = all
                .iter()
                .filter(|(_, s)| s.kind().name() == want)
                .map(|(n, _)| n.as_str())
                .collect();
            if names.is_empty() {
                format!("no {want} stage is defined")
            } else {
                format!("{want} stages: {}", names.join(", "))
            }
        };
        for input in inputs {
            let Some(got) = all.get(&input).map(|s| s.kind().name()) else {
                return Err((
                    role,
                    format!(
                        "stage `{id}`: input `{role}` names `{input}`, which is not a stage of this pipeline; {}",
                        choices()
                    ),
                ));
            };
            if got != want {
                return Err((
                    role,
                    format!(
                        "stage `{id}`: input `{role}` must be a {want} stage, but `{input}` is a {got} stage; {}",
                        choices()
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Why a stage of this cost cannot run with `memory` bytes, if it cannot; `has` says
/// whose bytes they are ("this machine has", "only ... are free now").
pub fn too_big(cost: &Cost, memory: Option<f64>, has: &str) -> Option<String> {
    let memory = memory?;
    (cost.bytes > memory).then(|| {
        format!(
            "needs about {} of memory ({}), and {has} {}; lower those sizes, or run it where memory suffices",
            crate::machine::human_bytes(cost.bytes),
            cost.memory,
            crate::machine::human_bytes(memory)
        )
    })
}

/// Longest pipeline name or stage id: both name folders, and a sweep's forks add
/// their coordinates to a stage's, within the file system's 255 bytes.
const MAX_NAME: usize = 100;

/// A name as an error message shows it: the start of a very long one.
fn short(name: &str) -> String {
    match name.char_indices().nth(40) {
        Some((cut, _)) => format!("{}... ({} characters)", &name[..cut], name.chars().count()),
        None => name.to_string(),
    }
}

/// The `name:` of a pipeline file that may not load as a whole (its data missing, a
/// stage invalid), so `gc` can still find that pipeline's last run.
pub fn name_of(path: &Path) -> Option<String> {
    let source = std::fs::read_to_string(path).ok()?;
    let spec = super::spec::parse(path, &source).ok()?;
    is_safe_name(&spec.name).then_some(spec.name)
}

fn is_safe_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// The graph in Graphviz DOT, nodes labelled with kind and key prefix.
pub fn to_dot(plan: &Plan) -> String {
    let mut out = format!(
        "digraph \"{}\" {{\n  rankdir=LR;\n  node [shape=box, fontname=\"Helvetica\"];\n",
        plan.name
    );
    let escaped = |node: &StageNode| node.name().replace('\\', "\\\\").replace('"', "\\\"");
    let quoted = |node: &StageNode| format!("\"{}\"", escaped(node));
    for node in plan.nodes() {
        out.push_str(&format!(
            "  {} [label=\"{}\\n{} {}\"];\n",
            quoted(node),
            escaped(node),
            node.kind(),
            &node.key[..8]
        ));
    }
    for edge in plan.graph.edge_indices() {
        let (a, b) = plan.graph.edge_endpoints(edge).expect("edge exists");
        out.push_str(&format!(
            "  {} -> {} [label=\"{}\"];\n",
            quoted(&plan.graph[a]),
            quoted(&plan.graph[b]),
            plan.graph[edge]
        ));
    }
    out.push_str("}\n");
    out
}

/// Test support: the plan of a pipeline given as text (named `k.yaml`).
#[cfg(test)]
pub(crate) fn plan_of_text(text: &str) -> Plan {
    let path = Path::new("k.yaml");
    let loaded = Loaded {
        spec: super::spec::parse(path, text).unwrap(),
        tree: serde_norway::from_str(text).unwrap(),
        source: text.into(),
    };
    build(path, loaded).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::spec::parse;

    const PIPELINE: &str = "name: k
stages:
  data: { kind: dataset, params: { name: gmm } }
  lin: { kind: schedule, params: { type: linear } }
  mlp: { kind: model, params: { arch: mlp } }
  tr: { kind: train, needs: { data: data, schedule: lin, model: mlp }, params: { objective: eps } }
";

    fn plan(text: &str) -> Plan {
        plan_of_text(text)
    }

    fn keys(text: &str) -> HashMap<String, String> {
        let plan = plan(text);
        plan.nodes()
            .map(|n| (n.id.clone(), n.key.clone()))
            .collect()
    }

    #[test]
    fn spelling_out_defaults_keeps_every_key() {
        let explicit = PIPELINE
            .replace(
                "{ name: gmm }",
                "{ name: gmm, weights: [0.1, 0.9], std: 0.2, n: 50000, seed: 0 }",
            )
            .replace(
                "{ type: linear }",
                "{ type: linear, beta_start: 0.0001, beta_end: 2.0e-2, steps: 1000 }",
            )
            .replace(
                "{ objective: eps }",
                "{ lr: 1.0e-3, objective: eps, steps: 4000 }",
            );
        assert_eq!(keys(PIPELINE), keys(&explicit));
    }

    #[test]
    fn a_param_change_changes_that_key_and_downstream_only() {
        let base = keys(PIPELINE);
        let changed = keys(&PIPELINE.replace("{ type: linear }", "{ type: linear, steps: 999 }"));
        assert_ne!(base["lin"], changed["lin"]);
        assert_ne!(base["tr"], changed["tr"], "downstream of the change");
        assert_eq!(base["data"], changed["data"]);
        assert_eq!(base["mlp"], changed["mlp"]);
        for (from, to) in [
            ("{ name: gmm }", "{ name: gmm, seed: 1 }"),
            ("{ arch: mlp }", "{ arch: mlp, embedding_dim: 16 }"),
        ] {
            let other = keys(&PIPELINE.replace(from, to));
            assert_ne!(base["tr"], other["tr"], "{to}");
        }
    }

    #[test]
    fn renaming_a_stage_keeps_its_key() {
        let renamed = keys(
            &PIPELINE
                .replace("lin:", "betas:")
                .replace("schedule: lin", "schedule: betas"),
        );
        assert_eq!(keys(PIPELINE)["lin"], renamed["betas"]);
        assert_eq!(keys(PIPELINE)["tr"], renamed["tr"]);
    }

    const SAMPLED: &str = "  tr2: { kind: train, needs: { data: data, schedule: lin, model: mlp }, params: { objective: eps, seed: 7 } }
  s: { kind: sample, needs: { train: tr }, params: { sampler: ancestral, n: 100 } }
  ev: { kind: evaluate, needs: { reference: data, samples: s } }
";

    fn try_plan(text: &str) -> Result<Plan, SpecError> {
        let path = Path::new("k.yaml");
        let loaded = Loaded {
            spec: parse(path, text)?,
            tree: serde_norway::from_str(text).unwrap(),
            source: text.into(),
        };
        build(path, loaded)
    }

    fn count(plan: &Plan, id: &str) -> usize {
        plan.nodes_of(id).count()
    }

    #[test]
    fn a_cartesian_sweep_forks_only_downstream_of_swept_values() {
        let text = format!(
            "{PIPELINE}{SAMPLED}sweep:\n  s.params.n: [10, 20, 30]\n  tr.params.lr: [0.001, 0.002]\n"
        );
        let plan = plan(&text);
        assert_eq!(plan.points.len(), 6);
        assert_eq!(
            (
                count(&plan, "data"),
                count(&plan, "lin"),
                count(&plan, "mlp")
            ),
            (1, 1, 1)
        );
        assert_eq!(count(&plan, "tr"), 2, "train forks on lr only");
        assert_eq!(
            count(&plan, "tr2"),
            1,
            "a train no swept value reaches is shared"
        );
        assert_eq!(count(&plan, "s"), 6);
        assert_eq!(count(&plan, "ev"), 6);
        let labels: Vec<String> = plan.nodes_of("tr").map(|n| n.label.clone()).collect();
        assert_eq!(labels, vec!["lr=0.001", "lr=0.002"]);
        assert_eq!(plan.nodes_of("data").next().unwrap().label, "");
        let point = &plan.points[3];
        assert_eq!(plan.point_label(point), "n=20,lr=0.002");
        assert_eq!(
            plan.node_at(point, "ev").unwrap().name(),
            "ev[n=20,lr=0.002]"
        );
        assert_eq!(
            plan.link(plan.node_at(point, "s").unwrap()),
            "stages/s/n=20,lr=0.002"
        );
        assert_eq!(
            plan.link(plan.node_at(point, "data").unwrap()),
            "stages/data"
        );
    }

    #[test]
    fn zipped_axes_vary_together() {
        let text = format!(
            "{PIPELINE}{SAMPLED}sweep:\n  zip:\n    lin.params.steps: [10, 20]\n    tr.params.steps: [5, 6]\n"
        );
        let plan = plan(&text);
        assert_eq!(plan.points.len(), 2);
        assert_eq!(count(&plan, "lin"), 2);
        assert_eq!(count(&plan, "tr"), 2);
        assert_eq!(count(&plan, "data"), 1);
        // Both `steps` axes are qualified with their stage.
        assert_eq!(plan.point_label(&plan.points[1]), "lin.steps=20,tr.steps=6");
        assert_eq!(
            plan.nodes_of("s").last().unwrap().label,
            "lin.steps=20,tr.steps=6"
        );
    }

    #[test]
    fn equal_stages_across_points_are_one_node_with_the_key_of_a_plain_run() {
        let text = format!(
            "{PIPELINE}{SAMPLED}sweep:\n  tr.params.lr: [0.002, 2.0e-3]\n  s.params.seed: [1, 2]\n"
        );
        let plan = plan(&text);
        assert_eq!(plan.points.len(), 4);
        assert_eq!(count(&plan, "tr"), 1, "0.002 and 2.0e-3 are one value");
        assert_eq!(count(&plan, "s"), 2);
        let plain = keys(&format!(
            "{}{SAMPLED}",
            PIPELINE.replace("{ objective: eps }", "{ objective: eps, lr: 0.002 }")
        ));
        assert_eq!(plan.nodes_of("tr").next().unwrap().key, plain["tr"]);
    }

    #[test]
    fn sweeping_an_input_swaps_stages_without_retraining() {
        let text = format!(
            "{PIPELINE}{SAMPLED}sweep:\n  s.needs.train: [tr, tr2]\n  s.params.n: [10, 20]\n"
        );
        let plan = plan(&text);
        assert_eq!(plan.points.len(), 4);
        assert_eq!((count(&plan, "tr"), count(&plan, "tr2")), (1, 1));
        assert_eq!(count(&plan, "s"), 4);
        assert_eq!(plan.point_label(&plan.points[2]), "train=tr2,n=10");
    }

    #[test]
    fn bad_sweeps_point_at_the_axis() {
        let base = format!("{PIPELINE}{SAMPLED}");
        let cases = [
            ("sweep:\n  nope.params.x: [1]\n", "no stage `nope`"),
            ("sweep:\n  tr.lr: [1]\n", "must look like `tr.params.KEY`"),
            (
                "sweep:\n  tr.params.lr: [fast]\n",
                "at sweep point `lr=fast`",
            ),
            ("sweep:\n  s.needs.train: [data]\n", "must be a train stage"),
            (
                "sweep:\n  s.needs.train: [ghost]\n",
                "`ghost` is not a stage",
            ),
        ];
        for (sweep, needle) in cases {
            let e = try_plan(&format!("{base}{sweep}"))
                .err()
                .unwrap()
                .to_string();
            assert!(e.contains(needle), "{sweep}: {e}");
            assert!(e.starts_with("k.yaml:"), "{e}");
            let line = base.lines().count() + 2;
            assert!(
                e.contains(&format!(":{line}:")),
                "{sweep}: expected line {line} in {e}"
            );
        }
        let e = try_plan(&format!(
            "{base}report:\n  plots: [{{ metric: mmd2, x: nope }}]\nsweep:\n  s.params.n: [1, 2]\n"
        ))
        .err()
        .unwrap();
        assert!(
            e.to_string()
                .contains("x `nope` is neither a sweep axis (n) nor a metric (sliced_wasserstein"),
            "{e}"
        );
        // A metric along x is fine.
        try_plan(&format!(
            "{base}report:\n  plots: [{{ metric: mmd2, x: nfe }}]\nsweep:\n  s.params.n: [1, 2]\n"
        ))
        .unwrap();
        // A plot of no metric, or of points no sweep has, would be drawn empty.
        for (plot, needle) in [
            (
                "{ metric: mmd, x: n }",
                "report plot of `mmd`: not a metric; metrics are: sliced_wasserstein",
            ),
            (
                "{ metric: mmd2, x: nfe, where: { n: '3' } }",
                "axis `n` never takes `3`; its values are: 1, 2",
            ),
        ] {
            let e = try_plan(&format!(
                "{base}report:\n  plots: [{plot}]\nsweep:\n  s.params.n: [1, 2]\n"
            ))
            .err()
            .unwrap_or_else(|| panic!("{plot} planned"));
            assert!(e.to_string().contains(needle), "{plot}: {e}");
        }
        try_plan(&format!(
            "{base}report:\n  plots: [{{ metric: mmd2, x: nfe, where: {{ n: '2' }} }}]\nsweep:\n  s.params.n: [1, 2]\n"
        ))
        .unwrap();
    }

    #[test]
    fn null_leaves_a_key_out_and_ignored_settings_share_a_stage() {
        // Zipped sampler settings: `eta` only for ddim, `solver` only for ode; steps
        // cross them all, but rk45 ignores steps, so its three points share one stage.
        let sweep = "sweep:\n  zip:\n    s.params.sampler: [ancestral, ddim, ode, ode]\n    s.params.eta: [~, 0.5, ~, ~]\n    s.params.solver: [~, ~, euler, rk45]\n  s.params.steps: [5, 10, 20]\n";
        let plan = try_plan(&format!("{PIPELINE}{SAMPLED}{sweep}")).unwrap();
        assert_eq!(plan.points.len(), 12);
        let labels: Vec<String> = plan.nodes_of("s").map(|n| n.label.clone()).collect();
        assert_eq!(labels.len(), 10, "{labels:?}");
        assert!(
            labels.contains(&"sampler=ancestral,steps=5".to_string()),
            "{labels:?}"
        );
        assert!(
            labels.contains(&"sampler=ddim,eta=0.5,steps=5".to_string()),
            "{labels:?}"
        );
        let rk45: Vec<_> = plan
            .nodes_of("s")
            .filter(|n| n.label.contains("rk45"))
            .collect();
        assert_eq!(rk45.len(), 1, "{labels:?}");
        assert!(
            matches!(&plan.nodes_of("s").next().unwrap().spec.params, crate::stages::StageParams::Sample(params) if params.sampler.name() == "ancestral")
        );
    }
}
