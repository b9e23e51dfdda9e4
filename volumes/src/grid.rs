//! Sliding-window inference support: a grid of overlapping patch origins covering a volume, and an
//! [`Aggregator`] that blends patch predictions back into one volume.
//!
//! As in nnU-Net, origins are spread evenly so that the first patch starts at 0 and the last ends at the
//! border, with step at most `patch · (1 − overlap)`. Blending weights are uniform (average) or a gaussian
//! importance map with σ = `sigma_scale` · patch edge (nnU-Net and MONAI: 1/8), which down-weights patch
//! borders where the network sees little context. The aggregator holds exactly one output volume
//! (`C × voxels` f32) and one weight map (`voxels` f32), however many patches are added (MONAI users run
//! out of memory when the whole batch of windows is kept).

use crate::crop::{crop_into, overlap};
use crate::volume::{Volume, linear_index, voxel_count};

/// nnU-Net's and MONAI's gaussian sigma as a fraction of the patch edge.
pub const DEFAULT_SIGMA_SCALE: f64 = 0.125;

/// Origins along one axis of length `n` for patch edge `p`.
fn axis_origins(n: usize, p: usize, overlap: f64) -> Vec<usize> {
    if p >= n {
        return vec![0];
    }
    let max_step = ((p as f64) * (1.0 - overlap.clamp(0.0, 0.99))).floor().max(1.0);
    let steps = ((n - p) as f64 / max_step).ceil() as usize;
    let span = (n - p) as f64;
    (0..=steps).map(|i| (span * i as f64 / steps as f64).round() as usize).collect()
}

/// Patch origins `(x, y, z)` covering `volume_shape` with the given fractional `overlap` (0.5 = nnU-Net).
/// A patch larger than the volume along an axis gets the single origin 0 (the crop pads).
pub fn patch_origins(volume_shape: [usize; 3], patch_size: [usize; 3], overlap: f64) -> Vec<[usize; 3]> {
    let axes: [Vec<usize>; 3] = std::array::from_fn(|i| axis_origins(volume_shape[i], patch_size[i], overlap));
    let mut out = Vec::with_capacity(axes.iter().map(Vec::len).product());
    for &z in &axes[2] {
        for &y in &axes[1] {
            for &x in &axes[0] {
                out.push([x, y, z]);
            }
        }
    }
    out
}

/// Cuts the grid's patches out of a volume, one at a time.
pub struct GridSampler<'a> {
    volume: &'a Volume,
    patch_size: [usize; 3],
    origins: Vec<[usize; 3]>,
}

impl<'a> GridSampler<'a> {
    pub fn new(volume: &'a Volume, patch_size: [usize; 3], overlap: f64) -> Self {
        Self { volume, patch_size, origins: patch_origins(volume.shape, patch_size, overlap) }
    }

    pub fn origins(&self) -> &[[usize; 3]] {
        &self.origins
    }

    /// The `[C, z, y, x]` patch at grid position `k`, zero-padded past the border.
    pub fn patch(&self, k: usize) -> Vec<f32> {
        let n = voxel_count(self.patch_size);
        let origin = self.origins[k].map(|o| o as isize);
        let mut out = vec![0.0f32; n * self.volume.channels];
        for c in 0..self.volume.channels {
            crop_into(self.volume.channel(c), self.volume.shape, origin, self.patch_size, &mut out[c * n..(c + 1) * n]);
        }
        out
    }

    /// `(origin, patch)` pairs in grid order.
    pub fn iter(&self) -> impl Iterator<Item = ([usize; 3], Vec<f32>)> + '_ {
        (0..self.origins.len()).map(|k| (self.origins[k], self.patch(k)))
    }
}

/// How overlapping predictions are weighted.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Blend {
    Average,
    Gaussian { sigma_scale: f64 },
}

/// The weight of each voxel of a patch, `[z, y, x]`.
pub fn importance_map(patch_size: [usize; 3], blend: Blend) -> Vec<f32> {
    let n = voxel_count(patch_size);
    let Blend::Gaussian { sigma_scale } = blend else {
        return vec![1.0; n];
    };
    let axis: [Vec<f64>; 3] = std::array::from_fn(|i| {
        let p = patch_size[i] as f64;
        let sigma = (p * sigma_scale).max(f64::EPSILON);
        let centre = (p - 1.0) / 2.0;
        (0..patch_size[i]).map(|k| (-((k as f64 - centre) / sigma).powi(2) / 2.0).exp()).collect()
    });
    let mut map = Vec::with_capacity(n);
    for z in 0..patch_size[2] {
        for y in 0..patch_size[1] {
            map.extend((0..patch_size[0]).map(|x| axis[0][x] * axis[1][y] * axis[2][z]));
        }
    }
    // nnU-Net: normalise to a maximum of 1 and lift zeros to the smallest positive weight, so no voxel of
    // the volume can end up with total weight 0.
    let max = map.iter().cloned().fold(0.0, f64::max).max(f64::MIN_POSITIVE);
    let min_pos = map.iter().cloned().filter(|&w| w > 0.0).fold(f64::INFINITY, f64::min) / max;
    map.iter().map(|&w| ((w / max).max(min_pos)) as f32).collect()
}

/// Accumulates weighted patch predictions into one `[C, z, y, x]` volume.
pub struct Aggregator {
    shape: [usize; 3],
    channels: usize,
    patch_size: [usize; 3],
    weights: Vec<f32>,
    output: Vec<f32>,
    weight_sum: Vec<f32>,
}

impl Aggregator {
    pub fn new(shape: [usize; 3], channels: usize, patch_size: [usize; 3], blend: Blend) -> Self {
        let n = voxel_count(shape);
        Self {
            shape,
            channels,
            patch_size,
            weights: importance_map(patch_size, blend),
            output: vec![0.0; n * channels],
            weight_sum: vec![0.0; n],
        }
    }

    /// Adds a `[C, z, y, x]` patch prediction at `origin`; parts beyond the volume are dropped.
    pub fn add(&mut self, origin: [usize; 3], patch: &[f32]) {
        let np = voxel_count(self.patch_size);
        let nv = voxel_count(self.shape);
        let o = origin.map(|v| v as isize);
        let Some([(vx, px, lx), (vy, py, ly), (vz, pz, lz)]) = overlap(o, self.patch_size, self.shape) else {
            return;
        };
        for z in 0..lz {
            for y in 0..ly {
                let dst = linear_index(self.shape, vx, vy + y, vz + z);
                let src = linear_index(self.patch_size, px, py + y, pz + z);
                let w = &self.weights[src..src + lx];
                for (acc, &wi) in self.weight_sum[dst..dst + lx].iter_mut().zip(w) {
                    *acc += wi;
                }
                for c in 0..self.channels.min(patch.len() / np) {
                    let p = &patch[c * np + src..c * np + src + lx];
                    let out = &mut self.output[c * nv + dst..c * nv + dst + lx];
                    for ((acc, &v), &wi) in out.iter_mut().zip(p).zip(w) {
                        *acc += v * wi;
                    }
                }
            }
        }
    }

    /// The blended `[C, z, y, x]` volume; voxels no patch covered stay 0.
    pub fn finish(mut self) -> Vec<f32> {
        let nv = voxel_count(self.shape);
        for c in 0..self.channels {
            for (v, &w) in self.output[c * nv..(c + 1) * nv].iter_mut().zip(&self.weight_sum) {
                if w > 0.0 {
                    *v /= w;
                }
            }
        }
        self.output
    }

    /// Bytes held: one output volume plus one weight map plus one patch of weights.
    pub fn bytes(&self) -> u64 {
        ((self.output.len() + self.weight_sum.len() + self.weights.len()) * 4) as u64
    }
}
