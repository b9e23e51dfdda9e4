//! `voxplan bench loader`: patches per second through the patch loader's queues for 128³ patches from
//! BraTS-sized `.nii.gz` cases, and the peak resident memory, for each worker count asked for.

use std::path::PathBuf;

use anyhow::Context;
use voxplan_volumes::LoaderConfig;
use voxplan_volumes::bench_loader::{
    BRATS_CHANNELS, BRATS_SHAPE, MARKDOWN_HEADER, open_msd_source, open_msd_source_f32, run_loader_bench,
    write_brats_like,
};

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
    /// Decode every case to normalised f32 instead of keeping the int16 cases in their stored type (the
    /// loader's path before), to compare the two under the same load.
    #[arg(long)]
    f32: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    // The benchmark writes ~100 MB per case; a temporary folder is removed on drop.
    let temp = args.data.is_none().then(tempfile::tempdir).transpose().context("creating a temporary folder")?;
    let dir = args.data.clone().or_else(|| temp.as_ref().map(|t| t.path().to_path_buf())).context("no data folder")?;
    if !dir.join("dataset.json").is_file() {
        eprintln!("writing {} BraTS-sized cases to {} …", args.cases, dir.display());
        write_brats_like(&dir, args.cases, 0).with_context(|| format!("writing cases to {}", dir.display()))?;
    }
    let source = if args.f32 { open_msd_source_f32(&dir)? } else { open_msd_source(&dir)? };
    println!(
        "cases: {} × ({} channels int16 {:?} + uint8 label, .nii.gz), {}; patch {}³; batch {}; queue {}; \
         samples/volume {}",
        source.len(),
        BRATS_CHANNELS,
        BRATS_SHAPE,
        if args.f32 { "decoded to f32" } else { "kept in their stored type" },
        args.patch,
        args.batch_size,
        args.queue_length,
        args.samples_per_volume
    );
    println!("{MARKDOWN_HEADER}");
    for &workers in &args.workers {
        let cfg = LoaderConfig {
            workers,
            queue_length: args.queue_length,
            samples_per_volume: args.samples_per_volume,
            ..LoaderConfig::default()
        };
        let r = run_loader_bench(source.clone(), &cfg, [args.patch; 3], args.batch_size, args.batches)?;
        println!("{}", r.markdown_row());
    }
    Ok(())
}
