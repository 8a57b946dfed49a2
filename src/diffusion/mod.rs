//! The mathematics of diffusion models, independent of the pipeline machinery.

pub mod divergence;
pub mod interpolate;
pub mod likelihood;
pub mod loss;
pub mod ode;
pub mod process;
pub mod sample;
pub mod schedule;
pub mod score;
