//! The `voxplan` command line: parses arguments and calls the libraries. No logic lives here.

mod cmd;
mod exit;
mod job_planner;
mod signals;

use std::io::IsTerminal;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "voxplan",
    version,
    about = "Plan, train and run 3D segmentation networks on medical volumes",
    after_help = exit::TABLE
)]
struct Cli {
    /// Log lines on stderr: `text` (colours only on a terminal) or `json` (one object per line).
    #[arg(long, value_enum, default_value = "text", global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Print a NIfTI file's header summary and voxel statistics.
    Inspect(cmd::inspect::Args),
    /// Measure voxplan's data path (`bench decode`: NIfTI reading against libdeflate and nibabel).
    Bench(cmd::bench::Args),
    /// Write a synthetic phantom dataset in the Medical Segmentation Decathlon layout.
    Phantoms(cmd::phantoms::Args),
    /// Check a dataset for every problem training would hit (`dataset check DIR|--config FILE`).
    Dataset(cmd::dataset::Args),
    /// Plan batch, accumulation, precision, norm, checkpointing and patch for a device's memory.
    Plan(cmd::plan::Args),
    /// Train the planned network (default: the built-in phantom experiment).
    Train(cmd::train::Args),
    /// Segment NIfTI volumes with a trained checkpoint.
    Predict(cmd::predict::Args),
    /// Fit the planner's backend constants to real steps of a zoo's calibration half; write a profile.
    Calibrate(cmd::calibrate::Args),
    /// A job queue for a shared GPU box, packed by planned memory (`queue submit|list|run|…`).
    Queue(cmd::queue::Args),
    /// Write (and submit) an sbatch script sized from the plan, for a Slurm cluster.
    Slurm(cmd::slurm::Args),
    /// Internal: measure one zoo configuration's step (JSON on stdin and stdout); run by `bench planner`.
    #[command(name = "probe-step", hide = true)]
    ProbeStep,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("VOXPLAN_LOG")
        // burn-collective logs each peer's whole configuration at info, a dozen lines per device.
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,burn_collective=warn"));
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match cli.log_format {
        // Escape sequences only where a terminal renders them: a batch job's log file stays plain text.
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => logs.json().with_current_span(false).init(),
    }
    let result = match cli.command {
        Command::Inspect(a) => cmd::inspect::run(a),
        Command::Bench(a) => cmd::bench::run(a),
        Command::Phantoms(a) => cmd::phantoms::run(a),
        Command::Dataset(a) => cmd::dataset::run(a),
        Command::Plan(a) => cmd::plan::run(a),
        Command::Train(a) => cmd::train::run(a),
        Command::Predict(a) => cmd::predict::run(a),
        Command::Calibrate(a) => cmd::calibrate::run(a),
        Command::Queue(a) => cmd::queue::run(a),
        Command::Slurm(a) => cmd::slurm::run(a),
        Command::ProbeStep => cmd::probe_step::run(),
    };
    match result {
        Ok(()) => std::process::ExitCode::from(exit::SUCCESS),
        Err(e) => {
            let code = exit::code_of(&e);
            match cli.log_format {
                LogFormat::Text => eprintln!("error: {}", one_line(&e)),
                LogFormat::Json => tracing::error!(exit_code = code, "error: {}", one_line(&e)),
            }
            std::process::ExitCode::from(code)
        }
    }
}

/// The error and its causes on one line, skipping a cause whose text its parent already shows: our error
/// enums print their source inline (`{path}: {source}`) so that library users see it too.
fn one_line(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
    }
    out
}
