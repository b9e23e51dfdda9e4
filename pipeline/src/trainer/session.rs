//! `pipeline::train`: device → plan → the loop on the right backend → summary, with recovery from a CUDA
//! out-of-memory by re-planning to a smaller budget.

use std::path::PathBuf;
use std::time::Instant;

use burn::backend::autodiff::checkpoint::strategy::BalancedCheckpointing;
use burn::backend::flex::FlexDevice;
use burn::backend::{Autodiff, Flex};
use voxplan_planner::{
    DeviceProfile, DeviceSelector, PlanRequest, ReportFormat, TrainingPlan, device_profile, plan, plan_inference,
    render,
};
use voxplan_volumes::{CaseSource, open_source, split};

use crate::device::{self, ComputeDevice, DeviceRequest};
use crate::error::PipelineError;
use crate::experiment::Experiment;
use crate::memory::MemoryMeter;
use crate::trainer::checkpoint::{self, SAFETENSORS_FILE};
use crate::trainer::metrics_log::{EventRecord, MetricsLog};
use crate::trainer::train_loop::{LoopOutcome, RunContext, run};

/// After an out-of-memory the budget is cut to this fraction of the one that failed: enough to move the
/// planner to the next smaller batch in one go, not so much that a near-miss throws away half the device.
const OOM_BUDGET_FACTOR: f64 = 0.7;
/// Re-plans allowed before an out-of-memory is reported as an error.
const MAX_REPLANS: usize = 3;
/// File the plan actually trained with is written to, as the planner's JSON.
pub const PLAN_FILE: &str = "plan.json";

/// How to run a training job (the experiment says what to train).
#[derive(Debug, Clone)]
pub struct TrainOptions {
    pub device: DeviceRequest,
    /// A run or checkpoint directory to continue from.
    pub resume: Option<PathBuf>,
    /// Where checkpoints, metrics and weights go.
    pub run_dir: PathBuf,
    /// Memory budget overriding the device's free memory, bytes.
    pub budget_bytes: Option<u64>,
    /// Stop (with a checkpoint) once this many epochs are done, without changing the schedule: for jobs
    /// on time-limited or preemptible machines that continue with `--resume`.
    pub stop_after_epochs: Option<usize>,
}

/// What a run did.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainSummary {
    pub run_dir: PathBuf,
    pub device: String,
    pub plan: TrainingPlan,
    pub epochs_done: usize,
    pub optimizer_steps: usize,
    pub best_dice: Option<f64>,
    pub last_loss: Option<f64>,
    pub measured_peak_bytes: u64,
    pub samples_per_s: f64,
    pub skipped_steps: usize,
    pub replans: usize,
    pub seconds: f64,
    pub weights: PathBuf,
}

/// Trains `experiment` as `options` say.
pub fn train(experiment: &Experiment, options: &TrainOptions) -> Result<TrainSummary, PipelineError> {
    let started = Instant::now();
    let device = device::resolve(options.device)?;
    tracing::info!("training on {device}");
    let run_dir = options.run_dir.clone();
    std::fs::create_dir_all(&run_dir).map_err(|source| PipelineError::Io { path: run_dir.clone(), source })?;

    let source = open_source(&experiment.data)?;
    let split = split(source.len(), &experiment.data);
    let selector = match device {
        ComputeDevice::Cpu => DeviceSelector::Cpu,
        ComputeDevice::Cuda(i) => DeviceSelector::Cuda(i),
    };
    let profile = device_profile(&selector)?;
    let mut resume_from = options.resume.as_deref().map(checkpoint::resolve_resume_dir).transpose()?;
    let mut training_plan = match &resume_from {
        Some(dir) => checkpoint::load_state(dir)?.plan,
        None => make_plan(experiment, &profile, options.budget_bytes, source.as_ref(), &split.train, &run_dir)?,
    };
    let largest_validation = largest_shape(source.as_ref(), &split.validation)?;
    let mut replans = 0;
    loop {
        let inference = plan_inference(
            &training_plan.network,
            training_plan.patch_size,
            largest_validation,
            training_plan.precision,
            &profile,
            options.budget_bytes,
        )?;
        let ctx = RunContext {
            experiment,
            plan: training_plan.clone(),
            source: source.clone(),
            split: split.clone(),
            run_dir: run_dir.clone(),
            resume_from: resume_from.clone(),
            windows_per_pass: inference.windows_per_pass,
            stop_after_epochs: options.stop_after_epochs,
        };
        match dispatch(&ctx, device) {
            Ok(outcome) => return Ok(summary(outcome, &ctx, device, replans, started)),
            Err(Attempt::Failed(e)) => return Err(e),
            Err(Attempt::OutOfMemory(message)) => {
                replans += 1;
                if replans > MAX_REPLANS {
                    return Err(PipelineError::OutOfMemory {
                        problem: format!("{message}; gave up after {MAX_REPLANS} re-plans"),
                    });
                }
                let budget = (training_plan.budget_bytes as f64 * OOM_BUDGET_FACTOR) as u64;
                tracing::error!(
                    "OUT OF MEMORY on {device}: {message}. Re-planning with a budget of {} and continuing from the \
                     last checkpoint.",
                    voxplan_planner::format_bytes(budget)
                );
                let old = training_plan.clone();
                training_plan = make_plan(experiment, &profile, Some(budget), source.as_ref(), &split.train, &run_dir)?;
                MetricsLog::open(&run_dir)?.write(&EventRecord {
                    kind: "event",
                    epoch: 0,
                    step: 0,
                    event: "out_of_memory_replan".into(),
                    detail: format!(
                        "{message}; batch {}×{} → {}×{}",
                        old.batch_size,
                        old.accumulation_steps,
                        training_plan.batch_size,
                        training_plan.accumulation_steps
                    ),
                })?;
                resume_from = checkpoint::resolve_resume_dir(&run_dir).ok();
            }
        }
    }
}

/// Runs the planner, prints its summary and keeps its JSON beside the run.
fn make_plan(
    experiment: &Experiment,
    profile: &DeviceProfile,
    budget_bytes: Option<u64>,
    source: &dyn CaseSource,
    train_cases: &[usize],
    run_dir: &std::path::Path,
) -> Result<TrainingPlan, PipelineError> {
    let report = plan(&PlanRequest {
        network: experiment.network.clone(),
        settings: experiment.plan.clone(),
        device: profile.clone(),
        budget_bytes,
        median_shape: Some(median_shape(source, train_cases)?),
    })?;
    eprintln!("{}", render(&report, ReportFormat::Text));
    let path = run_dir.join(PLAN_FILE);
    std::fs::write(&path, render(&report, ReportFormat::Json))
        .map_err(|source| PipelineError::Io { path: path.clone(), source })?;
    Ok(report.training)
}

/// Per-axis median shape of `cases`: what the planner shrinks patches towards.
fn median_shape(source: &dyn CaseSource, cases: &[usize]) -> Result<[usize; 3], PipelineError> {
    let mut per_axis: [Vec<usize>; 3] = Default::default();
    for &i in cases {
        let g = source.geometry(i)?;
        for (axis, &edge) in per_axis.iter_mut().zip(&g.shape) {
            axis.push(edge);
        }
    }
    Ok(per_axis.map(|mut v| {
        v.sort_unstable();
        v.get(v.len() / 2).copied().unwrap_or(1)
    }))
}

/// Per-axis largest shape of `cases` (validation memory is sized for the biggest volume).
fn largest_shape(source: &dyn CaseSource, cases: &[usize]) -> Result<[usize; 3], PipelineError> {
    let mut out = [1usize; 3];
    for &i in cases {
        let g = source.geometry(i)?;
        for (o, &edge) in out.iter_mut().zip(&g.shape) {
            *o = (*o).max(edge);
        }
    }
    Ok(out)
}

/// How one attempt ended when it did not finish.
enum Attempt {
    Failed(PipelineError),
    /// The CUDA runner panicked allocating memory (reference §8): re-plan and continue.
    OutOfMemory(String),
}

/// Picks the backend: flex or CUDA, with or without activation checkpointing, as the plan says.
fn dispatch(ctx: &RunContext, device: ComputeDevice) -> Result<LoopOutcome, Attempt> {
    match device {
        ComputeDevice::Cpu => {
            let mut meter = MemoryMeter::heap();
            let result = if ctx.plan.checkpointing {
                run::<Autodiff<Flex, BalancedCheckpointing>>(ctx, &FlexDevice, &mut meter)
            } else {
                run::<Autodiff<Flex>>(ctx, &FlexDevice, &mut meter)
            };
            result.map_err(Attempt::Failed)
        }
        ComputeDevice::Cuda(index) => dispatch_cuda(ctx, index),
    }
}

#[cfg(feature = "cuda")]
fn dispatch_cuda(ctx: &RunContext, index: usize) -> Result<LoopOutcome, Attempt> {
    use burn::backend::Cuda;
    use burn::backend::cuda::CudaDevice;
    use burn::tensor::backend::Backend;
    use std::panic::{AssertUnwindSafe, catch_unwind};

    use crate::memory::cuda::CudaMeter;

    let device = CudaDevice::new(index);
    let mut meter = MemoryMeter::Cuda(CudaMeter::new(device.clone()));
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        if ctx.plan.checkpointing {
            run::<Autodiff<Cuda, BalancedCheckpointing>>(ctx, &device, &mut meter)
        } else {
            run::<Autodiff<Cuda>>(ctx, &device, &mut meter)
        }
    }));
    match outcome {
        Ok(result) => result.map_err(Attempt::Failed),
        Err(payload) => {
            let message = panic_message(payload.as_ref());
            <Cuda as Backend>::memory_cleanup(&device);
            if is_out_of_memory(&message) {
                Err(Attempt::OutOfMemory(message))
            } else {
                Err(Attempt::Failed(PipelineError::Device { requested: format!("cuda:{index}"), problem: message }))
            }
        }
    }
}

#[cfg(not(feature = "cuda"))]
fn dispatch_cuda(_ctx: &RunContext, index: usize) -> Result<LoopOutcome, Attempt> {
    Err(Attempt::Failed(PipelineError::Device {
        requested: format!("cuda:{index}"),
        problem: "built without the `cuda` feature".into(),
    }))
}

/// The text of a caught panic.
#[cfg(feature = "cuda")]
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown panic".into())
}

/// cubecl's allocation failure ("can't allocate buffer of size", `BufferTooBig`) and the driver's
/// `CUDA_ERROR_OUT_OF_MEMORY`, as they surface in the runner's panic (reference §8).
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
fn is_out_of_memory(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    ["allocate", "out of memory", "out_of_memory", "buffertoobig", "oom"].iter().any(|k| m.contains(k))
}

fn summary(o: LoopOutcome, ctx: &RunContext, device: ComputeDevice, replans: usize, started: Instant) -> TrainSummary {
    TrainSummary {
        run_dir: ctx.run_dir.clone(),
        device: device.to_string(),
        plan: ctx.plan.clone(),
        epochs_done: o.state.epochs_done,
        optimizer_steps: o.state.optimizer_steps,
        best_dice: o.state.best_dice,
        last_loss: o.state.last_loss,
        measured_peak_bytes: o.measured_peak_bytes,
        samples_per_s: o.samples_per_s,
        skipped_steps: o.skipped_steps,
        replans,
        seconds: started.elapsed().as_secs_f64(),
        weights: ctx.run_dir.join(SAFETENSORS_FILE),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_cubecl_and_driver_oom_messages_only() {
        assert!(is_out_of_memory("can't allocate buffer of size: 123"));
        assert!(is_out_of_memory("DriverError(CUDA_ERROR_OUT_OF_MEMORY, \"out of memory\")"));
        assert!(!is_out_of_memory("index out of bounds"));
    }
}
