//! The stage DAG: inputs resolved and checked, cycles rejected, keys computed in
//! dependency order.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use petgraph::algo::toposort;
use petgraph::graph::{DiGraph, NodeIndex};

use super::key::{KeyInput, stage_key};
use super::spec::{PipelineSpec, StageKind, StageSpec, locate};
use crate::error::SpecError;
use crate::stages;

/// One stage, ready to run.
#[derive(Debug, Clone)]
pub struct StageNode {
    pub id: String,
    pub spec: StageSpec,
    pub params: serde_json::Value,
    /// (role, input stage ids).
    pub needs: Vec<(String, Vec<String>)>,
    pub key: String,
}

impl StageNode {
    pub fn kind(&self) -> StageKind {
        self.spec.kind()
    }
}

/// A validated pipeline: the graph and a dependency order over it.
#[derive(Debug)]
pub struct Plan {
    pub name: String,
    pub description: String,
    pub path: PathBuf,
    pub source: String,
    pub graph: DiGraph<StageNode, String>,
    /// Topological order (inputs before the stages that need them).
    pub order: Vec<NodeIndex>,
    pub index: HashMap<String, NodeIndex>,
}

impl Plan {
    pub fn node(&self, id: &str) -> Option<&StageNode> {
        self.index.get(id).map(|&i| &self.graph[i])
    }

    /// Nodes in dependency order.
    pub fn nodes(&self) -> impl Iterator<Item = &StageNode> {
        self.order.iter().map(|&i| &self.graph[i])
    }
}

/// Checks the pipeline and builds its DAG. Every error names the file, where possible
/// the line and column, the stage, and the valid choices.
pub fn build(path: &Path, source: &str, spec: PipelineSpec) -> Result<Plan, SpecError> {
    let err = |stage: Option<&str>, key: Option<&str>, message: String| SpecError::Invalid {
        path: path.to_path_buf(),
        location: stage.and_then(|s| locate(source, s, key).or_else(|| locate(source, s, None))),
        message,
    };
    if !is_safe_name(&spec.name) {
        return Err(err(None, None, format!("pipeline name `{}` must use only letters, digits, `_` and `-`", spec.name)));
    }
    if spec.stages.is_empty() {
        return Err(err(None, None, "the pipeline has no stages".into()));
    }
    let mut graph = DiGraph::new();
    let mut index = HashMap::new();
    for (id, stage) in &spec.stages {
        if !is_safe_name(id) {
            return Err(err(Some(id), None, format!("stage id `{id}` must use only letters, digits, `_` and `-`")));
        }
        let node = StageNode {
            id: id.clone(),
            spec: stage.clone(),
            params: stage.resolved_params(),
            needs: stage.needs().into_iter().map(|(r, ids)| (r.to_string(), ids)).collect(),
            key: String::new(),
        };
        index.insert(id.clone(), graph.add_node(node));
    }
    for (id, stage) in &spec.stages {
        let kind = stage.kind();
        for (role, ids) in stage.needs() {
            let want = kind.roles().iter().find(|(r, _)| *r == role).map(|(_, k)| *k).expect("roles match needs");
            if ids.is_empty() {
                return Err(err(Some(id), Some(role), format!("stage `{id}`: input `{role}` names no stage")));
            }
            for input in ids {
                let choices = || {
                    let names: Vec<&str> =
                        spec.stages.iter().filter(|(_, s)| s.kind() == want).map(|(n, _)| n.as_str()).collect();
                    if names.is_empty() { format!("no {want} stage is defined") } else { format!("{want} stages: {}", names.join(", ")) }
                };
                let Some(&from) = index.get(&input) else {
                    return Err(err(
                        Some(id),
                        Some(role),
                        format!("stage `{id}`: input `{role}` names `{input}`, which is not a stage of this pipeline; {}", choices()),
                    ));
                };
                let got = spec.stages[&input].kind();
                if got != want {
                    return Err(err(
                        Some(id),
                        Some(role),
                        format!("stage `{id}`: input `{role}` must be a {want} stage, but `{input}` is a {got} stage; {}", choices()),
                    ));
                }
                graph.add_edge(from, index[id], role.to_string());
            }
        }
    }
    let order = toposort(&graph, None).map_err(|cycle| {
        let id = graph[cycle.node_id()].id.clone();
        err(Some(&id), Some("needs"), format!("stage `{id}` depends on itself through its inputs (a cycle); remove one of the inputs in the cycle"))
    })?;
    // Semantic checks that need the inputs' parameters.
    for &ix in &order {
        let node = &graph[ix];
        stages::validate(
            &node.spec,
            &|role| {
                let ids = node.needs.iter().filter(|(r, _)| r == role).flat_map(|(_, ids)| ids.iter());
                ids.filter_map(|id| spec_of(&graph, &index, id)).collect()
            },
            &|id| spec_of(&graph, &index, id),
        )
        .map_err(|m| err(Some(&node.id), Some("params"), format!("stage `{}`: {m}", node.id)))?;
    }
    // Keys in dependency order: a stage's key covers its inputs' keys.
    for &ix in &order {
        let node = &graph[ix];
        let input_keys: Vec<(String, Vec<String>)> = node
            .needs
            .iter()
            .map(|(role, ids)| (role.clone(), ids.iter().map(|id| graph[index[id]].key.clone()).collect()))
            .collect();
        let key = stage_key(&KeyInput {
            kind: node.kind().name(),
            stage_version: stages::version(node.kind()),
            params: &node.params,
            inputs: &input_keys,
        });
        graph[ix].key = key;
    }
    Ok(Plan {
        name: spec.name,
        description: spec.description,
        path: path.to_path_buf(),
        source: source.to_string(),
        graph,
        order,
        index,
    })
}

fn spec_of<'g>(graph: &'g DiGraph<StageNode, String>, index: &HashMap<String, NodeIndex>, id: &str) -> Option<&'g StageSpec> {
    index.get(id).map(|&i| &graph[i].spec)
}

fn is_safe_name(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// The graph in Graphviz DOT, nodes labelled with kind and key prefix.
pub fn to_dot(plan: &Plan) -> String {
    let mut out = format!("digraph \"{}\" {{\n  rankdir=LR;\n  node [shape=box, fontname=\"Helvetica\"];\n", plan.name);
    for node in plan.nodes() {
        out.push_str(&format!(
            "  \"{}\" [label=\"{}\\n{} {}\"];\n",
            node.id,
            node.id,
            node.kind(),
            &node.key[..8]
        ));
    }
    for edge in plan.graph.edge_indices() {
        let (a, b) = plan.graph.edge_endpoints(edge).expect("edge exists");
        out.push_str(&format!("  \"{}\" -> \"{}\" [label=\"{}\"];\n", plan.graph[a].id, plan.graph[b].id, plan.graph[edge]));
    }
    out.push_str("}\n");
    out
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

    fn keys(text: &str) -> HashMap<String, String> {
        let path = Path::new("k.yaml");
        let plan = build(path, text, parse(path, text).unwrap()).unwrap();
        plan.nodes().map(|n| (n.id.clone(), n.key.clone())).collect()
    }

    #[test]
    fn spelling_out_defaults_keeps_every_key() {
        let explicit = PIPELINE
            .replace("{ name: gmm }", "{ name: gmm, weights: [0.1, 0.9], std: 0.2, n: 50000, seed: 0 }")
            .replace("{ type: linear }", "{ type: linear, beta_start: 0.0001, beta_end: 2.0e-2, steps: 1000 }")
            .replace("{ objective: eps }", "{ lr: 1.0e-3, objective: eps, steps: 4000 }");
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
        for (from, to) in [("{ name: gmm }", "{ name: gmm, seed: 1 }"), ("{ arch: mlp }", "{ arch: mlp, embedding_dim: 16 }")] {
            let other = keys(&PIPELINE.replace(from, to));
            assert_ne!(base["tr"], other["tr"], "{to}");
        }
    }

    #[test]
    fn renaming_a_stage_keeps_its_key() {
        let renamed = keys(&PIPELINE.replace("lin:", "betas:").replace("schedule: lin", "schedule: betas"));
        assert_eq!(keys(PIPELINE)["lin"], renamed["betas"]);
        assert_eq!(keys(PIPELINE)["tr"], renamed["tr"]);
    }
}
