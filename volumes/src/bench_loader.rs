//! The patch-loader benchmark behind `voxplan bench loader`: BraTS-sized phantom cases written as real
//! `.nii.gz` files (4 × int16 240×240×155 + uint8 label), then patches pulled through the loader's queues
//! as fast as they come, with the process's peak resident memory.
//!
//! Peak RSS is the kernel's `VmHWM`; it is reset (`/proc/self/clear_refs` ← 5) after the data are written
//! and between runs, so each figure is the loader's own peak plus the process baseline.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::{AugmentConfig, DataConfig, DataSource, LoaderConfig, Modality};
use crate::error::Result;
use crate::loader::PatchLoader;
use crate::phantom::PhantomSpec;
use crate::phantom_msd::write_msd;
use crate::preprocess::Preprocessing;
use crate::source::{CaseSource, DecodeAsF32, PreprocessedSource, open_raw_source, open_source};

/// BraTS (MSD Task01) geometry: 240×240×155 at 1 mm, four MRI contrasts.
pub const BRATS_SHAPE: [usize; 3] = [240, 240, 155];
pub const BRATS_CHANNELS: usize = 4;

/// Writes `cases` BraTS-sized phantom cases under `dir` in the MSD layout.
pub fn write_brats_like(dir: &Path, cases: usize, seed: u64) -> Result<()> {
    let spec = PhantomSpec { shape: BRATS_SHAPE, spacing: [1.0; 3], structures: 3, channels: BRATS_CHANNELS, seed };
    write_msd(dir, &spec, cases, ".nii.gz").map(|_| ())
}

/// The per-z-score MRI source over an MSD folder, as training would open it.
pub fn open_msd_source(dir: &Path) -> Result<Arc<dyn CaseSource>> {
    open_source(&msd_config(dir))
}

/// [`open_msd_source`] with every case decoded to normalised `f32` (the path before cases were kept in
/// their stored type), for an A/B comparison in one run.
pub fn open_msd_source_f32(dir: &Path) -> Result<Arc<dyn CaseSource>> {
    let cfg = msd_config(dir);
    let raw = Arc::new(DecodeAsF32(open_raw_source(&cfg)?));
    let preprocessing = Preprocessing::for_dataset(&cfg, raw.as_ref())?;
    Ok(Arc::new(PreprocessedSource { inner: raw, preprocessing }))
}

fn msd_config(dir: &Path) -> DataConfig {
    DataConfig {
        source: DataSource::Msd { root: dir.to_path_buf() },
        modality: Modality::Mri,
        target_spacing: None,
        validation_fraction: 0.0,
        folds: None,
        fold: 0,
        split_seed: 0,
        labels: None,
        orientation: Default::default(),
    }
}

/// What one run measured.
#[derive(Debug, Clone, PartialEq)]
pub struct LoaderBenchResult {
    pub workers: usize,
    pub patches: usize,
    pub elapsed: Duration,
    /// Time the consumer blocked on the queues.
    pub waited: Duration,
    pub memory_bound_bytes: u64,
    /// `VmHWM` after the run, when `/proc` is available.
    pub peak_rss_bytes: Option<u64>,
    /// User + system CPU time the process spent during the run (all threads), when `/proc` is available.
    pub cpu: Option<Duration>,
}

/// The Markdown table header matching [`LoaderBenchResult::markdown_row`] (docs/benchmarks.md's layout).
pub const MARKDOWN_HEADER: &str = "| workers | patches | wall s | patches/s (wall) | CPU s | patches per CPU-second | \
consumer waited (s) | memory bound (MiB) | peak RSS (MiB) |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |";

impl LoaderBenchResult {
    /// One row of the table under [`MARKDOWN_HEADER`]; `n/a` where `/proc` gave no figure.
    pub fn markdown_row(&self) -> String {
        const MIB: f64 = 1024.0 * 1024.0;
        format!(
            "| {} | {} | {:.2} | {:.1} | {} | {} | {:.2} | {:.0} | {} |",
            self.workers,
            self.patches,
            self.elapsed.as_secs_f64(),
            self.patches_per_second(),
            self.cpu.map_or("n/a".to_string(), |c| format!("{:.2}", c.as_secs_f64())),
            self.patches_per_cpu_second().map_or("n/a".to_string(), |p| format!("{p:.1}")),
            self.waited.as_secs_f64(),
            self.memory_bound_bytes as f64 / MIB,
            self.peak_rss_bytes.map_or("n/a".to_string(), |b| format!("{:.0}", b as f64 / MIB)),
        )
    }

    pub fn patches_per_second(&self) -> f64 {
        self.patches as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }

    /// Patches per second of CPU time: what one fully available core sustains. On a shared machine this is
    /// the honest figure; wall-clock rate depends on what else runs.
    pub fn patches_per_cpu_second(&self) -> Option<f64> {
        self.cpu.map(|c| self.patches as f64 / c.as_secs_f64().max(f64::EPSILON))
    }
}

/// Pulls `batches × batch_size` patches of `patch_size` through a loader over all cases of `source`.
pub fn run_loader_bench(
    source: Arc<dyn CaseSource>,
    loader: &LoaderConfig,
    patch_size: [usize; 3],
    batch_size: usize,
    batches: usize,
) -> Result<LoaderBenchResult> {
    reset_peak_rss();
    let cases: Vec<usize> = (0..source.len()).collect();
    let cpu_start = process_cpu_time();
    let start = Instant::now();
    let mut l =
        PatchLoader::start(source, cases, loader, &AugmentConfig::default(), patch_size, batch_size, batches, 0, 0)?;
    let mut patches = 0;
    while let Some(batch) = l.next_batch() {
        patches += batch?.batch_size;
    }
    let elapsed = start.elapsed();
    let (waited, memory_bound_bytes) = (l.waited(), l.memory_bound_bytes());
    drop(l); // joins the workers, so their CPU time is counted
    let cpu = process_cpu_time().zip(cpu_start).map(|(end, begin)| end.saturating_sub(begin));
    Ok(LoaderBenchResult {
        workers: loader.workers,
        patches,
        elapsed,
        waited,
        memory_bound_bytes,
        peak_rss_bytes: peak_rss_bytes(),
        cpu,
    })
}

/// Resets the kernel's peak-RSS counter for this process (Linux ≥ 4.0); silently does nothing elsewhere.
pub fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// `VmHWM` of this process in bytes.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_vm_hwm(&status)
}

/// Clock ticks per second of `/proc/self/stat` times (`sysconf(_SC_CLK_TCK)`, 100 on every Linux ABI
/// in use; read without libc).
const CLOCK_TICKS_PER_SECOND: f64 = 100.0;

/// User + system CPU time of this process (all threads) from `/proc/self/stat`.
pub fn process_cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    parse_cpu_ticks(&stat).map(|ticks| Duration::from_secs_f64(ticks as f64 / CLOCK_TICKS_PER_SECOND))
}

/// utime + stime (fields 14 and 15); the command name in parentheses may hold spaces, so count after `)`.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ")" the fields start at #3 (state), so utime (#14) is index 11 and stime (#15) index 12.
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// Parses the `VmHWM:   123456 kB` line.
fn parse_vm_hwm(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_hwm_is_parsed_in_bytes() {
        let status = "Name:\tx\nVmPeak:\t  999 kB\nVmHWM:\t    2048 kB\nVmRSS:\t 10 kB\n";
        assert_eq!(parse_vm_hwm(status), Some(2 * 1024 * 1024));
        assert_eq!(parse_vm_hwm("nothing"), None);
    }

    #[test]
    fn cpu_ticks_are_read_after_the_command_name() {
        let stat = "42 (a b) R 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 1 0";
        assert_eq!(parse_cpu_ticks(stat), Some(300));
    }

    #[test]
    fn this_process_reports_a_peak() {
        if Path::new("/proc/self/status").exists() {
            assert!(peak_rss_bytes().is_some_and(|b| b > 0));
        }
    }
}
