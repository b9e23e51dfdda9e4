//! Datasets on disk: the Medical Segmentation Decathlon / nnU-Net raw layout and plain folders of pairs.
//!
//! Supported layouts:
//! - **nnU-Net v2**: `dataset.json` with `channel_names`, `labels` (name → value), `numTraining`,
//!   `file_ending`; `imagesTr/CASE_0000<ending>` one file per channel; `labelsTr/CASE<ending>`.
//! - **MSD original**: `dataset.json` with `modality`, `labels` (value → name) and `training: [{image,
//!   label}]`, each image one 4-D file whose fourth axis holds the channels.
//! - **Folder**: `images/` and `labels/` with names matched by patterns with one `*` (the case id).
//!
//! Opening a dataset lists files and checks that every one exists; [`DatasetSource::new`] then reads every
//! header once and rejects a case whose channels and label disagree in shape or affine
//! ([`VolumeError::Mismatch`] naming both files) before any training starts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::case_view::{CaseView, InMemoryCase};
use crate::error::{Result, VolumeError};
use crate::nifti::{self, StoredImage};
use crate::source::{CaseGeometry, CaseSource};
use crate::streamed::StreamedCase;
use crate::volume::{Affine, Labels, Volume};

/// Largest affine difference (mm) still counted as "the same grid": float32 header round-off.
pub const AFFINE_TOLERANCE_MM: f64 = 1e-3;

/// How a case's channels are stored.
#[derive(Debug, Clone, PartialEq)]
pub enum ImageFiles {
    /// One 3-D file per channel (nnU-Net v2, folders).
    PerChannel(Vec<PathBuf>),
    /// One 4-D file holding all channels (MSD original).
    FourD(PathBuf),
}

impl ImageFiles {
    pub fn paths(&self) -> Vec<&Path> {
        match self {
            ImageFiles::PerChannel(v) => v.iter().map(PathBuf::as_path).collect(),
            ImageFiles::FourD(p) => vec![p.as_path()],
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct CaseFiles {
    pub id: String,
    pub images: ImageFiles,
    pub label: PathBuf,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// The folder errors name (dataset root, or the images folder).
    pub root: PathBuf,
    pub channel_names: Vec<String>,
    /// Label value → name.
    pub labels: BTreeMap<u16, String>,
    pub cases: Vec<CaseFiles>,
}

/// Decodes one image per channel file straight into its place in a single buffer (huge pages advised):
/// no per-channel volume, no concatenation. Appending channel volumes one by one cost a 36 MB copy and
/// 4 KiB page faults on the regrown buffer per BraTS channel.
fn read_channels(paths: &[PathBuf], label: &Path) -> Result<Volume> {
    let headers = paths.iter().map(|p| nifti::read_header(p)).collect::<Result<Vec<_>>>()?;
    let first = headers.first().ok_or_else(|| dataset_error(label, "case has no image files"))?;
    let (shape, affine) = (first.shape, first.affine());
    let mut offsets = Vec::with_capacity(headers.len());
    let (mut floats, mut room) = (0usize, 0usize);
    for (p, h) in paths.iter().zip(&headers) {
        if h.shape != shape {
            return Err(VolumeError::Mismatch {
                path: p.clone(),
                reference: paths[0].clone(),
                problem: format!("channel shape {:?} vs {:?}", h.shape, shape),
            });
        }
        let need = nifti::decode_room(h)
            .and_then(|r| r.checked_add(floats))
            .ok_or_else(|| dataset_error(p, "voxel data size overflows"))?;
        offsets.push(floats);
        room = room.max(need);
        floats += h.voxel_count();
    }
    let mut data = nifti::reuse_or_zeroed_f32(room);
    for ((p, h), &at) in paths.iter().zip(&headers).zip(&offsets) {
        nifti::read_volume_into(p, h, &mut data[at..])?;
    }
    data.truncate(floats);
    let channels = headers.iter().map(|h| h.channels).sum();
    Ok(Volume { data, shape, channels, affine })
}

fn dataset_error(path: &Path, problem: impl Into<String>) -> VolumeError {
    VolumeError::Dataset { path: path.to_path_buf(), problem: problem.into() }
}

/// `{"0": "T2", "1": "ADC"}` → names in index order.
fn channel_names(json_path: &Path, map: &Value) -> Result<Vec<String>> {
    let obj = map.as_object().ok_or_else(|| dataset_error(json_path, "channel_names/modality is not an object"))?;
    let mut indexed: Vec<(usize, String)> = Vec::with_capacity(obj.len());
    for (k, v) in obj {
        let i = k.parse().map_err(|_| dataset_error(json_path, format!("channel key {k:?} is not an integer")))?;
        indexed.push((i, v.as_str().unwrap_or_default().to_string()));
    }
    indexed.sort();
    if indexed.iter().enumerate().any(|(pos, (i, _))| pos != *i) {
        return Err(dataset_error(json_path, "channel indices must be 0, 1, 2, … without gaps"));
    }
    Ok(indexed.into_iter().map(|(_, n)| n).collect())
}

/// Both label conventions: nnU-Net `{"background": 0}` and MSD `{"0": "background"}`.
fn label_names(json_path: &Path, map: &Value) -> Result<BTreeMap<u16, String>> {
    let obj = map.as_object().ok_or_else(|| dataset_error(json_path, "labels is not an object"))?;
    let mut out = BTreeMap::new();
    for (k, v) in obj {
        let (value, name) = match v {
            Value::Number(n) => (n.as_u64(), k.clone()),
            Value::String(s) => (k.parse::<u64>().ok(), s.clone()),
            // nnU-Net region labels (lists of values) train as the listed classes; the name is kept on the
            // largest value so every class still has one.
            Value::Array(a) => (a.iter().filter_map(Value::as_u64).max(), k.clone()),
            _ => (None, k.clone()),
        };
        let value = value
            .and_then(|v| u16::try_from(v).ok())
            .ok_or_else(|| dataset_error(json_path, format!("label {k:?}: {v} is not a class value in 0..65535")))?;
        out.insert(value, name);
    }
    Ok(out)
}

fn require_file(path: PathBuf, json_path: &Path) -> Result<PathBuf> {
    if path.is_file() { Ok(path) } else { Err(dataset_error(json_path, format!("missing file {}", path.display()))) }
}

/// `./imagesTr/x.nii.gz` relative to `root`.
fn relative(root: &Path, entry: &str) -> PathBuf {
    root.join(entry.trim_start_matches("./"))
}

/// Names in `dir` (sorted) that start with `prefix` and end with `suffix`, with the middle part.
fn matching(dir: &Path, prefix: &str, suffix: &str) -> Result<Vec<(String, PathBuf)>> {
    let entries = std::fs::read_dir(dir).map_err(|e| VolumeError::io(dir, e))?;
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| VolumeError::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.len() >= prefix.len() + suffix.len() && name.starts_with(prefix) && name.ends_with(suffix) {
            out.push((name[prefix.len()..name.len() - suffix.len()].to_string(), entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

impl Dataset {
    /// Opens an MSD or nnU-Net v2 raw dataset rooted at `root`.
    pub fn open_msd(root: &Path) -> Result<Self> {
        let json_path = root.join("dataset.json");
        let text = std::fs::read_to_string(&json_path).map_err(|e| VolumeError::io(&json_path, e))?;
        let json: Value =
            serde_json::from_str(&text).map_err(|e| dataset_error(&json_path, format!("invalid JSON: {e}")))?;
        let channels_value = json
            .get("channel_names")
            .or_else(|| json.get("modality"))
            .ok_or_else(|| dataset_error(&json_path, "neither channel_names nor modality is present"))?;
        let channel_names = channel_names(&json_path, channels_value)?;
        let labels = label_names(&json_path, json.get("labels").unwrap_or(&Value::Null))?;
        let cases = match json.get("training").and_then(Value::as_array) {
            Some(list) if Self::lists_four_d_images(root, list) => Self::msd_cases(root, &json_path, list)?,
            _ => Self::nnunet_cases(root, &json_path, &json, channel_names.len())?,
        };
        if let Some(n) = json.get("numTraining").and_then(Value::as_u64)
            && n as usize != cases.len()
        {
            return Err(dataset_error(&json_path, format!("numTraining is {n} but {} cases were found", cases.len())));
        }
        if cases.is_empty() {
            return Err(dataset_error(&json_path, "no training cases"));
        }
        Ok(Self { root: root.to_path_buf(), channel_names, labels, cases })
    }

    /// MSD's original layout lists 4-D image files that exist under their own names.
    fn lists_four_d_images(root: &Path, list: &[Value]) -> bool {
        list.first()
            .and_then(|e| e.get("image"))
            .and_then(Value::as_str)
            .is_some_and(|img| relative(root, img).is_file())
    }

    fn msd_cases(root: &Path, json_path: &Path, list: &[Value]) -> Result<Vec<CaseFiles>> {
        list.iter()
            .map(|entry| {
                let field = |name: &str| {
                    entry.get(name).and_then(Value::as_str).ok_or_else(|| {
                        dataset_error(json_path, format!("training entry {entry} has no string {name:?}"))
                    })
                };
                let image = require_file(relative(root, field("image")?), json_path)?;
                let label = require_file(relative(root, field("label")?), json_path)?;
                let name = image.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                let id = name.trim_end_matches(".gz").trim_end_matches(".nii").to_string();
                Ok(CaseFiles { id, images: ImageFiles::FourD(image), label })
            })
            .collect()
    }

    fn nnunet_cases(root: &Path, json_path: &Path, json: &Value, channels: usize) -> Result<Vec<CaseFiles>> {
        let ending = json.get("file_ending").and_then(Value::as_str).unwrap_or(".nii.gz");
        let labels_dir = root.join("labelsTr");
        matching(&labels_dir, "", ending)?
            .into_iter()
            .map(|(id, label)| {
                let images = (0..channels)
                    .map(|c| require_file(root.join("imagesTr").join(format!("{id}_{c:04}{ending}")), json_path))
                    .collect::<Result<Vec<_>>>()?;
                Ok(CaseFiles { id, images: ImageFiles::PerChannel(images), label })
            })
            .collect()
    }

    /// Pairs `images/<pattern>` with `labels/<pattern>` by the part matched by `*`.
    pub fn open_folder(images: &Path, labels: &Path, image_pattern: &str, label_pattern: &str) -> Result<Self> {
        let split = |pattern: &str, dir: &Path| -> Result<(String, String)> {
            match pattern.split_once('*') {
                Some((a, b)) if !b.contains('*') => Ok((a.to_string(), b.to_string())),
                _ => Err(dataset_error(dir, format!("pattern {pattern:?} must contain exactly one '*'"))),
            }
        };
        let (ip, is) = split(image_pattern, images)?;
        let (lp, ls) = split(label_pattern, labels)?;
        let image_files = matching(images, &ip, &is)?;
        let mut label_files: BTreeMap<String, PathBuf> = matching(labels, &lp, &ls)?.into_iter().collect();
        let mut cases = Vec::with_capacity(image_files.len());
        for (id, image) in image_files {
            let label = label_files.remove(&id).ok_or_else(|| {
                dataset_error(labels, format!("no label matching {label_pattern:?} for image {}", image.display()))
            })?;
            cases.push(CaseFiles { id, images: ImageFiles::PerChannel(vec![image]), label });
        }
        if let Some((_, orphan)) = label_files.into_iter().next() {
            return Err(dataset_error(
                images,
                format!("no image matching {image_pattern:?} for label {}", orphan.display()),
            ));
        }
        if cases.is_empty() {
            return Err(dataset_error(images, format!("no files match {image_pattern:?}")));
        }
        Ok(Self { root: images.to_path_buf(), channel_names: vec!["0".into()], labels: BTreeMap::new(), cases })
    }
}

/// Largest absolute difference between two affines.
fn affine_distance(a: &Affine, b: &Affine) -> f64 {
    a.iter().flatten().zip(b.iter().flatten()).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}

/// Reads every header of `case` and checks they share one grid; returns that grid.
pub fn check_case(case: &CaseFiles) -> Result<CaseGeometry> {
    check_case_headers(case).map(|(g, _)| g)
}

/// [`check_case`], also returning the image headers (one per image file), read once.
fn check_case_headers(case: &CaseFiles) -> Result<(CaseGeometry, Vec<nifti::Header>)> {
    let reference = nifti::read_header(&case.label)?;
    let (ref_shape, ref_affine) = (reference.shape, reference.affine());
    let mut channels = 0;
    let mut headers = Vec::new();
    for path in case.images.paths() {
        let h = nifti::read_header(path)?;
        let mismatch = |problem: String| VolumeError::Mismatch {
            path: path.to_path_buf(),
            reference: case.label.clone(),
            problem,
        };
        if h.shape != ref_shape {
            return Err(mismatch(format!("shape {:?} vs label {:?}", h.shape, ref_shape)));
        }
        let d = affine_distance(&h.affine(), &ref_affine);
        if d > AFFINE_TOLERANCE_MM {
            return Err(mismatch(format!("affines differ by up to {d:.4} (tolerance {AFFINE_TOLERANCE_MM})")));
        }
        channels += h.channels;
        headers.push(h);
    }
    Ok((CaseGeometry { shape: ref_shape, spacing: crate::volume::spacing_of(&ref_affine), channels }, headers))
}

/// A checked on-disk dataset as a raw [`CaseSource`] (intensities as stored, scaling applied).
pub struct DatasetSource {
    pub dataset: Dataset,
    geometries: Vec<CaseGeometry>,
    /// Per case, the image bytes [`nifti::read_stored`] holds when its files share a kept 8/16-bit type.
    stored_image_bytes: Vec<Option<u64>>,
}

impl DatasetSource {
    /// Checks every case's headers (shape, affine, channel count) before anything is decoded.
    pub fn new(dataset: Dataset) -> Result<Self> {
        let (geometries, stored_image_bytes): (Vec<_>, Vec<_>) = dataset
            .cases
            .iter()
            .map(|c| {
                check_case_headers(c).map(|(g, headers)| {
                    let stored = nifti::common_stored_type(&headers).and_then(|_| nifti::stored_bytes(&headers));
                    (g, stored)
                })
            })
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .unzip();
        if let Some((i, g)) = geometries.iter().enumerate().find(|(_, g)| g.channels != geometries[0].channels) {
            return Err(VolumeError::Mismatch {
                path: dataset.cases[i].label.clone(),
                reference: dataset.cases[0].label.clone(),
                problem: format!("{} channels vs {}", g.channels, geometries[0].channels),
            });
        }
        Ok(Self { dataset, geometries, stored_image_bytes })
    }

    fn all_uncompressed(case: &CaseFiles) -> bool {
        case.images.paths().iter().all(|p| p.extension().is_some_and(|e| e == "nii"))
    }
}

impl CaseSource for DatasetSource {
    fn len(&self) -> usize {
        self.dataset.cases.len()
    }
    fn case_id(&self, i: usize) -> String {
        self.dataset.cases[i].id.clone()
    }
    fn load(&self, i: usize) -> Result<(Volume, Labels)> {
        let case = &self.dataset.cases[i];
        let labels = nifti::read_labels(&case.label)?;
        let volume = match &case.images {
            ImageFiles::FourD(p) => nifti::read_volume(p)?,
            ImageFiles::PerChannel(paths) => read_channels(paths, &case.label)?,
        };
        if volume.shape != labels.shape {
            return Err(VolumeError::Mismatch {
                path: case.images.paths()[0].to_path_buf(),
                reference: case.label.clone(),
                problem: format!("decoded shape {:?} vs label {:?}", volume.shape, labels.shape),
            });
        }
        Ok((volume, labels))
    }
    fn geometry(&self, i: usize) -> Result<CaseGeometry> {
        Ok(self.geometries[i])
    }
    fn open_case(&self, i: usize, streamed: bool) -> Result<Box<dyn CaseView>> {
        let case = &self.dataset.cases[i];
        if streamed && Self::all_uncompressed(case) {
            return Ok(Box::new(StreamedCase::open(case, self.geometries[i])?));
        }
        let (volume, labels) = self.load(i)?;
        Ok(Box::new(InMemoryCase { volume, labels }))
    }
    fn load_stored(&self, i: usize, streamed: bool) -> Result<Option<(StoredImage, Labels)>> {
        let case = &self.dataset.cases[i];
        if self.stored_bytes(i, streamed).is_none() {
            return Ok(None);
        }
        let labels = nifti::read_labels(&case.label)?;
        let Some(image) = nifti::read_stored(&case.images.paths())? else {
            // The files changed type since the dataset was opened: the f32 path reads them as they are now.
            return Ok(None);
        };
        if image.shape != labels.shape {
            return Err(VolumeError::Mismatch {
                path: case.images.paths()[0].to_path_buf(),
                reference: case.label.clone(),
                problem: format!("decoded shape {:?} vs label {:?}", image.shape, labels.shape),
            });
        }
        Ok(Some((image, labels)))
    }
    fn stored_bytes(&self, i: usize, streamed: bool) -> Option<u64> {
        // An uncompressed case asked to stream is read patch by patch instead (less memory still).
        if streamed && Self::all_uncompressed(&self.dataset.cases[i]) {
            return None;
        }
        let labels = crate::volume::voxel_count(self.geometries[i].shape) as u64 * 2;
        self.stored_image_bytes[i].map(|image| image + labels)
    }
    fn case_bytes(&self, i: usize, streamed: bool) -> Result<u64> {
        let g = self.geometries[i];
        // `open_case` streams only uncompressed cases; others are decoded whole.
        Ok(if streamed && Self::all_uncompressed(&self.dataset.cases[i]) {
            crate::volume::voxel_count(g.shape) as u64 * 2
        } else {
            g.decoded_bytes()
        })
    }
}
