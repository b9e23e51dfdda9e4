//! `voxplan dataset check`: every problem of a dataset before training, as text or JSON.

use std::path::PathBuf;

use voxplan_pipeline::Experiment;
use voxplan_volumes::dataset_check::{CheckOptions, check_data_config, check_dataset_dir, render_json, render_text};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Read every case once and report every problem (exit 0 when there is none but warnings).
    Check(CheckArgs),
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Format {
    Text,
    Json,
}

#[derive(clap::Args)]
struct CheckArgs {
    /// An MSD or nnU-Net v2 dataset folder (the one holding dataset.json).
    #[arg(conflicts_with = "config", required_unless_present = "config")]
    dir: Option<PathBuf>,
    /// Check the dataset an experiment names, against its [data] labels and orientation, its modality
    /// and its network's num_classes.
    #[arg(long)]
    config: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    /// Threads reading cases (default: one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let Command::Check(args) = args.command;
    let report = match (&args.dir, &args.config) {
        (Some(dir), _) => check_dataset_dir(dir, &CheckOptions { threads: args.threads, ..CheckOptions::default() }),
        (None, config) => {
            let experiment = Experiment::load(config.as_deref())?;
            check_data_config(&experiment.data, Some(experiment.network.num_classes))
        }
    };
    match args.format {
        Format::Text => print!("{}", render_text(&report)),
        Format::Json => println!("{}", render_json(&report)?),
    }
    anyhow::ensure!(report.is_clean(), "{} error(s) in {}", report.errors(), report.root.display());
    Ok(())
}
