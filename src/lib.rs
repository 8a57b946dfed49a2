//! runner: diffusion-model experiments as DAGs of content-hashed, cached stages.
//!
//! A pipeline file ([`pipeline::spec`]) becomes a validated graph of stages
//! ([`pipeline::graph`]) whose keys ([`pipeline::key`]) address entries in the cache
//! ([`cache`]); the DAG loop and its executors ([`exec`]) compute what is missing
//! with the stage kinds of the table in [`stages`], built on the diffusion
//! mathematics ([`diffusion`]), networks ([`nn`]), data ([`data`]), metrics
//! ([`metrics`]) and figures ([`plot`]); [`report`] writes the results folder. Each
//! layer imports only those below it (`tests/architecture.rs`).

pub mod alloc;
pub mod artifacts;
pub mod cache;
pub mod catalog;
pub mod choices;
pub mod cli;
pub mod data;
pub mod diffusion;
pub mod error;
pub mod exec;
pub mod interrupt;
pub mod machine;
pub mod metrics;
pub mod nn;
pub mod pipeline;
pub mod plot;
pub mod progress;
pub mod report;
pub mod rng;
pub mod runs;
pub mod stages;
pub mod tagged;
