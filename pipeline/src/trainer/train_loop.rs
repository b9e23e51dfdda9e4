//! The training loop, generic over the autodiff backend.
//!
//! burn-train's `Learner` cannot skip an optimizer step after an f16 overflow and offers no hook between
//! forward and backward for memory polls (reference §7), so the loop is written out here: micro-batches
//! from the patch loader, loss divided by the accumulation count, gradients summed, one optimizer step per
//! `accumulation_steps` micro-batches at the schedule's rate.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use burn::module::AutodiffModule;
use burn::optim::GradientsAccumulator;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Int, Tensor, TensorData};
use voxplan_planner::TrainingPlan;
use voxplan_volumes::{CaseSource, PatchLoader, Shard, Split};

use crate::data_parallel::Peer;
use crate::error::PipelineError;
use crate::experiment::Experiment;
use crate::loss::DiceCeLoss;
use crate::memory::MemoryMeter;
use crate::model::{UNet, UNetConfig};
use crate::optim::{LrSchedule, TrainOptimizer, build_optimizer};
use crate::precision::LossScaler;
use crate::trainer::checkpoint::{self, EpochProgress, SAFETENSORS_FILE, Slot, TrainState};
use crate::trainer::metrics_log::{EventRecord, MetricsLog, StepRecord, ValidationRecord};
use crate::trainer::progress::Progress;
use crate::trainer::step::{MicroOutcome, StepPoint, micro_batch, optimizer_update};
use crate::trainer::stop::StopRequest;
use crate::trainer::validation::{validate, validate_sharded};

/// Ranks of one process initialise their replicas one at a time: the seed and the draws that follow it
/// must not interleave with another rank's, or the replicas would start from different weights.
static MODEL_INIT: std::sync::Mutex<()> = std::sync::Mutex::new(());

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
    /// Set to stop at the next optimizer step boundary with a checkpoint ([`PipelineError::Interrupted`]).
    pub stop: StopRequest,
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
    /// [`crate::data_parallel::replica_fingerprint`] of the final weights, on several devices.
    pub replica_fingerprint: Option<u64>,
}

/// Trains `ctx.plan` on backend `B`, from scratch or from `ctx.resume_from`, as `peer`'s rank of a
/// data-parallel run ([`Peer::single`] on one device; `crate::data_parallel` for the step on several).
pub fn run<B: AutodiffBackend>(
    ctx: &RunContext,
    device: &B::Device,
    meter: &mut MemoryMeter,
    peer: &Peer,
) -> Result<LoopOutcome, PipelineError> {
    peer.register::<B>(device)?;
    let outcome = run_rank::<B>(ctx, device, meter, peer);
    if outcome.is_ok() {
        peer.finish::<B>();
    }
    outcome
}

fn run_rank<B: AutodiffBackend>(
    ctx: &RunContext,
    device: &B::Device,
    meter: &mut MemoryMeter,
    peer: &Peer,
) -> Result<LoopOutcome, PipelineError> {
    let exp = ctx.experiment;
    let cfg = &exp.train;
    let plan = &ctx.plan;
    let classes = plan.network.num_classes;
    let world = peer.world;

    let mut model: UNet<B> = {
        let _one_at_a_time = MODEL_INIT.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        B::seed(device, exp.seed);
        UNetConfig::new(plan.network.clone(), plan.precision).init(device)
    };
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
        epoch_progress: None,
    };
    if let Some(dir) = &ctx.resume_from {
        let saved = checkpoint::load_state(dir)?;
        model = checkpoint::load_model(model, dir, device)?;
        optimizer = optimizer.load(&checkpoint::optimizer_path(dir), device)?;
        if let Some(s) = saved.loss_scale {
            scaler = LossScaler::dynamic(s as f32);
        }
        if peer.writes() {
            // Records written after the checkpoint (a run killed between two checkpoints) are trained again
            // now: keep the file one record per step.
            let dropped = MetricsLog::keep_until(&ctx.run_dir, saved.optimizer_steps, saved.epochs_done)?;
            let at = match saved.epoch_progress {
                Some(p) => format!("epoch {} step {} of {}", p.epoch + 1, p.steps_done, cfg.steps_per_epoch),
                None => format!("the end of epoch {}", saved.epochs_done),
            };
            MetricsLog::open(&ctx.run_dir)?.write(&EventRecord {
                kind: "event",
                epoch: saved.epochs_done,
                step: saved.optimizer_steps,
                event: "resume".into(),
                detail: format!("{} at {at}; {dropped} later records dropped", dir.display()),
            })?;
        }
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
    let progress = if peer.writes() { Progress::new(cfg.epochs, cfg.steps_per_epoch) } else { Progress::Silent };
    let mut measured_peak = 0u64;
    let mut warned_memory = false;
    let (mut samples, mut busy_s) = (0usize, 0.0f64);

    let mut log = if peer.writes() { Some(MetricsLog::open(&ctx.run_dir)?) } else { None };
    let every = Duration::from_secs_f64(cfg.checkpoint_every_minutes * 60.0);
    let mut checkpointed_at = Instant::now();
    let end_epoch = ctx.stop_after_epochs.unwrap_or(cfg.epochs).min(cfg.epochs);
    for epoch in state.epochs_done..end_epoch {
        progress.start_epoch(epoch, cfg.epochs);
        // A checkpoint written inside this epoch: go on at its next step, with the same data.
        let (first_step, mut epoch_loss) = match state.epoch_progress.filter(|p| p.epoch == epoch) {
            Some(p) => (p.steps_done.min(cfg.steps_per_epoch), p.loss_sum),
            None => (0, 0.0),
        };
        // Each rank draws its share of every global batch of `batch × world` patches.
        let mut loader = PatchLoader::start_shard(
            ctx.source.clone(),
            ctx.split.train.clone(),
            &exp.loader,
            &exp.augment,
            plan.patch_size,
            plan.batch_size * world,
            cfg.steps_per_epoch * accum,
            exp.seed,
            epoch as u64,
            first_step * accum,
            Shard { rank: peer.rank, ranks: world },
        )?;
        for step_in_epoch in first_step..cfg.steps_per_epoch {
            let started = Instant::now();
            let waited_before = loader.waited();
            meter.begin_step();
            let mut accumulator = GradientsAccumulator::<UNet<B>>::new();
            let mut step_loss = 0.0;
            let mut non_finite = None;
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
                match outcome {
                    MicroOutcome::Accumulated { loss } => step_loss += loss / accum as f64,
                    MicroOutcome::NonFiniteLoss { loss } => {
                        non_finite = Some((loss, micro));
                        break;
                    }
                }
                samples += n * world;
            }
            // Every rank learns the step's loss, and whether any rank diverged or was asked to stop.
            let local_loss = if non_finite.is_some() { f64::NAN } else { step_loss };
            let vote = peer.vote::<B>(local_loss, ctx.stop.is_requested(), device)?;
            if vote.non_finite {
                progress.finish();
                let (loss, micro_batch) = non_finite.unwrap_or((f64::NAN, 0));
                return Err(PipelineError::NonFiniteLoss {
                    loss,
                    step: state.optimizer_steps,
                    epoch,
                    micro_batch,
                    last_checkpoint: last_checkpoint(&ctx.run_dir),
                });
            }
            let step_loss = vote.loss;
            let lr = schedule.lr(state.optimizer_steps);
            let scaling = scaler.is_enabled();
            let (updated, skipped) =
                optimizer_update(model, &mut optimizer, &mut scaler, &mut accumulator, lr, peer, &mut |_| {})?;
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
            let step_samples = plan.batch_size * world * accum;
            let rate = step_samples as f64 / elapsed.max(1e-9);
            epoch_loss += step_loss;
            state.epoch_progress = Some(EpochProgress { epoch, steps_done: step_in_epoch + 1, loss_sum: epoch_loss });
            let planned_step = plan.predicted_step_bytes();
            let loader_bound = meter.includes_loader().then(|| loader.memory_bound_bytes());
            let comparable = planned_step + loader_bound.unwrap_or(0);
            // Ranks sharing the host's heap (CPU peers) measure each other: no per-device figure to compare.
            let shares_heap = meter.includes_loader() && !peer.is_single();
            let over = !shares_heap && mem.measured_peak_bytes as f64 > comparable as f64 * cfg.memory_warning_factor;
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
                write(
                    &mut log,
                    &EventRecord {
                        kind: "event",
                        epoch,
                        step: state.optimizer_steps,
                        event: "memory_above_plan".into(),
                        detail,
                    },
                )?;
            }
            write(
                &mut log,
                &StepRecord {
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
                },
            )?;
            progress.step(epoch, step_in_epoch, step_loss, rate);
            state.loss_scale = scaler.is_enabled().then_some(scaler.scale() as f64);
            let inside_epoch = step_in_epoch + 1 < cfg.steps_per_epoch;
            // One device looks at the flag now; ranks act on the step's vote, all at the same step.
            if if peer.is_single() { ctx.stop.is_requested() } else { vote.stop } {
                progress.finish();
                return Err(interrupted(ctx, &model, &optimizer, &state, &mut log, peer)?);
            }
            if inside_epoch && checkpointed_at.elapsed() >= every && peer.writes() {
                checkpoint::save(&ctx.run_dir, Slot::Last, &model, |p| optimizer.save(p), &state)?;
                checkpointed_at = Instant::now();
            }
        }
        drop(loader);
        state.last_loss = Some(epoch_loss / cfg.steps_per_epoch.max(1) as f64);

        let last_epoch = epoch + 1 == end_epoch;
        let mut improved = false;
        if last_epoch || (cfg.validate_every > 0 && (epoch + 1) % cfg.validate_every == 0) {
            let cases = validation_cases(&ctx.split, cfg.max_validation_cases);
            let valid = model.valid();
            let windows = ctx.windows_per_pass;
            let validated = if peer.is_single() {
                validate(&valid, &ctx.source, &cases, plan.patch_size, classes, windows, &ctx.stop, device)?
            } else {
                let patch = plan.patch_size;
                Some(validate_sharded::<B>(&valid, &ctx.source, &cases, patch, classes, windows, peer, device)?)
            };
            let Some(result) = validated else {
                // Stopped between validation cases: the checkpoint says the epoch's steps are done and its
                // validation is not, so the resumed run validates it from the first case.
                progress.finish();
                return Err(interrupted(ctx, &model, &optimizer, &state, &mut log, peer)?);
            };
            let dice = result.mean_dice.unwrap_or(0.0);
            progress.println(&format!(
                "epoch {}: train loss {:.4}, validation mean Dice {dice:.4} on {} cases ({:.1} s): {}",
                epoch + 1,
                state.last_loss.unwrap_or(f64::NAN),
                result.cases,
                result.seconds,
                result.summary(&ctx.labels)
            ));
            write(
                &mut log,
                &ValidationRecord {
                    kind: "validation",
                    epoch,
                    step: state.optimizer_steps,
                    dice,
                    dice_per_class: result.by_name(&ctx.labels),
                    cases: result.cases,
                    seconds: result.seconds,
                },
            )?;
            if state.best_dice.is_none_or(|b| dice > b) {
                state.best_dice = Some(dice);
                state.best_epoch = Some(epoch);
                improved = true;
            }
        }
        state.epochs_done = epoch + 1;
        state.epoch_progress = None;
        if peer.writes() {
            checkpoint::save(&ctx.run_dir, Slot::Last, &model, |p| optimizer.save(p), &state)?;
            if improved {
                checkpoint::save(&ctx.run_dir, Slot::Best, &model, |p| optimizer.save(p), &state)?;
                checkpoint::export_safetensors(&model.valid(), &ctx.run_dir.join(SAFETENSORS_FILE), plan)?;
            }
        }
        checkpointed_at = Instant::now();
        let stop = if peer.is_single() {
            ctx.stop.is_requested()
        } else {
            peer.vote::<B>(0.0, ctx.stop.is_requested(), device)?.stop
        };
        if stop && epoch + 1 < end_epoch {
            progress.finish();
            return Err(interrupted_at_boundary(ctx, &state, &mut log)?);
        }
    }
    progress.finish();
    if peer.writes() && !ctx.run_dir.join(SAFETENSORS_FILE).exists() {
        checkpoint::export_safetensors(&model.valid(), &ctx.run_dir.join(SAFETENSORS_FILE), plan)?;
    }
    Ok(LoopOutcome {
        state,
        measured_peak_bytes: measured_peak,
        samples_per_s: samples as f64 / busy_s.max(1e-9),
        skipped_steps: scaler.skipped_steps(),
        replica_fingerprint: (!peer.is_single()).then(|| crate::data_parallel::replica_fingerprint(&model.valid())),
    })
}

/// Writes the last checkpoint where the run stands (inside an epoch, its progress recorded) and logs the
/// stop; the error the run then ends with.
fn interrupted<B: AutodiffBackend>(
    ctx: &RunContext,
    model: &UNet<B>,
    optimizer: &TrainOptimizer<B, UNet<B>>,
    state: &TrainState,
    log: &mut Option<MetricsLog>,
    peer: &Peer,
) -> Result<PipelineError, PipelineError> {
    if peer.writes() {
        checkpoint::save(&ctx.run_dir, Slot::Last, model, |p| optimizer.save(p), state)?;
    }
    interrupted_at_boundary(ctx, state, log)
}

/// The stop after a checkpoint that is already written.
fn interrupted_at_boundary(
    ctx: &RunContext,
    state: &TrainState,
    log: &mut Option<MetricsLog>,
) -> Result<PipelineError, PipelineError> {
    let epoch = state.epoch_progress.map_or(state.epochs_done, |p| p.epoch);
    let checkpoint = checkpoint::slot_dir(&ctx.run_dir, Slot::Last);
    write(
        log,
        &EventRecord {
            kind: "event",
            epoch,
            step: state.optimizer_steps,
            event: "interrupted".into(),
            detail: format!("stop requested; checkpoint {}", checkpoint.display()),
        },
    )?;
    tracing::warn!("stop requested: checkpoint written at optimizer step {}", state.optimizer_steps);
    Ok(PipelineError::Interrupted { step: state.optimizer_steps, epoch, checkpoint })
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

/// Writes `record` to the metrics log when this rank keeps one (rank 0).
fn write<R: serde::Serialize>(log: &mut Option<MetricsLog>, record: &R) -> Result<(), PipelineError> {
    match log {
        Some(log) => log.write(record),
        None => Ok(()),
    }
}
