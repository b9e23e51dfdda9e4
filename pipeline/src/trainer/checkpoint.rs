//! Checkpoints: everything needed to continue a run exactly, written so that a crash never leaves a
//! half-written one behind.
//!
//! Layout of a run directory:
//! ```text
//! run/checkpoints/last/{model.mpk, optimizer.mpk, state.json}   after every epoch
//! run/checkpoints/best/{model.mpk, optimizer.mpk, state.json}   the epoch with the best validation Dice
//! run/weights.safetensors                                       the best (else last) weights, for other tools
//! ```
//! A slot is written into a fresh temporary directory beside it and swapped in by renames, so at every
//! instant either the old or the new complete checkpoint exists (the old one is kept as `<slot>.old` for
//! the moment between the two renames, and [`resolve_resume_dir`] falls back to it).

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder};
use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};
use voxplan_planner::TrainingPlan;
use voxplan_volumes::preprocess::{Normalization, Preprocessing};
use voxplan_volumes::{LabelSource, LabelSpace};

use crate::error::PipelineError;

/// `state.json` format written; bumped when a field changes meaning so an old checkpoint is refused, not
/// misread. Version 2 added `preprocessing`, version 3 `labels`.
pub const STATE_FORMAT_VERSION: u32 = 3;
/// Oldest format still read. Version 1 had no `preprocessing`; such a checkpoint loads with the
/// preprocessing `predict` then applied to every input (per-volume z-score, no resampling), which is right
/// for the MRI runs of that version and is logged as an assumption.
pub const OLDEST_STATE_FORMAT_VERSION: u32 = 1;

const MODEL_FILE: &str = "model";
const OPTIMIZER_FILE: &str = "optimizer";
const STATE_FILE: &str = "state.json";
/// Exported weights, named after their module paths (e.g. `encoder.0.convs.1.conv.weight`).
pub const SAFETENSORS_FILE: &str = "weights.safetensors";

/// Full precision: resuming must continue bit-for-bit, which f16 records (burn's `CompactRecorder`) break.
type CheckpointRecorder = NamedMpkFileRecorder<FullPrecisionSettings>;

/// Which checkpoint of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    Last,
    Best,
}

impl Slot {
    fn name(self) -> &'static str {
        match self {
            Slot::Last => "last",
            Slot::Best => "best",
        }
    }
}

/// The checkpoint directory of `slot` in a run directory.
pub fn slot_dir(run_dir: &Path, slot: Slot) -> PathBuf {
    run_dir.join("checkpoints").join(slot.name())
}

/// Everything besides the tensors that a resumed run needs to continue as if never stopped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    pub format_version: u32,
    pub experiment: String,
    /// Epochs completed; a resumed run starts epoch `epochs_done`.
    pub epochs_done: usize,
    /// Optimizer steps taken: the LR schedule's position.
    pub optimizer_steps: usize,
    /// The run's seed; the loader's stream for epoch `e` is a function of `(seed, e)` alone.
    pub seed: u64,
    pub best_dice: Option<f64>,
    pub best_epoch: Option<usize>,
    /// Mean training loss of the last completed epoch.
    pub last_loss: Option<f64>,
    /// f16 training: the dynamic loss scale reached.
    pub loss_scale: Option<f64>,
    /// The plan trained with (possibly re-planned after an out-of-memory); a resumed run and `predict` use it.
    pub plan: TrainingPlan,
    /// What every case went through before the network saw it (normalisation with its dataset statistics,
    /// target spacing): `predict` applies the same to its inputs.
    #[serde(default = "version_1_preprocessing")]
    pub preprocessing: Preprocessing,
    /// The classes the network's output channels stand for, with the values label maps mark them by:
    /// `predict` writes those values. Absent before version 3, which trained on values `0..K−1`.
    #[serde(default)]
    pub labels: Option<LabelSpace>,
    /// Where the epoch in progress was, when the checkpoint was written inside one (a timed checkpoint or a
    /// stop request); `None` at an epoch boundary. A resumed run continues that epoch at the next step.
    #[serde(default)]
    pub epoch_progress: Option<EpochProgress>,
}

/// How far an epoch got: `steps_done` optimizer steps (validation pending when it equals the epoch's
/// steps), with the sum of their losses for the epoch's mean.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EpochProgress {
    pub epoch: usize,
    pub steps_done: usize,
    pub loss_sum: f64,
}

impl TrainState {
    /// The classes of the network's outputs: the recorded ones, else (a checkpoint older than version 3)
    /// the values `0..K−1` it trained on.
    pub fn label_space(&self) -> LabelSpace {
        self.labels
            .clone()
            .unwrap_or_else(|| LabelSpace::consecutive(self.plan.network.num_classes, LabelSource::Assumed))
    }
}

/// The preprocessing a version-1 checkpoint (which did not record it) is assumed to have used.
fn version_1_preprocessing() -> Preprocessing {
    Preprocessing { normalization: Normalization::PerVolumeZScore, target_spacing: None, orientation: None }
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> PipelineError {
    PipelineError::Checkpoint { path: path.to_path_buf(), problem: e.to_string() }
}

/// Writes model, optimizer and state into `run_dir`'s `slot`, atomically; returns the slot's directory.
/// `save_optimizer` writes the optimizer's state to the path it is given (see [`optimizer_path`]).
pub fn save<B, M>(
    run_dir: &Path,
    slot: Slot,
    model: &M,
    save_optimizer: impl FnOnce(&Path) -> Result<(), PipelineError>,
    state: &TrainState,
) -> Result<PathBuf, PipelineError>
where
    B: Backend,
    M: Module<B>,
{
    let final_dir = slot_dir(run_dir, slot);
    let parent = final_dir.parent().unwrap_or(run_dir).to_path_buf();
    std::fs::create_dir_all(&parent).map_err(|e| io_err(&parent, e))?;
    let tmp = parent.join(format!(".{}.tmp-{}", slot.name(), std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| io_err(&tmp, e))?;
    }
    std::fs::create_dir_all(&tmp).map_err(|e| io_err(&tmp, e))?;

    let recorder = CheckpointRecorder::new();
    model.clone().save_file(tmp.join(MODEL_FILE), &recorder).map_err(|e| io_err(&tmp.join(MODEL_FILE), e))?;
    save_optimizer(&optimizer_path(&tmp))?;
    let json = serde_json::to_vec_pretty(state).map_err(|e| io_err(&tmp.join(STATE_FILE), e))?;
    write_synced(&tmp.join(STATE_FILE), &json)?;

    swap_in(&tmp, &final_dir)?;
    Ok(final_dir)
}

/// Writes a file and flushes it to disk before the directory swap makes it visible.
fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), PipelineError> {
    use std::io::Write;
    let mut f = std::fs::File::create(path).map_err(|e| io_err(path, e))?;
    f.write_all(bytes).map_err(|e| io_err(path, e))?;
    f.sync_all().map_err(|e| io_err(path, e))
}

/// Replaces `dst` with `tmp` by renames: `dst → dst.old`, `tmp → dst`, then removes `dst.old`.
fn swap_in(tmp: &Path, dst: &Path) -> Result<(), PipelineError> {
    let old = old_of(dst);
    if old.exists() {
        std::fs::remove_dir_all(&old).map_err(|e| io_err(&old, e))?;
    }
    if dst.exists() {
        std::fs::rename(dst, &old).map_err(|e| io_err(dst, e))?;
    }
    std::fs::rename(tmp, dst).map_err(|e| io_err(dst, e))?;
    if old.exists() {
        std::fs::remove_dir_all(&old).map_err(|e| io_err(&old, e))?;
    }
    Ok(())
}

fn old_of(dir: &Path) -> PathBuf {
    let mut name = dir.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".old");
    dir.with_file_name(name)
}

/// Finds the checkpoint to continue from, given a run directory or a checkpoint directory.
///
/// Order: `DIR` itself if it holds `state.json`; else `DIR/checkpoints/last`; else its `.old` twin left by a
/// crash between the two renames of [`swap_in`].
pub fn resolve_resume_dir(dir: &Path) -> Result<PathBuf, PipelineError> {
    let candidates = [dir.to_path_buf(), slot_dir(dir, Slot::Last), old_of(&slot_dir(dir, Slot::Last))];
    candidates
        .into_iter()
        .find(|c| c.join(STATE_FILE).is_file())
        .ok_or_else(|| io_err(dir, "no checkpoint here: expected state.json in it or in checkpoints/last/"))
}

/// Like [`resolve_resume_dir`] but prefers the best checkpoint: what `predict` should use by default.
pub fn resolve_inference_dir(dir: &Path) -> Result<PathBuf, PipelineError> {
    let best = slot_dir(dir, Slot::Best);
    if best.join(STATE_FILE).is_file() { Ok(best) } else { resolve_resume_dir(dir) }
}

/// Reads and checks `state.json` of a checkpoint directory.
pub fn load_state(dir: &Path) -> Result<TrainState, PipelineError> {
    let path = dir.join(STATE_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| io_err(&path, e))?;
    let state: TrainState = serde_json::from_str(&text).map_err(|e| io_err(&path, e))?;
    if !(OLDEST_STATE_FORMAT_VERSION..=STATE_FORMAT_VERSION).contains(&state.format_version) {
        return Err(io_err(
            &path,
            format!(
                "format version {} is not one of the supported {OLDEST_STATE_FORMAT_VERSION}..={STATE_FORMAT_VERSION}",
                state.format_version
            ),
        ));
    }
    if state.format_version < 2 {
        tracing::warn!(
            "{}: a version-{} checkpoint does not record its preprocessing; assuming per-volume z-score without \
             resampling",
            path.display(),
            state.format_version
        );
    }
    Ok(state)
}

/// Loads the model weights of a checkpoint into `model` (which must have the checkpoint's architecture).
pub fn load_model<B: Backend, M: Module<B>>(model: M, dir: &Path, device: &B::Device) -> Result<M, PipelineError> {
    let path = dir.join(MODEL_FILE);
    model.load_file(&path, &CheckpointRecorder::new(), device).map_err(|e| io_err(&path, e))
}

/// Where a checkpoint keeps the optimizer state (the recorder appends `.mpk`).
pub fn optimizer_path(dir: &Path) -> PathBuf {
    dir.join(OPTIMIZER_FILE)
}

/// Exports a model's weights as safetensors (module paths as names, f32 little-endian), with the plan as
/// JSON metadata, written to a temporary file and renamed into place.
pub fn export_safetensors<B: Backend, M: Module<B>>(
    model: &M,
    path: &Path,
    plan: &TrainingPlan,
) -> Result<(), PipelineError> {
    use burn_store::{ModuleSnapshot, SafetensorsStore};
    let tmp = path.with_extension("safetensors.tmp");
    let plan_json = serde_json::to_string(plan).map_err(|e| io_err(path, e))?;
    let mut store = SafetensorsStore::from_file(&tmp).overwrite(true).metadata("voxplan_plan", plan_json);
    model.save_into(&mut store).map_err(|e| io_err(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io_err(path, e))
}

/// Loads safetensors weights written by [`export_safetensors`] into `model`.
pub fn import_safetensors<B: Backend, M: Module<B>>(mut model: M, path: &Path) -> Result<M, PipelineError> {
    use burn_store::{ModuleSnapshot, SafetensorsStore};
    let mut store = SafetensorsStore::from_file(path);
    let applied = model.load_from(&mut store).map_err(|e| io_err(path, e))?;
    if !applied.missing.is_empty() || !applied.errors.is_empty() {
        let missing: Vec<&str> = applied.missing.iter().map(|(p, _)| p.as_str()).collect();
        return Err(io_err(path, format!("tensors missing: {missing:?}; errors: {:?}", applied.errors)));
    }
    Ok(model)
}
