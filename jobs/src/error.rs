//! The jobs crate's one error type.

use std::path::PathBuf;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum JobsError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// The queue's database could not be opened, read or written.
    #[error("queue {path}: {problem}")]
    Queue { path: PathBuf, problem: String },
    /// No such job, or the job is in a state the command does not apply to.
    #[error("job {id}: {problem}")]
    Job { id: i64, problem: String },
    /// A command-line option is invalid; `field` names it.
    #[error("invalid {field}: {problem}")]
    Option { field: String, problem: String },
    /// A job that fits no card of the box, refused at submit.
    #[error("does not fit: {0}")]
    DoesNotFit(String),
    /// The GPUs could not be listed.
    #[error("GPU inventory: {0}")]
    Inventory(String),
    /// Another runner already serves this queue.
    #[error("queue {path}: {problem}")]
    Busy { path: PathBuf, problem: String },
    #[error(transparent)]
    Plan(#[from] voxplan_planner::PlanError),
}

pub type Result<T, E = JobsError> = std::result::Result<T, E>;

impl JobsError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io { path: path.into(), source }
    }
}
