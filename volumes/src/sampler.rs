//! Where a training patch is cut: uniform, foreground-oversampled (nnU-Net), or per-class weighted
//! (TorchIO's `LabelSampler`, MONAI's `RandCropByLabelClassesd`).
//!
//! Class locations are precomputed once per decoded case and capped at `max_class_locations` per class by
//! even striding, so their memory is bounded (MONAI users hit 80 GB of class indices without a cap).
//! Origins may be negative or run past the end; the crop pads (see [`crate::crop`]).

use rand::Rng;

use crate::volume::Labels;

/// Up to `cap` voxel positions per class, evenly strided over the case (deterministic, no RNG).
#[derive(Debug, Clone, PartialEq)]
pub struct ClassLocations {
    /// Index = class value; positions as linear x-fastest indices.
    pub per_class: Vec<Vec<usize>>,
    pub shape: [usize; 3],
}

impl ClassLocations {
    /// Two passes over the labels: count each class, then keep every `ceil(count / cap)`-th voxel. The keep
    /// decision is a per-class countdown, not a division per voxel (9 M of them on a BraTS case).
    pub fn compute(labels: &Labels, cap: usize) -> Self {
        let classes = labels.data.iter().copied().max().map_or(0, |m| usize::from(m) + 1);
        let mut counts = vec![0usize; classes];
        for &l in &labels.data {
            counts[usize::from(l)] += 1;
        }
        let strides: Vec<usize> = counts.iter().map(|&c| c.div_ceil(cap.max(1)).max(1)).collect();
        // Voxels of each class still to skip before the next kept one; the first of each class is kept.
        let mut skip = vec![0usize; classes];
        let mut per_class: Vec<Vec<usize>> = counts.iter().map(|&c| Vec::with_capacity(c.min(cap))).collect();
        for (i, &l) in labels.data.iter().enumerate() {
            let l = usize::from(l);
            if skip[l] == 0 {
                per_class[l].push(i);
                skip[l] = strides[l];
            }
            skip[l] -= 1;
        }
        Self { per_class, shape: labels.shape }
    }

    /// Whether any class other than background (0) is present.
    pub fn has_foreground(&self) -> bool {
        self.per_class.iter().skip(1).any(|v| !v.is_empty())
    }

    /// Bytes held (for the loader's memory bound).
    pub fn bytes(&self) -> u64 {
        self.per_class.iter().map(|v| v.len() * std::mem::size_of::<usize>()).sum::<usize>() as u64
    }

    fn voxel(&self, linear: usize) -> [usize; 3] {
        let [nx, ny, _] = self.shape;
        [linear % nx, (linear / nx) % ny, linear / (nx * ny)]
    }
}

/// How one patch is placed.
#[derive(Debug, Clone, PartialEq)]
pub enum Placement {
    /// Anywhere (the patch may hang over the border only if it is larger than the volume).
    Uniform,
    /// Centred on a voxel of a foreground class chosen uniformly among the classes present.
    Foreground,
    /// Centred on a voxel of a class chosen with probability ∝ `weights[class]` among present classes.
    ClassWeighted(Vec<f64>),
}

/// Whether the patch at position `position_in_batch` of a batch must contain foreground (nnU-Net: the last
/// `1 − round(B·(1 − f))` positions of each batch). When that rule forces nothing although `f > 0` (small
/// batches, e.g. B = 1), the patch's global sequence number decides instead: patch `n` is forced when
/// `⌊(n+1)·f⌋ > ⌊n·f⌋`, which forces exactly the fraction `f` of the stream.
pub fn forced_foreground(sequence: u64, batch_size: usize, fraction: f64) -> bool {
    if fraction <= 0.0 || batch_size == 0 {
        return false;
    }
    let b = batch_size as f64;
    let first_forced = (b * (1.0 - fraction.min(1.0))).round() as usize;
    if first_forced < batch_size {
        return (sequence as usize % batch_size) >= first_forced;
    }
    ((sequence + 1) as f64 * fraction).floor() > (sequence as f64 * fraction).floor()
}

/// Origin range per axis: `[min(0, n − p), max(0, n − p)]`. A patch larger than the volume may start
/// before it, so the volume lands anywhere inside the patch.
fn origin_range(n: usize, p: usize) -> (isize, isize) {
    let d = n as isize - p as isize;
    (d.min(0), d.max(0))
}

/// Picks the patch origin for `placement`; falls back to uniform when the wanted classes are absent.
pub fn choose_origin(
    placement: &Placement,
    locations: &ClassLocations,
    patch: [usize; 3],
    rng: &mut impl Rng,
) -> [isize; 3] {
    let shape = locations.shape;
    let class = match placement {
        Placement::Uniform => None,
        Placement::Foreground => {
            let present: Vec<usize> =
                (1..locations.per_class.len()).filter(|&c| !locations.per_class[c].is_empty()).collect();
            (!present.is_empty()).then(|| present[rng.random_range(0..present.len())])
        }
        Placement::ClassWeighted(weights) => {
            let w = |c: usize| {
                if locations.per_class[c].is_empty() { 0.0 } else { weights.get(c).copied().unwrap_or(0.0).max(0.0) }
            };
            let total: f64 = (0..locations.per_class.len()).map(w).sum();
            (total > 0.0).then(|| {
                let mut pick = rng.random::<f64>() * total;
                let mut chosen = 0;
                for c in 0..locations.per_class.len() {
                    if w(c) > 0.0 {
                        chosen = c;
                        if pick < w(c) {
                            break;
                        }
                        pick -= w(c);
                    }
                }
                chosen
            })
        }
    };
    match class {
        Some(c) => {
            let list = &locations.per_class[c];
            let centre = locations.voxel(list[rng.random_range(0..list.len())]);
            std::array::from_fn(|i| {
                let (lo, hi) = origin_range(shape[i], patch[i]);
                (centre[i] as isize - (patch[i] / 2) as isize).clamp(lo, hi)
            })
        }
        None => std::array::from_fn(|i| {
            let (lo, hi) = origin_range(shape[i], patch[i]);
            rng.random_range(lo as i64..=hi as i64) as isize
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seed::rng_for;
    use crate::volume::{IDENTITY_AFFINE, linear_index};

    /// 40³ background with one 3³ cube of class 2 at (30..33, 5..8, 20..23).
    fn tiny_object() -> Labels {
        let shape = [40, 40, 40];
        let mut data = vec![0u16; 64_000];
        for z in 20..23 {
            for y in 5..8 {
                for x in 30..33 {
                    data[linear_index(shape, x, y, z)] = 2;
                }
            }
        }
        Labels { data, shape, affine: IDENTITY_AFFINE }
    }

    fn contains_class(l: &Labels, origin: [isize; 3], patch: [usize; 3], class: u16) -> bool {
        let pad = crate::crop::crop_padded(&l.data, l.shape, origin, patch, 0);
        pad.contains(&class)
    }

    #[test]
    fn locations_are_capped_and_cover_the_class() {
        let loc = ClassLocations::compute(&tiny_object(), 10);
        assert_eq!(loc.per_class.len(), 3);
        assert!(loc.per_class[0].len() <= 10 && !loc.per_class[0].is_empty());
        assert!(loc.per_class[1].is_empty());
        assert_eq!(loc.per_class[2].len(), 9, "27 voxels, stride 3");
        assert!(loc.has_foreground());
    }

    #[test]
    fn foreground_placement_always_hits_the_object_uniform_rarely_does() {
        let l = tiny_object();
        let loc = ClassLocations::compute(&l, 1000);
        let patch = [8, 8, 8];
        let mut rng = rng_for(&[1]);
        let fg = (0..200)
            .filter(|_| contains_class(&l, choose_origin(&Placement::Foreground, &loc, patch, &mut rng), patch, 2));
        assert_eq!(fg.count(), 200);
        let uni = (0..200)
            .filter(|_| contains_class(&l, choose_origin(&Placement::Uniform, &loc, patch, &mut rng), patch, 2));
        assert!(uni.count() < 40);
    }

    #[test]
    fn class_weights_follow_their_ratio() {
        let l = tiny_object();
        let loc = ClassLocations::compute(&l, 1000);
        let patch = [2, 2, 2];
        let mut rng = rng_for(&[2]);
        let placement = Placement::ClassWeighted(vec![1.0, 5.0, 3.0]);
        // Class 1 is absent: draws split 1 : 3 between background and class 2.
        let hits = (0..4000)
            .filter(|_| contains_class(&l, choose_origin(&placement, &loc, patch, &mut rng), patch, 2))
            .count();
        assert!((2800..3200).contains(&hits), "{hits} of 4000 on class 2, expected ~3000");
    }

    #[test]
    fn patches_larger_than_the_volume_start_before_it() {
        let l = Labels { data: vec![1; 8], shape: [2, 2, 2], affine: IDENTITY_AFFINE };
        let loc = ClassLocations::compute(&l, 10);
        let mut rng = rng_for(&[3]);
        for _ in 0..50 {
            let o = choose_origin(&Placement::Uniform, &loc, [5, 2, 1], &mut rng);
            assert!((-3..=0).contains(&o[0]) && o[1] == 0 && (0..=1).contains(&o[2]), "{o:?}");
            let f = choose_origin(&Placement::Foreground, &loc, [5, 2, 1], &mut rng);
            assert!(contains_class(&l, f, [5, 2, 1], 1));
        }
    }

    #[test]
    fn forced_foreground_matches_nnunet_per_batch_and_the_fraction_for_batch_one() {
        // B = 2, f = 0.33: position 1 of each batch is forced (nnU-Net rounds 2·0.67 to 1).
        let b2: Vec<bool> = (0..6).map(|n| forced_foreground(n, 2, 0.33)).collect();
        assert_eq!(b2, [false, true, false, true, false, true]);
        // B = 1: one patch in three.
        let b1 = (0..300).filter(|&n| forced_foreground(n, 1, 1.0 / 3.0)).count();
        assert_eq!(b1, 100);
        assert!(!(0..10).any(|n| forced_foreground(n, 4, 0.0)));
    }
}
