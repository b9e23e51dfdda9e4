//! `cargo bench -p voxplan-volumes --bench loader [-- --data DIR] [--workers N]... [--samples-per-volume N]
//! [--batches N] [--cases N]`
//!
//! The same measurement as `voxplan bench loader` (both call [`run_loader_bench`] on BraTS-sized `.nii.gz`
//! cases in the MSD layout: 128³ patches, batch 2, queue 16, default augmentation), in a release binary that
//! does not link burn. Prints one markdown row per worker count.

use std::path::PathBuf;

use voxplan_volumes::LoaderConfig;
use voxplan_volumes::bench_loader::{open_msd_source, run_loader_bench, write_brats_like};

const MIB: f64 = 1024.0 * 1024.0;
/// The CLI's defaults (src/cmd/bench_loader.rs), so both entry points measure the same thing.
const PATCH: usize = 128;
const BATCH: usize = 2;
const QUEUE: usize = 16;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (mut data, mut workers, mut samples, mut batches, mut cases) = (None::<PathBuf>, vec![], 8, 24, 6);
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
    let source = open_msd_source(&dir)?;
    println!("patch {PATCH}³, batch {BATCH}, queue {QUEUE}, samples/volume {samples}, {} cases", source.len());
    println!(
        "| workers | patches | wall s | patches/s (wall) | CPU s | patches per CPU-second | consumer waited (s) | memory bound (MiB) | peak RSS (MiB) |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for w in workers {
        let cfg =
            LoaderConfig { workers: w, queue_length: QUEUE, samples_per_volume: samples, ..LoaderConfig::default() };
        let r = run_loader_bench(source.clone(), &cfg, [PATCH; 3], BATCH, batches)?;
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
