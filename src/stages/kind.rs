//! What a stage kind declares, so that the pipeline layer, `runner list`, README's
//! table and the report can all be derived from one table ([`super::StageKind`])
//! instead of each keeping its own list of kinds.

use std::any::Any;
use std::fmt::Debug;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::context::StageContext;
use crate::error::StageResult;

/// One stage kind: a type per kind, never instantiated; the table in `stages/mod.rs`
/// names it once and everything else is read off these items.
pub trait Kind: 'static {
    /// How pipeline files name it (`kind: train`).
    const NAME: &'static str;
    /// The implementation version in every key of this kind: bump it when the bytes
    /// the stage writes change for the same parameters (say why beside it).
    const VERSION: u32;
    /// Input roles, in the order keys hash them.
    const ROLES: &'static [Role];
    /// The files it writes, as README's table of kinds and `runner list` give them.
    const WRITES: &'static str;
    /// Figures the report shows from each entry of this kind: (file-name prefix of a
    /// PNG output, title of the report's gallery).
    const FIGURES: &'static [(&'static str, &'static str)] = &[];
    /// Typed parameters (serde, `deny_unknown_fields` where the type allows it), so a
    /// typo in a pipeline file is an error with its line and column.
    type Params: Debug + Clone + Serialize + DeserializeOwned + 'static;

    /// What the key hashes: the parameters with every default filled in and settings
    /// that change nothing reset (and, for files read from the user, their contents).
    /// A default that depends on the inputs (e.g. clipping for image data) is decided
    /// here, from `stages`.
    fn resolved(params: &Self::Params, _stages: &Neighbours) -> Result<serde_json::Value, String> {
        Ok(serde_json::to_value(params).expect("stage parameters always serialize to JSON"))
    }

    /// Checks the parameters against themselves and the stages they read.
    fn validate(_params: &Self::Params, _stages: &Neighbours) -> Result<(), String> {
        Ok(())
    }

    /// Its estimated peak memory and arithmetic (see [`super::cost`]); zero for the
    /// kinds that cost nothing worth checking.
    fn cost(_params: &Self::Params, _stages: &Neighbours) -> super::cost::Cost {
        super::cost::Cost::default()
    }

    /// Computes the stage, writing its outputs into `ctx.out`.
    fn run(params: &Self::Params, ctx: &StageContext) -> StageResult<()>;
}

/// An input role of a kind: its name in `needs`, the kind of stage it must name, and
/// how many it takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Role {
    pub name: &'static str,
    /// The [`Kind::NAME`] of the stages it names.
    pub kind: &'static str,
    /// One stage or a list of them.
    pub many: bool,
    pub required: bool,
}

impl Role {
    /// Exactly one stage, required.
    pub const fn one(name: &'static str, kind: &'static str) -> Role {
        Role {
            name,
            kind,
            many: false,
            required: true,
        }
    }

    /// One stage or none.
    pub const fn optional(name: &'static str, kind: &'static str) -> Role {
        Role {
            required: false,
            ..Role::one(name, kind)
        }
    }

    /// One stage or a list of them, or none.
    pub const fn list(name: &'static str, kind: &'static str) -> Role {
        Role {
            many: true,
            required: false,
            ..Role::one(name, kind)
        }
    }
}

/// How `runner list` and README's table of kinds state a role.
impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} <- {}", self.name, self.kind)?;
        match (self.many, self.required) {
            (true, _) => f.write_str(", or a list (optional)"),
            (false, false) => f.write_str(" (optional)"),
            (false, true) => Ok(()),
        }
    }
}

/// The JSON Schema of a stage of kind `name`: `kind`, `needs` with its `roles`, and
/// `params` as `params` describes them.
pub fn stage_schema(name: &str, roles: &[Role], params: schemars::Schema) -> serde_json::Value {
    let role = |r: &Role| {
        let one =
            serde_json::json!({ "type": "string", "description": format!("a {} stage", r.kind) });
        if r.many {
            serde_json::json!({ "oneOf": [one, { "type": "array", "items": one, "minItems": 1 }] })
        } else {
            one
        }
    };
    let properties: serde_json::Map<String, serde_json::Value> = roles
        .iter()
        .map(|r| (r.name.to_string(), role(r)))
        .collect();
    let required_roles: Vec<&str> = roles
        .iter()
        .filter(|r| r.required)
        .map(|r| r.name)
        .collect();
    let mut required = vec!["kind"];
    if !required_roles.is_empty() {
        required.push("needs");
    }
    serde_json::json!({
        "type": "object",
        "description": format!("a `{name}` stage"),
        "properties": {
            "kind": { "const": name },
            "needs": {
                "type": "object",
                "properties": properties,
                "required": required_roles,
                "additionalProperties": false
            },
            "params": params
        },
        "required": required,
        "additionalProperties": false
    })
}

/// A stage's inputs: the ids each role names, in the kind's role order (roles left
/// out are absent).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Needs(pub Vec<(&'static str, Vec<String>)>);

impl Needs {
    /// The stages a role names (none when left out).
    pub fn ids(&self, role: &str) -> &[String] {
        self.0
            .iter()
            .find(|(r, _)| *r == role)
            .map(|(_, ids)| ids.as_slice())
            .unwrap_or(&[])
    }
}

/// A stage of the pipeline by id: its inputs and its typed parameters.
pub type Lookup<'a> = dyn Fn(&str) -> Option<(&'a Needs, &'a dyn Any)> + 'a;

/// The other stages of the pipeline, as a stage's validation sees them: by id, each
/// with its inputs and its typed parameters.
pub struct Neighbours<'a> {
    /// The inputs of the stage being checked.
    pub needs: &'a Needs,
    lookup: &'a Lookup<'a>,
}

impl<'a> Neighbours<'a> {
    pub fn new(needs: &'a Needs, lookup: &'a Lookup<'a>) -> Neighbours<'a> {
        Neighbours { needs, lookup }
    }

    /// The parameters of stage `id`, when it is of kind `K`.
    pub fn params<K: Kind>(&self, id: &str) -> Option<&'a K::Params> {
        (self.lookup)(id).and_then(|(_, params)| params.downcast_ref())
    }

    /// The inputs of stage `id`.
    pub fn needs_of(&self, id: &str) -> Option<&'a Needs> {
        (self.lookup)(id).map(|(needs, _)| needs)
    }

    /// The parameters of the first stage a role of the checked stage names.
    pub fn input<K: Kind>(&self, role: &str) -> Option<&'a K::Params> {
        self.needs
            .ids(role)
            .first()
            .and_then(|id| self.params::<K>(id))
    }

    /// How many stages a role of the checked stage names.
    pub fn count(&self, role: &str) -> usize {
        self.needs.ids(role).len()
    }
}
