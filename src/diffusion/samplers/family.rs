//! What a sampler family implements ([`Sampler`]) and the [`Run`] it draws in: the
//! score, process and random stream, with the bookkeeping every sampler shares
//! (evaluations, snapshots, progress, the grid walk).

use std::fmt::Debug;

use candle_core::{Device, Result, Tensor};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::grid::State;
use crate::diffusion::process::Process;
use crate::diffusion::score::ScoreFn;
use crate::rng::normals;

/// One sampler family: a parameter type (serde, `deny_unknown_fields`, every field
/// defaulted from `Default`) that knows how to draw.
pub trait Sampler: Debug + Clone + PartialEq + Default + Serialize + DeserializeOwned {
    /// How a sample stage names it (`sampler: ddim`).
    const NAME: &'static str;
    /// The processes it is defined for, as `runner list` states them.
    const PROCESSES: &'static str = "every process";

    /// What the key hashes: settings this sampler ignores reset to their defaults.
    fn canonical(&self) -> Self {
        self.clone()
    }

    /// Whether it is defined for `process`.
    fn accepts(&self, _process: &Process) -> std::result::Result<(), String> {
        Ok(())
    }

    /// Settings a user could get wrong.
    fn check(&self) -> std::result::Result<(), String>;

    /// Score evaluations per sample it will make on `process` (an adaptive solver's
    /// typical count), so `plan` can tell the cost of a run before it starts.
    fn evaluations(&self, process: &Process) -> f64;

    /// Draws `run`'s samples from its prior; returns the final points [n, dim].
    fn draw(&self, run: &mut Run) -> Result<Tensor>;
}

/// `name` must be a positive finite number.
pub fn positive(name: &str, v: f64) -> std::result::Result<(), String> {
    if v > 0.0 && v.is_finite() {
        Ok(())
    } else {
        Err(format!("`{name}` must be positive, got {v}"))
    }
}

/// A sampler's grid is built whole: its `steps` (or `levels`) must be 1 to
/// [`MAX_GRID`], far past the thousands any sampler uses.
pub fn grid_size(name: &str, v: usize) -> std::result::Result<(), String> {
    if (1..=MAX_GRID).contains(&v) {
        Ok(())
    } else {
        Err(format!("`{name}` must be 1 to {MAX_GRID}, got {v}"))
    }
}

/// The largest time grid a sampler may build.
pub const MAX_GRID: usize = 1_000_000;

/// `name` must be at least 1.
pub fn at_least_one(name: &str, v: usize) -> std::result::Result<(), String> {
    if v >= 1 {
        Ok(())
    } else {
        Err(format!("`{name}` must be at least 1"))
    }
}

/// Snapshots at evenly spaced fractions of the way from the prior to the end.
pub(super) struct Snapshots {
    pub(super) count: usize,
    pub(super) keep: usize,
    pub(super) taken: Vec<(usize, Vec<f32>)>,
}

impl Snapshots {
    /// `progress` in [0, 1]; keeps x when it passes the next of `count` marks (and at 1).
    fn observe(&mut self, step: usize, progress: f64, x: &Tensor) -> Result<()> {
        let marks = self.count.max(1);
        let next = if marks == 1 {
            1.0
        } else {
            self.taken.len() as f64 / (marks - 1) as f64
        };
        if self.taken.len() < marks && progress + 1e-9 >= next {
            let rows = x.narrow(0, 0, self.keep.min(x.dim(0)?))?;
            self.taken.push((
                step,
                rows.flatten_all()?
                    .to_dtype(candle_core::DType::F32)?
                    .to_vec1::<f32>()?,
            ));
        }
        Ok(())
    }
}

/// Everything a sampler run needs besides the score.
pub struct SampleRequest<'a> {
    pub n: usize,
    pub dim: usize,
    pub snapshots: usize,
    pub snapshot_particles: usize,
    pub device: &'a Device,
    /// Initial points [n, dim] to use instead of draws from the sampler's initial
    /// distribution (spherical interpolation decodes chosen noises).
    pub start: Option<&'a Tensor>,
    /// The data range each predicted x0 is clipped to (`clip_denoised`), if any.
    pub clip: Option<(f32, f32)>,
}

/// Move k of a grid walk: `(run, x, cur, prev, k)` to the next x.
pub type GridStep<'s, 'a> =
    dyn FnMut(&mut Run<'a>, Tensor, State, State, usize) -> Result<Tensor> + 's;

/// A sampler at work: the score and process it samples, its random stream, and the
/// bookkeeping every sampler shares (evaluations counted, snapshots, progress).
pub struct Run<'a> {
    pub score: &'a dyn ScoreFn,
    pub process: &'a Process,
    pub rng: &'a mut ChaCha8Rng,
    /// Score evaluations so far.
    pub nfe: usize,
    pub(super) request: &'a SampleRequest<'a>,
    pub(super) progress: &'a mut dyn FnMut(usize, usize),
    pub(super) snaps: Snapshots,
}

impl<'a> Run<'a> {
    /// (n, dim) of the batch.
    pub fn shape(&self) -> (usize, usize) {
        (self.request.n, self.request.dim)
    }

    pub fn device(&self) -> &'a Device {
        self.request.device
    }

    /// Whether the caller gave the initial points.
    pub fn starts_given(&self) -> bool {
        self.request.start.is_some()
    }

    /// Standard normal noise of the batch's shape, from a given stream (for the
    /// steps shared with samplers outside a run).
    pub fn noise_fn(&self) -> impl Fn(&mut ChaCha8Rng) -> Result<Tensor> + 'a {
        let ((n, dim), device) = (self.shape(), self.request.device);
        move |rng: &mut ChaCha8Rng| Tensor::from_vec(normals(rng, n * dim), (n, dim), device)
    }

    /// Standard normal noise of the batch's shape.
    pub fn noise(&mut self) -> Result<Tensor> {
        self.noise_fn()(self.rng)
    }

    /// Draws from the process's prior N(0, prior_std^2 I), or the given start.
    pub fn prior(&mut self) -> Result<Tensor> {
        match self.request.start {
            Some(x) => Ok(x.clone()),
            None => self.noise()?.affine(self.process.prior_std(), 0.0),
        }
    }

    /// Tweedie's denoising x0 = (x + s^2 score) / a at `state`, clipped to the data
    /// range when the run clips.
    pub fn tweedie(&self, x: &Tensor, state: State) -> Result<Tensor> {
        self.clip_x0(state.x0_from_score(x, &self.score.score(x, state.t)?)?)
    }

    /// The noise prediction at `state`, one evaluation; when the run clips, the noise
    /// of the clipped prediction of x0 (as diffusers' DDIM recomputes it).
    pub fn eps_at(&mut self, x: &Tensor, state: State) -> Result<Tensor> {
        self.nfe += 1;
        let eps = self.score.eps(x, state.t)?;
        if self.request.clip.is_none() {
            return Ok(eps);
        }
        let x0 = self.clip_x0(state.x0_from_eps(x, &eps)?)?;
        (x - x0.affine(state.a, 0.0)?)?.affine(1.0 / state.s, 0.0)
    }

    /// The data prediction x0 = (x - s eps) / a at `state`, one evaluation, clipped
    /// when the run clips.
    pub fn x0_at(&mut self, x: &Tensor, state: State) -> Result<Tensor> {
        self.nfe += 1;
        let eps = self.score.eps(x, state.t)?;
        self.clip_x0(state.x0_from_eps(x, &eps)?)
    }

    /// The range predicted x0 are clipped to, when the run clips.
    pub fn clip(&self) -> Option<(f32, f32)> {
        self.request.clip
    }

    /// `x0` clipped to the data range, when the run clips.
    pub fn clip_x0(&self, x0: Tensor) -> Result<Tensor> {
        match self.request.clip {
            Some((lo, hi)) => x0.clamp(lo, hi),
            None => Ok(x0),
        }
    }

    /// The score at `state`; when the run clips, the score of the clipped prediction
    /// of x0, (a clip(x0) - x) / s^2, so that steps written with the score (the
    /// predictors of PC) clip like the others.
    pub fn predictor_score(&self, x: &Tensor, state: State) -> Result<Tensor> {
        let score = self.score.score(x, state.t)?;
        if self.request.clip.is_none() {
            return Ok(score);
        }
        let x0 = self.clip_x0(state.x0_from_score(x, &score)?)?;
        (x0.affine(state.a, 0.0)? - x)?.affine(1.0 / (state.s * state.s), 0.0)
    }

    /// Keeps a snapshot when `progress` (in [0, 1]) passes the next mark; fails once
    /// the user asked the run to stop (every sampler observes each of its steps).
    pub fn observe(&mut self, step: usize, progress: f64, x: &Tensor) -> Result<()> {
        if crate::interrupt::requested() {
            return Err(candle_core::Error::Msg(format!(
                "{} at step {step}",
                crate::interrupt::STOPPED
            )));
        }
        self.snaps.observe(step, progress, x)
    }

    /// Reports `done` of `total`.
    pub fn progress(&mut self, done: usize, total: usize) {
        (self.progress)(done, total)
    }

    /// Walks a grid from `x` down to the clean state; `step(run, x, cur, prev, k)`
    /// makes move k, and the snapshots and progress are kept here.
    pub fn walk(
        &mut self,
        states: &[State],
        mut x: Tensor,
        step: &mut GridStep<'_, 'a>,
    ) -> Result<Tensor> {
        let total = states.len() - 1;
        self.observe(0, 0.0, &x)?;
        for (k, pair) in states.windows(2).enumerate() {
            x = step(self, x, pair[0], pair[1], k)?;
            self.observe(k + 1, (k + 1) as f64 / total as f64, &x)?;
            self.progress(k + 1, total);
        }
        Ok(x)
    }
}
