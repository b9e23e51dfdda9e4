//! voxplan's static memory planner. It knows nothing of burn.

pub mod error;
pub mod plan;
pub mod settings;
pub mod spec;

pub use error::PlanError;
pub use plan::{Precision, TrainingPlan};
pub use settings::{CheckpointingRequest, OptimizerKind, PlanSettings, PrecisionRequest};
pub use spec::{ActivationKind, BlockKind, NetworkSpec, NormKind, StageSpec};
