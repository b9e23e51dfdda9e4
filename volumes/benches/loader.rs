//! `cargo bench -p voxplan-volumes --bench loader [-- --data DIR] [--workers N]... [--samples-per-volume N]
//! [--batches N] [--cases N] [--f32]`
//!
//! The same measurement as `voxplan bench loader` (both call [`run_loader_bench`] on BraTS-sized `.nii.gz`
//! cases in the MSD layout: 128³ patches, batch 2, queue 16, default augmentation), in a release binary that
//! does not link burn. Prints one markdown row per worker count. `--f32` decodes every case to normalised
//! `f32` instead of keeping 8/16-bit cases in their stored type (the path before), for A/B runs.

use std::path::PathBuf;

use voxplan_volumes::LoaderConfig;
use voxplan_volumes::bench_loader::{
    MARKDOWN_HEADER, open_msd_source, open_msd_source_f32, run_loader_bench, write_brats_like,
};

/// The CLI's defaults (src/cmd/bench_loader.rs), so both entry points measure the same thing.
const PATCH: usize = 128;
const BATCH: usize = 2;
const QUEUE: usize = 16;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (mut data, mut workers, mut samples, mut batches, mut cases) = (None::<PathBuf>, vec![], 8, 24, 6);
    let mut f32_path = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--bench" => {}
            "--data" => data = Some(value()?.into()),
            "--workers" => workers.push(value()?.parse()?),
            "--samples-per-volume" => samples = value()?.parse()?,
            "--batches" => batches = value()?.parse()?,
            "--cases" => cases = value()?.parse()?,
            "--f32" => f32_path = true,
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    if workers.is_empty() {
        workers = vec![1, 2];
    }
    let temp = tempfile::tempdir()?;
    let dir = data.unwrap_or_else(|| temp.path().to_path_buf());
    if !dir.join("dataset.json").is_file() {
        eprintln!("writing {cases} BraTS-sized cases to {} …", dir.display());
        write_brats_like(&dir, cases, 0)?;
    }
    let source = if f32_path { open_msd_source_f32(&dir)? } else { open_msd_source(&dir)? };
    let path = if f32_path { "every case decoded to f32" } else { "8/16-bit cases kept in their stored type" };
    println!("patch {PATCH}³, batch {BATCH}, queue {QUEUE}, samples/volume {samples}, {} cases, {path}", source.len());
    println!("{MARKDOWN_HEADER}");
    for w in workers {
        let cfg =
            LoaderConfig { workers: w, queue_length: QUEUE, samples_per_volume: samples, ..LoaderConfig::default() };
        let r = run_loader_bench(source.clone(), &cfg, [PATCH; 3], BATCH, batches)?;
        println!("{}", r.markdown_row());
    }
    Ok(())
}
