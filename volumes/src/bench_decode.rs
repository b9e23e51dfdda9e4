//! The NIfTI decode benchmark behind `voxplan bench decode`: throughput of [`crate::nifti::read_volume`]
//! against libdeflate inflating the same bytes with nothing else done, and a BraTS-like case to run it on.
//!
//! Both sides start from the compressed file in the page cache and allocate their output afresh, so the
//! ratio measures what reading costs beyond inflation itself: header parsing, the file read, the in-place
//! conversion to `f32` (byte swap + scaling) and the larger output.

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

/// Timing of one file.
#[derive(Debug, Clone)]
pub struct DecodeTiming {
    pub path: PathBuf,
    pub compressed_bytes: u64,
    /// Bytes of stored voxels (what the file decompresses to, minus the header).
    pub stored_bytes: u64,
    pub voxels: u64,
    /// Median wall time of `read_volume` (file → scaled `Vec<f32>`).
    pub read_volume: Duration,
    /// Median wall time of a bare libdeflate inflate of the in-memory file into a fresh buffer (`None` for an
    /// uncompressed file).
    pub inflate: Option<Duration>,
}

impl DecodeTiming {
    /// MB/s (10⁶ bytes) of stored voxel bytes delivered as `f32` by `read_volume`.
    pub fn read_mb_s(&self) -> f64 {
        self.stored_bytes as f64 / 1e6 / self.read_volume.as_secs_f64()
    }
    /// MB/s of the same stored bytes through inflation alone.
    pub fn inflate_mb_s(&self) -> Option<f64> {
        self.inflate.map(|t| self.stored_bytes as f64 / 1e6 / t.as_secs_f64())
    }
}

/// Times `read_volume` and bare inflation on `path`, `repeats` times each, keeping the medians.
pub fn time_file(path: &Path, repeats: usize) -> Result<DecodeTiming> {
    let compressed = std::fs::read(path).map_err(|e| VolumeError::io(path, e))?;
    let header = nifti::read_header(path)?;
    let repeats = repeats.max(1);
    let mut reads = Vec::with_capacity(repeats);
    let mut voxels = 0;
    for _ in 0..repeats {
        let t = Instant::now();
        let v = nifti::read_volume(path)?;
        reads.push(t.elapsed());
        voxels = v.data.len() as u64;
        drop(std::hint::black_box(v));
    }
    let inflate = if is_gzip(&compressed) && header.single_file {
        let total = header.vox_offset as usize + header.data_bytes();
        let mut d = libdeflater::Decompressor::new();
        let mut times = Vec::with_capacity(repeats);
        for _ in 0..repeats {
            let t = Instant::now();
            let mut out = vec![0u8; total];
            let n = d.gzip_decompress(&compressed, &mut out).map_err(|e| VolumeError::CorruptGzip {
                path: path.to_path_buf(),
                problem: format!("{e} (the baseline handles single-member files only)"),
            })?;
            times.push(t.elapsed());
            std::hint::black_box((n, out));
        }
        Some(median(times))
    } else {
        None
    };
    Ok(DecodeTiming {
        path: path.to_path_buf(),
        compressed_bytes: compressed.len() as u64,
        stored_bytes: header.data_bytes() as u64,
        voxels,
        read_volume: median(reads),
        inflate,
    })
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Writes a BraTS-sized case into `dir`: `case_0000.nii.gz` … `case_0003.nii.gz` (int16) and
/// `case_seg.nii.gz` (uint8), with a head-shaped foreground, smooth contrast, noise and three nested
/// "tumour" labels. Returns the paths, images first.
pub fn write_brats_like_case(dir: &Path) -> Result<Vec<PathBuf>> {
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
        paths.push(path);
    }
    let path = dir.join("case_seg.nii.gz");
    nifti::write_labels(&path, &labels, DataType::U8)?;
    paths.push(path);
    Ok(paths)
}
