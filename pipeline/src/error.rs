//! The pipeline crate's one error type.

use std::path::PathBuf;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum PipelineError {
    #[error(transparent)]
    Volume(#[from] voxplan_volumes::VolumeError),
    #[error(transparent)]
    Plan(#[from] voxplan_planner::PlanError),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: bad experiment file: {problem}")]
    Experiment { path: PathBuf, problem: String },
}
