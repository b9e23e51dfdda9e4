//! Planning an experiment without training it: the dry run `voxplan plan` prints, and the budgets a queue
//! packs jobs by. The dataset is read once (headers only) and then planned for as many devices and budgets
//! as asked.

use std::path::Path;

use voxplan_planner::{DeviceProfile, PlanError, PlanReport, PlanRequest, plan, plan_inference};
use voxplan_volumes::{CaseSource, LabelSpace, median_shape, open_geometry_source, split};

use crate::error::PipelineError;
use crate::experiment::Experiment;
use crate::label_report::label_decision;
use crate::trainer::checkpoint;

/// What planning an experiment needs from its dataset, read once: the median shape of the training split
/// (after resampling, from headers) and the classes, checked against the network.
#[derive(Debug, Clone)]
pub struct PlanInputs {
    pub experiment: Experiment,
    pub median_shape: Option<[usize; 3]>,
    pub labels: LabelSpace,
    /// The largest training case as the patch loader holds it, and the channel count: the loader's host
    /// memory bound.
    pub largest_case_bytes: u64,
    pub channels: usize,
}

/// Host memory a training process holds besides its patch loader and its model's host copies: the binary,
/// burn, the CUDA driver's host allocations and pinned staging buffers (about 0.6–1 GiB for a CUDA context
/// on current drivers), with room to spare: a batch job that is killed for 200 MB of host memory loses more
/// than a reservation of 1.5 GiB costs.
pub const HOST_PROCESS_ALLOWANCE_BYTES: u64 = 1536 << 20;

impl PlanInputs {
    /// Reads the dataset's headers (and, for a folder dataset without declared labels, its label maps).
    pub fn read(experiment: &Experiment) -> Result<Self, PipelineError> {
        let source = open_geometry_source(&experiment.data)?;
        let train = split(source.len(), &experiment.data).train;
        Self::from_source(experiment, source.as_ref(), &train)
    }

    /// The same from a source already open (the trainer's), whose training cases are `train`.
    pub fn from_source(
        experiment: &Experiment,
        source: &dyn CaseSource,
        train: &[usize],
    ) -> Result<Self, PipelineError> {
        let median_shape = median_shape(source, train)?;
        let labels = source.label_space();
        labels.check_class_count(experiment.network.num_classes)?;
        let (mut largest_case_bytes, mut channels) = (0u64, 1usize);
        for &i in train {
            largest_case_bytes = largest_case_bytes.max(source.case_bytes(i, experiment.loader.stream_uncompressed)?);
            channels = channels.max(source.geometry(i)?.channels);
        }
        Ok(Self { experiment: experiment.clone(), median_shape, labels, largest_case_bytes, channels })
    }

    /// The host memory a training process of `plan` holds at most: the patch loader's bound (as it logs it
    /// at start), the model's parameters with the optimizer's moments and a checkpoint's copies of them, and
    /// [`HOST_PROCESS_ALLOWANCE_BYTES`]. What a scheduler's `--mem` must give it.
    pub fn host_memory_bytes(&self, plan: &voxplan_planner::TrainingPlan, parameters: u64) -> u64 {
        let l = &self.experiment.loader;
        let patch_bytes = (plan.patch_size.iter().product::<usize>() * (4 * self.channels + 2)) as u64;
        let loader = voxplan_volumes::loader::memory_bound(
            self.largest_case_bytes,
            l.workers,
            l.queue_length,
            patch_bytes,
            l.max_class_locations,
            self.labels.len(),
            plan.batch_size,
        );
        // f32 parameters, two moments, and one more copy of all three while a checkpoint is written.
        let model = parameters * 4 * 3 * 2;
        loader + model + HOST_PROCESS_ALLOWANCE_BYTES
    }

    /// The plan for `device` within `budget` (the device's free memory when `None`), with the `labels`
    /// decision: what the trainer would do there.
    pub fn plan(&self, device: &DeviceProfile, budget: Option<u64>) -> Result<PlanReport, PipelineError> {
        self.plan_parallel(device, budget, 1)
    }

    /// [`PlanInputs::plan`] for `devices` devices in data parallel, each `device` with `budget`.
    pub fn plan_parallel(
        &self,
        device: &DeviceProfile,
        budget: Option<u64>,
        devices: usize,
    ) -> Result<PlanReport, PipelineError> {
        let mut report = plan(&PlanRequest {
            network: self.experiment.network.clone(),
            settings: self.experiment.plan.clone(),
            device: device.clone(),
            budget_bytes: budget,
            median_shape: self.median_shape,
            devices,
        })?;
        report.decisions.push(label_decision(&self.labels));
        Ok(report)
    }

    /// The budgets this experiment can train with on `device`; `None` when even the whole card cannot hold
    /// its configured patch.
    pub fn training_budgets(&self, device: &DeviceProfile) -> Result<Option<BudgetRange>, PipelineError> {
        let patch = self.experiment.plan.patch_size;
        let keeps_patch = |budget: u64| match self.plan(device, Some(budget)) {
            Ok(r) => Ok(r.training.patch_size == patch),
            Err(PipelineError::Plan(PlanError::DoesNotFit { .. })) => Ok(false),
            Err(e) => Err(e),
        };
        budget_range(device.total_bytes, keeps_patch, |budget| {
            self.plan(device, Some(budget)).map(|r| r.training.predicted_peak_bytes)
        })
    }
}

/// The memory a job can run in on one device, as raw budgets (before the planner's safety margin): the
/// least that keeps its configured patch (batch 1 with the planner's memory savings: a queue never makes a
/// job shrink its patch to share a card), and what its preferred plan needs (the whole target effective
/// batch in as few micro-batches as fit). Any budget between the two trains the same effective batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BudgetRange {
    pub min_bytes: u64,
    pub full_bytes: u64,
}

/// Budget searches stop within this fraction: finer gains nothing against the planner's own error.
const BUDGET_SEARCH_PRECISION: f64 = 0.002;

/// The least budget `fits` accepts (monotone: more memory never stops a plan), by bisection up to `total`,
/// and the raw budget of the plan made with all of `total`, from its peak.
fn budget_range(
    total: u64,
    fits: impl Fn(u64) -> Result<bool, PipelineError>,
    peak_with: impl Fn(u64) -> Result<u64, PipelineError>,
) -> Result<Option<BudgetRange>, PipelineError> {
    if !fits(total)? {
        return Ok(None);
    }
    let (mut lo, mut hi) = (0u64, total);
    while (hi - lo) as f64 > BUDGET_SEARCH_PRECISION * hi as f64 && hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if fits(mid)? { hi = mid } else { lo = mid }
    }
    let margin = voxplan_planner::rules::SAFETY_MARGIN_FRACTION;
    let full = ((peak_with(total)? as f64 / (1.0 - margin)).ceil() as u64).clamp(hi, total);
    Ok(Some(BudgetRange { min_bytes: hi, full_bytes: full }))
}

/// The budgets `voxplan predict` with `checkpoint` needs on `device` for a volume of `shape`: one window per
/// forward pass at least, as many as the plan wants at most.
pub fn inference_budgets(
    checkpoint_dir: &Path,
    shape: [usize; 3],
    device: &DeviceProfile,
) -> Result<Option<BudgetRange>, PipelineError> {
    let dir = checkpoint::resolve_inference_dir(checkpoint_dir)?;
    let state = checkpoint::load_state(&dir)?;
    let p = &state.plan;
    let inference = |budget: u64| plan_inference(&p.network, p.patch_size, shape, p.precision, device, Some(budget));
    budget_range(
        device.total_bytes,
        |budget| match inference(budget) {
            Ok(_) => Ok(true),
            Err(PlanError::DoesNotFit { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        },
        |budget| Ok(inference(budget)?.predicted_peak_bytes),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_range_is_the_least_fitting_budget_and_the_full_plans_raw_budget() {
        // A job that fits from 300 bytes and peaks at 720 with all 1000: its preferred plan needs 800.
        let r = budget_range(1000, |b| Ok(b >= 300), |_| Ok(720)).unwrap().unwrap();
        assert!((300..=302).contains(&r.min_bytes), "{r:?}");
        assert_eq!(r.full_bytes, 800);
        assert_eq!(budget_range(1000, |b| Ok(b >= 2000), |_| Ok(0)).unwrap(), None, "does not fit the card");
    }
}
