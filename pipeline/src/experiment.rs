//! An experiment: one TOML file that every crate reads its own sections from.
//!
//! `[network]` and `[plan]` belong to the planner, `[data]`, `[loader]`, `[augment]` to volumes, `[train]`
//! to the pipeline. The default experiment is `configs/default.toml`, compiled in.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use voxplan_planner::{NetworkSpec, PlanSettings, Precision};
use voxplan_volumes::{AugmentConfig, DataConfig, LoaderConfig};

use crate::error::PipelineError;
use crate::precision::LossScaler;

/// The default experiment's TOML text.
pub const DEFAULT_EXPERIMENT_TOML: &str = include_str!("../../configs/default.toml");

/// The `[train]` section: how long to train and how often to validate. Everything sized by memory (patch,
/// batch, accumulation, precision, learning rate) comes from the plan, not from here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Epochs to train.
    pub epochs: usize,
    /// Optimizer steps per epoch (nnU-Net: 250); each takes `accumulation_steps` micro-batches.
    pub steps_per_epoch: usize,
    /// Validate on whole volumes every this many epochs (and always after the last epoch).
    pub validate_every: usize,
    /// Weight decay: L2 for SGD, decoupled for AdamW (nnU-Net: 3e-5).
    pub weight_decay: f64,
    /// Validate on at most this many validation cases (all when unset): whole-volume inference is slow on CPU.
    pub max_validation_cases: Option<usize>,
    /// Warn (log and metrics event) when a step's measured peak exceeds the planned step peak
    /// ([`TrainingPlan::predicted_step_bytes`](voxplan_planner::TrainingPlan::predicted_step_bytes)) times this factor.
    pub memory_warning_factor: f64,
    /// f16 only: the dynamic loss scale to start from (default [`INITIAL_LOSS_SCALE`](crate::precision::INITIAL_LOSS_SCALE)). Lower it for a
    /// network whose f16 gradients overflow at the default; a huge value forces a real overflow, which the
    /// tests use to exercise skip-and-halve.
    pub initial_loss_scale: Option<f64>,
    /// Besides the checkpoint after every epoch, write one after the first optimizer step that ends this
    /// many minutes after the last one (0: after every step), so a job killed without warning (SIGKILL, a
    /// power cut, an out-of-memory kill) loses at most that much. A signal always checkpoints at once.
    pub checkpoint_every_minutes: f64,
}

/// A checkpoint of a large nnU-Net (~30 M parameters with AdamW's moments, ~360 MB) takes about a second to
/// write; every 10 minutes that is under 0.2 % of the run, and a preemption without warning loses at most
/// 10 minutes (nnU-Net checkpoints every 50 epochs, hours apart).
pub const DEFAULT_CHECKPOINT_EVERY_MINUTES: f64 = 10.0;

impl TrainConfig {
    /// The loss scaler a run at `precision` starts with: disabled unless f16, then dynamic from
    /// `initial_loss_scale` when set.
    pub fn loss_scaler(&self, precision: Precision) -> LossScaler {
        let default = LossScaler::for_precision(precision);
        match self.initial_loss_scale {
            Some(scale) if default.is_enabled() => LossScaler::dynamic(scale as f32),
            _ => default,
        }
    }
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            epochs: 10,
            steps_per_epoch: 50,
            validate_every: 1,
            weight_decay: 3e-5,
            max_validation_cases: None,
            memory_warning_factor: 1.0,
            initial_loss_scale: None,
            checkpoint_every_minutes: DEFAULT_CHECKPOINT_EVERY_MINUTES,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Experiment {
    pub name: String,
    #[serde(default)]
    pub seed: u64,
    pub network: NetworkSpec,
    #[serde(default)]
    pub plan: PlanSettings,
    pub data: DataConfig,
    #[serde(default)]
    pub loader: LoaderConfig,
    #[serde(default)]
    pub augment: AugmentConfig,
    #[serde(default)]
    pub train: TrainConfig,
}

impl Experiment {
    /// The embedded default experiment.
    pub fn embedded_default() -> Self {
        Self::parse(DEFAULT_EXPERIMENT_TOML, Path::new("<embedded configs/default.toml>"))
            .expect("the embedded default experiment is checked by a test")
    }

    /// Reads an experiment file, or the embedded default when `path` is `None`.
    pub fn load(path: Option<&Path>) -> Result<Self, PipelineError> {
        match path {
            None => Ok(Self::embedded_default()),
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| PipelineError::Experiment { path: p.to_path_buf(), problem: e.to_string() })?;
                Self::parse(&text, p)
            }
        }
    }

    /// Parses experiment TOML; `origin` names it in errors.
    pub fn parse(text: &str, origin: &Path) -> Result<Self, PipelineError> {
        let exp: Self = toml::from_str(text)
            .map_err(|e| PipelineError::Experiment { path: PathBuf::from(origin), problem: e.to_string() })?;
        exp.network.validate()?;
        exp.network.validate_patch(exp.plan.patch_size)?;
        let every = exp.train.checkpoint_every_minutes;
        if !(every.is_finite() && every >= 0.0) {
            return Err(PipelineError::Experiment {
                path: PathBuf::from(origin),
                problem: format!("train.checkpoint_every_minutes must be 0 or more, got {every}"),
            });
        }
        Ok(exp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_parses_and_validates() {
        let e = Experiment::parse(DEFAULT_EXPERIMENT_TOML, Path::new("default.toml")).unwrap();
        assert_eq!(e.network.stages.len(), 3);
        assert_eq!(e.plan.patch_size, [32, 32, 32]);
    }

    #[test]
    fn unknown_key_is_an_error_naming_the_file() {
        let text = DEFAULT_EXPERIMENT_TOML.replace("[loader]", "[loader]\nbogus = 1");
        let e = Experiment::parse(&text, Path::new("exp.toml")).unwrap_err().to_string();
        assert!(e.contains("exp.toml") && e.contains("bogus"), "{e}");
    }
}
