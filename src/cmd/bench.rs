//! `voxplan bench <what>`: measured throughput of voxplan's data path. `decode` times NIfTI reading
//! against bare libdeflate and (optionally) nibabel on the same files.

use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

use anyhow::{Context, bail};
use voxplan_volumes::bench_decode::{ReadAs, format_table, time_file, write_brats_like_case};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(clap::Subcommand)]
enum What {
    /// NIfTI decode speed: what training reads (images → scaled f32, label maps → checked u16) against
    /// libdeflate inflating the same bytes.
    Decode(DecodeArgs),
    /// Patch loader throughput: 128³ patches/s through the queues from BraTS-sized .nii.gz cases, peak RSS.
    Loader(crate::cmd::bench_loader::Args),
    /// Planner accuracy: plan each zoo configuration, run real steps, compare predicted and measured peaks.
    Planner(crate::cmd::bench_planner::Args),
}

#[derive(clap::Args)]
struct DecodeArgs {
    /// Image files to time (read as scaled f32); with no files at all a BraTS-like case (4 × int16
    /// 240×240×155 + uint8 label, gzipped) is generated.
    files: Vec<PathBuf>,
    /// Label maps to time (read as checked u16, as training reads them).
    #[arg(long, num_args = 1..)]
    labels: Vec<PathBuf>,
    /// Timed repetitions per file (the median is reported).
    #[arg(long, default_value_t = 5)]
    repeats: usize,
    /// Write the generated case here (and keep it) instead of a temporary folder.
    #[arg(long)]
    keep: Option<PathBuf>,
    /// Also time nibabel on the same files via `python3 benches/nibabel_load.py` (needs nibabel).
    #[arg(long)]
    nibabel: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    match args.what {
        What::Decode(a) => decode(a),
        What::Loader(a) => crate::cmd::bench_loader::run(a),
        What::Planner(a) => crate::cmd::bench_planner::run(a),
    }
}

fn decode(args: DecodeArgs) -> anyhow::Result<()> {
    let temp = tempdir_for(&args)?;
    let files = if args.files.is_empty() && args.labels.is_empty() {
        let dir = args.keep.clone().or_else(|| temp.as_ref().map(|t| t.path().to_path_buf())).context("no folder")?;
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        eprintln!("writing a BraTS-like case into {} ...", dir.display());
        write_brats_like_case(&dir)?
    } else {
        let images = args.files.iter().map(|f| (f.clone(), ReadAs::Image));
        images.chain(args.labels.iter().map(|f| (f.clone(), ReadAs::Labels))).collect()
    };
    let mut timings = Vec::new();
    for (f, read_as) in &files {
        timings.push(time_file(f, *read_as, args.repeats)?);
    }
    print!("{}", format_table(&timings));
    if args.nibabel {
        let paths: Vec<PathBuf> = files.into_iter().map(|(f, _)| f).collect();
        nibabel(&paths, args.repeats)?;
    }
    Ok(())
}

/// A temporary folder for the generated case, removed on drop, unless `--keep` or files were given.
fn tempdir_for(args: &DecodeArgs) -> anyhow::Result<Option<TempDir>> {
    let generated = args.files.is_empty() && args.labels.is_empty();
    if generated && args.keep.is_none() {
        Ok(Some(tempfile::tempdir().context("creating a temporary folder")?))
    } else {
        Ok(None)
    }
}

/// Runs the nibabel side of the benchmark on the same files, single-threaded, and prints its table.
fn nibabel(files: &[PathBuf], repeats: usize) -> anyhow::Result<()> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/nibabel_load.py");
    let status = Command::new("python3")
        .arg(&script)
        .arg("--repeats")
        .arg(repeats.to_string())
        .args(files)
        .env("OMP_NUM_THREADS", "1")
        .env("OPENBLAS_NUM_THREADS", "1")
        .status()
        .with_context(|| format!("running python3 {}", script.display()))?;
    if !status.success() {
        bail!("{} failed ({status}); is nibabel installed (pip install nibabel numpy)?", script.display());
    }
    Ok(())
}
