//! voxplan's static memory planner. It knows nothing of burn.
//!
//! - [`spec`], [`settings`], [`plan`]: the contracts (network, `[plan]` section, the trainer's plan).
//! - [`rules`]: every constant the planner rests on, with its reason.
//! - [`device`]: devices and backend constants ([`cpu_host`]: the CPU a plan is for, this one or one the
//!   environment states; [`cpu_cache`]: the L2 size flex's GEMM scratch follows);
//!   [`units`]: `--budget` sizes.
//! - [`graph`] → [`timeline`]: the network unrolled into ops and the liveness simulation of one step,
//!   under the [`allocator`] model of the device.
//! - [`planner`]: the decisions (batch, accumulation, precision, norm, checkpointing, patch, LR);
//!   [`inference`]: windows per forward pass; [`autoconfig`]: nnU-Net-style network from a fingerprint.
//! - [`report`] and [`render`]: the report and its text/JSON/Markdown/HTML forms.
//! - [`calibration`]: fits the backend constants to measured steps; [`zoo`] and [`accuracy`]: the
//!   configurations measured against the plan, and prediction set beside measurement.

pub mod accuracy;
pub mod accuracy_report;
mod allocator;
pub mod autoconfig;
pub mod calibration;
pub mod cpu_cache;
pub mod cpu_host;
pub mod device;
pub mod error;
mod graph;
pub mod inference;
pub mod plan;
pub mod planner;
pub mod render;
pub mod report;
pub mod rules;
pub mod settings;
pub mod spec;
pub mod timeline;
pub mod units;
pub mod zoo;

pub use autoconfig::auto_configure;
pub use cpu_host::CpuHost;
pub use device::{
    BackendKind, BackendModel, DeviceKind, DeviceProfile, DeviceSelector, device_profile, device_profile_with_cpu,
};
pub use error::PlanError;
pub use graph::LossKind;
pub use inference::{InferencePlan, plan_inference};
pub use plan::{Precision, TrainingPlan};
pub use planner::{PlanRequest, plan};
pub use render::{ReportFormat, render};
pub use report::PlanReport;
pub use settings::{CheckpointingRequest, OptimizerKind, PlanSettings, PrecisionRequest};
pub use spec::{ActivationKind, BlockKind, NetworkSpec, NormKind, StageSpec};
pub use timeline::{Components, SimRequest, Timeline, simulate, simulate_with};
pub use units::{format_bytes, parse_budget};
