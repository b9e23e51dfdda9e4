//! Seeded synthetic phantoms: the data of the embedded default experiment and of most tests.
//!
//! Real datasets cannot be downloaded here, so training and the loader are exercised on volumes that look
//! like the problem: several labelled structures of different shape (ellipsoids, tubes, hollow shells) on a
//! background, each class with its own mean intensity per channel, gaussian noise and a smooth multiplicative
//! bias field as in MRI. Geometry is defined in millimetres, so an anisotropic spacing gives thick-slice
//! volumes of the same anatomy. Case `i` of a spec is a pure function of `(seed, i)`.
//!
//! [`Contrast::Ct`] renders the same anatomy as CT: Hounsfield units with meaning (soft tissue, fat,
//! contrast-enhanced tissue, bone), CT-like noise, no bias field, and air (-1000 HU) outside a spherical
//! body, so the dataset's foreground percentiles clip something real (what CT normalisation is for).

use crate::label_space::{LabelClass, LabelSource, LabelSpace};
use rand::Rng;

use crate::seed::{domain, rng_for, standard_normal};
use crate::volume::{Affine, Labels, Volume, linear_index, voxel_count};

/// Gap between neighbouring class intensities (arbitrary units, MRI-like magnitudes that fit int16).
pub const CLASS_INTENSITY_STEP: f64 = 80.0;
/// Background intensity level.
pub const BACKGROUND_INTENSITY: f64 = 100.0;
/// Noise standard deviation: a fifth of the class step. Background is ~90 % of a phantom, so even a few
/// per cent of background voxels mistaken for a neighbouring class swamp a small structure: at σ = 25 a
/// voxelwise rule scored Dice 0.38 on class 1. At 16 the voxelwise rule clears Dice 0.8 (tested), noise is
/// plainly visible, and a small U-Net has an easy start.
pub const NOISE_STD: f64 = 16.0;
/// Peak relative amplitude of the bias field (±5 %, a mild inhomogeneity that still shifts class means).
pub const BIAS_AMPLITUDE: f64 = 0.05;
/// Tube radius as a fraction of the smallest extent (2.9–3.8 mm in the default 48 mm phantom): the thinnest
/// structure. Thicker tubes (0.09–0.12) were tried to give the default run's tube class more margin and
/// made it worse: with everything else equal the default run's validation Dice fell from 0.82 to 0.50, the
/// ellipsoid class collapsing (docs/training.md), so the radius stays.
pub const TUBE_RADIUS_FRACTION: std::ops::Range<f64> = 0.06..0.08;
/// CT: Hounsfield units by class (cycled for more classes): soft tissue background, contrast-enhanced
/// tissue, fat, bone. Gaps of 130–540 HU are far wider than the noise, as in a contrast CT.
pub const CT_CLASS_HU: [f64; 4] = [40.0, 170.0, -90.0, 700.0];
/// CT: noise standard deviation in HU (a routine abdominal CT shows 10–20 HU in soft tissue).
pub const CT_NOISE_STD: f64 = 15.0;
/// CT: Hounsfield value of air, painted on background voxels outside the body.
pub const CT_AIR_HU: f64 = -1000.0;

/// How intensities are rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Contrast {
    /// Arbitrary-unit class means rotated per channel, gaussian noise, a smooth bias field.
    #[default]
    Mri,
    /// Hounsfield units, CT noise, air outside a spherical body (see the module doc).
    Ct,
}

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct PhantomSpec {
    /// `(x, y, z)` voxels.
    pub shape: [usize; 3],
    /// `(x, y, z)` millimetres per voxel.
    pub spacing: [f64; 3],
    /// Labelled structures; classes are `0..=structures` with 0 the background.
    pub structures: usize,
    pub channels: usize,
    pub seed: u64,
}

impl PhantomSpec {
    /// Number of classes including background.
    pub fn num_classes(&self) -> usize {
        self.structures + 1
    }

    /// The classes as a dataset would declare them: `background`, then `ellipsoid_1`, `tube_2`,
    /// `shell_3`, `ellipsoid_4`, … (the shape each class is drawn as).
    pub fn label_space(&self) -> LabelSpace {
        const SHAPES: [&str; 3] = ["ellipsoid", "tube", "shell"];
        let classes = (0..self.num_classes().min(crate::label_space::MAX_CLASSES))
            .map(|k| LabelClass {
                value: k as u16,
                name: if k == 0 { "background".into() } else { format!("{}_{k}", SHAPES[(k - 1) % 3]) },
            })
            .collect();
        LabelSpace { classes, source: LabelSource::Phantom }
    }

    /// The voxel-to-world affine: axis-aligned, origin at the first voxel.
    pub fn affine(&self) -> Affine {
        let [sx, sy, sz] = self.spacing;
        [[sx, 0.0, 0.0, 0.0], [0.0, sy, 0.0, 0.0], [0.0, 0.0, sz, 0.0], [0.0, 0.0, 0.0, 1.0]]
    }
}

/// The shape family of a structure; class `k` gets `KINDS[(k - 1) % 3]` so shapes differ between classes.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Shape {
    /// Axis-aligned ellipsoid: centre, semi-axes (mm).
    Ellipsoid { centre: [f64; 3], radii: [f64; 3] },
    /// Capsule around the segment a–b (mm), like a vessel.
    Tube { a: [f64; 3], b: [f64; 3], radius: f64 },
    /// Hollow sphere: voxels with inner ≤ distance ≤ outer.
    Shell { centre: [f64; 3], inner: f64, outer: f64 },
}

impl Shape {
    fn contains(&self, p: [f64; 3]) -> bool {
        match *self {
            Shape::Ellipsoid { centre, radii } => {
                (0..3).map(|i| ((p[i] - centre[i]) / radii[i]).powi(2)).sum::<f64>() <= 1.0
            }
            Shape::Tube { a, b, radius } => {
                let ab = sub(b, a);
                let t = (dot(sub(p, a), ab) / dot(ab, ab).max(f64::EPSILON)).clamp(0.0, 1.0);
                let closest = [a[0] + t * ab[0], a[1] + t * ab[1], a[2] + t * ab[2]];
                dot(sub(p, closest), sub(p, closest)) <= radius * radius
            }
            Shape::Shell { centre, inner, outer } => {
                let d2 = dot(sub(p, centre), sub(p, centre));
                d2 >= inner * inner && d2 <= outer * outer
            }
        }
    }

    /// World-space bounding box `(min, max)` in mm.
    fn bounds(&self) -> ([f64; 3], [f64; 3]) {
        match *self {
            Shape::Ellipsoid { centre, radii } => {
                (std::array::from_fn(|i| centre[i] - radii[i]), std::array::from_fn(|i| centre[i] + radii[i]))
            }
            Shape::Tube { a, b, radius } => {
                (std::array::from_fn(|i| a[i].min(b[i]) - radius), std::array::from_fn(|i| a[i].max(b[i]) + radius))
            }
            Shape::Shell { centre, outer, .. } => {
                (std::array::from_fn(|i| centre[i] - outer), std::array::from_fn(|i| centre[i] + outer))
            }
        }
    }
}

fn sub(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}
fn dot(a: [f64; 3], b: [f64; 3]) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

/// Places the structures of one case: each in its own octant (shuffled), so they rarely hide each other.
fn place_structures(spec: &PhantomSpec, rng: &mut impl Rng) -> Vec<Shape> {
    let extent: [f64; 3] = std::array::from_fn(|i| spec.shape[i] as f64 * spec.spacing[i]);
    let small = extent.iter().cloned().fold(f64::INFINITY, f64::min);
    let mut octants: Vec<usize> = (0..8).collect();
    for i in (1..octants.len()).rev() {
        octants.swap(i, rng.random_range(0..=i));
    }
    (0..spec.structures)
        .map(|k| {
            let oct = octants[k % 8];
            // Octant centre at 1/4 or 3/4 of each extent, jittered by up to 1/16 of it.
            let centre: [f64; 3] = std::array::from_fn(|i| {
                let quarter = if (oct >> i) & 1 == 0 { 0.25 } else { 0.75 };
                extent[i] * (quarter + rng.random_range(-0.0625..0.0625))
            });
            match k % 3 {
                0 => Shape::Ellipsoid { centre, radii: std::array::from_fn(|_| small * rng.random_range(0.12..0.2)) },
                1 => {
                    let half = small * rng.random_range(0.18..0.26);
                    let mut dir = [standard_normal(rng), standard_normal(rng), standard_normal(rng)];
                    let norm = dot(dir, dir).sqrt().max(f64::EPSILON);
                    dir.iter_mut().for_each(|d| *d /= norm);
                    Shape::Tube {
                        a: std::array::from_fn(|i| centre[i] - half * dir[i]),
                        b: std::array::from_fn(|i| centre[i] + half * dir[i]),
                        radius: small * rng.random_range(TUBE_RADIUS_FRACTION),
                    }
                }
                _ => {
                    let outer = small * rng.random_range(0.15..0.21);
                    Shape::Shell { centre, inner: outer * 0.6, outer }
                }
            }
        })
        .collect()
}

/// Mean intensity of class `class` in channel `channel`: the class order is rotated per channel, so every
/// channel separates all classes but with a different contrast, like T1/T2/FLAIR.
pub fn class_intensity(class: usize, channel: usize, num_classes: usize) -> f64 {
    BACKGROUND_INTENSITY + CLASS_INTENSITY_STEP * ((class + channel) % num_classes) as f64
}

/// Hounsfield value of class `class` in channel `channel` of a CT phantom (rotated per channel like
/// [`class_intensity`], though CT data usually has one channel).
pub fn ct_class_hu(class: usize, channel: usize) -> f64 {
    CT_CLASS_HU[(class + channel) % CT_CLASS_HU.len()]
}

/// Generates case `index` of `spec`: intensities in raw scanner-like units (not normalised), MRI-like.
pub fn generate(spec: &PhantomSpec, index: usize) -> (Volume, Labels) {
    generate_with_contrast(spec, index, Contrast::Mri)
}

/// Generates case `index` of `spec` rendered with `contrast`. The labels do not depend on the contrast.
pub fn generate_with_contrast(spec: &PhantomSpec, index: usize, contrast: Contrast) -> (Volume, Labels) {
    let mut rng = rng_for(&[domain::PHANTOM, spec.seed, index as u64]);
    let shapes = place_structures(spec, &mut rng);
    let labels = rasterise(spec, &shapes);
    let volume = match contrast {
        Contrast::Mri => render_mri(spec, &labels, &mut rng),
        Contrast::Ct => render_ct(spec, &labels, &mut rng),
    };
    (volume, labels)
}

/// MRI-like intensities: class means times a bias field, plus gaussian noise.
fn render_mri(spec: &PhantomSpec, labels: &Labels, rng: &mut impl Rng) -> Volume {
    let bias = BiasField::draw(spec, rng);
    let n = voxel_count(spec.shape);
    let classes = spec.num_classes();
    let mut volume = Volume::zeros(spec.shape, spec.channels, spec.affine());
    for c in 0..spec.channels {
        let means: Vec<f64> = (0..classes).map(|k| class_intensity(k, c, classes)).collect();
        let channel = volume.channel_mut(c);
        for (i, out) in channel.iter_mut().enumerate().take(n) {
            let [x, y, z] =
                [i % spec.shape[0], (i / spec.shape[0]) % spec.shape[1], i / (spec.shape[0] * spec.shape[1])];
            let clean = means[usize::from(labels.data[i])] * bias.at(x, y, z);
            *out = (clean + NOISE_STD * standard_normal(rng)) as f32;
        }
    }
    volume
}

/// CT-like intensities: Hounsfield units per class plus noise; background outside the body sphere is air.
fn render_ct(spec: &PhantomSpec, labels: &Labels, rng: &mut impl Rng) -> Volume {
    let extent: [f64; 3] = std::array::from_fn(|i| spec.shape[i] as f64 * spec.spacing[i]);
    let body_radius = extent.iter().cloned().fold(f64::INFINITY, f64::min) / 2.0;
    let mut volume = Volume::zeros(spec.shape, spec.channels, spec.affine());
    for c in 0..spec.channels {
        let channel = volume.channel_mut(c);
        for (i, out) in channel.iter_mut().enumerate() {
            let [x, y, z] =
                [i % spec.shape[0], (i / spec.shape[0]) % spec.shape[1], i / (spec.shape[0] * spec.shape[1])];
            let class = usize::from(labels.data[i]);
            let p = [x as f64 * spec.spacing[0], y as f64 * spec.spacing[1], z as f64 * spec.spacing[2]];
            let from_centre: [f64; 3] = std::array::from_fn(|k| p[k] - extent[k] / 2.0);
            let in_air = class == 0 && dot(from_centre, from_centre) > body_radius * body_radius;
            let clean = if in_air { CT_AIR_HU } else { ct_class_hu(class, c) };
            *out = (clean + CT_NOISE_STD * standard_normal(rng)) as f32;
        }
    }
    volume
}

/// Paints the label map; later structures overwrite earlier ones where they overlap.
fn rasterise(spec: &PhantomSpec, shapes: &[Shape]) -> Labels {
    let mut data = vec![0u16; voxel_count(spec.shape)];
    for (k, shape) in shapes.iter().enumerate() {
        let (lo, hi) = shape.bounds();
        let range: [(usize, usize); 3] = std::array::from_fn(|i| {
            let a = (lo[i] / spec.spacing[i]).floor().max(0.0) as usize;
            let b = ((hi[i] / spec.spacing[i]).ceil().max(0.0) as usize + 1).min(spec.shape[i]);
            (a.min(b), b)
        });
        let class = (k + 1) as u16;
        for z in range[2].0..range[2].1 {
            for y in range[1].0..range[1].1 {
                for x in range[0].0..range[0].1 {
                    let p = [x as f64 * spec.spacing[0], y as f64 * spec.spacing[1], z as f64 * spec.spacing[2]];
                    if shape.contains(p) {
                        data[linear_index(spec.shape, x, y, z)] = class;
                    }
                }
            }
        }
    }
    Labels { data, shape: spec.shape, affine: spec.affine() }
}

/// A smooth multiplicative field: one low-frequency cosine per axis, averaged. Separable, so it costs
/// three small tables instead of a transcendental per voxel.
struct BiasField {
    tables: [Vec<f64>; 3],
}

impl BiasField {
    fn draw(spec: &PhantomSpec, rng: &mut impl Rng) -> Self {
        let tables = std::array::from_fn(|axis| {
            let cycles = rng.random_range(0.3..0.9);
            let phase = rng.random_range(0.0..std::f64::consts::TAU);
            let n = spec.shape[axis].max(1) as f64;
            (0..spec.shape[axis]).map(|i| (std::f64::consts::TAU * cycles * i as f64 / n + phase).cos() / 3.0).collect()
        });
        Self { tables }
    }

    fn at(&self, x: usize, y: usize, z: usize) -> f64 {
        1.0 + BIAS_AMPLITUDE * (self.tables[0][x] + self.tables[1][y] + self.tables[2][z])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> PhantomSpec {
        PhantomSpec { shape: [48, 48, 48], spacing: [1.0; 3], structures: 3, channels: 2, seed: 7 }
    }

    #[test]
    fn same_seed_and_index_reproduce_and_indices_differ() {
        let (a, la) = generate(&spec(), 0);
        let (b, lb) = generate(&spec(), 0);
        let (_, lc) = generate(&spec(), 1);
        assert_eq!(a, b);
        assert_eq!(la, lb);
        assert_ne!(la, lc);
    }

    #[test]
    fn every_structure_is_present_with_decent_size_and_its_own_intensity() {
        let s = spec();
        for case in 0..4 {
            let (v, l) = generate(&s, case);
            for class in 0..s.num_classes() {
                let idx: Vec<usize> = (0..l.data.len()).filter(|&i| usize::from(l.data[i]) == class).collect();
                assert!(idx.len() > 300, "case {case} class {class}: only {} voxels", idx.len());
                for c in 0..s.channels {
                    let mean = idx.iter().map(|&i| f64::from(v.channel(c)[i])).sum::<f64>() / idx.len() as f64;
                    let expected = class_intensity(class, c, s.num_classes());
                    assert!((mean - expected).abs() < 0.12 * expected, "class {class} ch {c}: {mean} vs {expected}");
                }
            }
        }
    }

    /// The default experiment's phantoms must be learnable: even a context-free nearest-class-mean rule on
    /// single voxels reaches Dice ≥ 0.8 per class, so a U-Net (which also sees shape and context) can.
    #[test]
    fn a_voxelwise_nearest_mean_rule_already_reaches_dice_0_8() {
        let s = PhantomSpec { shape: [48, 48, 48], spacing: [1.0; 3], structures: 3, channels: 1, seed: 7 };
        let k = s.num_classes();
        for case in 0..3 {
            let (v, l) = generate(&s, case);
            let predicted: Vec<usize> = v
                .channel(0)
                .iter()
                .map(|&x| {
                    (0..k)
                        .min_by(|&a, &b| {
                            let da = (f64::from(x) - class_intensity(a, 0, k)).abs();
                            let db = (f64::from(x) - class_intensity(b, 0, k)).abs();
                            da.total_cmp(&db)
                        })
                        .unwrap_or(0)
                })
                .collect();
            for class in 1..k {
                let (mut tp, mut fp, mut fneg) = (0usize, 0usize, 0usize);
                for (p, &t) in predicted.iter().zip(&l.data) {
                    match (*p == class, usize::from(t) == class) {
                        (true, true) => tp += 1,
                        (true, false) => fp += 1,
                        (false, true) => fneg += 1,
                        _ => {}
                    }
                }
                let dice = 2.0 * tp as f64 / (2 * tp + fp + fneg).max(1) as f64;
                assert!(dice >= 0.8, "case {case} class {class}: voxelwise Dice {dice:.3}");
            }
        }
    }

    #[test]
    fn ct_contrast_gives_hounsfield_classes_air_outside_the_body_and_the_same_labels() {
        let s = spec();
        let (mri, l_mri) = generate(&s, 2);
        let (ct, l_ct) = generate_with_contrast(&s, 2, Contrast::Ct);
        assert_eq!(l_mri, l_ct, "the anatomy does not depend on the contrast");
        assert_ne!(mri, ct);
        let corner = linear_index(s.shape, 0, 0, 0);
        assert_eq!(l_ct.data[corner], 0);
        assert!((f64::from(ct.channel(0)[corner]) - CT_AIR_HU).abs() < 6.0 * CT_NOISE_STD, "corner is air");
        for class in 1..s.num_classes() {
            let idx: Vec<usize> = (0..l_ct.data.len()).filter(|&i| usize::from(l_ct.data[i]) == class).collect();
            let mean = idx.iter().map(|&i| f64::from(ct.channel(0)[i])).sum::<f64>() / idx.len() as f64;
            assert!((mean - ct_class_hu(class, 0)).abs() < 3.0, "class {class}: {mean} HU");
        }
    }

    #[test]
    fn anisotropic_spacing_keeps_the_anatomy_in_millimetres() {
        let iso = spec();
        let thick = PhantomSpec { shape: [48, 48, 16], spacing: [1.0, 1.0, 3.0], ..iso.clone() };
        let (_, a) = generate(&iso, 3);
        let (vt, b) = generate(&thick, 3);
        assert_eq!(vt.spacing(), [1.0, 1.0, 3.0]);
        // The same structures in mm: foreground volume in mm³ agrees within sampling error.
        let fg = |l: &Labels, voxel_mm3: f64| l.data.iter().filter(|&&v| v > 0).count() as f64 * voxel_mm3;
        let (va, vb) = (fg(&a, 1.0), fg(&b, 3.0));
        assert!((va - vb).abs() < 0.2 * va, "iso {va} mm³ vs thick {vb} mm³");
    }
}
