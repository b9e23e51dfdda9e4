//! The `[data]`, `[loader]` and `[augment]` sections of an experiment.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Where cases come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum DataSource {
    /// The built-in synthetic phantom generator, in memory.
    Phantom {
        cases: usize,
        /// Volume shape `(x, y, z)`.
        shape: [usize; 3],
        /// Voxel spacing in mm `(x, y, z)`; anisotropic values make thick-slice phantoms.
        #[serde(default = "unit_spacing")]
        spacing: [f64; 3],
        /// Labelled structures (classes = structures + background).
        #[serde(default = "default_structures")]
        structures: usize,
        #[serde(default = "one")]
        channels: usize,
        #[serde(default)]
        seed: u64,
    },
    /// Medical Segmentation Decathlon / nnU-Net raw layout: `dataset.json`, `imagesTr/`, `labelsTr/`.
    Msd { root: PathBuf },
    /// A folder of image/label pairs matched by glob-like patterns (`*` wildcard).
    Folder { images: PathBuf, labels: PathBuf, image_pattern: String, label_pattern: String },
}

fn unit_spacing() -> [f64; 3] {
    [1.0, 1.0, 1.0]
}
fn default_structures() -> usize {
    3
}
fn one() -> usize {
    1
}

/// Intensity normalisation scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Modality {
    /// Per-volume z-score.
    #[default]
    Mri,
    /// Clip to the dataset's 0.5–99.5 foreground percentiles, then z-score with dataset statistics.
    Ct,
}

/// The `[data]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    pub source: DataSource,
    #[serde(default)]
    pub modality: Modality,
    /// Resample every case to this spacing `(x, y, z)` in mm.
    #[serde(default)]
    pub target_spacing: Option<[f64; 3]>,
    /// Fraction of cases held out for validation (ignored when `folds` is set).
    #[serde(default = "default_validation_fraction")]
    pub validation_fraction: f64,
    /// k-fold cross-validation: `folds` folds, train on all but `fold`.
    #[serde(default)]
    pub folds: Option<usize>,
    #[serde(default)]
    pub fold: usize,
    #[serde(default)]
    pub split_seed: u64,
    /// A folder dataset's classes, name → value (`{ background = 0, lesion = 255 }`); without it they are
    /// the values its label maps hold. MSD / nnU-Net datasets declare them in `dataset.json` instead.
    #[serde(default)]
    pub labels: Option<std::collections::BTreeMap<String, u16>>,
    /// What to do when cases' axes point different ways (one PIR, another RAS): refuse (`as_stored`, the
    /// default) or reorient every case to RAS at load (`ras`).
    #[serde(default)]
    pub orientation: OrientationPolicy,
}

/// How cases are oriented for training (`[data] orientation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrientationPolicy {
    /// Cases are used in their stored voxel order, which must be the same for all (checked from headers).
    #[default]
    AsStored,
    /// Every case is reoriented to RAS when it is loaded (axes permuted and flipped, never interpolated),
    /// as MONAI's `Orientationd(axcodes="RAS")`; predictions are written back in each input's orientation.
    Ras,
}

fn default_validation_fraction() -> f64 {
    0.2
}

/// The `[loader]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoaderConfig {
    /// Worker threads decoding and sampling.
    pub workers: usize,
    /// Patches the bounded queue holds.
    pub queue_length: usize,
    /// Patches drawn from each decoded case before the worker moves on.
    pub samples_per_volume: usize,
    /// Fraction of patches centred on foreground (nnU-Net: 1/3).
    pub foreground_fraction: f64,
    /// Per-class sampling weights (index = class); when set, overrides uniform foreground choice.
    pub class_weights: Option<Vec<f64>>,
    /// Cap on stored voxel locations per class per case (memory bound on class indices).
    pub max_class_locations: usize,
    /// Read patches of uncompressed `.nii` cases straight from the file (memory-mapped) instead of decoding
    /// whole cases: a worker then holds the label map and one patch, not the image. Ignored for `.nii.gz`,
    /// phantoms, and when resampling.
    pub stream_uncompressed: bool,
}

impl Default for LoaderConfig {
    fn default() -> Self {
        Self {
            workers: 2,
            queue_length: 16,
            samples_per_volume: 4,
            foreground_fraction: 1.0 / 3.0,
            class_weights: None,
            max_class_locations: 10_000,
            stream_uncompressed: false,
        }
    }
}

/// The `[augment]` section. Probabilities are per patch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AugmentConfig {
    pub enabled: bool,
    /// Probability of flipping along each axis independently.
    pub flip_probability: f64,
    /// Probability of a random 90° rotation in the axial (x, y) plane (only when x and y edges are equal).
    pub rot90_probability: f64,
    /// Multiplicative intensity range.
    pub intensity_scale: [f64; 2],
    /// Additive intensity range.
    pub intensity_shift: [f64; 2],
    /// Standard deviation range of gaussian noise, and its probability.
    pub noise_std: [f64; 2],
    pub noise_probability: f64,
}

impl Default for AugmentConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            flip_probability: 0.5,
            rot90_probability: 0.5,
            intensity_scale: [0.9, 1.1],
            intensity_shift: [-0.1, 0.1],
            noise_std: [0.0, 0.1],
            noise_probability: 0.15,
        }
    }
}
