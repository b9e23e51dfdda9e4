//! `voxplan bench <what>`: measured throughput of voxplan's data path. `decode` times NIfTI reading
//! against bare libdeflate and (optionally) nibabel on the same files.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use voxplan_volumes::bench_decode::{DecodeTiming, time_file, write_brats_like_case};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(clap::Subcommand)]
enum What {
    /// NIfTI decode speed: read_volume (file → scaled f32) against libdeflate inflating the same bytes.
    Decode(DecodeArgs),
    /// Patch loader throughput: 128³ patches/s through the queues from BraTS-sized .nii.gz cases, peak RSS.
    Loader(crate::cmd::bench_loader::Args),
    /// Planner accuracy: plan each zoo configuration, run real steps, compare predicted and measured peaks.
    Planner(crate::cmd::bench_planner::Args),
}

#[derive(clap::Args)]
struct DecodeArgs {
    /// Files to time; none: a BraTS-like case (4 × int16 240×240×155 + uint8 label, gzipped) is generated.
    files: Vec<PathBuf>,
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
    let files = if args.files.is_empty() {
        let dir = args.keep.clone().or_else(|| temp.as_ref().map(|t| t.path().to_path_buf())).context("no folder")?;
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        eprintln!("writing a BraTS-like case into {} ...", dir.display());
        write_brats_like_case(&dir)?
    } else {
        args.files.clone()
    };
    let mut timings = Vec::new();
    for f in &files {
        timings.push(time_file(f, args.repeats)?);
    }
    print_table(&timings);
    if args.nibabel {
        nibabel(&files, args.repeats)?;
    }
    Ok(())
}

/// A temporary folder for the generated case, removed on drop, unless `--keep` or files were given.
fn tempdir_for(args: &DecodeArgs) -> anyhow::Result<Option<TempDir>> {
    if args.files.is_empty() && args.keep.is_none() { Ok(Some(TempDir::new()?)) } else { Ok(None) }
}

fn print_table(timings: &[DecodeTiming]) {
    println!(
        "{:<28} {:>9} {:>9} {:>11} {:>10} {:>11} {:>10} {:>7}",
        "file", "gz MB", "raw MB", "read ms", "read MB/s", "inflate ms", "infl MB/s", "ratio"
    );
    let (mut read_total, mut inflate_total, mut stored_total) = (0.0, 0.0, 0.0);
    let mut all_inflated = true;
    for t in timings {
        let name = t.path.file_name().map_or_else(|| t.path.display().to_string(), |n| n.to_string_lossy().into());
        let read_ms = t.read_volume.as_secs_f64() * 1e3;
        read_total += read_ms;
        stored_total += t.stored_bytes as f64 / 1e6;
        let (inflate_ms, inflate_rate, ratio) = match (t.inflate, t.inflate_mb_s()) {
            (Some(i), Some(rate)) => {
                inflate_total += i.as_secs_f64() * 1e3;
                let ms = i.as_secs_f64() * 1e3;
                (format!("{ms:.1}"), format!("{rate:.0}"), format!("{:.0} %", 100.0 * ms / read_ms))
            }
            _ => {
                all_inflated = false;
                ("-".into(), "-".into(), "-".into())
            }
        };
        println!(
            "{:<28} {:>9.2} {:>9.2} {:>11.1} {:>10.0} {:>11} {:>10} {:>7}",
            name,
            t.compressed_bytes as f64 / 1e6,
            t.stored_bytes as f64 / 1e6,
            read_ms,
            t.read_mb_s(),
            inflate_ms,
            inflate_rate,
            ratio
        );
    }
    if timings.len() > 1 {
        println!(
            "{:<28} {:>9} {:>9.2} {:>11.1} {:>10.0} {:>11} {:>10} {:>7}",
            "total",
            "",
            stored_total,
            read_total,
            stored_total / read_total * 1e3,
            if all_inflated { format!("{inflate_total:.1}") } else { "-".into() },
            if all_inflated { format!("{:.0}", stored_total / inflate_total * 1e3) } else { "-".into() },
            if all_inflated { format!("{:.0} %", 100.0 * inflate_total / read_total) } else { "-".into() },
        );
    }
    println!("ratio = bare inflate time / read_volume time (100 % = decoding to f32 costs nothing beyond inflation)");
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

/// A folder under the system temp dir, deleted on drop (the binary has no tempfile dependency).
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("voxplan-bench-decode-{}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(TempDir(dir))
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
