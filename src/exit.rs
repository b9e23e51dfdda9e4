//! The exit codes a batch job, a queue or a scheduler reads: one per outcome, so a script can tell "fix the
//! config" from "needs a bigger card" from "diverged" from "interrupted, run me again" (README, "Running
//! unattended"; `voxplan --help`).

use voxplan_jobs::JobsError;
use voxplan_pipeline::PipelineError;
use voxplan_planner::PlanError;
use voxplan_volumes::VolumeError;

/// Finished (or, for `train`, found its run already finished).
pub const SUCCESS: u8 = 0;
/// Any failure not listed below (a device that does not work, a disk that is full, a bug).
pub const FAILURE: u8 = 1;
/// The command line, the experiment file or the data is wrong (clap's own code for usage errors).
pub const BAD_INPUT: u8 = 2;
/// No plan fits the memory budget, or the device ran out of memory after the allowed re-plans.
pub const DOES_NOT_FIT: u8 = 3;
/// The loss became NaN or infinite; the last good checkpoint is kept.
pub const DIVERGED: u8 = 4;
/// Stopped by SIGTERM, SIGINT or SIGUSR1 after writing a checkpoint: the same command resumes
/// (sysexits' EX_TEMPFAIL, which Slurm and systemd users read as "try again"). Also `train` giving up on a
/// run directory that another process kept using: nothing was changed, and the same command later works.
pub const INTERRUPTED: u8 = 75;

/// The table `voxplan --help` prints.
pub const TABLE: &str = "Exit codes:
  0   success (train: also a run directory whose run is already finished)
  1   any other failure
  2   usage or bad input: command line, experiment file, dataset, checkpoint
  3   does not fit: no plan within the memory budget, or out of memory after the allowed re-plans
  4   diverged: the loss became NaN or infinite (the last good checkpoint is kept)
  75  interrupted by SIGTERM/SIGINT/SIGUSR1 with a checkpoint written, or (train) the run directory
      stayed in use by another process: run the same command again to resume";

/// An error of the command line itself (not of a library): bad input.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadInput(pub String);

/// The exit code of a failed command: the first cause in its chain that says what kind of failure it is.
pub fn code_of(error: &anyhow::Error) -> u8 {
    for cause in error.chain() {
        if let Some(e) = cause.downcast_ref::<PipelineError>()
            && let Some(code) = pipeline_code(e)
        {
            return code;
        }
        if let Some(e) = cause.downcast_ref::<PlanError>() {
            return plan_code(e);
        }
        if let Some(e) = cause.downcast_ref::<VolumeError>() {
            return volume_code(e);
        }
        if cause.downcast_ref::<BadInput>().is_some() {
            return BAD_INPUT;
        }
        if let Some(e) = cause.downcast_ref::<JobsError>() {
            return match e {
                JobsError::Plan(p) => plan_code(p),
                JobsError::Option { .. } | JobsError::Job { .. } => BAD_INPUT,
                JobsError::DoesNotFit(_) => DOES_NOT_FIT,
                JobsError::Io { .. } | JobsError::Queue { .. } | JobsError::Inventory(_) | JobsError::Busy { .. } => {
                    FAILURE
                }
            };
        }
    }
    FAILURE
}

/// `None`: look at the cause it wraps.
fn pipeline_code(e: &PipelineError) -> Option<u8> {
    Some(match e {
        PipelineError::Volume(v) => volume_code(v),
        PipelineError::Plan(p) => plan_code(p),
        PipelineError::Interrupted { .. }
        | PipelineError::PredictInterrupted { .. }
        | PipelineError::RunDirBusy { .. } => INTERRUPTED,
        PipelineError::NonFiniteLoss { .. } => DIVERGED,
        PipelineError::OutOfMemory { .. } => DOES_NOT_FIT,
        PipelineError::Experiment { .. } | PipelineError::Option { .. } => BAD_INPUT,
        PipelineError::Io { .. }
        | PipelineError::Device { .. }
        | PipelineError::Checkpoint { .. }
        | PipelineError::PeerStopped { .. } => FAILURE,
    })
}

fn plan_code(e: &PlanError) -> u8 {
    match e {
        PlanError::DoesNotFit { .. } => DOES_NOT_FIT,
        PlanError::Device { .. } | PlanError::DeviceTable { .. } | PlanError::Calibration(_) => FAILURE,
        PlanError::InvalidSpec { .. }
        | PlanError::InvalidSize { .. }
        | PlanError::UnknownGpu { .. }
        | PlanError::File { .. } => BAD_INPUT,
    }
}

fn volume_code(e: &VolumeError) -> u8 {
    match e {
        // A worker's own error is returned first; this only says the workers are gone.
        VolumeError::LoaderStopped(_) => FAILURE,
        _ => BAD_INPUT,
    }
}
