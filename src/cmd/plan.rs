//! `voxplan plan`: the memory plan of an experiment for a device, as text, JSON, Markdown or HTML.

use std::path::PathBuf;

use anyhow::Context;
use voxplan_pipeline::Experiment;
use voxplan_pipeline::job_plan::PlanInputs;
use voxplan_planner::{
    DeviceSelector, ReportFormat, device_profile, format_bytes, parse_budget, plan_inference, render,
};

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Mode {
    Train,
    Inference,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
    Markdown,
    Html,
}

#[derive(clap::Args)]
pub struct Args {
    /// Experiment TOML; the embedded default experiment when absent.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Device to plan for: cpu, cuda or cuda:N (queried for free memory).
    #[arg(long, default_value = "cpu", conflicts_with = "gpu")]
    device: String,
    /// Plan for a GPU from the built-in table without the card (e.g. T4, V100-32GB, A100-80GB, H100).
    #[arg(long)]
    gpu: Option<String>,
    /// Memory budget instead of the device's free memory, e.g. 11GiB, 512MiB, 8GB.
    #[arg(long)]
    budget: Option<String>,
    /// Plan for this many devices in data parallel (the per-device batch, memory per device, and the
    /// accumulation that keeps the effective batch); with --gpu, that many of that card.
    #[arg(long, default_value_t = 1)]
    devices: usize,
    #[arg(long, value_enum, default_value = "train")]
    mode: Mode,
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    /// Inference: volume shape x,y,z to cover with sliding windows (default: the phantom shape of the
    /// experiment's data, else 4× the patch per axis).
    #[arg(long, value_delimiter = ',')]
    volume_shape: Option<Vec<usize>>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let exp = Experiment::load(args.config.as_deref())?;
    let selector = match &args.gpu {
        Some(name) => DeviceSelector::Gpu(name.clone()),
        None => args.device.parse()?,
    };
    let device = device_profile(&selector)?;
    let budget = args.budget.as_deref().map(parse_budget).transpose()?;
    // The trainer plans from the median shape of its training split, after resampling; so does the dry run,
    // from headers only (no voxel is decoded, so this stays fast on thousands of files).
    let inputs = PlanInputs::read(&exp).context("reading the dataset's headers for its median shape")?;
    let median_shape = inputs.median_shape;
    let report = inputs
        .plan_parallel(&device, budget, args.devices)
        .with_context(|| format!("planning experiment {:?}", exp.name))?;
    match args.mode {
        Mode::Train => {
            let format = match args.format {
                Format::Text => ReportFormat::Text,
                Format::Json => ReportFormat::Json,
                Format::Markdown => ReportFormat::Markdown,
                Format::Html => ReportFormat::Html,
            };
            println!("{}", render(&report, format));
        }
        Mode::Inference => {
            let t = &report.training;
            let volume = match args.volume_shape.as_deref() {
                Some(&[x, y, z]) => [x, y, z],
                Some(other) => anyhow::bail!("--volume-shape needs three sizes x,y,z, got {other:?}"),
                None => median_shape.unwrap_or(t.patch_size.map(|p| 4 * p)),
            };
            let inf = plan_inference(&t.network, t.patch_size, volume, t.precision, &device, budget)?;
            match args.format {
                Format::Json => println!("{}", serde_json::to_string_pretty(&inf)?),
                _ => println!(
                    "voxplan inference plan\n  device           {}\n  volume           {volume:?}, patch {:?}, {:?}\n  \
                     windows          {} per pass of {} in all\n  predicted peak   {} at {} (budget {})\n  \
                     output stitching {} (class sums + weight map, f32)",
                    device.name,
                    t.patch_size,
                    t.precision,
                    inf.windows_per_pass,
                    inf.total_windows,
                    format_bytes(inf.predicted_peak_bytes),
                    inf.peak_op,
                    format_bytes(inf.budget_bytes),
                    format_bytes(inf.output_accumulator_bytes),
                ),
            }
        }
    }
    Ok(())
}
