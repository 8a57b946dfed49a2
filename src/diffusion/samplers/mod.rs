//! Samplers, written once against [`Process`] and [`ScoreFn`], so every sampler runs
//! on every model whose process it is defined for. One module per sampler declares its
//! parameters (defaults in one `Default`), its key form, the processes it accepts and
//! how it draws (most as a step on the shared grid walk of [`grid`]); the table in
//! `samplers!` below makes them the `sampler:` choices of a sample stage, and `runner
//! list`, the errors' valid choices and README's list are read off it.
//!
//! Adding a sampler is a new module with a type implementing [`Sampler`] and one line
//! in `samplers!`.

pub mod exponential;
pub mod family;
pub mod grid;

use candle_core::{Result, Tensor};
use rand_chacha::ChaCha8Rng;

pub use family::{Run, SampleRequest, Sampler};

use super::process::Process;
use super::score::ScoreFn;
use family::Snapshots;

/// Declares each sampler's module and builds [`SamplerParams`] from the table.
macro_rules! samplers {
    ($($variant:ident => $module:ident :: $name:ident),* $(,)?) => {
        $(pub mod $module;)*

        crate::tagged::tagged_enum! {
            #[tag = "sampler", remote = "SamplerParams"]
            /// A sampler and its settings, as written in a sample stage (`sampler:`
            /// names the family; the variant names, in snake case, are the families'
            /// `NAME`s).
            #[derive(Debug, Clone, PartialEq)]
            pub enum SamplerParams {
                $($variant($module::$name)),*
            }
        }

        impl SamplerParams {
            /// Every sampler's name, in the table's order.
            pub const NAMES: &'static [&'static str] = &[$(<$module::$name as Sampler>::NAME),*];

            /// The sampler `name` with its defaults.
            pub fn defaults(name: &str) -> Option<SamplerParams> {
                $(if name == <$module::$name as Sampler>::NAME {
                    return Some(SamplerParams::$variant(<$module::$name>::default()));
                })*
                None
            }

            pub fn name(&self) -> &'static str {
                match self {
                    $(SamplerParams::$variant(_) => <$module::$name as Sampler>::NAME),*
                }
            }

            /// The processes the sampler is defined for.
            pub fn processes(&self) -> &'static str {
                match self {
                    $(SamplerParams::$variant(_) => <$module::$name as Sampler>::PROCESSES),*
                }
            }

            /// The same sampler with settings it ignores reset to their defaults, so
            /// that a sweep over e.g. `steps` does not recompute an adaptive solver
            /// that ignores it.
            pub fn canonical(&self) -> SamplerParams {
                match self {
                    $(SamplerParams::$variant(p) => SamplerParams::$variant(p.canonical())),*
                }
            }

            /// Whether this sampler is defined for `process`, and settings a user
            /// could get wrong.
            pub fn check(&self, process: &Process) -> std::result::Result<(), String> {
                match self {
                    $(SamplerParams::$variant(p) => {
                        p.accepts(process)?;
                        p.check()
                    }),*
                }
            }

            /// Score evaluations per sample (see [`Sampler::evaluations`]).
            pub fn evaluations(&self, process: &Process) -> f64 {
                match self {
                    $(SamplerParams::$variant(p) => p.evaluations(process)),*
                }
            }

            fn draw(&self, run: &mut Run) -> Result<Tensor> {
                match self {
                    $(SamplerParams::$variant(p) => p.draw(run)),*
                }
            }
        }
    };
}

samplers! {
    Ancestral => ancestral::Ancestral,
    Ddim => ddim::Ddim,
    Langevin => langevin::Langevin,
    AnnealedLangevin => annealed_langevin::AnnealedLangevin,
    Pc => pc::Pc,
    Ode => probability_flow::Ode,
    DpmSolver => dpm_solver::DpmSolver,
    DpmSolverPp => dpm_solver_pp::DpmSolverPp,
    Unipc => unipc::UniPc,
    EdmHeun => edm_heun::EdmHeun,
    EulerAncestral => euler_ancestral::EulerAncestral,
}

/// What a sampler produced.
pub struct SampleOutcome {
    /// Final samples, row-major [n, dim].
    pub samples: Vec<f32>,
    /// (step, first `keep` particles) at the snapshot points, step 0 being the prior.
    pub trajectory: Vec<(usize, Vec<f32>)>,
    /// Number of score-function evaluations.
    pub nfe: usize,
}

/// Runs the sampler. `progress(done, total)` is called as it goes.
pub fn run(
    params: &SamplerParams,
    score: &dyn ScoreFn,
    process: &Process,
    request: &SampleRequest,
    rng: &mut ChaCha8Rng,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<SampleOutcome> {
    let mut run = Run {
        score,
        process,
        rng,
        nfe: 0,
        request,
        progress,
        snaps: Snapshots {
            count: request.snapshots,
            keep: request.snapshot_particles,
            taken: Vec::new(),
        },
    };
    let x = params.draw(&mut run)?;
    Ok(SampleOutcome {
        samples: x.flatten_all()?.to_vec1::<f32>()?,
        trajectory: run.snaps.taken,
        nfe: run.nfe,
    })
}

#[cfg(test)]
mod tests;
