//! One opened case as the patch sampler sees it: a label map in memory, image patches on request.
//!
//! Most cases are decoded whole ([`InMemoryCase`]). Uncompressed `.nii` files can instead be read patch by
//! patch through memory-mapped I/O (the dataset source's streamed view), so a worker holds the label map
//! and one patch, not the whole multi-channel image; [`NormalizedView`] normalises such patches on the fly.

use crate::augment::PatchTransform;
use crate::crop::{crop_into, crop_transformed, overlap};
use crate::error::Result;
use crate::preprocess::{Normalization, Preprocessing};
use crate::volume::{Labels, Volume, linear_index, voxel_count};

/// Slabs of this many z-planes are read to compute a streamed case's statistics (bounded memory).
pub const STATS_SLAB_PLANES: usize = 8;

pub trait CaseView: Send {
    /// `(x, y, z)` voxels.
    fn shape(&self) -> [usize; 3];
    fn channels(&self) -> usize;
    fn labels(&self) -> &Labels;
    /// Image patch `[C, z, y, x]` at `origin` (may be negative or run past the end: padded with 0).
    fn image_patch(&mut self, origin: [isize; 3], size: [usize; 3]) -> Result<Vec<f32>>;
    /// The image patch at `origin` with `transform` applied, written over all of `out` (`[C, z, y, x]`, a
    /// reused buffer). The default cuts, then transforms ([`PatchTransform::apply_in_place`]); views that
    /// hold the whole case do both in one pass.
    fn augmented_patch(
        &mut self,
        origin: [isize; 3],
        size: [usize; 3],
        transform: &PatchTransform,
        out: &mut [f32],
    ) -> Result<()> {
        let mut patch = self.image_patch(origin, size)?;
        transform.apply_to_image(&mut patch, size);
        out.copy_from_slice(&patch);
        Ok(())
    }
    /// Bytes this view keeps resident (for the loader's memory bound).
    fn resident_bytes(&self) -> u64;
    /// Called when the loader is done with the case: a decoded view hands its image and label buffers to
    /// this thread's next decode instead of returning them to the kernel (see `nifti::buffer`). Default:
    /// just drop.
    fn recycle(self: Box<Self>) {}
}

/// A fully decoded case.
pub struct InMemoryCase {
    pub volume: Volume,
    pub labels: Labels,
}

impl CaseView for InMemoryCase {
    fn shape(&self) -> [usize; 3] {
        self.volume.shape
    }
    fn channels(&self) -> usize {
        self.volume.channels
    }
    fn labels(&self) -> &Labels {
        &self.labels
    }
    fn image_patch(&mut self, origin: [isize; 3], size: [usize; 3]) -> Result<Vec<f32>> {
        let n = voxel_count(size);
        let mut out = vec![0.0f32; n * self.volume.channels];
        for c in 0..self.volume.channels {
            crop_into(self.volume.channel(c), self.volume.shape, origin, size, &mut out[c * n..(c + 1) * n]);
        }
        Ok(out)
    }
    fn augmented_patch(
        &mut self,
        origin: [isize; 3],
        size: [usize; 3],
        transform: &PatchTransform,
        out: &mut [f32],
    ) -> Result<()> {
        let n = voxel_count(size);
        let (shape, g) = (self.volume.shape, &transform.geometry);
        for (c, dst) in out.chunks_exact_mut(n).enumerate().take(self.volume.channels) {
            let src = self.volume.channel(c);
            match transform.intensity {
                Some((scale, shift)) => crop_transformed(src, shape, origin, size, g, 0.0, |v| v * scale + shift, dst),
                None => crop_transformed(src, shape, origin, size, g, 0.0, |v| v, dst),
            }
        }
        Ok(())
    }
    fn resident_bytes(&self) -> u64 {
        (self.volume.data.len() * 4 + self.labels.data.len() * 2) as u64
    }
    fn recycle(self: Box<Self>) {
        crate::nifti::give_back_f32(self.volume.data);
        crate::nifti::give_back_u16(self.labels.data);
    }
}

/// Applies intensity normalisation to the patches of a view that returns raw values (streamed files).
pub struct NormalizedView {
    inner: Box<dyn CaseView>,
    preprocessing: Preprocessing,
    /// Per channel `(mean, std)` of the whole case, for per-volume z-scoring.
    case_stats: Vec<(f64, f64)>,
}

impl NormalizedView {
    /// Wraps `inner`; for per-volume z-scoring this reads the case once in z-slabs to get its statistics.
    pub fn new(mut inner: Box<dyn CaseView>, preprocessing: Preprocessing) -> Result<Self> {
        let mut case_stats = Vec::new();
        if preprocessing.normalization == Normalization::PerVolumeZScore {
            let shape = inner.shape();
            let channels = inner.channels();
            let (mut sum, mut sum_sq) = (vec![0.0f64; channels], vec![0.0f64; channels]);
            for z0 in (0..shape[2]).step_by(STATS_SLAB_PLANES) {
                let size = [shape[0], shape[1], STATS_SLAB_PLANES.min(shape[2] - z0)];
                let slab = inner.image_patch([0, 0, z0 as isize], size)?;
                let n = voxel_count(size);
                for c in 0..channels {
                    for &v in &slab[c * n..(c + 1) * n] {
                        sum[c] += f64::from(v);
                        sum_sq[c] += f64::from(v) * f64::from(v);
                    }
                }
            }
            let count = voxel_count(shape).max(1) as f64;
            case_stats = (0..channels)
                .map(|c| {
                    let mean = sum[c] / count;
                    (mean, (sum_sq[c] / count - mean * mean).max(0.0).sqrt())
                })
                .collect();
        }
        Ok(Self { inner, preprocessing, case_stats })
    }
}

impl CaseView for NormalizedView {
    fn shape(&self) -> [usize; 3] {
        self.inner.shape()
    }
    fn channels(&self) -> usize {
        self.inner.channels()
    }
    fn labels(&self) -> &Labels {
        self.inner.labels()
    }
    fn image_patch(&mut self, origin: [isize; 3], size: [usize; 3]) -> Result<Vec<f32>> {
        let mut patch = self.inner.image_patch(origin, size)?;
        let Some([(_, px, lx), (_, py, ly), (_, pz, lz)]) = overlap(origin, size, self.shape()) else {
            return Ok(vec![0.0; patch.len()]);
        };
        let n = voxel_count(size);
        // Only voxels inside the volume are normalised; the padding stays 0, as for decoded cases.
        let mut row = Vec::with_capacity(lx);
        for c in 0..self.channels() {
            for z in pz..pz + lz {
                for y in py..py + ly {
                    let start = c * n + linear_index(size, px, y, z);
                    row.clear();
                    row.extend_from_slice(&patch[start..start + lx]);
                    match self.case_stats.get(c) {
                        Some(&(mean, std)) => crate::preprocess::apply_affine(&mut row, mean, std, None),
                        None => self.preprocessing.normalize_channel(c, &mut row),
                    }
                    patch[start..start + lx].copy_from_slice(&row);
                }
            }
        }
        Ok(patch)
    }
    fn resident_bytes(&self) -> u64 {
        self.inner.resident_bytes()
    }
    fn recycle(self: Box<Self>) {
        self.inner.recycle();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phantom::{PhantomSpec, generate};

    #[test]
    fn normalised_view_of_raw_patches_equals_normalising_the_whole_volume_first() {
        let spec = PhantomSpec { shape: [20, 18, 17], spacing: [1.0; 3], structures: 3, channels: 2, seed: 1 };
        let (v, l) = generate(&spec, 0);
        let pre =
            Preprocessing { normalization: Normalization::PerVolumeZScore, target_spacing: None, orientation: None };
        let raw = Box::new(InMemoryCase { volume: v.clone(), labels: l.clone() });
        let mut streamed = NormalizedView::new(raw, pre.clone()).unwrap();
        let (nv, nl) = pre.apply(v, l);
        let mut decoded = InMemoryCase { volume: nv, labels: nl };
        for origin in [[0, 0, 0], [-3, 5, 10], [12, -2, -1]] {
            let a = streamed.image_patch(origin, [10, 9, 8]).unwrap();
            let b = decoded.image_patch(origin, [10, 9, 8]).unwrap();
            let worst = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max);
            assert!(worst < 1e-4, "origin {origin:?}: differs by {worst}");
        }
    }

    #[test]
    fn fused_augmented_patch_equals_cutting_then_transforming() {
        use crate::augment::{Geometry, PatchTransform};
        let spec = PhantomSpec { shape: [20, 18, 17], spacing: [1.0; 3], structures: 3, channels: 2, seed: 3 };
        let (v, l) = generate(&spec, 0);
        let mut case = InMemoryCase { volume: v, labels: l };
        let size = [9, 9, 6];
        for (turns, flips, intensity) in [
            (0, [false; 3], None),
            (1, [true, false, true], Some((1.1, -0.2))),
            (3, [false, true, false], Some((0.9, 0.05))),
        ] {
            let t = PatchTransform { geometry: Geometry { flips, quarter_turns: turns }, intensity };
            for origin in [[0, 0, 0], [-4, 12, 14], [15, -3, 2]] {
                let mut reference = case.image_patch(origin, size).unwrap();
                t.apply_to_image(&mut reference, size);
                let mut fused = vec![f32::NAN; reference.len()];
                case.augmented_patch(origin, size, &t, &mut fused).unwrap();
                let same = fused.iter().zip(&reference).all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "{t:?} at {origin:?}");
            }
        }
    }
}
