//! The NIfTI decode benchmark behind `voxplan bench decode` and `cargo bench -p voxplan-volumes --bench
//! decode`: throughput of what training reads from each file — images through [`crate::nifti::read_volume`]
//! (scaled `f32`), label maps through [`crate::nifti::read_labels`] (checked `u16`), and the loader's path
//! for 8/16-bit images, [`crate::nifti::read_stored`] (kept in the stored type) — against libdeflate
//! inflating the same bytes with nothing else done, and a BraTS-like case to run it on.
//!
//! Both sides start from the compressed file in the page cache and allocate their output afresh, so the
//! ratio measures what reading costs beyond inflation itself: header parsing, the file read, the in-place
//! conversion (byte swap + scaling, label checks) and the larger output.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::{Result, VolumeError};
use crate::nifti::{self, DataType, is_gzip};
use crate::volume::{Labels, Volume, voxel_count};

/// BraTS: 240×240×155 voxels at 1 mm, four MRI channels (T1, T1ce, T2, FLAIR) as int16, labels as uint8.
pub const BRATS_SHAPE: [usize; 3] = [240, 240, 155];
pub const BRATS_CHANNELS: usize = 4;
/// Fixed seed: every run decodes the same bytes.
const CASE_SEED: u64 = 0x0b7a75;
/// Brain-like intensities: the head fills about this fraction of each axis, the rest is 0 as in skull-
/// stripped BraTS scans, which is what gives those files their ~5.7:1 gzip ratio.
const HEAD_FRACTION: f64 = 0.42;
/// Scanner noise amplitude (int16 units) inside the head.
const NOISE: f64 = 2.0;

/// What a file is read as: the two paths training takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadAs {
    /// [`nifti::read_volume`]: scaled `f32` voxels.
    Image,
    /// [`nifti::read_labels`]: class indices as `u16`, every voxel checked.
    Labels,
}

impl ReadAs {
    /// `"f32"` / `"u16"`, for the table.
    pub fn output_type(self) -> &'static str {
        match self {
            ReadAs::Image => "f32",
            ReadAs::Labels => "u16",
        }
    }
}

/// Timing of one file.
#[derive(Debug, Clone)]
pub struct DecodeTiming {
    pub path: PathBuf,
    pub read_as: ReadAs,
    pub compressed_bytes: u64,
    /// Bytes of stored voxels (what the file decompresses to, minus the header).
    pub stored_bytes: u64,
    pub voxels: u64,
    /// Median wall time of the read (`read_volume`: file → scaled `Vec<f32>`; `read_labels`: file →
    /// checked `Vec<u16>`).
    pub read: Duration,
    /// Median CPU time of the reading thread (user + system, page faults included) over the same reads:
    /// on a shared machine this is what one core costs, whatever else runs.
    pub read_cpu: Duration,
    /// Median wall time of a bare libdeflate inflate of the in-memory file into a fresh buffer (`None` for an
    /// uncompressed file).
    pub inflate: Option<Duration>,
    /// Median thread CPU time of the same inflations.
    pub inflate_cpu: Option<Duration>,
    /// Images only, the loader's path: median thread CPU time of [`nifti::read_volume_into`] a buffer reused
    /// from the previous read, and of libdeflate inflating into a reused buffer (no page faults on either
    /// side: the strongest baseline).
    pub reused_cpu: Option<(Duration, Duration)>,
    /// Images of a kept 8/16-bit type only, what the loader now does ([`nifti::read_stored`]): median thread
    /// CPU time of decoding in the stored type into the pooled buffer of the previous read (compare with the
    /// warm inflate of `reused_cpu`), and of the one-pass z-score statistics over the result, which the
    /// loader's stored-type view computes when it opens a case.
    pub stored_cpu: Option<(Duration, Duration)>,
}

impl DecodeTiming {
    /// MB/s (10⁶ bytes) of stored voxel bytes delivered by the read.
    pub fn read_mb_s(&self) -> f64 {
        self.stored_bytes as f64 / 1e6 / self.read.as_secs_f64()
    }
    /// MB/s of the same stored bytes through inflation alone.
    pub fn inflate_mb_s(&self) -> Option<f64> {
        self.inflate.map(|t| self.stored_bytes as f64 / 1e6 / t.as_secs_f64())
    }
}

/// CPU time consumed so far by the calling thread (user + system), from `CLOCK_THREAD_CPUTIME_ID`.
pub fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; the call only writes it. On failure it stays zero.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec.max(0) as u64, ts.tv_nsec.clamp(0, 999_999_999) as u32)
}

/// Wall and thread CPU time of `f`.
fn timed<T>(f: impl FnOnce() -> Result<T>) -> Result<(Duration, Duration, T)> {
    let (wall, cpu) = (Instant::now(), thread_cpu_time());
    let out = f()?;
    Ok((wall.elapsed(), thread_cpu_time().saturating_sub(cpu), out))
}

/// Times the read training does (`read_as`) and bare inflation on `path`, `repeats` times each (reads and
/// inflations alternate, so both see the same machine load), keeping the medians.
pub fn time_file(path: &Path, read_as: ReadAs, repeats: usize) -> Result<DecodeTiming> {
    let compressed = std::fs::read(path).map_err(|e| VolumeError::io(path, e))?;
    let header = nifti::read_header(path)?;
    let baseline = is_gzip(&compressed) && header.single_file;
    let total = header.vox_offset as usize + header.data_bytes();
    let mut inflater = libdeflater::Decompressor::new();
    let repeats = repeats.max(1);
    let (mut reads, mut read_cpus, mut inflates, mut inflate_cpus) = (vec![], vec![], vec![], vec![]);
    let (mut into_cpus, mut warm_cpus) = (vec![], vec![]);
    let reuse = read_as == ReadAs::Image && baseline;
    let mut room = if reuse { vec![0f32; nifti::decode_room(&header).unwrap_or(0)] } else { Vec::new() };
    let mut warm = if reuse { vec![0u8; total] } else { Vec::new() };
    let mut voxels = 0;
    let (mut stored_cpus, mut stats_cpus) = (vec![], vec![]);
    let mut pooled: Option<Vec<f32>> = None;
    let stored = reuse && nifti::common_stored_type(std::slice::from_ref(&header)).is_some();
    for _ in 0..repeats {
        // The output is dropped after the clock stops, as the baseline's buffer is.
        let (wall, cpu, n) = match read_as {
            ReadAs::Image => timed(|| nifti::read_volume(path)).map(|(w, c, v)| (w, c, v.data.len()))?,
            ReadAs::Labels => timed(|| nifti::read_labels(path)).map(|(w, c, l)| (w, c, l.data.len()))?,
        };
        reads.push(wall);
        read_cpus.push(cpu);
        voxels = n as u64;
        if baseline {
            let (wall, cpu, out) = timed(|| {
                let mut out = vec![0u8; total];
                inflater.gzip_decompress(&compressed, &mut out).map_err(|e| VolumeError::CorruptGzip {
                    path: path.to_path_buf(),
                    problem: format!("{e} (the baseline handles single-member files only)"),
                })?;
                Ok(out)
            })?;
            std::hint::black_box(out);
            inflates.push(wall);
            inflate_cpus.push(cpu);
        }
        if reuse {
            into_cpus.push(timed(|| nifti::read_volume_into(path, &header, &mut room))?.1);
            let inflated = timed(|| {
                inflater
                    .gzip_decompress(&compressed, &mut warm)
                    .map_err(|e| VolumeError::CorruptGzip { path: path.to_path_buf(), problem: e.to_string() })
            })?;
            warm_cpus.push(inflated.1);
        }
        if stored {
            // The previous stored read's buffer goes back to this thread's pool just before the next one, as a
            // loader worker's view hands it back when it moves on (read_volume above would otherwise take it).
            if let Some(buffer) = pooled.take() {
                nifti::give_back_f32(buffer);
            }
            let (_, cpu, image) = timed(|| nifti::read_stored(&[path]))?;
            stored_cpus.push(cpu);
            if let Some(image) = image {
                stats_cpus.push(timed(|| Ok(statistics(&image)))?.1);
                pooled = Some(image.into_storage());
            }
        }
    }
    Ok(DecodeTiming {
        path: path.to_path_buf(),
        read_as,
        compressed_bytes: compressed.len() as u64,
        stored_bytes: header.data_bytes() as u64,
        voxels,
        read: median(reads),
        read_cpu: median(read_cpus),
        inflate: baseline.then(|| median(inflates)),
        inflate_cpu: baseline.then(|| median(inflate_cpus)),
        reused_cpu: reuse.then(|| (median(into_cpus), median(warm_cpus))),
        stored_cpu: (stored && !stats_cpus.is_empty()).then(|| (median(stored_cpus), median(stats_cpus))),
    })
}

/// Per-channel mean and std of a stored image, as the loader's stored-type view computes them.
fn statistics(image: &nifti::StoredImage) -> Vec<(f64, f64)> {
    fn of<T: nifti::StoredValue>(image: &nifti::StoredImage) -> Vec<(f64, f64)> {
        (0..image.channels()).filter_map(|c| image.channel::<T>(c).map(nifti::stored_mean_std)).collect()
    }
    std::hint::black_box(match image.stored {
        nifti::StoredType::U8 => of::<u8>(image),
        nifti::StoredType::I8 => of::<i8>(image),
        nifti::StoredType::U16 => of::<u16>(image),
        nifti::StoredType::I16 => of::<i16>(image),
    })
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Writes a BraTS-sized case into `dir`: `case_0000.nii.gz` … `case_0003.nii.gz` (int16) and
/// `case_seg.nii.gz` (uint8), with a head-shaped foreground, smooth contrast, noise and three nested
/// "tumour" labels. Returns the paths with how training reads each, images first.
pub fn write_brats_like_case(dir: &Path) -> Result<Vec<(PathBuf, ReadAs)>> {
    let [nx, ny, nz] = BRATS_SHAPE;
    let mut rng = ChaCha8Rng::seed_from_u64(CASE_SEED);
    let affine = [[-1.0, 0.0, 0.0, 120.0], [0.0, -1.0, 0.0, 120.0], [0.0, 0.0, 1.0, -77.0], [0.0, 0.0, 0.0, 1.0]];
    let centre = [nx as f64 / 2.0, ny as f64 / 2.0, nz as f64 / 2.0];
    let radius = [nx as f64 * HEAD_FRACTION, ny as f64 * HEAD_FRACTION * 1.1, nz as f64 * HEAD_FRACTION * 1.2];
    let tumour = [centre[0] + 30.0, centre[1] - 20.0, centre[2] + 10.0];
    let mut labels = Labels { data: vec![0; voxel_count(BRATS_SHAPE)], shape: BRATS_SHAPE, affine };
    let mut paths = Vec::new();
    for c in 0..BRATS_CHANNELS {
        let mut v = Volume::zeros(BRATS_SHAPE, 1, affine);
        let base = 300.0 + 150.0 * c as f64;
        let mut i = 0;
        for z in 0..nz {
            for y in 0..ny {
                for x in 0..nx {
                    let p = [x as f64, y as f64, z as f64];
                    let r2: f64 = (0..3).map(|k| ((p[k] - centre[k]) / radius[k]).powi(2)).sum();
                    if r2 < 1.0 {
                        let t2: f64 = (0..3).map(|k| (p[k] - tumour[k]).powi(2)).sum::<f64>() / 400.0;
                        let class = if t2 < 0.3 {
                            3
                        } else if t2 < 0.8 {
                            2
                        } else if t2 < 1.5 {
                            1
                        } else {
                            0
                        };
                        let tissue = base * (1.0 - 0.4 * r2) + 40.0 * (p[0] * 0.05).sin() * (p[2] * 0.07).cos();
                        let lesion = 120.0 * class as f64 * (1.0 + 0.3 * c as f64);
                        v.data[i] = (tissue + lesion + NOISE * (rng.random::<f64>() - 0.5)).round() as f32;
                        if c == 0 {
                            labels.data[i] = class;
                        }
                    }
                    i += 1;
                }
            }
        }
        let path = dir.join(format!("case_{c:04}.nii.gz"));
        nifti::write_volume(&path, &v, DataType::I16)?;
        paths.push((path, ReadAs::Image));
    }
    let path = dir.join("case_seg.nii.gz");
    nifti::write_labels(&path, &labels, DataType::U8)?;
    paths.push((path, ReadAs::Labels));
    Ok(paths)
}

/// The benchmark's table: one row per file, a total row, and a line saying what the columns mean.
pub fn format_table(timings: &[DecodeTiming]) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let _ = writeln!(
        s,
        "{:<24} {:>3} {:>6} {:>6} {:>8} {:>8} {:>9} {:>8} {:>8} {:>6} {:>6} {:>9} {:>9} {:>6} {:>8} {:>8} {:>6} {:>8}",
        "file",
        "as",
        "gz MB",
        "raw MB",
        "read ms",
        "read cpu",
        "read MB/s",
        "infl ms",
        "infl cpu",
        "ratio",
        "cpu r.",
        "into cpu",
        "warm cpu",
        "into r.",
        "nat cpu",
        "nat MB/s",
        "nat r.",
        "stat cpu"
    );
    let (mut read, mut read_cpu, mut infl, mut infl_cpu, mut stored) = (0.0, 0.0, 0.0, 0.0, 0.0);
    let mut all_inflated = true;
    let (mut nat_total, mut warm_total, mut stats_total) = (0.0, 0.0, 0.0);
    let pct = |a: f64, b: f64| format!("{:.0} %", 100.0 * a / b);
    for t in timings {
        let name = t.path.file_name().map_or_else(|| t.path.display().to_string(), |n| n.to_string_lossy().into());
        read += ms(t.read);
        read_cpu += ms(t.read_cpu);
        stored += t.stored_bytes as f64 / 1e6;
        let cols = match (t.inflate, t.inflate_cpu) {
            (Some(i), Some(ic)) => {
                infl += ms(i);
                infl_cpu += ms(ic);
                [format!("{:.1}", ms(i)), format!("{:.1}", ms(ic)), pct(ms(i), ms(t.read)), pct(ms(ic), ms(t.read_cpu))]
            }
            _ => {
                all_inflated = false;
                ["-".into(), "-".into(), "-".into(), "-".into()]
            }
        };
        let reused = match t.reused_cpu {
            Some((into, warm)) => [format!("{:.1}", ms(into)), format!("{:.1}", ms(warm)), pct(ms(warm), ms(into))],
            None => ["-".into(), "-".into(), "-".into()],
        };
        let native = match (t.stored_cpu, t.reused_cpu) {
            (Some((nat, stats)), Some((_, warm))) => {
                nat_total += ms(nat);
                warm_total += ms(warm);
                stats_total += ms(stats);
                [
                    format!("{:.1}", ms(nat)),
                    format!("{:.0}", t.stored_bytes as f64 / 1e3 / ms(nat)),
                    pct(ms(warm), ms(nat)),
                    format!("{:.1}", ms(stats)),
                ]
            }
            _ => ["-".into(), "-".into(), "-".into(), "-".into()],
        };
        let _ = writeln!(
            s,
            "{:<24} {:>3} {:>6.2} {:>6.2} {:>8.1} {:>8.1} {:>9.0} {:>8} {:>8} {:>6} {:>6} {:>9} {:>9} {:>6} {:>8} {:>8} {:>6} {:>8}",
            name,
            t.read_as.output_type(),
            t.compressed_bytes as f64 / 1e6,
            t.stored_bytes as f64 / 1e6,
            ms(t.read),
            ms(t.read_cpu),
            t.stored_bytes as f64 / 1e3 / ms(t.read_cpu),
            cols[0],
            cols[1],
            cols[2],
            cols[3],
            reused[0],
            reused[1],
            reused[2],
            native[0],
            native[1],
            native[2],
            native[3]
        );
    }
    if timings.len() > 1 {
        // Stored-type columns sum the images that have them; the ratio compares those images' warm inflates.
        let native_totals: [String; 3] = if nat_total > 0.0 {
            [format!("{nat_total:.1}"), pct(warm_total, nat_total), format!("{stats_total:.1}")]
        } else {
            ["-".into(), "-".into(), "-".into()]
        };
        let cols = if all_inflated {
            [format!("{infl:.1}"), format!("{infl_cpu:.1}"), pct(infl, read), pct(infl_cpu, read_cpu)]
        } else {
            ["-".into(), "-".into(), "-".into(), "-".into()]
        };
        let _ = writeln!(
            s,
            "{:<24} {:>3} {:>6} {:>6.2} {:>8.1} {:>8.1} {:>9.0} {:>8} {:>8} {:>6} {:>6} {:>9} {:>9} {:>6} {:>8} {:>8} {:>6} {:>8}",
            "total",
            "",
            "",
            stored,
            read,
            read_cpu,
            stored * 1e3 / read_cpu,
            cols[0],
            cols[1],
            cols[2],
            cols[3],
            "",
            "",
            "",
            native_totals[0],
            "",
            native_totals[1],
            native_totals[2]
        );
    }
    let _ = writeln!(
        s,
        "as: what training reads (f32: read_volume, u16: read_labels). ms: median wall; cpu: median thread CPU \
         ms. MB/s: stored bytes per CPU second. ratio: inflate time / read time, wall and CPU (100 % = the \
         read costs nothing beyond libdeflate inflating the same bytes into a fresh buffer). into/warm/into r.: \
         images decoded into a reused buffer (the loader's path) against libdeflate inflating into a reused \
         buffer, CPU ms. nat: 8/16-bit images decoded in their stored type into the pooled buffer (the \
         loader's path, read_stored), CPU ms, MB/s per CPU second and warm inflate / nat; stat: the z-score \
         statistics pass over the stored values that the loader adds when it opens a case, CPU ms."
    );
    s
}
