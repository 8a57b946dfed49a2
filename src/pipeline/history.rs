//! What the previous run of a pipeline looked like, so `runner plan` can say *why* a
//! stage must run ("param lr changed", "input ddpm changed") rather than just "not cached".

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::graph::{Plan, StageNode};
use crate::cache::Cache;

const FILE: &str = "last_run.json";

/// One stage as it was last run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageRecord {
    pub key: String,
    pub params: serde_json::Value,
    /// role -> (input id, input key)
    pub inputs: BTreeMap<String, Vec<(String, String)>>,
}

/// The stages of the last run, by node name (`id`, or `id[label]` in a sweep).
pub type History = BTreeMap<String, StageRecord>;

pub fn load(pipeline_dir: &Path) -> History {
    std::fs::read(pipeline_dir.join(FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

pub fn save(pipeline_dir: &Path, plan: &Plan) -> std::io::Result<()> {
    let history: History = plan.nodes().map(|n| (n.name(), record(plan, n))).collect();
    std::fs::create_dir_all(pipeline_dir)?;
    let text = serde_json::to_string_pretty(&history).expect("history serializes");
    crate::artifacts::replace(&pipeline_dir.join(FILE), text.as_bytes())
}

fn record(plan: &Plan, node: &StageNode) -> StageRecord {
    let inputs = node
        .needs
        .iter()
        .map(|(role, inputs)| {
            let pairs = inputs
                .iter()
                .map(|&ix| (plan.graph[ix].name(), plan.graph[ix].key.clone()))
                .collect();
            (role.clone(), pairs)
        })
        .collect();
    StageRecord {
        key: node.key.clone(),
        params: node.params.clone(),
        inputs,
    }
}

/// All keys a last run used: `runner gc` keeps them so the report stays whole.
pub fn keys(history: &History) -> impl Iterator<Item = &str> {
    history.values().map(|r| r.key.as_str())
}

/// "cached", or the reason the stage must run.
pub fn reason(plan: &Plan, node: &StageNode, cache: &Cache, history: &History) -> String {
    if cache.is_cached(&node.key) {
        return "cached".into();
    }
    let Some(previous) = history.get(&node.name()).or_else(|| history.get(&node.id)) else {
        return "not computed".into();
    };
    if previous.key == node.key {
        return "not computed".into();
    }
    let changed = changed_params(&previous.params, &node.params);
    if !changed.is_empty() {
        let noun = if changed.len() == 1 {
            "param"
        } else {
            "params"
        };
        return format!("{noun} {} changed", changed.join(", "));
    }
    let current = record(plan, node);
    let inputs: Vec<String> = current
        .inputs
        .iter()
        .flat_map(|(role, now)| {
            let before = previous.inputs.get(role);
            now.iter()
                .filter(move |pair| before.is_none_or(|b| !b.contains(pair)))
                .map(|(id, _)| id.clone())
        })
        .collect();
    if !inputs.is_empty() {
        let noun = if inputs.len() == 1 { "input" } else { "inputs" };
        return format!("{noun} {} changed", inputs.join(", "));
    }
    "stage implementation changed".into()
}

fn changed_params(before: &serde_json::Value, after: &serde_json::Value) -> Vec<String> {
    let (Some(b), Some(a)) = (before.as_object(), after.as_object()) else {
        return if before != after {
            vec!["(all)".into()]
        } else {
            vec![]
        };
    };
    let mut keys: Vec<&String> = b.keys().chain(a.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| b.get(*k) != a.get(*k))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn changed_params_lists_differing_keys() {
        let c = changed_params(
            &json!({"lr": 1e-3, "steps": 10, "seed": 0}),
            &json!({"lr": 3e-4, "steps": 10, "batch": 4, "seed": 0}),
        );
        assert_eq!(c, vec!["batch".to_string(), "lr".to_string()]);
    }
}
