//! Stage keys: sha256 over a canonical serialization of everything that determines a
//! stage's output. Equal meaning gives equal keys; any change gives a new key.

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::cache::store::{CACHE_FORMAT, hex};

/// Everything a key depends on.
pub struct KeyInput<'a> {
    pub kind: &'a str,
    pub stage_version: u32,
    /// Parameters with all defaults filled in.
    pub params: &'a Value,
    /// (role, keys of the input stages), in role order.
    pub inputs: &'a [(String, Vec<String>)],
}

/// The hex sha256 key of a stage.
pub fn stage_key(input: &KeyInput) -> String {
    let inputs: serde_json::Map<String, Value> = input
        .inputs
        .iter()
        .map(|(role, keys)| (role.clone(), Value::from(keys.clone())))
        .collect();
    let doc = serde_json::json!({
        "kind": input.kind,
        "stage_version": input.stage_version,
        "cache_format": CACHE_FORMAT,
        "params": input.params,
        "inputs": inputs,
    });
    let mut text = String::new();
    canonical(&doc, &mut text);
    hex(&Sha256::digest(text.as_bytes()))
}

/// JSON with object keys sorted at every depth, independent of map implementation.
pub fn canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                canonical(&map[k], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key(params: Value, inputs: &[(String, Vec<String>)], version: u32) -> String {
        stage_key(&KeyInput {
            kind: "train",
            stage_version: version,
            params: &params,
            inputs,
        })
    }

    #[test]
    fn key_ignores_key_order_but_not_values() {
        let a = key(json!({"lr": 1e-3, "steps": 10}), &[], 1);
        let b = key(json!({"steps": 10, "lr": 0.001}), &[], 1);
        assert_eq!(a, b);
        assert_ne!(a, key(json!({"lr": 1e-3, "steps": 11}), &[], 1));
        assert_ne!(a, key(json!({"lr": 1e-3, "steps": 10}), &[], 2));
        let inputs = [("data".to_string(), vec!["abc".to_string()])];
        assert_ne!(a, key(json!({"lr": 1e-3, "steps": 10}), &inputs, 1));
        assert_eq!(a.len(), 64);
    }
}
