//! The planner's one error type.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum PlanError {
    /// A field of the network spec, patch or request is invalid; `field` is its path in the experiment TOML.
    #[error("invalid {field}: {problem}")]
    InvalidSpec { field: String, problem: String },
}
