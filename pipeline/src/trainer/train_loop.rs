//! The training loop, generic over the autodiff backend.
//!
//! burn-train's `Learner` cannot skip an optimizer step after an f16 overflow and offers no hook between
//! forward and backward for memory polls (reference §7), so the loop is written out here: micro-batches
//! from the patch loader, loss divided by the accumulation count, gradients summed, one optimizer step per
//! `accumulation_steps` micro-batches at the schedule's rate.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::optim::GradientsAccumulator;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Int, Tensor, TensorData};
use voxplan_planner::TrainingPlan;
use voxplan_volumes::{CaseSource, PatchLoader, Split};

use crate::error::PipelineError;
use crate::experiment::Experiment;
use crate::loss::DiceCeLoss;
use crate::memory::MemoryMeter;
use crate::model::{UNet, UNetConfig};
use crate::optim::{LrSchedule, TrainOptimizer, build_optimizer};
use crate::precision::LossScaler;
use crate::trainer::checkpoint::{self, SAFETENSORS_FILE, Slot, TrainState};
use crate::trainer::metrics_log::{EventRecord, MetricsLog, StepRecord, ValidationRecord};
use crate::trainer::progress::Progress;
use crate::trainer::step::{MicroOutcome, StepPoint, micro_batch, optimizer_update};
use crate::trainer::validation::validate;

/// Everything a run needs that does not depend on the backend.
pub struct RunContext<'a> {
    pub experiment: &'a Experiment,
    pub plan: TrainingPlan,
    pub source: Arc<dyn CaseSource>,
    pub split: Split,
    pub run_dir: PathBuf,
    /// Checkpoint directory to continue from.
    pub resume_from: Option<PathBuf>,
    /// Windows per validation forward pass, from the inference planner.
    pub windows_per_pass: usize,
    /// Epoch count after which to stop early (the schedule still spans `train.epochs`).
    pub stop_after_epochs: Option<usize>,
    /// What `source` applies to every case; recorded in checkpoints for `predict`.
    pub preprocessing: voxplan_volumes::preprocess::Preprocessing,
    /// The classes `source` encodes its label maps with (the network's output channels, in order); recorded
    /// in checkpoints so `predict` writes the declared values back.
    pub labels: voxplan_volumes::LabelSpace,
}

/// What a finished (or interrupted) run reports.
#[derive(Debug, Clone, PartialEq)]
pub struct LoopOutcome {
    pub state: TrainState,
    /// Highest measured step peak, bytes.
    pub measured_peak_bytes: u64,
    /// Mean samples per second over the run's steps.
    pub samples_per_s: f64,
    pub skipped_steps: usize,
}

/// Trains `ctx.plan` on backend `B`, from scratch or from `ctx.resume_from`.
pub fn run<B: AutodiffBackend>(
    ctx: &RunContext,
    device: &B::Device,
    meter: &mut MemoryMeter,
) -> Result<LoopOutcome, PipelineError> {
    let exp = ctx.experiment;
    let cfg = &exp.train;
    let plan = &ctx.plan;
    let classes = plan.network.num_classes;

    B::seed(device, exp.seed);
    let mut model: UNet<B> = UNetConfig::new(plan.network.clone(), plan.precision).init(device);
    let mut optimizer: TrainOptimizer<B, UNet<B>> = build_optimizer(exp.plan.optimizer, cfg.weight_decay);
    let mut scaler = cfg.loss_scaler(plan.precision);
    let mut state = TrainState {
        format_version: checkpoint::STATE_FORMAT_VERSION,
        experiment: exp.name.clone(),
        epochs_done: 0,
        optimizer_steps: 0,
        seed: exp.seed,
        best_dice: None,
        best_epoch: None,
        last_loss: None,
        loss_scale: scaler.is_enabled().then_some(scaler.scale() as f64),
        plan: plan.clone(),
        preprocessing: ctx.preprocessing.clone(),
        labels: Some(ctx.labels.clone()),
    };
    let mut log = MetricsLog::open(&ctx.run_dir)?;
    if let Some(dir) = &ctx.resume_from {
        let saved = checkpoint::load_state(dir)?;
        model = checkpoint::load_model(model, dir, device)?;
        optimizer = optimizer.load(&checkpoint::optimizer_path(dir), device)?;
        if let Some(s) = saved.loss_scale {
            scaler = LossScaler::dynamic(s as f32);
        }
        log.write(&EventRecord {
            kind: "event",
            epoch: saved.epochs_done,
            step: saved.optimizer_steps,
            event: "resume".into(),
            detail: dir.display().to_string(),
        })?;
        state = TrainState {
            format_version: checkpoint::STATE_FORMAT_VERSION,
            plan: plan.clone(),
            preprocessing: ctx.preprocessing.clone(),
            labels: Some(ctx.labels.clone()),
            ..saved
        };
    }

    let total_steps = cfg.epochs * cfg.steps_per_epoch;
    let schedule = LrSchedule::poly(plan.learning_rate, plan.warmup_steps, total_steps);
    let loss_fn = DiceCeLoss::new(classes, None);
    let accum = plan.accumulation_steps.max(1);
    let [px, py, pz] = plan.patch_size;
    let progress = Progress::new(cfg.epochs, cfg.steps_per_epoch);
    let mut measured_peak = 0u64;
    let mut warned_memory = false;
    let (mut samples, mut busy_s) = (0usize, 0.0f64);

    let end_epoch = ctx.stop_after_epochs.unwrap_or(cfg.epochs).min(cfg.epochs);
    for epoch in state.epochs_done..end_epoch {
        progress.start_epoch(epoch, cfg.epochs);
        let mut loader = PatchLoader::start(
            ctx.source.clone(),
            ctx.split.train.clone(),
            &exp.loader,
            &exp.augment,
            plan.patch_size,
            plan.batch_size,
            cfg.steps_per_epoch * accum,
            exp.seed,
            epoch as u64,
        )?;
        let mut epoch_loss = 0.0;
        for step_in_epoch in 0..cfg.steps_per_epoch {
            let started = Instant::now();
            let waited_before = loader.waited();
            meter.begin_step();
            let mut accumulator = GradientsAccumulator::<UNet<B>>::new();
            let mut step_loss = 0.0;
            for micro in 0..accum {
                let batch = loader.next_batch().ok_or_else(|| {
                    PipelineError::Volume(voxplan_volumes::VolumeError::LoaderStopped(
                        "the loader ended before the epoch's last batch".into(),
                    ))
                })??;
                let n = batch.batch_size;
                let images =
                    Tensor::<B, 5>::from_data(TensorData::new(batch.images, [n, batch.channels, pz, py, px]), device);
                let labels_i: Vec<i32> = batch.labels.iter().map(|&v| i32::from(v)).collect();
                let labels = Tensor::<B, 4, Int>::from_data(TensorData::new(labels_i, [n, pz, py, px]), device);
                let mut poll = |_: StepPoint| meter.poll();
                let outcome =
                    micro_batch(&model, &loss_fn, images, labels, scaler.scale(), accum, &mut accumulator, &mut poll);
                let value = match outcome {
                    MicroOutcome::Accumulated { loss } => loss,
                    MicroOutcome::NonFiniteLoss { loss } => {
                        progress.finish();
                        return Err(PipelineError::NonFiniteLoss {
                            loss,
                            step: state.optimizer_steps,
                            epoch,
                            micro_batch: micro,
                            last_checkpoint: last_checkpoint(&ctx.run_dir),
                        });
                    }
                };
                step_loss += value / accum as f64;
                samples += n;
            }
            let lr = schedule.lr(state.optimizer_steps);
            let scaling = scaler.is_enabled();
            let (updated, skipped) =
                optimizer_update(model, &mut optimizer, &mut scaler, &mut accumulator, lr, &mut |_| {});
            model = updated;
            if skipped && !scaling {
                progress.finish();
                return Err(PipelineError::NonFiniteLoss {
                    loss: f64::NAN,
                    step: state.optimizer_steps,
                    epoch,
                    micro_batch: accum - 1,
                    last_checkpoint: last_checkpoint(&ctx.run_dir),
                });
            }
            state.optimizer_steps += 1;
            let mem = meter.end_step();
            measured_peak = measured_peak.max(mem.measured_peak_bytes);
            let elapsed = started.elapsed().as_secs_f64();
            busy_s += elapsed;
            let step_samples = plan.batch_size * accum;
            let rate = step_samples as f64 / elapsed.max(1e-9);
            epoch_loss += step_loss;
            let planned_step = plan.predicted_step_bytes();
            let loader_bound = meter.includes_loader().then(|| loader.memory_bound_bytes());
            let comparable = planned_step + loader_bound.unwrap_or(0);
            let over = mem.measured_peak_bytes as f64 > comparable as f64 * cfg.memory_warning_factor;
            if over && !warned_memory {
                warned_memory = true;
                // Whether the over-run still fits says how urgent it is: the plan keeps a safety margin.
                let in_use = mem.measured_peak_bytes + plan.fixed_overhead_bytes;
                let detail = format!(
                    "measured peak {} > planned {}{} (×{:.2}); with the fixed overhead {} of the {} budget{}",
                    voxplan_planner::format_bytes(mem.measured_peak_bytes),
                    voxplan_planner::format_bytes(planned_step),
                    loader_bound
                        .map(|b| format!(" + loader bound {}", voxplan_planner::format_bytes(b)))
                        .unwrap_or_default(),
                    mem.measured_peak_bytes as f64 / comparable.max(1) as f64,
                    voxplan_planner::format_bytes(in_use),
                    voxplan_planner::format_bytes(plan.budget_bytes),
                    if in_use > plan.budget_bytes { ", beyond it: eating into the safety margin" } else { "" }
                );
                progress.println(&format!("warning: {detail}"));
                tracing::warn!("{detail}");
                log.write(&EventRecord {
                    kind: "event",
                    epoch,
                    step: state.optimizer_steps,
                    event: "memory_above_plan".into(),
                    detail,
                })?;
            }
            log.write(&StepRecord {
                kind: "step",
                epoch,
                step: state.optimizer_steps,
                loss: step_loss,
                lr,
                samples_per_s: rate,
                waited_for_data_s: (loader.waited() - waited_before).as_secs_f64(),
                peak_memory_measured_bytes: mem.measured_peak_bytes,
                peak_memory_planned_bytes: planned_step,
                loader_bound_bytes: loader_bound,
                driver_used_bytes: mem.driver_used_bytes,
                skipped,
                loss_scale: scaler.is_enabled().then_some(scaler.scale() as f64),
            })?;
            progress.step(epoch, step_in_epoch, step_loss, rate);
        }
        drop(loader);
        state.epochs_done = epoch + 1;
        state.last_loss = Some(epoch_loss / cfg.steps_per_epoch.max(1) as f64);
        state.loss_scale = scaler.is_enabled().then_some(scaler.scale() as f64);

        let last_epoch = epoch + 1 == end_epoch;
        let mut improved = false;
        if last_epoch || (cfg.validate_every > 0 && (epoch + 1) % cfg.validate_every == 0) {
            let cases = validation_cases(&ctx.split, cfg.max_validation_cases);
            let result =
                validate(&model.valid(), &ctx.source, &cases, plan.patch_size, classes, ctx.windows_per_pass, device)?;
            let dice = result.mean_dice.unwrap_or(0.0);
            progress.println(&format!(
                "epoch {}: train loss {:.4}, validation mean Dice {dice:.4} on {} cases ({:.1} s): {}",
                epoch + 1,
                state.last_loss.unwrap_or(f64::NAN),
                result.cases,
                result.seconds,
                result.summary(&ctx.labels)
            ));
            log.write(&ValidationRecord {
                kind: "validation",
                epoch,
                step: state.optimizer_steps,
                dice,
                dice_per_class: result.by_name(&ctx.labels),
                cases: result.cases,
                seconds: result.seconds,
            })?;
            if state.best_dice.is_none_or(|b| dice > b) {
                state.best_dice = Some(dice);
                state.best_epoch = Some(epoch);
                improved = true;
            }
        }
        checkpoint::save(&ctx.run_dir, Slot::Last, &model, |p| optimizer.save(p), &state)?;
        if improved {
            checkpoint::save(&ctx.run_dir, Slot::Best, &model, |p| optimizer.save(p), &state)?;
            checkpoint::export_safetensors(&model.valid(), &ctx.run_dir.join(SAFETENSORS_FILE), plan)?;
        }
    }
    progress.finish();
    if !ctx.run_dir.join(SAFETENSORS_FILE).exists() {
        checkpoint::export_safetensors(&model.valid(), &ctx.run_dir.join(SAFETENSORS_FILE), plan)?;
    }
    Ok(LoopOutcome {
        state,
        measured_peak_bytes: measured_peak,
        samples_per_s: samples as f64 / busy_s.max(1e-9),
        skipped_steps: scaler.skipped_steps(),
    })
}

/// The validation cases used, in split order, capped by `max`.
fn validation_cases(split: &Split, max: Option<usize>) -> Vec<usize> {
    let n = max.unwrap_or(usize::MAX).min(split.validation.len());
    split.validation[..n].to_vec()
}

/// The last checkpoint written so far in a run, if any.
fn last_checkpoint(run_dir: &std::path::Path) -> Option<PathBuf> {
    checkpoint::resolve_resume_dir(run_dir).ok()
}
