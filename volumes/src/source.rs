//! Where training cases come from: the [`CaseSource`] trait, the in-memory phantom source, the preprocessing
//! wrapper, and [`open_source`], which builds the right one from an experiment's `[data]` section.

use std::path::Path;
use std::sync::Arc;

use crate::case_view::{CaseView, InMemoryCase, NormalizedView};
use crate::config::{DataConfig, DataSource, Modality};
use crate::dataset::{Dataset, DatasetSource};
use crate::error::{Result, VolumeError};
use crate::fingerprint::fingerprint;
use crate::label_space::{LabelSource, LabelSpace};
use crate::nifti::AxisCodes;
use crate::nifti::StoredImage;
use crate::phantom::{PhantomSpec, generate};
use crate::preprocess::{Normalization, Preprocessing};
use crate::stored_case::StoredCase;
use crate::volume::{Labels, Volume};

/// A case's grid, known without decoding voxels (from headers, or from the generator's spec).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CaseGeometry {
    /// `(x, y, z)` voxels.
    pub shape: [usize; 3],
    /// `(x, y, z)` mm.
    pub spacing: [f64; 3],
    pub channels: usize,
}

impl CaseGeometry {
    /// Bytes of the decoded case: f32 image channels plus the u16 label map.
    pub fn decoded_bytes(&self) -> u64 {
        let voxels = (self.shape[0] * self.shape[1] * self.shape[2]) as u64;
        voxels * (4 * self.channels as u64 + 2)
    }
}

/// An indexed collection of (image, label) cases. Shared by the loader's worker threads.
pub trait CaseSource: Send + Sync {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// A stable, human-readable name (`BRATS_001`, `phantom_003`).
    fn case_id(&self, i: usize) -> String;
    /// Decodes (and preprocesses, for sources that do) case `i`.
    fn load(&self, i: usize) -> Result<(Volume, Labels)>;
    /// The case's grid without decoding voxels.
    fn geometry(&self, i: usize) -> Result<CaseGeometry>;
    /// The classes its label maps are encoded with: every label map it yields holds their indices.
    fn label_space(&self) -> LabelSpace;
    /// The axis orientation every case it yields has, when they share one; `None` when unknown.
    fn orientation(&self) -> Option<AxisCodes> {
        None
    }
    /// Opens case `i` for patch sampling. `streamed` asks for patch-wise reads where the source supports
    /// them (uncompressed NIfTI); otherwise, and by default, the case is decoded whole.
    fn open_case(&self, i: usize, streamed: bool) -> Result<Box<dyn CaseView>> {
        let _ = streamed;
        let (volume, labels) = self.load(i)?;
        Ok(Box::new(InMemoryCase { volume, labels }))
    }
    /// Case `i` decoded in its stored type (images unscaled, unnormalised), when the source holds it in
    /// files of a kept 8/16-bit type ([`crate::nifti::StoredType`]) and `streamed` would not read it patch by
    /// patch instead. `Ok(None)`: use [`CaseSource::load`]. Default: never.
    fn load_stored(&self, i: usize, streamed: bool) -> Result<Option<(StoredImage, Labels)>> {
        let _ = (i, streamed);
        Ok(None)
    }
    /// Bytes [`CaseSource::load_stored`] would hold for case `i` (image buffer + `u16` labels), known from
    /// headers; `None` exactly when it would return `Ok(None)`.
    fn stored_bytes(&self, i: usize, streamed: bool) -> Option<u64> {
        let _ = (i, streamed);
        None
    }
    /// Bytes an opened case `i` keeps resident ([`CaseView::resident_bytes`]), from headers: the loader's
    /// memory bound. Default: a streamed case holds only its `u16` label map, a decoded one `f32` images too.
    fn case_bytes(&self, i: usize, streamed: bool) -> Result<u64> {
        let g = self.geometry(i)?;
        Ok(if streamed { crate::volume::voxel_count(g.shape) as u64 * 2 } else { g.decoded_bytes() })
    }
}

/// Phantom cases generated on demand: nothing is stored, case `i` is a pure function of `(seed, i)`.
pub struct PhantomSource {
    pub spec: PhantomSpec,
    pub cases: usize,
}

impl CaseSource for PhantomSource {
    fn len(&self) -> usize {
        self.cases
    }
    fn case_id(&self, i: usize) -> String {
        format!("phantom_{i:03}")
    }
    fn load(&self, i: usize) -> Result<(Volume, Labels)> {
        Ok(generate(&self.spec, i))
    }
    fn geometry(&self, _i: usize) -> Result<CaseGeometry> {
        Ok(CaseGeometry { shape: self.spec.shape, spacing: self.spec.spacing, channels: self.spec.channels })
    }
    fn label_space(&self) -> LabelSpace {
        self.spec.label_space()
    }
    fn orientation(&self) -> Option<AxisCodes> {
        Some(AxisCodes::of(&self.spec.affine()))
    }
}

/// Applies [`Preprocessing`] to every case of an inner source that yields raw intensities.
pub struct PreprocessedSource {
    pub inner: Arc<dyn CaseSource>,
    pub preprocessing: Preprocessing,
}

impl CaseSource for PreprocessedSource {
    fn len(&self) -> usize {
        self.inner.len()
    }
    fn case_id(&self, i: usize) -> String {
        self.inner.case_id(i)
    }
    fn load(&self, i: usize) -> Result<(Volume, Labels)> {
        let (v, l) = self.inner.load(i)?;
        Ok(self.preprocessing.apply(v, l))
    }
    fn geometry(&self, i: usize) -> Result<CaseGeometry> {
        Ok(self.preprocessing.output_geometry(self.inner.geometry(i)?))
    }
    fn label_space(&self) -> LabelSpace {
        self.inner.label_space()
    }
    fn orientation(&self) -> Option<AxisCodes> {
        self.inner.orientation()
    }
    fn open_case(&self, i: usize, streamed: bool) -> Result<Box<dyn CaseView>> {
        // Resampling needs the whole volume on the output grid, so both lighter views exist only without it.
        if self.preprocessing.target_spacing.is_none() {
            // Normalisation is then a per-voxel map that the stored-type view applies while cutting, so an
            // 8/16-bit case stays in its stored type (half the memory of f32 for int16, no widening pass).
            if let Some((image, labels)) = self.inner.load_stored(i, streamed)? {
                return Ok(Box::new(StoredCase::new(image, labels, &self.preprocessing)));
            }
            if streamed {
                let raw = self.inner.open_case(i, true)?;
                return Ok(Box::new(NormalizedView::new(raw, self.preprocessing.clone())?));
            }
        }
        let (volume, labels) = self.load(i)?;
        Ok(Box::new(InMemoryCase { volume, labels }))
    }
    fn case_bytes(&self, i: usize, streamed: bool) -> Result<u64> {
        if self.preprocessing.target_spacing.is_none() {
            if let Some(bytes) = self.inner.stored_bytes(i, streamed) {
                return Ok(bytes);
            }
            return self.inner.case_bytes(i, streamed);
        }
        // Resampled cases are decoded whole, as f32, on the output grid.
        Ok(self.geometry(i)?.decoded_bytes())
    }
}

/// A source with its stored-type path hidden: every case is decoded to `f32`, as before cases were kept in
/// their stored type. For A/B measurements (`bench loader --f32`) and tests that compare the two paths.
pub struct DecodeAsF32(pub Arc<dyn CaseSource>);

impl CaseSource for DecodeAsF32 {
    fn len(&self) -> usize {
        self.0.len()
    }
    fn case_id(&self, i: usize) -> String {
        self.0.case_id(i)
    }
    fn load(&self, i: usize) -> Result<(Volume, Labels)> {
        self.0.load(i)
    }
    fn geometry(&self, i: usize) -> Result<CaseGeometry> {
        self.0.geometry(i)
    }
    fn label_space(&self) -> LabelSpace {
        self.0.label_space()
    }
    fn orientation(&self) -> Option<AxisCodes> {
        self.0.orientation()
    }
    fn open_case(&self, i: usize, streamed: bool) -> Result<Box<dyn CaseView>> {
        self.0.open_case(i, streamed)
    }
    fn case_bytes(&self, i: usize, streamed: bool) -> Result<u64> {
        self.0.case_bytes(i, streamed)
    }
}

/// The raw (unnormalised) source described by `[data].source`.
pub fn open_raw_source(cfg: &DataConfig) -> Result<Arc<dyn CaseSource>> {
    Ok(match &cfg.source {
        DataSource::Phantom { cases, shape, spacing, structures, channels, seed } => {
            let spec = PhantomSpec {
                shape: *shape,
                spacing: *spacing,
                structures: *structures,
                channels: *channels,
                seed: *seed,
            };
            Arc::new(PhantomSource { spec, cases: *cases })
        }
        DataSource::Msd { root } => {
            let dataset = Dataset::open_msd(root)?;
            if cfg.labels.is_some() {
                return Err(VolumeError::Config {
                    field: "data.labels".into(),
                    problem: format!(
                        "{} declares the labels; [data] labels is for folder datasets, remove it",
                        root.join("dataset.json").display()
                    ),
                });
            }
            Arc::new(DatasetSource::open(dataset, None, cfg.orientation)?)
        }
        DataSource::Folder { images, labels, image_pattern, label_pattern } => {
            let dataset = Dataset::open_folder(images, labels, image_pattern, label_pattern)?;
            let labels = match &cfg.labels {
                Some(table) => {
                    let declared = table.iter().map(|(name, &value)| (value, name.clone()));
                    Some(LabelSpace::new(declared, LabelSource::Experiment, Path::new("[data] labels"))?)
                }
                None => None,
            };
            Arc::new(DatasetSource::open(dataset, labels, cfg.orientation)?)
        }
    })
}

/// The source training uses: raw cases with the configured normalisation and resampling applied in `load`.
/// For CT the dataset is fingerprinted first (one pass over all cases) to get its clipping statistics.
pub fn open_source(cfg: &DataConfig) -> Result<Arc<dyn CaseSource>> {
    cfg.validate()?;
    let raw = open_raw_source(cfg)?;
    if raw.is_empty() {
        return Err(VolumeError::Config { field: "data.source".into(), problem: "the dataset has no cases".into() });
    }
    let normalization = match cfg.modality {
        Modality::Mri => Normalization::PerVolumeZScore,
        Modality::Ct => Normalization::DatasetClipZScore(fingerprint(raw.as_ref())?.intensity),
    };
    Ok(Arc::new(PreprocessedSource {
        inner: raw,
        preprocessing: Preprocessing { normalization, target_spacing: cfg.target_spacing, orientation: None },
    }))
}

/// The source as the planner sees it: every case's grid after the configured resampling, read from headers
/// only. Unlike [`open_source`] it never fingerprints intensities, so `voxplan plan` stays fast on CT.
pub fn open_geometry_source(cfg: &DataConfig) -> Result<Arc<dyn CaseSource>> {
    cfg.validate()?;
    Ok(Arc::new(PreprocessedSource {
        inner: open_raw_source(cfg)?,
        preprocessing: Preprocessing {
            normalization: Normalization::None,
            target_spacing: cfg.target_spacing,
            orientation: None,
        },
    }))
}

/// Per-axis median `(x, y, z)` shape of `cases`: what the planner clips and shrinks patches towards (nnU-Net
/// plans from the median shape of the training cases). For an even count the upper of the two middle edges,
/// so the result is always a shape some case has. `None` when `cases` is empty.
pub fn median_shape(source: &dyn CaseSource, cases: &[usize]) -> Result<Option<[usize; 3]>> {
    let mut per_axis: [Vec<usize>; 3] = Default::default();
    for &i in cases {
        let g = source.geometry(i)?;
        for (axis, &edge) in per_axis.iter_mut().zip(&g.shape) {
            axis.push(edge);
        }
    }
    if cases.is_empty() {
        return Ok(None);
    }
    Ok(Some(per_axis.map(|mut v| {
        v.sort_unstable();
        v[v.len() / 2]
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phantom_cfg(modality: Modality, target_spacing: Option<[f64; 3]>) -> DataConfig {
        DataConfig {
            source: DataSource::Phantom {
                cases: 3,
                shape: [24, 20, 10],
                spacing: [1.0, 1.0, 2.0],
                structures: 3,
                channels: 1,
                seed: 5,
            },
            modality,
            target_spacing,
            validation_fraction: 0.2,
            folds: None,
            fold: 0,
            split_seed: 0,
            labels: None,
            orientation: Default::default(),
        }
    }

    #[test]
    fn phantom_source_is_normalised_and_resampled_in_load() {
        let s = open_source(&phantom_cfg(Modality::Mri, Some([1.0, 1.0, 1.0]))).unwrap();
        let (v, l) = s.load(1).unwrap();
        assert_eq!(v.shape, [24, 20, 20]);
        assert_eq!(l.shape, v.shape);
        assert_eq!(s.geometry(1).unwrap().shape, v.shape, "geometry predicts the preprocessed grid");
        let mean = v.data.iter().map(|&x| f64::from(x)).sum::<f64>() / v.data.len() as f64;
        assert!(mean.abs() < 0.05, "z-scored before resampling, mean stays near 0: {mean}");
    }

    #[test]
    fn ct_uses_dataset_percentiles_so_clipping_bounds_every_case() {
        let s = open_source(&phantom_cfg(Modality::Ct, None)).unwrap();
        let (v, _) = s.load(0).unwrap();
        let max = v.data.iter().cloned().fold(f32::MIN, f32::max);
        let min = v.data.iter().cloned().fold(f32::MAX, f32::min);
        // Clipped to foreground percentiles, then z-scored: the range is bounded by a few stds.
        assert!(max < 5.0 && min > -10.0, "range {min}..{max}");
    }

    /// Cases that only have a grid: enough for the planner's view of a dataset.
    struct Shapes(Vec<[usize; 3]>);

    impl CaseSource for Shapes {
        fn len(&self) -> usize {
            self.0.len()
        }
        fn case_id(&self, i: usize) -> String {
            format!("case_{i}")
        }
        fn load(&self, _: usize) -> Result<(Volume, Labels)> {
            Err(VolumeError::Config { field: "test".into(), problem: "geometry only".into() })
        }
        fn geometry(&self, i: usize) -> Result<CaseGeometry> {
            Ok(CaseGeometry { shape: self.0[i], spacing: [1.0; 3], channels: 1 })
        }
        fn label_space(&self) -> LabelSpace {
            LabelSpace::consecutive(2, crate::label_space::LabelSource::Assumed)
        }
    }

    #[test]
    fn median_shape_is_per_axis_over_the_chosen_cases() {
        let s = Shapes(vec![[100, 80, 30], [120, 60, 10], [90, 70, 50], [500, 500, 500]]);
        assert_eq!(median_shape(&s, &[0, 1, 2]).unwrap(), Some([100, 70, 30]), "each axis sorted on its own");
        assert_eq!(median_shape(&s, &[0, 1]).unwrap(), Some([120, 80, 30]), "even count: the upper middle");
        assert_eq!(median_shape(&s, &[]).unwrap(), None);
    }

    #[test]
    fn geometry_source_predicts_the_training_grid_without_fingerprinting() {
        let cfg = phantom_cfg(Modality::Ct, Some([1.0, 1.0, 1.0]));
        let geometry = open_geometry_source(&cfg).unwrap();
        let training = open_source(&cfg).unwrap();
        for i in 0..geometry.len() {
            assert_eq!(geometry.geometry(i).unwrap(), training.geometry(i).unwrap());
        }
        assert_eq!(median_shape(geometry.as_ref(), &[0, 1, 2]).unwrap(), Some([24, 20, 20]));
    }
}
