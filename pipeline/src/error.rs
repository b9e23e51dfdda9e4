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
    /// `--device` could not be parsed or the device does not work.
    #[error("device {requested}: {problem}")]
    Device { requested: String, problem: String },
    /// A checkpoint or exported weight file could not be written or read back.
    #[error("{path}: checkpoint: {problem}")]
    Checkpoint { path: PathBuf, problem: String },
    /// The loss stopped being a finite number; the last good checkpoint is kept.
    #[error("non-finite loss {loss} at optimizer step {step} (epoch {epoch}, micro-batch {micro_batch}); the last good checkpoint is kept{}", last_checkpoint.as_ref().map(|p| format!(" in {}", p.display())).unwrap_or_default())]
    NonFiniteLoss { loss: f64, step: usize, epoch: usize, micro_batch: usize, last_checkpoint: Option<PathBuf> },
    /// The device ran out of memory and re-planning could not recover.
    #[error("out of device memory: {problem}")]
    OutOfMemory { problem: String },
    /// A stop was requested (a signal, a queue's cancel): the run finished the optimizer step in progress and
    /// wrote its checkpoint; the same command resumes it.
    #[error("interrupted at optimizer step {step} (epoch {}): checkpoint written to {}; run the same command again to resume", epoch + 1, checkpoint.display())]
    Interrupted { step: usize, epoch: usize, checkpoint: PathBuf },
    /// A stop was requested during `predict`: the files finished so far are written, the rest are not.
    #[error("interrupted after {done} of {total} files; run the same command with --skip-existing to finish")]
    PredictInterrupted { done: usize, total: usize },
    /// A rank of a data-parallel run left because a collective operation failed, most often because another
    /// rank failed first (whose error is the one reported).
    #[error("rank {rank}: {problem}")]
    PeerStopped { rank: usize, problem: String },
    /// Another process held the run directory's lock for longer than `train` was told to wait; nothing in
    /// the directory was changed.
    #[error("{}: in use by another voxplan process ({holder}); gave up after waiting {:.0} s (--wait-for-run-dir); run the same command again once it has finished", path.display(), waited.as_secs_f64())]
    RunDirBusy { path: PathBuf, holder: String, waited: std::time::Duration },
    /// A training or prediction option is invalid; `field` names it.
    #[error("invalid {field}: {problem}")]
    Option { field: String, problem: String },
}
