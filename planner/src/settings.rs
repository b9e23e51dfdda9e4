//! The `[plan]` section of an experiment: what the user asks the planner for.

use serde::{Deserialize, Serialize};

/// Requested precision; `auto` lets the planner pick from the device's capabilities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PrecisionRequest {
    #[default]
    Auto,
    F32,
    Bf16,
    F16,
}

/// Optimizer; its state size enters the memory model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OptimizerKind {
    /// SGD with Nesterov momentum 0.99 (nnU-Net's default): one state tensor per parameter.
    #[default]
    Sgd,
    /// AdamW: two state tensors per parameter.
    Adamw,
}

/// Whether activation checkpointing may be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckpointingRequest {
    /// Only when batch 1 does not fit without it.
    #[default]
    Auto,
    Always,
    Never,
}

/// The `[plan]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PlanSettings {
    /// Requested patch `(x, y, z)`; the planner shrinks it only if nothing else fits.
    pub patch_size: [usize; 3],
    /// Samples per optimizer step across accumulation (nnU-Net's 3D default is 2).
    pub target_effective_batch: usize,
    pub precision: PrecisionRequest,
    pub optimizer: OptimizerKind,
    pub checkpointing: CheckpointingRequest,
    /// Learning rate tuned at `reference_batch`; scaled linearly to the effective batch.
    pub reference_lr: f64,
    pub reference_batch: usize,
    /// Optimizer steps of linear warm-up.
    pub warmup_steps: usize,
    /// Below this per-device batch, BatchNorm is replaced by GroupNorm.
    pub batch_norm_min_batch: usize,
}

impl Default for PlanSettings {
    fn default() -> Self {
        Self {
            patch_size: [128, 128, 128],
            target_effective_batch: 2,
            precision: PrecisionRequest::Auto,
            optimizer: OptimizerKind::Sgd,
            checkpointing: CheckpointingRequest::Auto,
            reference_lr: 0.01,
            reference_batch: 2,
            warmup_steps: 50,
            batch_norm_min_batch: 8,
        }
    }
}
