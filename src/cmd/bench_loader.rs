//! `voxplan bench loader`: patches per second through the patch loader's queues for 128³ patches from
//! BraTS-sized `.nii.gz` cases, and the peak resident memory, for each worker count asked for.

use std::path::PathBuf;

use anyhow::Context;
use voxplan_volumes::LoaderConfig;
use voxplan_volumes::bench_loader::{BRATS_CHANNELS, BRATS_SHAPE, open_msd_source, run_loader_bench, write_brats_like};

const MIB: f64 = 1024.0 * 1024.0;

#[derive(clap::Args)]
pub struct Args {
    /// Worker counts to measure, one run each.
    #[arg(long, num_args = 1.., default_values_t = [1, 2])]
    workers: Vec<usize>,
    /// BraTS-sized cases written (4 × int16 240×240×155 + uint8 label, .nii.gz).
    #[arg(long, default_value_t = 6)]
    cases: usize,
    /// Patch edge (cubic patches).
    #[arg(long, default_value_t = 128)]
    patch: usize,
    #[arg(long, default_value_t = 2)]
    batch_size: usize,
    /// Batches pulled per run.
    #[arg(long, default_value_t = 24)]
    batches: usize,
    #[arg(long, default_value_t = 16)]
    queue_length: usize,
    #[arg(long, default_value_t = 8)]
    samples_per_volume: usize,
    /// Reuse (or create) the dataset here instead of a temporary folder.
    #[arg(long)]
    data: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let temp = args.data.is_none().then(TempDir::new).transpose()?;
    let dir = args.data.clone().or_else(|| temp.as_ref().map(|t| t.0.clone())).context("no data folder")?;
    if !dir.join("dataset.json").is_file() {
        eprintln!("writing {} BraTS-sized cases to {} …", args.cases, dir.display());
        write_brats_like(&dir, args.cases, 0).with_context(|| format!("writing cases to {}", dir.display()))?;
    }
    let source = open_msd_source(&dir)?;
    println!(
        "cases: {} × ({} channels int16 {:?} + uint8 label, .nii.gz); patch {}³; batch {}; queue {}; samples/volume {}",
        source.len(),
        BRATS_CHANNELS,
        BRATS_SHAPE,
        args.patch,
        args.batch_size,
        args.queue_length,
        args.samples_per_volume
    );
    println!(
        "| workers | patches | wall s | patches/s (wall) | CPU s | patches per CPU-second | consumer waited (s) | memory bound (MiB) | peak RSS (MiB) |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for &workers in &args.workers {
        let cfg = LoaderConfig {
            workers,
            queue_length: args.queue_length,
            samples_per_volume: args.samples_per_volume,
            ..LoaderConfig::default()
        };
        let r = run_loader_bench(source.clone(), &cfg, [args.patch; 3], args.batch_size, args.batches)?;
        println!(
            "| {} | {} | {:.2} | {:.1} | {} | {} | {:.2} | {:.0} | {} |",
            r.workers,
            r.patches,
            r.elapsed.as_secs_f64(),
            r.patches_per_second(),
            r.cpu.map_or("n/a".to_string(), |c| format!("{:.2}", c.as_secs_f64())),
            r.patches_per_cpu_second().map_or("n/a".to_string(), |p| format!("{p:.1}")),
            r.waited.as_secs_f64(),
            r.memory_bound_bytes as f64 / MIB,
            r.peak_rss_bytes.map_or("n/a".to_string(), |b| format!("{:.0}", b as f64 / MIB)),
        );
    }
    Ok(())
}

/// A scratch folder under the system temp dir, removed on drop (the benchmark writes ~100 MB per case).
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("voxplan-bench-loader-{}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
