//! Running a plan: which stages to compute, in what order, on how many threads.

pub mod device;
pub mod progress;
pub mod scheduler;
