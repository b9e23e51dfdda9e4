//! `voxplan train`: plans for the device, trains, validates, checkpoints.

use std::path::PathBuf;

use anyhow::Context;
use voxplan_pipeline::trainer::run_lock::DEFAULT_RUN_DIR_WAIT;
use voxplan_pipeline::{DeviceRequest, DevicesRequest, Experiment, TrainOptions, train};
use voxplan_planner::{format_bytes, parse_budget};

#[derive(clap::Args)]
pub struct Args {
    /// Experiment TOML (default: the built-in phantom experiment).
    #[arg(long)]
    config: Option<PathBuf>,
    /// `auto` (CUDA if it works, else CPU), `cpu`, `cuda` or `cuda:N`.
    #[arg(long, default_value = "auto", conflicts_with = "devices")]
    device: String,
    /// Several devices in data parallel, one training thread each: `cuda:0,cuda:1,…`, `all` (every CUDA
    /// device), or `cpu:N` (N CPU peers: the same path, for tests). The planner plans per device for their
    /// number and keeps the effective batch.
    #[arg(long)]
    devices: Option<String>,
    /// Continue from a run directory or checkpoint directory (also with a changed experiment). Without it, a
    /// --run-dir that holds a run of the same experiment is continued, and a finished one left alone.
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Where checkpoints, metrics.jsonl, plan.json, experiment.json and weights.safetensors go (default:
    /// runs/<experiment>; with --resume, the run being resumed).
    #[arg(long)]
    run_dir: Option<PathBuf>,
    /// Memory budget instead of the device's free memory, e.g. `6GiB`.
    #[arg(long)]
    budget: Option<String>,
    /// Stop after this many epochs (checkpointed; continue later with --resume). The LR schedule still
    /// spans the experiment's full `train.epochs`.
    #[arg(long)]
    stop_after_epochs: Option<usize>,
    /// Seconds to wait when another voxplan process still trains into the run directory (a requeued job
    /// whose previous run still writes its checkpoint, say) before giving up with exit 75.
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_RUN_DIR_WAIT.as_secs(), allow_negative_numbers = true)]
    wait_for_run_dir: u64,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let experiment = Experiment::load(args.config.as_deref())?;
    let device: DeviceRequest = args.device.parse()?;
    let devices: Option<DevicesRequest> = args.devices.as_deref().map(str::parse).transpose()?;
    let budget_bytes = args.budget.as_deref().map(parse_budget).transpose()?;
    let run_dir = match (&args.run_dir, &args.resume) {
        (Some(d), _) => d.clone(),
        (None, Some(r)) => run_dir_of(r),
        (None, None) => PathBuf::from("runs").join(&experiment.name),
    };
    let summary = train(
        &experiment,
        &TrainOptions {
            device,
            devices,
            resume: args.resume,
            run_dir,
            budget_bytes,
            stop_after_epochs: args.stop_after_epochs,
            stop: crate::signals::stop_on_signals()?,
            wait_for_run_dir: std::time::Duration::from_secs(args.wait_for_run_dir),
        },
    )
    .context("training failed")?;
    if summary.already_finished {
        println!("run          {} (already finished: nothing to train)", summary.run_dir.display());
        println!("epochs       {} ({} optimizer steps)", summary.epochs_done, summary.optimizer_steps);
        if let Some(d) = summary.best_dice {
            println!("best Dice    {d:.4}");
        }
        println!("weights      {}", summary.weights.display());
        return Ok(());
    }
    println!("run          {}", summary.run_dir.display());
    if let Some(from) = &summary.resumed_from {
        println!("resumed from {}", from.display());
    }
    println!("device       {}", summary.device);
    println!(
        "plan         patch {:?}, batch {}{} × {} accumulation, {:?}, checkpointing {}",
        summary.plan.patch_size,
        summary.plan.batch_size,
        if summary.plan.devices > 1 {
            format!(" per device × {} devices", summary.plan.devices)
        } else {
            String::new()
        },
        summary.plan.accumulation_steps,
        summary.plan.precision,
        summary.plan.checkpointing
    );
    println!("epochs       {} ({} optimizer steps)", summary.epochs_done, summary.optimizer_steps);
    if let Some(l) = summary.last_loss {
        println!("last loss    {l:.4}");
    }
    match summary.best_dice {
        Some(d) => println!("best Dice    {d:.4}"),
        None => println!("best Dice    (not validated)"),
    }
    println!(
        "memory       measured peak {} / planned {} (+ {} fixed backend overhead, not metered)",
        format_bytes(summary.measured_peak_bytes),
        format_bytes(summary.plan.predicted_step_bytes()),
        format_bytes(summary.plan.fixed_overhead_bytes),
    );
    println!("throughput   {:.2} samples/s", summary.samples_per_s);
    if summary.skipped_steps > 0 {
        println!("skipped      {} optimizer steps (f16 overflow)", summary.skipped_steps);
    }
    if summary.replans > 0 {
        println!("re-planned   {} times after running out of memory", summary.replans);
    }
    println!("weights      {}", summary.weights.display());
    println!("time         {:.1} s", summary.seconds);
    Ok(())
}

/// `--resume run/checkpoints/last` resumes into `run`; `--resume run` into `run`.
fn run_dir_of(resume: &std::path::Path) -> PathBuf {
    let parent_is_checkpoints =
        |p: &std::path::Path| p.parent().and_then(|q| q.file_name()).is_some_and(|n| n == "checkpoints");
    if parent_is_checkpoints(resume) {
        resume.parent().and_then(|p| p.parent()).map(|p| p.to_path_buf()).unwrap_or_else(|| resume.to_path_buf())
    } else {
        resume.to_path_buf()
    }
}
