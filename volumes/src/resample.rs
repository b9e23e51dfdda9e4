//! Resampling to a target voxel spacing: trilinear for images, nearest neighbour for label maps.
//!
//! Voxel `0` keeps its world position (as SimpleITK and nnU-Net do); new voxel `i` samples old voxel
//! coordinate `i · target / spacing`, clamped at the last voxel. The affine's columns are rescaled so the
//! result still maps voxels to the same millimetres.

use crate::volume::{Affine, Labels, Volume, linear_index, spacing_of, voxel_count};

/// Shape after resampling `shape` from `spacing` to `target` (at least one voxel per axis).
pub fn resampled_shape(shape: [usize; 3], spacing: [f64; 3], target: [f64; 3]) -> [usize; 3] {
    std::array::from_fn(|i| ((shape[i] as f64 * spacing[i] / target[i]).round() as usize).max(1))
}

/// The affine of the resampled grid: each voxel axis scaled by `target / spacing`, origin unchanged.
pub fn resampled_affine(affine: &Affine, target: [f64; 3]) -> Affine {
    let spacing = spacing_of(affine);
    let mut out = *affine;
    for (j, (&t, &s)) in target.iter().zip(spacing.iter()).enumerate() {
        let factor = if s > 0.0 { t / s } else { 1.0 };
        for row in out.iter_mut().take(3) {
            row[j] *= factor;
        }
    }
    out
}

/// Per-axis source coordinate of each output index.
fn source_coordinates(n_out: usize, n_in: usize, step: f64) -> Vec<f64> {
    let last = n_in.saturating_sub(1) as f64;
    (0..n_out).map(|i| (i as f64 * step).min(last)).collect()
}

/// Floor index and weight of the upper neighbour for linear interpolation.
fn linear_taps(coords: &[f64], n_in: usize) -> Vec<(usize, usize, f32)> {
    coords
        .iter()
        .map(|&c| {
            let lo = c.floor() as usize;
            let hi = (lo + 1).min(n_in.saturating_sub(1));
            (lo, hi, (c - lo as f64) as f32)
        })
        .collect()
}

/// Trilinear resampling of every channel to `target` spacing.
pub fn resample_volume(volume: &Volume, target: [f64; 3]) -> Volume {
    let shape = resampled_shape(volume.shape, volume.spacing(), target);
    resample_volume_to_shape(volume, target, shape)
}

/// Trilinear resampling to `target` spacing onto exactly `shape` voxels: how a prediction made on a
/// resampled grid goes back onto the original grid, whose shape the rounding in [`resampled_shape`] need
/// not reproduce.
pub fn resample_volume_to_shape(volume: &Volume, target: [f64; 3], shape: [usize; 3]) -> Volume {
    let spacing = volume.spacing();
    let taps: [Vec<(usize, usize, f32)>; 3] = std::array::from_fn(|i| {
        linear_taps(&source_coordinates(shape[i], volume.shape[i], target[i] / spacing[i]), volume.shape[i])
    });
    let mut out = Volume::zeros(shape, volume.channels, resampled_affine(&volume.affine, target));
    let n_out = voxel_count(shape);
    for c in 0..volume.channels {
        let src = volume.channel(c);
        let dst = &mut out.data[c * n_out..(c + 1) * n_out];
        let at = |x, y, z| src[linear_index(volume.shape, x, y, z)];
        for (z, &(z0, z1, wz)) in taps[2].iter().enumerate() {
            for (y, &(y0, y1, wy)) in taps[1].iter().enumerate() {
                for (x, &(x0, x1, wx)) in taps[0].iter().enumerate() {
                    let lerp = |a: f32, b: f32, w: f32| a + (b - a) * w;
                    let c00 = lerp(at(x0, y0, z0), at(x1, y0, z0), wx);
                    let c10 = lerp(at(x0, y1, z0), at(x1, y1, z0), wx);
                    let c01 = lerp(at(x0, y0, z1), at(x1, y0, z1), wx);
                    let c11 = lerp(at(x0, y1, z1), at(x1, y1, z1), wx);
                    dst[linear_index(shape, x, y, z)] = lerp(lerp(c00, c10, wy), lerp(c01, c11, wy), wz);
                }
            }
        }
    }
    out
}

/// Nearest-neighbour resampling of a label map to `target` spacing (classes are never blended).
pub fn resample_labels(labels: &Labels, target: [f64; 3]) -> Labels {
    let shape = resampled_shape(labels.shape, labels.spacing(), target);
    resample_labels_to_shape(labels, target, shape)
}

/// Nearest-neighbour resampling to `target` spacing onto exactly `shape` voxels (see
/// [`resample_volume_to_shape`]).
pub fn resample_labels_to_shape(labels: &Labels, target: [f64; 3], shape: [usize; 3]) -> Labels {
    let spacing = labels.spacing();
    let nearest: [Vec<usize>; 3] = std::array::from_fn(|i| {
        source_coordinates(shape[i], labels.shape[i], target[i] / spacing[i])
            .iter()
            .map(|c| c.round() as usize)
            .collect()
    });
    let mut data = Vec::with_capacity(voxel_count(shape));
    for &z in &nearest[2] {
        for &y in &nearest[1] {
            data.extend(nearest[0].iter().map(|&x| labels.data[linear_index(labels.shape, x, y, z)]));
        }
    }
    Labels { data, shape, affine: resampled_affine(&labels.affine, target) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn affine(s: [f64; 3]) -> Affine {
        [[s[0], 0.0, 0.0, 10.0], [0.0, s[1], 0.0, 20.0], [0.0, 0.0, s[2], 30.0], [0.0, 0.0, 0.0, 1.0]]
    }

    #[test]
    fn linear_ramp_is_reproduced_exactly_at_half_spacing() {
        // f(x, y, z) = x + 10 z in voxel units of the source; trilinear interpolation is exact on it.
        let shape = [5, 3, 4];
        let mut v = Volume::zeros(shape, 1, affine([2.0, 1.0, 3.0]));
        for z in 0..4 {
            for y in 0..3 {
                for x in 0..5 {
                    v.data[linear_index(shape, x, y, z)] = (x + 10 * z) as f32;
                }
            }
        }
        let r = resample_volume(&v, [1.0, 1.0, 1.5]);
        assert_eq!(r.shape, [10, 3, 8]);
        assert_eq!(r.spacing(), [1.0, 1.0, 1.5]);
        assert_eq!(r.affine[0][3], 10.0, "origin kept");
        // New voxel (3, 1, 5) sits at old coordinate (1.5, 1, 2.5).
        let got = r.data[linear_index(r.shape, 3, 1, 5)];
        assert!((got - (1.5 + 25.0)).abs() < 1e-5, "{got}");
    }

    #[test]
    fn labels_keep_their_classes_and_only_their_classes() {
        let shape = [4, 4, 2];
        let data: Vec<u16> = (0..32).map(|i| if i % 4 < 2 { 0 } else { 7 }).collect();
        let l = Labels { data, shape, affine: affine([1.0, 1.0, 4.0]) };
        let r = resample_labels(&l, [0.5, 1.0, 1.0]);
        assert_eq!(r.shape, [8, 4, 8]);
        // New x = 0..8 samples old x = round(0, 0.5, 1, …, 3.5 → 3): the first three stay background.
        let row: Vec<u16> = r.data[..8].to_vec();
        assert_eq!(row, [0, 0, 0, 7, 7, 7, 7, 7]);
        assert!(r.data.iter().all(|&v| v == 0 || v == 7));
        assert_eq!(r.spacing(), [0.5, 1.0, 1.0]);
    }
}
