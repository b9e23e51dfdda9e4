//! `voxplan predict`: segments NIfTI volumes with a trained checkpoint.

use std::path::PathBuf;

use anyhow::Context;
use voxplan_pipeline::{DeviceRequest, PredictOptions, predict};
use voxplan_planner::{format_bytes, parse_budget};

#[derive(clap::Args)]
pub struct Args {
    /// A run directory (its best checkpoint is used) or a checkpoint directory.
    #[arg(long)]
    checkpoint: PathBuf,
    /// A .nii/.nii.gz file, or a directory of them.
    #[arg(long)]
    input: PathBuf,
    /// Directory for the label maps (same file names as the inputs).
    #[arg(long)]
    output: PathBuf,
    /// Also write per-class probabilities (`<name>_probabilities.nii.gz`, float32, one volume per class).
    #[arg(long)]
    probabilities: bool,
    /// `auto`, `cpu`, `cuda` or `cuda:N`.
    #[arg(long, default_value = "auto")]
    device: String,
    /// Memory budget for sizing windows per pass, e.g. `4GiB`.
    #[arg(long)]
    budget: Option<String>,
    /// Skip inputs whose outputs already exist (they are written whole or not at all): how a requeued job
    /// finishes what an interrupted one started.
    #[arg(long)]
    skip_existing: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let device: DeviceRequest = args.device.parse()?;
    let budget_bytes = args.budget.as_deref().map(parse_budget).transpose()?;
    let files = predict(&PredictOptions {
        checkpoint: args.checkpoint,
        input: args.input,
        output: args.output,
        probabilities: args.probabilities,
        device,
        budget_bytes,
        skip_existing: args.skip_existing,
        stop: crate::signals::stop_on_signals()?,
    })
    .context("prediction failed")?;
    for f in files {
        println!(
            "{} → {} ({:?}, {} windows, {} per pass, accumulator {} (planned {}), {:.1} s)",
            f.input.display(),
            f.labels.display(),
            f.shape,
            f.windows,
            f.windows_per_pass,
            format_bytes(f.accumulator_bytes),
            format_bytes(f.planned_accumulator_bytes),
            f.seconds
        );
    }
    Ok(())
}
