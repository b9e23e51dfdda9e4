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
use crate::config::OrientationPolicy;
use crate::error::{Result, VolumeError};
use crate::label_space::{LabelEncoder, LabelSource, LabelSpace};
use crate::nifti::{self, StoredImage};
use crate::nifti::{AxisCodes, Reorientation};
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
    /// The classes `dataset.json` declares; `None` for a folder dataset, whose classes come from the
    /// experiment's `[data] labels` or from the values its label maps hold ([`found_label_space`]).
    pub labels: Option<LabelSpace>,
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

/// Both label conventions: nnU-Net `{"background": 0}` and MSD `{"0": "background"}`. nnU-Net's
/// region-based labels (a list of values per name) and its `ignore` label are refused for now: each would
/// need its own loss, and training them as plain classes would silently learn the wrong thing.
fn label_space(json_path: &Path, map: &Value) -> Result<LabelSpace> {
    let obj = map.as_object().ok_or_else(|| dataset_error(json_path, "labels is not an object"))?;
    let mut pairs = Vec::with_capacity(obj.len());
    for (k, v) in obj {
        let (value, name) = match v {
            Value::Number(n) => (n.as_u64(), k.clone()),
            Value::String(s) => (k.parse::<u64>().ok(), s.clone()),
            Value::Array(_) => {
                return Err(dataset_error(
                    json_path,
                    format!(
                        "label {k:?}: {v} is an nnU-Net region (several values trained as one output); regions \
                         are not supported yet: declare one value per class"
                    ),
                ));
            }
            _ => (None, k.clone()),
        };
        if name == "ignore" {
            return Err(dataset_error(
                json_path,
                "label \"ignore\" (nnU-Net's unannotated-voxel label) is not supported yet: relabel those voxels \
                 or leave the key out of dataset.json",
            ));
        }
        let value = value
            .and_then(|v| u16::try_from(v).ok())
            .ok_or_else(|| dataset_error(json_path, format!("label {k:?}: {v} is not a class value in 0..65535")))?;
        pairs.push((value, name));
    }
    LabelSpace::new(pairs, LabelSource::DatasetJson, json_path)
}

/// The classes of a dataset that declares none: the values its label maps hold, read once, named
/// `background` (0) and `label_<value>`.
pub fn found_label_space(dataset: &Dataset) -> Result<LabelSpace> {
    let mut present = vec![false; usize::from(u16::MAX) + 1];
    for case in &dataset.cases {
        for &v in &nifti::read_labels(&case.label)?.data {
            present[usize::from(v)] = true;
        }
    }
    let pairs = present.iter().enumerate().filter(|(_, p)| **p).map(|(v, _)| {
        let name = if v == 0 { "background".to_string() } else { format!("label_{v}") };
        (v as u16, name)
    });
    LabelSpace::new(pairs, LabelSource::FoundInData, &dataset.root)
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

/// Something wrong with a dataset's files found while listing them: the file (or folder) it concerns.
#[derive(Debug, Clone, PartialEq)]
pub struct ListingProblem {
    /// The case it belongs to, when it belongs to one.
    pub case: Option<String>,
    pub path: PathBuf,
    pub problem: String,
}

/// What listing a dataset found: its complete cases, the problems that make it unusable for training
/// (missing files, counts that disagree), and warnings that do not (images nobody labelled).
#[derive(Debug, Clone, PartialEq)]
pub struct Listing {
    /// The cases whose every file exists.
    pub dataset: Dataset,
    pub problems: Vec<ListingProblem>,
    pub warnings: Vec<ListingProblem>,
}

impl Listing {
    /// The dataset, or the first problem as the error training stops on.
    pub fn strict(self) -> Result<Dataset> {
        match self.problems.into_iter().next() {
            Some(p) => Err(dataset_error(&p.path, p.problem)),
            None => Ok(self.dataset),
        }
    }

    fn problem(&mut self, case: Option<&str>, path: &Path, problem: impl Into<String>) {
        let case = case.map(String::from);
        self.problems.push(ListingProblem { case, path: path.to_path_buf(), problem: problem.into() });
    }
}

impl Dataset {
    /// Opens an MSD or nnU-Net v2 raw dataset rooted at `root`; the first problem of [`Dataset::list_msd`] is
    /// the error.
    pub fn open_msd(root: &Path) -> Result<Self> {
        Self::list_msd(root)?.strict()
    }

    /// Lists an MSD or nnU-Net v2 raw dataset, collecting every missing file instead of stopping at the
    /// first. Only a `dataset.json` that cannot be read or understood is an error.
    pub fn list_msd(root: &Path) -> Result<Listing> {
        let json_path = root.join("dataset.json");
        let text = std::fs::read_to_string(&json_path).map_err(|e| VolumeError::io(&json_path, e))?;
        let json: Value =
            serde_json::from_str(&text).map_err(|e| dataset_error(&json_path, format!("invalid JSON: {e}")))?;
        let channels_value = json
            .get("channel_names")
            .or_else(|| json.get("modality"))
            .ok_or_else(|| dataset_error(&json_path, "neither channel_names nor modality is present"))?;
        let channel_names = channel_names(&json_path, channels_value)?;
        let labels = Some(label_space(&json_path, json.get("labels").unwrap_or(&Value::Null))?);
        let dataset = Dataset { root: root.to_path_buf(), channel_names, labels, cases: Vec::new() };
        let mut listing = Listing { dataset, problems: Vec::new(), warnings: Vec::new() };
        let listed = match json.get("training").and_then(Value::as_array) {
            Some(list) if Self::lists_four_d_images(root, list) => {
                Self::msd_cases(root, &json_path, list, &mut listing)
            }
            _ => {
                let channels = listing.dataset.channel_names.len();
                Self::nnunet_cases(root, &json, channels, &mut listing)?
            }
        };
        if let Some(n) = json.get("numTraining").and_then(Value::as_u64)
            && n as usize != listed
        {
            listing.problem(None, &json_path, format!("numTraining is {n} but {listed} cases were found"));
        }
        if listed == 0 {
            listing.problem(None, &json_path, "no training cases");
        }
        Ok(listing)
    }

    /// MSD's original layout lists 4-D image files that exist under their own names.
    fn lists_four_d_images(root: &Path, list: &[Value]) -> bool {
        list.first()
            .and_then(|e| e.get("image"))
            .and_then(Value::as_str)
            .is_some_and(|img| relative(root, img).is_file())
    }

    /// The `training` entries of an original MSD dataset.json; returns how many were listed.
    fn msd_cases(root: &Path, json_path: &Path, list: &[Value], listing: &mut Listing) -> usize {
        for entry in list {
            let field = |name: &str| entry.get(name).and_then(Value::as_str).map(|p| relative(root, p));
            let (Some(image), Some(label)) = (field("image"), field("label")) else {
                let problem = format!("training entry {entry} has no string \"image\" and \"label\"");
                listing.problem(None, json_path, problem);
                continue;
            };
            let name = image.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let id = name.trim_end_matches(".gz").trim_end_matches(".nii").to_string();
            let mut complete = true;
            for path in [&image, &label] {
                if !path.is_file() {
                    listing.problem(Some(&id), json_path, format!("missing file {}", path.display()));
                    complete = false;
                }
            }
            if complete {
                listing.dataset.cases.push(CaseFiles { id, images: ImageFiles::FourD(image), label });
            }
        }
        list.len()
    }

    /// The cases of an nnU-Net v2 dataset: one per label file, with `channels` image files each; images
    /// whose case has no label file are warnings. Returns how many label files were found.
    fn nnunet_cases(root: &Path, json: &Value, channels: usize, listing: &mut Listing) -> Result<usize> {
        let ending = json.get("file_ending").and_then(Value::as_str).unwrap_or(".nii.gz");
        let json_path = root.join("dataset.json");
        let labelled = matching(&root.join("labelsTr"), "", ending)?;
        let images_dir = root.join("imagesTr");
        for (id, label) in &labelled {
            let images: Vec<PathBuf> = (0..channels).map(|c| images_dir.join(format!("{id}_{c:04}{ending}"))).collect();
            let missing: Vec<&PathBuf> = images.iter().filter(|p| !p.is_file()).collect();
            for path in &missing {
                listing.problem(Some(id), &json_path, format!("missing file {}", path.display()));
            }
            if missing.is_empty() {
                let case = CaseFiles { id: id.clone(), images: ImageFiles::PerChannel(images), label: label.clone() };
                listing.dataset.cases.push(case);
            }
        }
        if images_dir.is_dir() {
            for (stem, path) in matching(&images_dir, "", ending)? {
                let case = stem.rsplit_once('_').map_or(stem.as_str(), |(case, _)| case);
                if !labelled.iter().any(|(id, _)| id == case) {
                    listing.warnings.push(ListingProblem {
                        case: Some(case.to_string()),
                        path: path.clone(),
                        problem: format!("image without a label file (labelsTr/{case}{ending}): not trained on"),
                    });
                }
            }
        }
        Ok(labelled.len())
    }

    /// Pairs `images/<pattern>` with `labels/<pattern>` by the part matched by `*`; the first problem of
    /// [`Dataset::list_folder`] is the error.
    pub fn open_folder(images: &Path, labels: &Path, image_pattern: &str, label_pattern: &str) -> Result<Self> {
        Self::list_folder(images, labels, image_pattern, label_pattern)?.strict()
    }

    /// Lists a folder dataset, collecting every image without a label and label without an image.
    pub fn list_folder(images: &Path, labels: &Path, image_pattern: &str, label_pattern: &str) -> Result<Listing> {
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
        let dataset =
            Dataset { root: images.to_path_buf(), channel_names: vec!["0".into()], labels: None, cases: Vec::new() };
        let mut listing = Listing { dataset, problems: Vec::new(), warnings: Vec::new() };
        let found = image_files.len();
        for (id, image) in image_files {
            match label_files.remove(&id) {
                Some(label) => {
                    listing.dataset.cases.push(CaseFiles { id, images: ImageFiles::PerChannel(vec![image]), label })
                }
                None => {
                    let problem = format!("no label matching {label_pattern:?} for image {}", image.display());
                    listing.problem(Some(&id), labels, problem);
                }
            }
        }
        for (id, orphan) in label_files {
            let problem = format!("no image matching {image_pattern:?} for label {}", orphan.display());
            listing.problem(Some(&id), images, problem);
        }
        if found == 0 {
            listing.problem(None, images, format!("no files match {image_pattern:?}"));
        }
        Ok(listing)
    }
}

/// Cases grouped by orientation, largest group first: `(codes, case count, first case's label file)`.
pub fn orientation_groups(dataset: &Dataset, codes: &[AxisCodes]) -> Vec<(AxisCodes, usize, PathBuf)> {
    let mut groups: Vec<(AxisCodes, usize, PathBuf)> = Vec::new();
    for (case, &c) in dataset.cases.iter().zip(codes) {
        match groups.iter_mut().find(|g| g.0 == c) {
            Some(g) => g.1 += 1,
            None => groups.push((c, 1, case.label.clone())),
        }
    }
    groups.sort_by_key(|g| std::cmp::Reverse(g.1));
    groups
}

/// `PIR in 12 cases (e.g. labelsTr/a.nii.gz), RAS in 3 cases (e.g. …)`.
pub fn describe_groups(groups: &[(AxisCodes, usize, PathBuf)]) -> String {
    let parts: Vec<String> =
        groups.iter().map(|(c, n, example)| format!("{c} in {n} case(s), e.g. {}", example.display())).collect();
    parts.join("; ")
}

/// Largest absolute difference between two affines.
pub(crate) fn affine_distance(a: &Affine, b: &Affine) -> f64 {
    a.iter().flatten().zip(b.iter().flatten()).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}

/// Reads every header of `case` and checks they share one grid; returns that grid.
pub fn check_case(case: &CaseFiles) -> Result<CaseGeometry> {
    check_case_headers(case).map(|(g, _, _)| g)
}

/// [`check_case`], also returning the image headers (one per image file), read once, and the grid's affine.
fn check_case_headers(case: &CaseFiles) -> Result<(CaseGeometry, Vec<nifti::Header>, Affine)> {
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
    Ok((
        CaseGeometry { shape: ref_shape, spacing: crate::volume::spacing_of(&ref_affine), channels },
        headers,
        ref_affine,
    ))
}

/// A checked on-disk dataset as a raw [`CaseSource`] (intensities as stored, scaling applied, label values
/// encoded as class indices of its [`LabelSpace`]).
pub struct DatasetSource {
    pub dataset: Dataset,
    labels: LabelSpace,
    encoder: LabelEncoder,
    /// The orientation every case is yielded in.
    orientation: Option<AxisCodes>,
    /// Per case, what brings it to that orientation (`[data] orientation = "ras"`); `None` when it is already
    /// there. Such a case is decoded to `f32` and never streamed: both lighter paths read the file's order.
    reorient: Vec<Option<Reorientation>>,
    /// Per case, after reorientation.
    geometries: Vec<CaseGeometry>,
    /// Per case, the image bytes [`nifti::read_stored`] holds when its files share a kept 8/16-bit type.
    stored_image_bytes: Vec<Option<u64>>,
}

impl DatasetSource {
    /// [`DatasetSource::open`] with the classes `dataset.json` declares (for a folder dataset, the values its
    /// label maps hold) and the cases as stored.
    pub fn new(dataset: Dataset) -> Result<Self> {
        Self::open(dataset, None, OrientationPolicy::AsStored)
    }

    /// Checks every case's headers (shape, affine, channel count, orientation) before anything is decoded.
    /// Label maps are encoded with `labels` as they are read (default: what `dataset.json` declares, else
    /// [`found_label_space`], which reads every label map once): a value it does not declare fails that read.
    pub fn open(dataset: Dataset, labels: Option<LabelSpace>, orientation: OrientationPolicy) -> Result<Self> {
        let labels = match labels.or_else(|| dataset.labels.clone()) {
            Some(declared) => declared,
            None => found_label_space(&dataset)?,
        };
        let mut geometries = Vec::with_capacity(dataset.cases.len());
        let mut stored_image_bytes = Vec::with_capacity(dataset.cases.len());
        let mut codes = Vec::with_capacity(dataset.cases.len());
        let mut reorient = Vec::with_capacity(dataset.cases.len());
        for case in &dataset.cases {
            let (g, headers, affine) = check_case_headers(case)?;
            let here = AxisCodes::of(&affine);
            let r = match orientation {
                OrientationPolicy::AsStored => None,
                OrientationPolicy::Ras if !here.is_definite() => {
                    return Err(dataset_error(
                        &case.label,
                        format!("its affine has no direction along an axis ({here}); it cannot be reoriented"),
                    ));
                }
                OrientationPolicy::Ras => Reorientation::to(&affine, g.shape, AxisCodes::RAS),
            };
            let geometry = match &r {
                Some(r) => CaseGeometry { shape: r.shape(), spacing: r.spacing(g.spacing), ..g },
                None => g,
            };
            let stored = nifti::common_stored_type(&headers).and_then(|_| nifti::stored_bytes(&headers));
            geometries.push(geometry);
            stored_image_bytes.push(if r.is_some() { None } else { stored });
            codes.push(here);
            reorient.push(r);
        }
        if let Some((i, g)) = geometries.iter().enumerate().find(|(_, g)| g.channels != geometries[0].channels) {
            return Err(VolumeError::Mismatch {
                path: dataset.cases[i].label.clone(),
                reference: dataset.cases[0].label.clone(),
                problem: format!("{} channels vs {}", g.channels, geometries[0].channels),
            });
        }
        let orientation = match orientation {
            OrientationPolicy::Ras => Some(AxisCodes::RAS),
            OrientationPolicy::AsStored => {
                let mixed = orientation_groups(&dataset, &codes);
                if mixed.len() > 1 {
                    return Err(dataset_error(
                        &dataset.root,
                        format!(
                            "the cases' axes point different ways ({}); set [data] orientation = \"ras\" to reorient \
                             every case to RAS at load, or reorient the files to one orientation",
                            describe_groups(&mixed)
                        ),
                    ));
                }
                codes.first().copied().filter(AxisCodes::is_definite)
            }
        };
        let encoder = labels.encoder();
        Ok(Self { dataset, labels, encoder, orientation, reorient, geometries, stored_image_bytes })
    }

    /// The label map of `case`, its values encoded as class indices.
    fn read_labels(&self, case: &CaseFiles) -> Result<Labels> {
        let mut labels = nifti::read_labels(&case.label)?;
        self.encoder.encode_in_place(&mut labels.data, &case.label)?;
        Ok(labels)
    }

    /// Whether case `i` can be read patch by patch: uncompressed files in the orientation they are yielded in.
    fn streamable(&self, i: usize) -> bool {
        let case = &self.dataset.cases[i];
        self.reorient[i].is_none() && case.images.paths().iter().all(|p| p.extension().is_some_and(|e| e == "nii"))
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
        let labels = self.read_labels(case)?;
        let volume = match &case.images {
            ImageFiles::FourD(p) => nifti::read_volume(p)?,
            ImageFiles::PerChannel(paths) => read_channels(paths, &case.label)?,
        };
        let (volume, labels) = match &self.reorient[i] {
            Some(r) if volume.shape == labels.shape => (r.apply_volume(&volume), r.apply_labels(&labels)),
            _ => (volume, labels),
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
    fn label_space(&self) -> LabelSpace {
        self.labels.clone()
    }
    fn orientation(&self) -> Option<AxisCodes> {
        self.orientation
    }
    fn open_case(&self, i: usize, streamed: bool) -> Result<Box<dyn CaseView>> {
        let case = &self.dataset.cases[i];
        if streamed && self.streamable(i) {
            return Ok(Box::new(StreamedCase::open(case, self.geometries[i], self.read_labels(case)?)?));
        }
        let (volume, labels) = self.load(i)?;
        Ok(Box::new(InMemoryCase { volume, labels }))
    }
    fn load_stored(&self, i: usize, streamed: bool) -> Result<Option<(StoredImage, Labels)>> {
        let case = &self.dataset.cases[i];
        if self.stored_bytes(i, streamed).is_none() {
            return Ok(None);
        }
        let labels = self.read_labels(case)?;
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
        if streamed && self.streamable(i) {
            return None;
        }
        let labels = crate::volume::voxel_count(self.geometries[i].shape) as u64 * 2;
        self.stored_image_bytes[i].map(|image| image + labels)
    }
    fn case_bytes(&self, i: usize, streamed: bool) -> Result<u64> {
        let g = self.geometries[i];
        // `open_case` streams only uncompressed cases; others are decoded whole.
        Ok(if streamed && self.streamable(i) {
            crate::volume::voxel_count(g.shape) as u64 * 2
        } else {
            g.decoded_bytes()
        })
    }
}
