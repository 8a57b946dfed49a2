//! The stage kinds: one module each (its parameters, checks, `run` and the readers of
//! its outputs), and the table below, from which parsing, validation, keys, `runner
//! list`, README's table of kinds and the report's galleries are all derived.
//!
//! Adding a kind is a new module with a type implementing [`Kind`] and one line in
//! `stage_kinds!`; the compiler then points at nothing else to change.

pub mod checkpoint;
pub mod context;
pub mod cost;
pub mod kind;

use std::any::Any;

use serde::Deserialize;

pub use context::{InputEntry, StageContext};
pub use cost::Cost;
pub use kind::{Kind, Needs, Neighbours, Role};

use crate::error::StageResult;

/// Declares each kind's module and builds [`StageKind`] and [`StageParams`] from the
/// table: every match over kinds in the crate is written here once.
macro_rules! stage_kinds {
    ($($variant:ident => $module:ident :: $kind:ident),* $(,)?) => {
        $(pub mod $module;)*

        /// The stage kinds, as named in pipeline files (in `runner list`'s order).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum StageKind {
            $($variant),*
        }

        impl StageKind {
            pub const ALL: &'static [StageKind] = &[$(StageKind::$variant),*];
            /// Every kind's name: the valid choices of `kind:`.
            pub const NAMES: &'static [&'static str] = &[$(<$module::$kind as Kind>::NAME),*];

            pub fn name(self) -> &'static str {
                match self {
                    $(StageKind::$variant => <$module::$kind as Kind>::NAME),*
                }
            }

            /// Input roles this kind takes, in the order keys hash them.
            pub fn roles(self) -> &'static [Role] {
                match self {
                    $(StageKind::$variant => <$module::$kind as Kind>::ROLES),*
                }
            }

            /// Implementation version, part of every key of this kind.
            pub fn version(self) -> u32 {
                match self {
                    $(StageKind::$variant => <$module::$kind as Kind>::VERSION),*
                }
            }

            /// The files it writes.
            pub fn writes(self) -> &'static str {
                match self {
                    $(StageKind::$variant => <$module::$kind as Kind>::WRITES),*
                }
            }

            /// The report's figures of an entry of this kind: (file prefix, gallery).
            pub fn figures(self) -> &'static [(&'static str, &'static str)] {
                match self {
                    $(StageKind::$variant => <$module::$kind as Kind>::FIGURES),*
                }
            }

            /// Reads `params` as the type this kind takes, straight from the parser
            /// (so errors keep their line and column).
            pub fn parse_params<'de, D: serde::Deserializer<'de>>(
                self,
                d: D,
            ) -> Result<StageParams, D::Error> {
                Ok(match self {
                    $(StageKind::$variant => StageParams::$variant(
                        <<$module::$kind as Kind>::Params as Deserialize>::deserialize(d)?,
                    )),*
                })
            }
        }

        /// One stage of a pipeline file, of any kind: a `oneOf` over the kinds, each
        /// with its own roles and parameters, so an editor completes them.
        impl schemars::JsonSchema for StageSpec {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                "StageSpec".into()
            }
            fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
                let kinds = vec![$(kind::stage_schema(
                    <$module::$kind as Kind>::NAME,
                    <$module::$kind as Kind>::ROLES,
                    generator.subschema_for::<<$module::$kind as Kind>::Params>(),
                )),*];
                schemars::json_schema!({ "oneOf": kinds })
            }
        }

        /// A stage's typed parameters, of whichever kind it is.
        #[derive(Debug, Clone)]
        pub enum StageParams {
            $($variant(<$module::$kind as Kind>::Params)),*
        }

        impl StageParams {
            pub fn kind(&self) -> StageKind {
                match self {
                    $(StageParams::$variant(_) => StageKind::$variant),*
                }
            }

            /// What the key hashes (see [`Kind::resolved`]).
            pub fn resolved(&self, stages: &Neighbours) -> Result<serde_json::Value, String> {
                match self {
                    $(StageParams::$variant(p) => <$module::$kind as Kind>::resolved(p, stages)),*
                }
            }

            /// Checks the parameters against themselves and the stages they read.
            pub fn validate(&self, stages: &Neighbours) -> Result<(), String> {
                match self {
                    $(StageParams::$variant(p) => <$module::$kind as Kind>::validate(p, stages)),*
                }
            }

            /// Its estimated peak memory and arithmetic (see [`Kind::cost`]).
            pub fn cost(&self, stages: &Neighbours) -> cost::Cost {
                match self {
                    $(StageParams::$variant(p) => <$module::$kind as Kind>::cost(p, stages)),*
                }
            }

            /// Computes the stage into `ctx.out`.
            pub fn run(&self, ctx: &StageContext) -> StageResult<()> {
                match self {
                    $(StageParams::$variant(p) => <$module::$kind as Kind>::run(p, ctx)),*
                }
            }

            /// The typed parameters, for [`Neighbours::params`].
            pub fn as_any(&self) -> &dyn Any {
                match self {
                    $(StageParams::$variant(p) => p),*
                }
            }
        }
    };
}

stage_kinds! {
    Dataset => dataset::Dataset,
    Schedule => schedule::Schedule,
    Model => model::Model,
    Train => train::Train,
    Sample => sample::Sample,
    Classifier => classifier::Classifier,
    Evaluate => evaluate::Evaluate,
}

impl StageKind {
    /// The kind a pipeline file names.
    pub fn from_name(name: &str) -> Option<StageKind> {
        StageKind::ALL.iter().copied().find(|k| k.name() == name)
    }
}

impl std::fmt::Display for StageKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Read from the name (inside the parser's visit, so that an unknown kind is an error
/// at the value's line and column, listing the valid ones).
impl<'de> Deserialize<'de> for StageKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<StageKind, D::Error> {
        struct Name;
        impl serde::de::Visitor<'_> for Name {
            type Value = StageKind;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a stage kind")
            }
            fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<StageKind, E> {
                StageKind::from_name(name).ok_or_else(|| E::unknown_variant(name, StageKind::NAMES))
            }
        }
        d.deserialize_str(Name)
    }
}

impl serde::Serialize for StageKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// One stage as a pipeline file declares it: its inputs by role and its parameters
/// (whose type decides the kind).
#[derive(Debug, Clone)]
pub struct StageSpec {
    pub needs: Needs,
    pub params: StageParams,
}

impl StageSpec {
    pub fn kind(&self) -> StageKind {
        self.params.kind()
    }
}
