//! Score networks: small candle modules with a `Config` and a `forward`.

pub mod adamw;
pub mod classifier;
pub mod embedding;
pub mod init;
pub mod mlp;
pub mod network;
pub mod unet;
