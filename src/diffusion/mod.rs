//! The mathematics of diffusion models, independent of the pipeline machinery.

pub mod divergence;
pub mod interpolate;
pub mod likelihood;
pub mod loss;
pub mod ode;
pub mod process;
pub mod samplers;
pub mod schedule;
pub mod score;
