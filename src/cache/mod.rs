//! The content-addressed store of stage results under `results/.cache/<key>/`.

pub mod digests;
pub mod live;
pub mod lock;
pub mod maintenance;
pub mod store;

pub use store::{Cache, Manifest, OutputFile, Slot};
