//! Score networks: small candle modules with a `Config` and a `forward`.

pub mod embedding;
pub mod mlp;
