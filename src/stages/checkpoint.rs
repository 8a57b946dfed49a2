//! Checkpoints of a training loop: weights, their moving average, the optimiser's
//! moments, the batch stream's position and the losses so far. Restoring one
//! continues the run exactly, bit for bit, as if it had never stopped.

use std::path::Path;

use candle_core::{Device, Tensor};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::artifacts::{load_tensors, read_json, save_tensors, write_json};
use crate::error::{StageError, StageResult};
use crate::nn::kernels::adamw::AdamW;

/// Everything a training loop changes as it runs.
pub struct TrainState<'a> {
    pub names: &'a [String],
    pub opt: &'a mut AdamW,
    pub ema: &'a mut Vec<Tensor>,
    pub losses: &'a mut Vec<f32>,
    pub rng: &'a mut ChaCha8Rng,
}

/// `checkpoint.json`: the scalar part of a checkpoint.
#[derive(Debug, Serialize, Deserialize)]
struct Progress {
    step: usize,
    optimizer_step: usize,
    /// ChaCha word position, as a string (JSON numbers cannot hold a u128).
    rng_word_pos: String,
    losses: Vec<f32>,
}

const CURRENT: &str = "current";
const PREVIOUS: &str = "previous";

/// Writes a checkpoint for `step` into `dir`. The new one is complete before the old
/// one is removed, so a kill at any moment leaves a usable checkpoint.
pub fn save(dir: &Path, step: usize, state: &TrainState) -> StageResult<()> {
    let fresh = dir.join("incoming");
    let _ = std::fs::remove_dir_all(&fresh);
    std::fs::create_dir_all(&fresh).map_err(StageError::io(&fresh))?;
    let mut tensors: Vec<(String, Tensor)> = Vec::new();
    for (i, name) in state.names.iter().enumerate() {
        tensors.push((
            format!("param.{name}"),
            state.opt.vars[i].as_tensor().clone(),
        ));
        tensors.push((format!("ema.{name}"), state.ema[i].clone()));
        tensors.push((format!("m.{name}"), state.opt.first[i].clone()));
        tensors.push((format!("v.{name}"), state.opt.second[i].clone()));
    }
    let refs: Vec<(&str, Tensor)> = tensors
        .iter()
        .map(|(n, t)| (n.as_str(), t.clone()))
        .collect();
    save_tensors(&fresh.join("state.safetensors"), &refs)?;
    write_json(
        &fresh.join("checkpoint.json"),
        &Progress {
            step,
            optimizer_step: state.opt.step,
            rng_word_pos: state.rng.get_word_pos().to_string(),
            losses: state.losses.clone(),
        },
    )?;
    let (current, previous) = (dir.join(CURRENT), dir.join(PREVIOUS));
    let _ = std::fs::remove_dir_all(&previous);
    if current.exists() {
        std::fs::rename(&current, &previous).map_err(StageError::io(&current))?;
    }
    std::fs::rename(&fresh, &current).map_err(StageError::io(&fresh))?;
    let _ = std::fs::remove_dir_all(&previous);
    Ok(())
}

/// Restores the latest checkpoint in `dir` into `state`; the step it was taken at, or
/// 0 when there is none (or it does not fit this network).
pub fn restore(dir: &Path, state: &mut TrainState, device: &Device) -> StageResult<usize> {
    for candidate in [CURRENT, PREVIOUS] {
        let path = dir.join(candidate);
        if !path.join("checkpoint.json").is_file() {
            continue;
        }
        let progress: Progress = read_json(&path.join("checkpoint.json"))?;
        let tensors = load_tensors(&path.join("state.safetensors"), device)?;
        let get = |kind: &str, name: &str, like: &Tensor| -> Option<Tensor> {
            tensors
                .get(&format!("{kind}.{name}"))
                .filter(|t| t.dims() == like.dims())
                .cloned()
        };
        let mut loaded = Vec::new();
        for (i, name) in state.names.iter().enumerate() {
            let like = state.opt.vars[i].as_tensor();
            match (
                get("param", name, like),
                get("ema", name, like),
                get("m", name, like),
                get("v", name, like),
            ) {
                (Some(p), Some(e), Some(m), Some(v)) => loaded.push((p, e, m, v)),
                _ => return Ok(0),
            }
        }
        let Ok(word_pos) = progress.rng_word_pos.parse::<u128>() else {
            return Ok(0);
        };
        for (i, (p, e, m, v)) in loaded.into_iter().enumerate() {
            state.opt.vars[i].set(&p)?;
            state.ema[i] = e;
            state.opt.first[i] = m;
            state.opt.second[i] = v;
        }
        state.opt.step = progress.optimizer_step;
        state.rng.set_word_pos(word_pos);
        *state.losses = progress.losses;
        return Ok(progress.step);
    }
    Ok(0)
}
