//! What the planner decides: the contract between `voxplan plan`, batch jobs reading its JSON, and the trainer.
//!
//! `TrainingPlan` is what the pipeline consumes; the full report (decisions, alternatives, per-layer
//! table, memory-versus-batch curve) wraps it. Field names are part of the documented JSON schema: add
//! fields, never rename them.

use serde::{Deserialize, Serialize};

use crate::spec::NetworkSpec;

/// Compute precision of a training run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    /// Everything in f32.
    F32,
    /// Convs in bf16, norms/loss in f32, f32 master weights; no loss scaling needed.
    Bf16Mixed,
    /// Convs in f16, norms/loss in f32, f32 master weights, dynamic loss scaling.
    F16Mixed,
}

/// The decisions the trainer follows. Produced by the planner, never edited by hand.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingPlan {
    /// The network to build: the requested spec after the planner's decisions (e.g. BatchNorm → GroupNorm).
    pub network: NetworkSpec,
    /// Patch `(x, y, z)`, possibly smaller than requested when nothing else fitted.
    pub patch_size: [usize; 3],
    /// Devices training in data parallel; every one runs `batch_size` per pass. 1 in plans written before
    /// the field existed.
    #[serde(default = "one_device")]
    pub devices: usize,
    /// Samples per forward/backward pass on one device.
    pub batch_size: usize,
    /// Micro-batches summed per optimizer step; each micro-batch loss is divided by this.
    pub accumulation_steps: usize,
    /// `batch_size × devices × accumulation_steps`.
    pub effective_batch: usize,
    pub precision: Precision,
    /// Whether to train with activation checkpointing (burn's balanced strategy).
    pub checkpointing: bool,
    /// Peak learning rate, already scaled to the effective batch.
    pub learning_rate: f64,
    /// Optimizer steps of linear warm-up to `learning_rate`.
    pub warmup_steps: usize,
    /// Predicted peak device memory of one training step, bytes.
    pub predicted_peak_bytes: u64,
    /// The budget the plan was made for, bytes (safety margin already subtracted).
    pub budget_bytes: u64,
    /// The part of `predicted_peak_bytes` that is the backend's fixed overhead (process and allocator
    /// arenas on the CPU, CUDA context and autotune on a GPU): in use, but outside what the trainer's
    /// memory meter counts. 0 in plans written before the field existed.
    #[serde(default)]
    pub fixed_overhead_bytes: u64,
}

fn one_device() -> usize {
    1
}

impl TrainingPlan {
    /// The predicted peak of what the trainer measures (model, optimizer state, activations, workspace),
    /// so that measured and planned are compared like for like: `predicted_peak_bytes` minus the fixed
    /// overhead, as `voxplan bench planner` compares them.
    pub fn predicted_step_bytes(&self) -> u64 {
        self.predicted_peak_bytes.saturating_sub(self.fixed_overhead_bytes)
    }
}
