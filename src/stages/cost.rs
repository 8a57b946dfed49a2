//! What a stage will cost before it runs, estimated from its parameters and those of
//! the stages it reads: its peak memory, so planning refuses a stage that cannot fit
//! this machine (rather than a kernel killing the whole run), and its arithmetic, so
//! `plan` says when a legal setting would take days. Estimates count the dominant
//! arrays and products only: they are within a small factor, never a promise.

use crate::data::images::ImageShape;
use crate::nn::models::network::{DataShape, NetworkConfig, NetworkSize};

/// A stage's estimated peak memory and arithmetic.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Cost {
    pub bytes: f64,
    pub flops: f64,
    /// What dominates the memory, in the parameters' words ("3e9 samples of 2 values").
    pub memory: String,
    /// What dominates the arithmetic ("1e9 steps of 64 examples").
    pub work: String,
}

/// What one call into a network costs beyond its arithmetic (launching the kernels,
/// the optimiser's bookkeeping), as FLOPs at the machine's rate: about 50 us, what a
/// step of a tiny MLP takes on a CPU.
pub const CALL_OVERHEAD_FLOPS: f64 = 3e6;

/// Bytes of one f32.
pub const F32: f64 = 4.0;

impl Cost {
    /// The cost of holding `values` f32s `copies` times, described as `memory`.
    pub fn holding(values: f64, copies: f64, memory: String) -> Cost {
        Cost {
            bytes: values * copies * F32,
            memory,
            ..Cost::default()
        }
    }

    /// The same cost with `flops` of arithmetic, described as `work`.
    pub fn working(self, flops: f64, work: String) -> Cost {
        Cost {
            flops,
            work,
            ..self
        }
    }
}

/// The data a stage reads, as far as planning can tell: rows and shape.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Extent {
    pub train: f64,
    pub test: f64,
    pub shape: DataShape,
}

impl Extent {
    /// Values per row.
    pub fn dim(&self) -> f64 {
        self.shape.dim as f64
    }

    pub fn image(&self) -> Option<ImageShape> {
        self.shape.image
    }
}

/// A network's size on the data, or none for the exact score.
pub fn network_size(network: Option<&NetworkConfig>, data: &Extent) -> NetworkSize {
    network.map(|n| n.size(data.shape)).unwrap_or_default()
}

/// Numbers as `plan` writes them: exact when small, in powers of ten when large.
pub fn count(x: f64) -> String {
    if x < 1e6 {
        format!("{x:.0}")
    } else {
        format!("{x:.1e}")
    }
}
