//! `pipeline::train`: device → plan → the loop on the right backend → summary, with recovery from a CUDA
//! out-of-memory by re-planning to a smaller budget.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use burn::backend::autodiff::checkpoint::strategy::BalancedCheckpointing;
use burn::backend::flex::FlexDevice;
use burn::backend::{Autodiff, Flex};
use voxplan_planner::{DeviceProfile, DeviceSelector, ReportFormat, TrainingPlan, plan_inference, render};
use voxplan_volumes::preprocess::Preprocessing;
use voxplan_volumes::source::{PreprocessedSource, open_raw_source};
use voxplan_volumes::{CaseSource, LabelSpace, split};

use crate::data_parallel::Peer;
use crate::device::{self, ComputeDevice, DeviceRequest, DevicesRequest};
use crate::error::PipelineError;
use crate::experiment::Experiment;
use crate::job_plan::PlanInputs;
use crate::memory::MemoryMeter;
use crate::trainer::checkpoint::{self, SAFETENSORS_FILE, TrainState};
use crate::trainer::metrics_log::{EventRecord, MetricsLog};
use crate::trainer::oom_watch;
use crate::trainer::ranks::run_ranks;
use crate::trainer::run_lock;
use crate::trainer::stop::StopRequest;
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
    /// Several devices in data parallel (`--devices`); `device` is then not used.
    pub devices: Option<DevicesRequest>,
    /// A run or checkpoint directory to continue from.
    pub resume: Option<PathBuf>,
    /// Where checkpoints, metrics and weights go.
    pub run_dir: PathBuf,
    /// Memory budget overriding the device's free memory, bytes.
    pub budget_bytes: Option<u64>,
    /// Stop (with a checkpoint) once this many epochs are done, without changing the schedule: for jobs
    /// on time-limited or preemptible machines that continue with `--resume`.
    pub stop_after_epochs: Option<usize>,
    /// Set (by a signal handler, a queue) to stop after the optimizer step in progress, with a checkpoint.
    pub stop: StopRequest,
    /// How long to wait for another process that holds the run directory ([`run_lock`]); usually
    /// [`run_lock::DEFAULT_RUN_DIR_WAIT`].
    pub wait_for_run_dir: Duration,
}

/// The experiment a run directory was started with, as JSON: running the same command again continues that
/// run, and a different experiment in the same directory is refused instead of mixed into it.
pub const EXPERIMENT_FILE: &str = "experiment.json";

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
    /// The checkpoint the run continued from (`--resume`, or the run directory's own).
    pub resumed_from: Option<PathBuf>,
    /// The run directory held a finished run: nothing was trained.
    pub already_finished: bool,
}

/// Trains `experiment` as `options` say.
pub fn train(experiment: &Experiment, options: &TrainOptions) -> Result<TrainSummary, PipelineError> {
    train_with(experiment, options, dispatch)
}

/// The body of [`train`] with the attempt passed in: `train` passes [`dispatch`] (the real backends); the
/// unit tests pass one that runs the real CPU loop and then reports an out-of-memory, which drives the
/// re-plan-and-resume path without a GPU and without any test switch in release behaviour.
fn train_with(
    experiment: &Experiment,
    options: &TrainOptions,
    mut attempt: impl FnMut(&RunContext, &[ComputeDevice]) -> Result<LoopOutcome, Attempt>,
) -> Result<TrainSummary, PipelineError> {
    let started = Instant::now();
    let devices = match &options.devices {
        Some(several) => device::resolve_devices(several)?,
        None => vec![device::resolve(options.device)?],
    };
    let device = devices[0];
    let world = devices.len();
    if world > 1 {
        tracing::info!("training on {world} devices in data parallel: {}", describe(&devices));
    } else {
        tracing::info!("training on {device}");
    }
    let run_dir = options.run_dir.clone();
    std::fs::create_dir_all(&run_dir).map_err(|source| PipelineError::Io { path: run_dir.clone(), source })?;
    // Before anything in the directory is read: a previous process may still be writing its checkpoint.
    let _run_lock = run_lock::lock_run_dir(&run_dir, options.wait_for_run_dir, &options.stop)?;

    let (source, preprocessing) = open_training_source(experiment)?;
    let labels = source.label_space();
    labels.check_class_count(experiment.network.num_classes)?;
    tracing::info!("labels: {labels}");
    let split = split(source.len(), &experiment.data);
    let selector = match device {
        ComputeDevice::Cpu => DeviceSelector::Cpu,
        ComputeDevice::Cuda(i) => DeviceSelector::Cuda(i),
    };
    let profile = device::run_profile(&selector)?;
    let mut resume_from = match options.resume.as_deref() {
        Some(dir) => Some(checkpoint::resolve_resume_dir(dir).map_err(|e| as_option("--resume", e))?),
        // The same command run again (a requeued or restarted job) continues the run its directory holds.
        None => run_in_progress(&run_dir, experiment)?,
    };
    let first_resume = resume_from.clone();
    let mut training_plan = match &resume_from {
        Some(dir) => {
            let state = checkpoint::load_state(dir)?;
            check_same_labels(&state.label_space(), &labels, dir)?;
            if state.epochs_done >= experiment.train.epochs && state.epoch_progress.is_none() {
                tracing::info!(
                    "{} holds a finished run ({} epochs): nothing to train",
                    dir.display(),
                    state.epochs_done
                );
                return Ok(finished(state, &run_dir, dir, started));
            }
            tracing::info!("resuming from {}", dir.display());
            if state.plan.devices == world {
                state.plan
            } else {
                let budget = options.budget_bytes;
                let plan = make_plan(experiment, &profile, budget, world, source.as_ref(), &split.train, &run_dir)?;
                replanned_for_world(state.plan, plan, dir)?
            }
        }
        None => {
            write_experiment(&run_dir, experiment)?;
            let budget = options.budget_bytes;
            make_plan(experiment, &profile, budget, world, source.as_ref(), &split.train, &run_dir)?
        }
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
            preprocessing: preprocessing.clone(),
            labels: labels.clone(),
            stop: options.stop.clone(),
        };
        match attempt(&ctx, &devices) {
            Ok(outcome) => {
                let mut done = summary(outcome, &ctx, &devices, replans, started);
                done.resumed_from = first_resume;
                return Ok(done);
            }
            Err(Attempt::Failed(e)) => return Err(e),
            Err(Attempt::OutOfMemory(message)) => {
                replans += 1;
                let replan = replan_after_out_of_memory(&training_plan, &message, replans, |budget| {
                    make_plan(experiment, &profile, Some(budget), world, source.as_ref(), &split.train, &run_dir)
                })?;
                tracing::error!(
                    "OUT OF MEMORY on {device}: {message}. Re-planned with a budget of {} ({}); continuing from \
                     the last checkpoint.",
                    voxplan_planner::format_bytes(replan.budget_bytes),
                    replan.detail
                );
                resume_from = checkpoint::resolve_resume_dir(&run_dir).ok();
                let (epoch, step) = match &resume_from {
                    Some(dir) => checkpoint::load_state(dir).map(|s| (s.epochs_done, s.optimizer_steps))?,
                    None => (0, 0),
                };
                MetricsLog::open(&run_dir)?.write(&EventRecord {
                    kind: "event",
                    epoch,
                    step,
                    event: "out_of_memory_replan".into(),
                    detail: replan.detail,
                })?;
                training_plan = replan.plan;
            }
        }
    }
}

/// The checkpoint a run directory holds, when the same experiment was started there: the run to continue.
/// A directory holding another experiment's run is refused rather than mixed with this one.
fn run_in_progress(run_dir: &std::path::Path, experiment: &Experiment) -> Result<Option<PathBuf>, PipelineError> {
    let Ok(dir) = checkpoint::resolve_resume_dir(run_dir) else { return Ok(None) };
    let path = run_dir.join(EXPERIMENT_FILE);
    let Ok(text) = std::fs::read_to_string(&path) else { return Ok(Some(dir)) };
    let saved: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| PipelineError::Checkpoint { path: path.clone(), problem: e.to_string() })?;
    let current = serde_json::to_value(experiment)
        .map_err(|e| PipelineError::Checkpoint { path: path.clone(), problem: e.to_string() })?;
    if saved == current {
        return Ok(Some(dir));
    }
    let sections: Vec<String> = current
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(key, value)| saved.get(key.as_str()) != Some(value))
        .map(|(key, _)| format!("[{key}]"))
        .collect();
    Err(PipelineError::Option {
        field: "--run-dir".into(),
        problem: format!(
            "{} holds a run of another experiment (it differs in {}); choose another --run-dir, or continue that \
             run with this experiment with --resume {}",
            run_dir.display(),
            sections.join(", "),
            run_dir.display()
        ),
    })
}

/// Records the experiment a fresh run starts with ([`EXPERIMENT_FILE`]).
fn write_experiment(run_dir: &std::path::Path, experiment: &Experiment) -> Result<(), PipelineError> {
    let path = run_dir.join(EXPERIMENT_FILE);
    let json = serde_json::to_string_pretty(experiment)
        .map_err(|e| PipelineError::Checkpoint { path: path.clone(), problem: e.to_string() })?;
    std::fs::write(&path, json).map_err(|source| PipelineError::Io { path, source })
}

/// What a finished run reports when it is started again: its checkpoint's figures, nothing trained.
fn finished(state: TrainState, run_dir: &std::path::Path, dir: &std::path::Path, started: Instant) -> TrainSummary {
    TrainSummary {
        run_dir: run_dir.to_path_buf(),
        device: "none (already finished)".into(),
        epochs_done: state.epochs_done,
        optimizer_steps: state.optimizer_steps,
        best_dice: state.best_dice,
        last_loss: state.last_loss,
        measured_peak_bytes: 0,
        samples_per_s: 0.0,
        skipped_steps: 0,
        replans: 0,
        seconds: started.elapsed().as_secs_f64(),
        weights: run_dir.join(SAFETENSORS_FILE),
        resumed_from: Some(dir.to_path_buf()),
        already_finished: true,
        plan: state.plan,
    }
}

/// A checkpoint's output channels stand for its recorded classes; resuming it on a dataset whose classes
/// differ would train channel `i` on another structure.
fn check_same_labels(trained: &LabelSpace, dataset: &LabelSpace, dir: &std::path::Path) -> Result<(), PipelineError> {
    if trained.classes == dataset.classes {
        return Ok(());
    }
    Err(PipelineError::Option {
        field: "--resume".into(),
        problem: format!(
            "{} was trained on the classes {}, but the dataset's are {}",
            dir.display(),
            trained.summary(),
            dataset.summary()
        ),
    })
}

/// A checkpoint the user named that cannot be used: bad input, with its reason.
pub fn as_option(field: &str, e: PipelineError) -> PipelineError {
    PipelineError::Option { field: field.into(), problem: e.to_string() }
}

/// The training source (raw cases with the experiment's preprocessing applied in `load`) and that
/// preprocessing, which checkpoints record so `predict` repeats it. For CT this fingerprints the dataset.
fn open_training_source(experiment: &Experiment) -> Result<(Arc<dyn CaseSource>, Preprocessing), PipelineError> {
    experiment.data.validate()?;
    let raw = open_raw_source(&experiment.data)?;
    if raw.is_empty() {
        return Err(voxplan_volumes::VolumeError::Config {
            field: "data.source".into(),
            problem: "the dataset has no cases".into(),
        }
        .into());
    }
    let preprocessing = Preprocessing::for_dataset(&experiment.data, raw.as_ref())?;
    let source: Arc<dyn CaseSource> = Arc::new(PreprocessedSource { inner: raw, preprocessing: preprocessing.clone() });
    Ok((source, preprocessing))
}

/// The decision after an out-of-memory: a budget cut to [`OOM_BUDGET_FACTOR`] of the failed plan's, the
/// plan for it, and what changed, for the log and the metrics event.
#[derive(Debug, Clone, PartialEq)]
pub struct Replan {
    pub budget_bytes: u64,
    pub plan: TrainingPlan,
    /// `"<message>; batch 2×1 → 1×2 (effective 2), predicted peak A → B"`.
    pub detail: String,
}

/// Decides how to continue after the `replans`-th out-of-memory of a run whose plan was `failed`:
/// `plan_for(budget)` plans for the smaller budget (the planner keeps the effective batch and trades batch
/// for accumulation first). Gives up after [`MAX_REPLANS`], or when the smaller budget yields no smaller
/// plan (retrying the same plan would fail the same way).
pub fn replan_after_out_of_memory(
    failed: &TrainingPlan,
    message: &str,
    replans: usize,
    plan_for: impl FnOnce(u64) -> Result<TrainingPlan, PipelineError>,
) -> Result<Replan, PipelineError> {
    if replans > MAX_REPLANS {
        return Err(PipelineError::OutOfMemory { problem: format!("{message}; gave up after {MAX_REPLANS} re-plans") });
    }
    let budget_bytes = (failed.budget_bytes as f64 * OOM_BUDGET_FACTOR) as u64;
    let plan = plan_for(budget_bytes).map_err(|e| PipelineError::OutOfMemory {
        problem: format!("{message}; no plan fits the reduced budget of {budget_bytes} bytes: {e}"),
    })?;
    if plan.predicted_peak_bytes >= failed.predicted_peak_bytes {
        return Err(PipelineError::OutOfMemory {
            problem: format!(
                "{message}; the reduced budget gives no smaller plan (batch {}×{}, predicted peak {})",
                plan.batch_size,
                plan.accumulation_steps,
                voxplan_planner::format_bytes(plan.predicted_peak_bytes)
            ),
        });
    }
    let detail = format!(
        "{message}; batch {}×{} → {}×{} (effective {} → {}), patch {:?} → {:?}, predicted peak {} → {}",
        failed.batch_size,
        failed.accumulation_steps,
        plan.batch_size,
        plan.accumulation_steps,
        failed.effective_batch,
        plan.effective_batch,
        failed.patch_size,
        plan.patch_size,
        voxplan_planner::format_bytes(failed.predicted_peak_bytes),
        voxplan_planner::format_bytes(plan.predicted_peak_bytes)
    );
    Ok(Replan { budget_bytes, plan, detail })
}

/// A run continued on another number of devices than it was planned for: the plan for the new count keeps
/// the effective batch (the planner's target) when the count divides it; the checkpoint's weights must fit
/// the new plan's network, which they do unless the per-device batch moved across the BatchNorm threshold.
fn replanned_for_world(
    saved: TrainingPlan,
    plan: TrainingPlan,
    dir: &std::path::Path,
) -> Result<TrainingPlan, PipelineError> {
    if plan.network != saved.network {
        return Err(PipelineError::Option {
            field: "--devices".into(),
            problem: format!(
                "{} was trained on {} device(s) with {:?} normalisation; on {} device(s) the plan needs {:?}, which                  its weights cannot continue; resume it on {} device(s)",
                dir.display(),
                saved.devices,
                saved.network.norm,
                plan.devices,
                plan.network.norm,
                saved.devices
            ),
        });
    }
    tracing::warn!(
        "{} was trained on {} device(s) ({} per device × {} accumulation, effective batch {}); continuing on {} ({} × {},          effective batch {})",
        dir.display(),
        saved.devices,
        saved.batch_size,
        saved.accumulation_steps,
        saved.effective_batch,
        plan.devices,
        plan.batch_size,
        plan.accumulation_steps,
        plan.effective_batch
    );
    Ok(plan)
}

/// `2 × cpu (burn flex, 2 threads)` or `cuda:0, cuda:1`.
fn describe(devices: &[ComputeDevice]) -> String {
    match devices {
        [ComputeDevice::Cpu, ..] => format!("{} × {}", devices.len(), devices[0]),
        _ => devices.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
    }
}

/// Runs the planner for `world` devices, prints its summary and keeps its JSON beside the run.
fn make_plan(
    experiment: &Experiment,
    profile: &DeviceProfile,
    budget_bytes: Option<u64>,
    world: usize,
    source: &dyn CaseSource,
    train_cases: &[usize],
    run_dir: &std::path::Path,
) -> Result<TrainingPlan, PipelineError> {
    // The same figures `voxplan plan` computes, so a dry run and the trainer plan alike.
    let inputs = PlanInputs::from_source(experiment, source, train_cases)?;
    let report = inputs.plan_parallel(profile, budget_bytes, world)?;
    tracing::info!("plan:\n{}", render(&report, ReportFormat::Text));
    let path = run_dir.join(PLAN_FILE);
    std::fs::write(&path, render(&report, ReportFormat::Json))
        .map_err(|source| PipelineError::Io { path: path.clone(), source })?;
    Ok(report.training)
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

/// Picks the backend: flex or CUDA, with or without activation checkpointing, as the plan says; one rank
/// per device when there are several.
fn dispatch(ctx: &RunContext, devices: &[ComputeDevice]) -> Result<LoopOutcome, Attempt> {
    match devices {
        [ComputeDevice::Cpu] => {
            let mut meter = MemoryMeter::heap();
            let single = Peer::single();
            let result = if ctx.plan.checkpointing {
                run::<Autodiff<Flex, BalancedCheckpointing>>(ctx, &FlexDevice, &mut meter, &single)
            } else {
                run::<Autodiff<Flex>>(ctx, &FlexDevice, &mut meter, &single)
            };
            result.map_err(Attempt::Failed)
        }
        [ComputeDevice::Cpu, ..] => {
            let peers = vec![FlexDevice; devices.len()];
            let result = if ctx.plan.checkpointing {
                run_ranks::<Autodiff<Flex, BalancedCheckpointing>>(ctx, peers, |_| MemoryMeter::heap())
            } else {
                run_ranks::<Autodiff<Flex>>(ctx, peers, |_| MemoryMeter::heap())
            };
            result.map_err(Attempt::Failed)
        }
        _ => {
            let indices: Vec<usize> = devices
                .iter()
                .filter_map(|d| match d {
                    ComputeDevice::Cuda(i) => Some(*i),
                    ComputeDevice::Cpu => None,
                })
                .collect();
            dispatch_cuda(ctx, &indices)
        }
    }
}

#[cfg(feature = "cuda")]
fn dispatch_cuda(ctx: &RunContext, indices: &[usize]) -> Result<LoopOutcome, Attempt> {
    use burn::backend::Cuda;
    use burn::backend::cuda::CudaDevice;
    use burn::tensor::backend::Backend;
    use std::panic::{AssertUnwindSafe, catch_unwind};

    use crate::memory::cuda::CudaMeter;

    let devices: Vec<CudaDevice> = indices.iter().map(|&i| CudaDevice::new(i)).collect();
    let meter_for = |device: &CudaDevice| MemoryMeter::Cuda(CudaMeter::new(device.clone()));
    oom_watch::watch();
    let outcome = catch_unwind(AssertUnwindSafe(|| match devices.as_slice() {
        [device] => {
            let (mut meter, single) = (meter_for(device), Peer::single());
            if ctx.plan.checkpointing {
                run::<Autodiff<Cuda, BalancedCheckpointing>>(ctx, device, &mut meter, &single)
            } else {
                run::<Autodiff<Cuda>>(ctx, device, &mut meter, &single)
            }
        }
        _ if ctx.plan.checkpointing => {
            run_ranks::<Autodiff<Cuda, BalancedCheckpointing>>(ctx, devices.clone(), meter_for)
        }
        _ => run_ranks::<Autodiff<Cuda>>(ctx, devices.clone(), meter_for),
    }))
    .map_err(|payload| crate::trainer::ranks::panic_message(payload.as_ref()));
    if !matches!(outcome, Ok(Ok(_))) {
        for device in &devices {
            <Cuda as Backend>::memory_cleanup(device);
        }
    }
    let named = indices.iter().map(|i| format!("cuda:{i}")).collect::<Vec<_>>().join(",");
    classify_cuda_attempt(outcome, oom_watch::take_noted(), &named)
}

/// How a CUDA attempt ended: its own result, or the message of the panic that ended it, and any
/// out-of-memory panic [`oom_watch`] noted on another thread meanwhile. A failure is an out-of-memory when
/// either says so; a run that finished is a run that finished.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
fn classify_cuda_attempt(
    outcome: Result<Result<LoopOutcome, PipelineError>, String>,
    noted_out_of_memory: Option<String>,
    requested: &str,
) -> Result<LoopOutcome, Attempt> {
    let failure = match outcome {
        Ok(Ok(done)) => return Ok(done),
        Ok(Err(error)) => error.to_string(),
        Err(panic) => panic,
    };
    match noted_out_of_memory {
        Some(noted) => Err(Attempt::OutOfMemory(format!("{noted} (then: {failure})"))),
        None if oom_watch::is_out_of_memory(&failure) => Err(Attempt::OutOfMemory(failure)),
        None => Err(Attempt::Failed(PipelineError::Device { requested: requested.into(), problem: failure })),
    }
}

#[cfg(not(feature = "cuda"))]
fn dispatch_cuda(_ctx: &RunContext, indices: &[usize]) -> Result<LoopOutcome, Attempt> {
    Err(Attempt::Failed(PipelineError::Device {
        requested: indices.iter().map(|i| format!("cuda:{i}")).collect::<Vec<_>>().join(","),
        problem: "built without the `cuda` feature".into(),
    }))
}

fn summary(
    o: LoopOutcome,
    ctx: &RunContext,
    devices: &[ComputeDevice],
    replans: usize,
    started: Instant,
) -> TrainSummary {
    TrainSummary {
        run_dir: ctx.run_dir.clone(),
        device: describe(devices),
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
        resumed_from: ctx.resume_from.clone(),
        already_finished: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    use crate::device::DeviceRequest;
    use voxplan_planner::{PlanRequest, plan};

    /// Two epochs of two steps of a two-stage U-Net on 64³ phantom patches. The patch is this large because
    /// the CPU backend's plan has a fixed ~64 MiB floor: only when a sample's activations outweigh it does a
    /// 30 % smaller budget move the planner from batch 2 to batch 1, as it does for real GPU workloads.
    const TINY: &str = r#"
name = "tiny-oom"
seed = 3
[network]
in_channels = 1
num_classes = 3
norm = { kind = "group", groups = 4 }
stages = [{ features = 8, stride = [1, 1, 1] }, { features = 16, stride = [2, 2, 2] }]
[plan]
patch_size = [64, 64, 64]
target_effective_batch = 2
optimizer = "sgd"
warmup_steps = 1
[data]
source = { kind = "phantom", cases = 4, shape = [64, 64, 64], structures = 2, seed = 5 }
validation_fraction = 0.25
[loader]
workers = 1
queue_length = 4
samples_per_volume = 2
[train]
epochs = 2
steps_per_epoch = 2
max_validation_cases = 1
"#;

    fn tiny() -> Experiment {
        Experiment::parse(TINY, Path::new("tiny.toml")).unwrap()
    }

    fn plan_at(exp: &Experiment, budget: Option<u64>) -> Result<TrainingPlan, PipelineError> {
        let report = plan(&PlanRequest {
            network: exp.network.clone(),
            settings: exp.plan.clone(),
            device: device::run_profile(&DeviceSelector::Cpu)?,
            budget_bytes: budget,
            median_shape: Some([64, 64, 64]),
            devices: 1,
        })?;
        Ok(report.training)
    }

    /// The smallest budget (to 1 %) at which the tiny experiment still plans batch 2 without accumulation:
    /// a run that fails there has nothing to spare, as after a real out-of-memory.
    fn tightest_batch_2_budget(exp: &Experiment) -> u64 {
        let fits = |b: u64| plan_at(exp, Some(b)).is_ok_and(|p| p.batch_size == 2);
        let (mut lo, mut hi) = (1u64 << 16, 1u64 << 36);
        assert!(fits(hi) && !fits(lo));
        while hi - lo > hi / 100 {
            let mid = lo + (hi - lo) / 2;
            if fits(mid) { hi = mid } else { lo = mid }
        }
        hi
    }

    #[test]
    fn an_out_of_memory_replans_to_a_smaller_batch_with_the_same_effective_batch() {
        let exp = tiny();
        let failed = plan_at(&exp, Some(tightest_batch_2_budget(&exp))).unwrap();
        assert_eq!((failed.batch_size, failed.accumulation_steps), (2, 1));
        let replan =
            replan_after_out_of_memory(&failed, "can't allocate buffer of size: 1", 1, |b| plan_at(&exp, Some(b)))
                .unwrap();
        assert_eq!(replan.budget_bytes, (failed.budget_bytes as f64 * OOM_BUDGET_FACTOR) as u64);
        assert!(replan.plan.batch_size < failed.batch_size, "{replan:?}");
        assert!(replan.plan.accumulation_steps > failed.accumulation_steps, "{replan:?}");
        assert_eq!(replan.plan.effective_batch, failed.effective_batch);
        assert!(replan.plan.predicted_peak_bytes < failed.predicted_peak_bytes);
        assert!(replan.detail.contains("batch 2×1 → 1×2"), "{}", replan.detail);
        assert!(replan.detail.starts_with("can't allocate"), "the cause comes first: {}", replan.detail);
    }

    #[test]
    fn replanning_gives_up_after_the_limit_and_when_nothing_smaller_fits() {
        let exp = tiny();
        let failed = plan_at(&exp, None).unwrap();
        let too_many = replan_after_out_of_memory(&failed, "oom", MAX_REPLANS + 1, |_| unreachable!());
        assert!(matches!(too_many, Err(PipelineError::OutOfMemory { .. })));
        let same = replan_after_out_of_memory(&failed, "oom", 1, |_| Ok(failed.clone())).unwrap_err().to_string();
        assert!(same.contains("no smaller plan"), "{same}");
        let none = replan_after_out_of_memory(&failed, "oom", 1, |b| plan_at(&exp, Some(b / 10_000))).unwrap_err();
        assert!(none.to_string().contains("no plan fits the reduced budget"), "{none}");
    }

    /// The first attempt trains one real epoch on the CPU (writing its checkpoint) and then reports an
    /// out-of-memory, as the CUDA arm does when the runner panics allocating; `train` must re-plan and go
    /// on from that checkpoint, not from scratch.
    #[test]
    fn train_resumes_from_the_last_checkpoint_after_an_out_of_memory() {
        let exp = tiny();
        let tmp = tempfile::tempdir().unwrap();
        let run_dir = tmp.path().join("run");
        let options = TrainOptions {
            device: DeviceRequest::Cpu,
            devices: None,
            resume: None,
            run_dir: run_dir.clone(),
            budget_bytes: Some(tightest_batch_2_budget(&exp)),
            stop_after_epochs: None,
            stop: StopRequest::new(),
            wait_for_run_dir: Duration::ZERO,
        };
        let mut attempts = Vec::new();
        let summary = train_with(&exp, &options, |ctx, device| {
            attempts.push((ctx.plan.batch_size, ctx.plan.accumulation_steps, ctx.resume_from.clone()));
            if attempts.len() > 1 {
                return dispatch(ctx, device);
            }
            let one_epoch = RunContext {
                experiment: ctx.experiment,
                plan: ctx.plan.clone(),
                source: ctx.source.clone(),
                split: ctx.split.clone(),
                run_dir: ctx.run_dir.clone(),
                resume_from: ctx.resume_from.clone(),
                windows_per_pass: ctx.windows_per_pass,
                stop_after_epochs: Some(1),
                preprocessing: ctx.preprocessing.clone(),
                labels: ctx.labels.clone(),
                stop: ctx.stop.clone(),
            };
            dispatch(&one_epoch, device)?;
            Err(Attempt::OutOfMemory("can't allocate buffer of size: 123 (injected after epoch 1)".into()))
        })
        .unwrap();

        let last = checkpoint::slot_dir(&run_dir, checkpoint::Slot::Last);
        assert_eq!(attempts.len(), 2);
        assert_eq!((attempts[0].0, attempts[0].1, attempts[0].2.clone()), (2, 1, None));
        assert_eq!((attempts[1].0, attempts[1].1, attempts[1].2.clone()), (1, 2, Some(last.clone())));
        assert_eq!(summary.replans, 1);
        assert_eq!((summary.plan.batch_size, summary.plan.accumulation_steps), (1, 2));
        assert_eq!((summary.epochs_done, summary.optimizer_steps), (2, 4));

        let text = std::fs::read_to_string(run_dir.join(crate::trainer::metrics_log::METRICS_FILE)).unwrap();
        let records: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let steps: Vec<u64> =
            records.iter().filter(|r| r["kind"] == "step").map(|r| r["step"].as_u64().unwrap()).collect();
        assert_eq!(steps, vec![1, 2, 3, 4], "epoch 1 is not trained twice");
        let events: Vec<(&str, u64)> = records
            .iter()
            // The recovery's own events; a memory_above_plan warning may come and go with the model's accuracy.
            .filter(|r| r["kind"] == "event" && r["event"] != "memory_above_plan")
            .map(|r| (r["event"].as_str().unwrap(), r["step"].as_u64().unwrap()))
            .collect();
        assert_eq!(events, vec![("out_of_memory_replan", 2), ("resume", 2)]);
        let state = checkpoint::load_state(&last).unwrap();
        assert_eq!((state.plan.batch_size, state.plan.accumulation_steps), (1, 2), "the re-plan is checkpointed");
    }

    #[test]
    fn a_failed_cuda_attempt_is_an_out_of_memory_when_its_error_or_another_thread_says_so() {
        let kind =
            |outcome, noted: Option<&str>| match classify_cuda_attempt(outcome, noted.map(String::from), "cuda:0") {
                Ok(_) => "finished".to_string(),
                Err(Attempt::OutOfMemory(m)) => format!("oom: {m}"),
                Err(Attempt::Failed(e)) => format!("failed: {e}"),
            };
        let read_error =
            || Ok(Err(PipelineError::Device { requested: "cuda:0".into(), problem: "read failed".into() }));
        // cubecl's runner thread panicked allocating; the training thread only saw a generic read error.
        let k = kind(read_error(), Some("can't allocate buffer of size: 7"));
        assert!(k.starts_with("oom: can't allocate buffer of size: 7 (then: ") && k.contains("read failed"), "{k}");
        // The training thread's own panic names the allocation.
        assert!(kind(Err("BufferTooBig { size: 7 }".into()), None).starts_with("oom: BufferTooBig"));
        // Anything else is a device failure, reported as such.
        let k = kind(Err("index out of bounds".into()), None);
        assert!(k.starts_with("failed:") && k.contains("cuda:0") && k.contains("index out of bounds"), "{k}");
        assert!(kind(read_error(), None).starts_with("failed:"));
    }
}
