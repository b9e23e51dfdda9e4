//! Seeded patch augmentation: flips per axis, 90° rotations in the axial (x, y) plane, intensity scale and
//! shift, gaussian noise. Geometric transforms move image and label voxels identically; intensity
//! transforms touch the image only. Rotations need square axial patches (x = y) so the shape is kept.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;

use crate::config::AugmentConfig;
use crate::volume::{linear_index, voxel_count};

/// The geometric part of one augmentation draw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Geometry {
    /// Flip along x, y, z.
    pub flips: [bool; 3],
    /// Quarter turns in the x–y plane (0–3).
    pub quarter_turns: u8,
}

impl Geometry {
    pub fn is_identity(&self) -> bool {
        self.flips == [false; 3] && self.quarter_turns == 0
    }

    /// Output voxel `(x, y, z)` reads input voxel `source(x, y, z)`: rotate, then flip.
    pub(crate) fn source(&self, size: [usize; 3], x: usize, y: usize, z: usize) -> [usize; 3] {
        let n = size[0];
        let (rx, ry) = match self.quarter_turns % 4 {
            0 => (x, y),
            1 => (y, n - 1 - x),
            2 => (n - 1 - x, n - 1 - y),
            _ => (n - 1 - y, x),
        };
        let flip = |a: usize, axis: usize| if self.flips[axis] { size[axis] - 1 - a } else { a };
        [flip(rx, 0), flip(ry, 1), flip(z, 2)]
    }

    /// Applies the transform to one `[z, y, x]` block of `size` voxels. Along an output row the source
    /// index moves by a constant step (±1 or ±nx), so each row is a strided gather, not per-voxel math.
    pub fn apply<T: Copy>(&self, block: &[T], size: [usize; 3]) -> Vec<T> {
        let mut out = Vec::with_capacity(block.len());
        self.apply_into(block, size, &mut out);
        out
    }

    /// [`Geometry::apply`] into a reused buffer (cleared first): a 128³ patch is 8 MB per channel, and
    /// fresh allocations of that size cost page faults on every patch.
    pub fn apply_into<T: Copy>(&self, block: &[T], size: [usize; 3], out: &mut Vec<T>) {
        out.clear();
        for z in 0..size[2] {
            for y in 0..size[1] {
                let [sx, sy, sz] = self.source(size, 0, y, z);
                let first = linear_index(size, sx, sy, sz);
                if size[0] == 1 {
                    out.push(block[first]);
                    continue;
                }
                let [tx, ty, tz] = self.source(size, 1, y, z);
                let step = linear_index(size, tx, ty, tz) as isize - first as isize;
                match step {
                    1 => out.extend_from_slice(&block[first..first + size[0]]),
                    -1 => out.extend(block[first + 1 - size[0]..=first].iter().rev()),
                    _ => out.extend((0..size[0] as isize).map(|x| block[(first as isize + x * step) as usize])),
                }
            }
        }
    }
}

/// The deterministic part of one patch's augmentation: geometry and intensity scale/shift. Drawn before
/// the patch is cut, so that [`crate::crop::crop_transformed`] can apply it during the cut.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct PatchTransform {
    pub geometry: Geometry,
    /// `(scale, shift)`: `v ↦ v·scale + shift` on every image voxel, padding included; `None` leaves
    /// values untouched (augmentation disabled).
    pub intensity: Option<(f32, f32)>,
}

impl PatchTransform {
    /// Applies the transform to a patch already cut out (`image` `[C, z, y, x]`, `labels` `[z, y, x]`): the
    /// reference definition the fused cut must equal, and the path for views that cannot cut fused.
    pub fn apply_in_place(&self, image: &mut [f32], labels: &mut Vec<u16>, size: [usize; 3]) {
        self.apply_to_image(image, size);
        if !self.geometry.is_identity() {
            let mut moved = Vec::with_capacity(labels.len());
            self.geometry.apply_into(labels, size, &mut moved);
            *labels = moved;
        }
    }

    /// The image half of [`PatchTransform::apply_in_place`].
    pub fn apply_to_image(&self, image: &mut [f32], size: [usize; 3]) {
        let (scale, shift) = self.intensity.unwrap_or((1.0, 0.0));
        if self.geometry.is_identity() {
            if self.intensity.is_some() {
                image.iter_mut().for_each(|v| *v = *v * scale + shift);
            }
            return;
        }
        let n = voxel_count(size);
        let mut scratch = Vec::with_capacity(n);
        for channel in image.chunks_mut(n) {
            self.geometry.apply_into(channel, size, &mut scratch);
            match self.intensity {
                Some(_) => channel.iter_mut().zip(&scratch).for_each(|(v, &s)| *v = s * scale + shift),
                None => channel.copy_from_slice(&scratch),
            }
        }
    }
}

/// One patch's augmentation draw: the transform applied while cutting, then the noise (if any).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct AugmentDraw {
    pub transform: PatchTransform,
    /// Standard deviation of the gaussian noise added after the transform.
    pub noise_std: Option<f32>,
}

/// Draws one augmentation for a patch of `size` (nothing is drawn when augmentation is disabled). The draws
/// come in a fixed order (flips, rotation, scale, shift, noise), so a seed reproduces the same patch.
pub fn draw(size: [usize; 3], cfg: &AugmentConfig, rng: &mut impl Rng) -> AugmentDraw {
    if !cfg.enabled {
        return AugmentDraw::default();
    }
    let mut g = Geometry::default();
    for flip in g.flips.iter_mut() {
        *flip = rng.random_bool(cfg.flip_probability.clamp(0.0, 1.0));
    }
    if size[0] == size[1] && rng.random_bool(cfg.rot90_probability.clamp(0.0, 1.0)) {
        g.quarter_turns = rng.random_range(1..=3);
    }
    let uniform = |rng: &mut dyn rand::RngCore, [lo, hi]: [f64; 2]| if hi > lo { rng.random_range(lo..hi) } else { lo };
    let scale = uniform(rng, cfg.intensity_scale) as f32;
    let shift = uniform(rng, cfg.intensity_shift) as f32;
    let mut noise_std = None;
    if rng.random_bool(cfg.noise_probability.clamp(0.0, 1.0)) {
        let std = uniform(rng, cfg.noise_std);
        if std > 0.0 {
            noise_std = Some(std as f32);
        }
    }
    AugmentDraw { transform: PatchTransform { geometry: g, intensity: Some((scale, shift)) }, noise_std }
}

/// Draws and applies one augmentation to a patch: `image` is `[C, z, y, x]`, `labels` `[z, y, x]`. The loader
/// applies the same draw fused with the cut ([`crate::crop::crop_transformed`]); this is the reference.
pub fn augment(image: &mut [f32], labels: &mut Vec<u16>, size: [usize; 3], cfg: &AugmentConfig, rng: &mut impl Rng) {
    let d = draw(size, cfg, rng);
    d.transform.apply_in_place(image, labels, size);
    if let Some(std) = d.noise_std {
        add_gaussian_noise(image, std, rng);
    }
}

/// Adds N(0, std²) to every value. Noise on a 4-channel 128³ patch is 8 M draws: Box–Muller's logarithm,
/// sine and cosine per pair made the noisy patches (15 % of them by default) the loader's most expensive
/// step, and even ziggurat draws spent half their time refilling ChaCha blocks. So the patch's stream only
/// seeds a xoshiro256++ generator (`SmallRng`: fast, statistically sound, not cryptographic — none is
/// needed here) that feeds the ziggurat (`rand_distr`). Still a pure function of the patch's seed.
pub fn add_gaussian_noise(values: &mut [f32], std: f32, rng: &mut impl Rng) {
    let mut fast = SmallRng::seed_from_u64(rng.random());
    for v in values.iter_mut() {
        let z: f32 = fast.sample(StandardNormal);
        *v += std * z;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seed::rng_for;

    fn geometry_only(flip: f64, rot: f64) -> AugmentConfig {
        AugmentConfig {
            enabled: true,
            flip_probability: flip,
            rot90_probability: rot,
            intensity_scale: [1.0, 1.0],
            intensity_shift: [0.0, 0.0],
            noise_std: [0.0, 0.0],
            noise_probability: 0.0,
        }
    }

    #[test]
    fn image_and_label_move_together() {
        let size = [6, 6, 4];
        let labels: Vec<u16> = (0..voxel_count(size) as u16).collect();
        for seed in 0..20 {
            let mut img: Vec<f32> = labels.iter().map(|&l| f32::from(l)).collect();
            img.extend(labels.iter().map(|&l| -f32::from(l)));
            let mut lab = labels.clone();
            augment(&mut img, &mut lab, size, &geometry_only(0.5, 0.5), &mut rng_for(&[seed]));
            let n = voxel_count(size);
            assert!(lab.iter().zip(&img[..n]).all(|(&l, &v)| f32::from(l) == v), "seed {seed}: channel 0");
            assert!(lab.iter().zip(&img[n..]).all(|(&l, &v)| -f32::from(l) == v), "seed {seed}: channel 1");
            let mut sorted = lab.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, labels, "a permutation of voxels");
        }
    }

    #[test]
    fn quarter_turn_rotates_in_the_axial_plane_and_four_are_identity() {
        let size = [3, 3, 2];
        let block: Vec<u16> = (0..18).collect();
        let q = Geometry { flips: [false; 3], quarter_turns: 1 };
        let once = q.apply(&block, size);
        // Output (0, 0, 0) reads input (0, 2, 0): the first row becomes the last column.
        assert_eq!(once[0], block[linear_index(size, 0, 2, 0)]);
        assert_eq!(once[linear_index(size, 0, 0, 1)], block[linear_index(size, 0, 2, 1)], "z untouched");
        let four = (0..3).fold(once, |b, _| q.apply(&b, size));
        assert_eq!(four, block);
    }

    #[test]
    fn row_gather_matches_the_per_voxel_definition_for_every_transform() {
        let size = [5, 5, 3];
        let block: Vec<u32> = (0..75).collect();
        for turns in 0..4 {
            for f in 0..8u8 {
                let g = Geometry { flips: [f & 1 != 0, f & 2 != 0, f & 4 != 0], quarter_turns: turns };
                let fast = g.apply(&block, size);
                let mut slow = Vec::new();
                for z in 0..3 {
                    for y in 0..5 {
                        for x in 0..5 {
                            let [a, b, c] = g.source(size, x, y, z);
                            slow.push(block[linear_index(size, a, b, c)]);
                        }
                    }
                }
                assert_eq!(fast, slow, "{g:?}");
            }
        }
    }

    #[test]
    fn non_square_patches_are_never_rotated() {
        let size = [4, 2, 1];
        let base: Vec<u16> = (0..8).collect();
        for seed in 0..10 {
            let mut img: Vec<f32> = base.iter().map(|&l| f32::from(l)).collect();
            let mut lab = base.clone();
            augment(&mut img, &mut lab, size, &geometry_only(0.0, 1.0), &mut rng_for(&[seed]));
            assert_eq!(lab, base);
        }
    }

    #[test]
    fn intensity_and_noise_follow_their_ranges() {
        let cfg = AugmentConfig {
            flip_probability: 0.0,
            rot90_probability: 0.0,
            intensity_scale: [2.0, 2.0],
            intensity_shift: [1.0, 1.0],
            noise_std: [0.5, 0.5],
            noise_probability: 1.0,
            enabled: true,
        };
        let mut img = vec![1.0f32; 20_000];
        let mut lab = vec![0u16; 20_000];
        augment(&mut img, &mut lab, [20_000, 1, 1], &cfg, &mut rng_for(&[4]));
        let mean = img.iter().map(|&v| f64::from(v)).sum::<f64>() / 20_000.0;
        let std = (img.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / 20_000.0).sqrt();
        assert!((mean - 3.0).abs() < 0.02 && (std - 0.5).abs() < 0.02, "mean {mean} std {std}");
    }
}
