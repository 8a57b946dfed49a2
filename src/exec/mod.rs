//! Running a plan: the DAG loop ([`dag`]) over an [`executor::Executor`] (the local
//! threads of [`local`]; a cluster's jobs plug in the same way), each stage computed
//! into the cache by [`compute`], here or in a `runner worker` process ([`worker`]).

pub mod compute;
pub mod dag;
pub mod device;
pub mod executor;
pub mod local;
pub mod slurm;
pub mod worker;

pub use dag::{Outcome, RunOptions, execute, from_cache};
pub use executor::Status;
