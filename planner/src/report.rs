//! The planner's full report: the [`TrainingPlan`] plus everything that explains it. Serialized as the
//! documented JSON schema (docs/planner.md); fields are added, never renamed (`schema_version` bumps on
//! any incompatible change).

use serde::{Deserialize, Serialize};

use crate::device::{BackendKind, DeviceKind};
use crate::plan::{Precision, TrainingPlan};
use crate::timeline::{Components, LayerMemory, Phase};

/// Version of the JSON layout below.
pub const REPORT_SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceSummary {
    pub name: String,
    pub kind: DeviceKind,
    pub backend: BackendKind,
    pub total_bytes: u64,
    pub free_bytes: u64,
    pub bf16: bool,
    pub fp16_fast: bool,
    /// Where the memory figures come from.
    pub source: String,
    /// A CPU's L2 share and compute threads the plan was made for, and whether each was read from this
    /// machine or stated (`VOXPLAN_CPU_L2`, `VOXPLAN_CPU_THREADS`); absent for GPUs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<crate::cpu_host::CpuHost>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BudgetSummary {
    /// "device free memory" or "--budget".
    pub source: String,
    /// Before the safety margin.
    pub raw_bytes: u64,
    pub safety_margin_fraction: f64,
    /// What plans must fit in.
    pub usable_bytes: u64,
}

/// One decision and why it was taken.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// batch, devices, accumulation, precision, norm, checkpointing, patch, learning_rate, budget.
    pub topic: String,
    pub choice: String,
    pub reason: String,
}

/// A configuration that was not chosen, with its memory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alternative {
    pub label: String,
    pub patch_size: [usize; 3],
    pub batch_size: usize,
    pub precision: Precision,
    pub checkpointing: bool,
    /// "batch", "group(8)", "instance".
    pub norm: String,
    pub predicted_peak_bytes: u64,
    pub fits: bool,
    /// What this option requires or costs (e.g. loss scaling, recomputation time).
    pub note: String,
}

/// One point of the memory-versus-batch curve at the chosen patch, precision and checkpointing.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CurvePoint {
    pub batch_size: usize,
    pub predicted_peak_bytes: u64,
    pub fits: bool,
}

/// Everything `voxplan plan` reports for training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanReport {
    pub schema_version: u32,
    pub device: DeviceSummary,
    pub budget: BudgetSummary,
    pub training: TrainingPlan,
    /// Largest per-device batch that fits (the plan caps the batch at the target effective batch).
    pub max_batch_that_fits: usize,
    pub peak_op: String,
    pub peak_phase: Phase,
    pub peak_components: Components,
    pub parameters: u64,
    pub decisions: Vec<Decision>,
    pub alternatives: Vec<Alternative>,
    pub layers: Vec<LayerMemory>,
    pub batch_curve: Vec<CurvePoint>,
}
