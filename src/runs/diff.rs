//! `runner diff`: what changed between two runs, in the parameters of their stages
//! and in their metrics (like `dvc exp diff`): each changed parameter as
//! `stage.key: a -> b`, each metric with both values and the change.

use serde::Serialize;

use super::RunRecord;
use super::show::{grid, number};

/// A parameter that differs (or exists in one run only: `None` on the other side).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ParamChange {
    pub stage: String,
    /// Dotted path inside the stage's parameters (`sampler.steps`).
    pub param: String,
    pub a: Option<serde_json::Value>,
    pub b: Option<serde_json::Value>,
}

/// One metric of one evaluated stage in either run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricChange {
    pub evaluate: String,
    pub stage: String,
    /// The sweep values that reach the row (empty for a stage no axis reaches).
    pub point: Vec<(String, String)>,
    pub metric: String,
    pub a: Option<f64>,
    pub b: Option<f64>,
}

impl MetricChange {
    pub fn change(&self) -> Option<f64> {
        Some(self.b? - self.a?)
    }
}

/// Everything that differs between run `a` and run `b`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Diff {
    pub a: String,
    pub b: String,
    /// `--profile`, `--set` and `--sweep` of each run.
    pub overrides: (Vec<String>, Vec<String>),
    pub params: Vec<ParamChange>,
    /// Every metric of either run, changed or not (the table is the comparison).
    pub metrics: Vec<MetricChange>,
}

/// `value` flattened to (dotted path, leaf), objects only (lists are leaves).
fn leaves(prefix: &str, value: &serde_json::Value, out: &mut Vec<(String, serde_json::Value)>) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                leaves(&path, v, out);
            }
        }
        other => out.push((prefix.to_string(), other.clone())),
    }
}

/// Compares run `a` with run `b`.
pub fn diff(a: &RunRecord, b: &RunRecord) -> Diff {
    let mut params = Vec::new();
    let mut names: Vec<&str> = a.stages.iter().map(|s| s.name.as_str()).collect();
    for s in &b.stages {
        if !names.contains(&s.name.as_str()) {
            names.push(&s.name);
        }
    }
    for name in names {
        let flat = |run: &RunRecord| {
            run.stages.iter().find(|s| s.name == name).map(|s| {
                let mut out = Vec::new();
                leaves("", &s.params, &mut out);
                out
            })
        };
        let (pa, pb) = (flat(a), flat(b));
        let mut keys: Vec<String> = Vec::new();
        for (k, _) in pa.iter().chain(pb.iter()).flatten() {
            if !keys.contains(k) {
                keys.push(k.clone());
            }
        }
        for key in keys {
            let get = |p: &Option<Vec<(String, serde_json::Value)>>| {
                p.as_ref()
                    .and_then(|v| v.iter().find(|(k, _)| *k == key).map(|(_, x)| x.clone()))
            };
            let (va, vb) = (get(&pa), get(&pb));
            if va != vb {
                params.push(ParamChange {
                    stage: name.to_string(),
                    param: key,
                    a: va,
                    b: vb,
                });
            }
        }
    }
    let mut metrics: Vec<MetricChange> = Vec::new();
    for (side, run) in [(0, a), (1, b)] {
        for m in &run.metrics {
            let slot = match metrics.iter().position(|c| {
                c.evaluate == m.evaluate
                    && c.stage == m.stage
                    && c.point == m.point
                    && c.metric == m.metric
            }) {
                Some(i) => i,
                None => {
                    metrics.push(MetricChange {
                        evaluate: m.evaluate.clone(),
                        stage: m.stage.clone(),
                        point: m.point.clone(),
                        metric: m.metric.clone(),
                        a: None,
                        b: None,
                    });
                    metrics.len() - 1
                }
            };
            if side == 0 {
                metrics[slot].a = Some(m.value);
            } else {
                metrics[slot].b = Some(m.value);
            }
        }
    }
    Diff {
        a: a.id.clone(),
        b: b.id.clone(),
        overrides: (a.invocation.overrides(), b.invocation.overrides()),
        params,
        metrics,
    }
}

fn shown(v: &Option<serde_json::Value>) -> String {
    match v {
        None => "-".into(),
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// The diff as aligned text.
pub fn text(d: &Diff) -> String {
    let mut out = format!("runs {} (a) and {} (b)\n", d.a, d.b);
    if d.overrides.0 != d.overrides.1 {
        out.push_str(&format!(
            "  overrides: a: {}\n             b: {}\n",
            d.overrides.0.join(" "),
            d.overrides.1.join(" ")
        ));
    }
    if d.params.is_empty() {
        out.push_str("\nparameters: the same\n");
    } else {
        let header = ["stage", "param", "a", "b"].map(String::from).to_vec();
        let mut table = grid(header, 4, None);
        for p in &d.params {
            table.add_row([p.stage.clone(), p.param.clone(), shown(&p.a), shown(&p.b)]);
        }
        out.push_str(&format!("\nparameters\n{table}\n"));
    }
    if d.metrics.is_empty() {
        out.push_str("\nmetrics: none in either run\n");
    } else {
        let header = ["evaluate", "stage", "metric", "a", "b", "change"]
            .map(String::from)
            .to_vec();
        let mut table = grid(header, 3, None);
        for m in &d.metrics {
            let value = |v: Option<f64>| v.map(number).unwrap_or_else(|| "-".into());
            let change = match m.change() {
                Some(0.0) => "same".to_string(),
                Some(c) => format!("{}{}", if c > 0.0 { "+" } else { "" }, number(c)),
                None => "-".into(),
            };
            let point: Vec<String> = m.point.iter().map(|(a, v)| format!("{a}={v}")).collect();
            let stage = if point.is_empty() {
                m.stage.clone()
            } else {
                format!("{}[{}]", m.stage, point.join(","))
            };
            table.add_row([
                m.evaluate.clone(),
                stage,
                m.metric.clone(),
                value(m.a),
                value(m.b),
                change,
            ]);
        }
        out.push_str(&format!("\nmetrics\n{table}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::table::MetricRecord;
    use crate::runs::StageRun;

    fn run(id: &str, steps: u64, sampler: &str, mmd: f64) -> RunRecord {
        RunRecord {
            id: id.into(),
            pipeline: "p".into(),
            command: vec![],
            invocation: Default::default(),
            runner_version: "t".into(),
            device: "cpu".into(),
            machine: Default::default(),
            started: String::new(),
            started_unix_ms: 0,
            finished_unix_ms: None,
            status: "succeeded".into(),
            stages: vec![StageRun {
                name: "s".into(),
                kind: "sample".into(),
                key: id.into(),
                status: "computed".into(),
                message: None,
                seconds: 0.0,
                params: serde_json::json!({ "n": 10, "sampler": { "name": sampler, "steps": steps } }),
            }],
            metrics: vec![MetricRecord {
                evaluate: "e".into(),
                stage: "s".into(),
                of: "samples".into(),
                point: vec![],
                metric: "mmd2".into(),
                value: mmd,
            }],
        }
    }

    #[test]
    fn changed_params_by_dotted_path_and_every_metric_with_its_change() {
        let d = diff(&run("a", 100, "ddim", 0.5), &run("b", 50, "ddim", 0.75));
        assert_eq!(
            d.params,
            vec![ParamChange {
                stage: "s".into(),
                param: "sampler.steps".into(),
                a: Some(100.into()),
                b: Some(50.into()),
            }]
        );
        assert_eq!(d.metrics.len(), 1);
        assert_eq!(d.metrics[0].change(), Some(0.25));
        let shown = text(&d);
        assert!(
            shown.contains("sampler.steps") && shown.contains("+0.25"),
            "{shown}"
        );
        assert!(
            text(&diff(&run("a", 1, "x", 1.0), &run("b", 1, "x", 1.0)))
                .contains("parameters: the same")
        );
    }

    /// Rows at different sweep points are different metrics, matched point by point.
    #[test]
    fn metrics_are_matched_by_sweep_point() {
        let mut a = run("a", 1, "x", 1.0);
        let mut b = run("b", 1, "x", 1.0);
        let base = a.metrics[0].clone();
        let at = |seed: &str, value: f64| MetricRecord {
            point: vec![("seed".into(), seed.into())],
            value,
            ..base.clone()
        };
        a.metrics = vec![at("0", 1.0), at("1", 2.0)];
        b.metrics = vec![at("1", 2.5), at("0", 1.0)];
        let d = diff(&a, &b);
        assert_eq!(d.metrics.len(), 2);
        assert_eq!(d.metrics[0].change(), Some(0.0));
        assert_eq!(d.metrics[1].change(), Some(0.5));
        assert!(text(&d).contains("s[seed=1]"), "{}", text(&d));
    }
}
