//! The queue's [`JobPlanner`]: what a job costs on a kind of card, from the pipeline's planner. It lives in
//! the binary because it is where the jobs crate (no burn) and the pipeline meet.

use std::path::{Path, PathBuf};

use voxplan_jobs::{BudgetRange, JobKind, JobPlanner, JobSpec};
use voxplan_pipeline::Experiment;
use voxplan_pipeline::job_plan::{PlanInputs, inference_budgets};
use voxplan_pipeline::predict::largest_input_shape;
use voxplan_planner::DeviceProfile;

pub struct PipelinePlanner;

/// The value that follows `flag` in a job's arguments, resolved against the job's working directory.
fn argument(spec: &JobSpec, flag: &str, cwd: &Path) -> Option<PathBuf> {
    let at = spec.args.iter().position(|a| a == flag)?;
    spec.args.get(at + 1).map(|v| cwd.join(v))
}

impl JobPlanner for PipelinePlanner {
    fn budgets(&self, spec: &JobSpec, cwd: &Path, card: &DeviceProfile) -> Result<Option<BudgetRange>, String> {
        let missing = |flag: &str| format!("the job's arguments have no {flag}");
        let range = match spec.kind {
            JobKind::Train => {
                let config = argument(spec, "--config", cwd).ok_or_else(|| missing("--config"))?;
                let experiment = Experiment::load(Some(&config)).map_err(|e| e.to_string())?;
                training_budgets(&PlanInputs::read(&experiment).map_err(|e| e.to_string())?, card)?
            }
            JobKind::Predict => {
                let checkpoint = argument(spec, "--checkpoint", cwd).ok_or_else(|| missing("--checkpoint"))?;
                let input = argument(spec, "--input", cwd).ok_or_else(|| missing("--input"))?;
                let shape = largest_input_shape(&input).map_err(|e| e.to_string())?;
                inference_budgets(&checkpoint, shape, card).map_err(|e| e.to_string())?.map(convert)
            }
        };
        Ok(range)
    }
}

/// [`PlanInputs::training_budgets`] as the queue keeps them.
pub fn training_budgets(inputs: &PlanInputs, card: &DeviceProfile) -> Result<Option<BudgetRange>, String> {
    inputs.training_budgets(card).map(|r| r.map(convert)).map_err(|e| e.to_string())
}

pub fn convert(r: voxplan_pipeline::job_plan::BudgetRange) -> BudgetRange {
    BudgetRange { min_bytes: r.min_bytes, full_bytes: r.full_bytes }
}
