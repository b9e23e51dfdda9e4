//! Writes phantom cases to disk in the nnU-Net v2 / MSD raw layout, so every on-disk path (dataset
//! parsing, header checks, decoding, the loader benchmark) can be exercised on real NIfTI bytes.
//!
//! Layout: `dataset.json` (`channel_names`, `labels`, `numTraining`, `file_ending`),
//! `imagesTr/phantom_000_0000<ending>` per channel, `labelsTr/phantom_000<ending>`.
//! Images are stored as int16 (rounded, as scanners store MRI and CT), labels as uint8.

use std::path::{Path, PathBuf};

use serde_json::json;

use crate::error::{Result, VolumeError};
use crate::nifti::{DataType, write_labels, write_volume};
use crate::phantom::{Contrast, PhantomSpec, generate_with_contrast};
use crate::volume::Volume;

/// Label names written to `dataset.json`, by structure index; the shape family cycles with the index.
/// Case id of phantom `i` (matches [`crate::source::PhantomSource::case_id`]).
pub fn phantom_case_id(i: usize) -> String {
    format!("phantom_{i:03}")
}

/// Writes cases `0..cases` of `spec` under `dir`; `file_ending` is `.nii.gz` or `.nii`. Returns the files.
pub fn write_msd(dir: &Path, spec: &PhantomSpec, cases: usize, file_ending: &str) -> Result<Vec<PathBuf>> {
    write_msd_with_contrast(dir, spec, cases, file_ending, Contrast::Mri)
}

/// [`write_msd`] with the intensities rendered as `contrast` (CT phantoms store Hounsfield units in int16,
/// as CT scanners do, and name their channel `CT` in `dataset.json`, as MSD does).
pub fn write_msd_with_contrast(
    dir: &Path,
    spec: &PhantomSpec,
    cases: usize,
    file_ending: &str,
    contrast: Contrast,
) -> Result<Vec<PathBuf>> {
    if spec.structures > usize::from(u8::MAX) {
        return Err(VolumeError::Config {
            field: "structures".into(),
            problem: format!("{} structures do not fit uint8 labels", spec.structures),
        });
    }
    let images = dir.join("imagesTr");
    let labels = dir.join("labelsTr");
    for d in [&images, &labels] {
        std::fs::create_dir_all(d).map_err(|e| VolumeError::io(d, e))?;
    }
    let mut written = Vec::new();
    for i in 0..cases {
        let id = phantom_case_id(i);
        let (volume, label_map) = generate_with_contrast(spec, i, contrast);
        for c in 0..spec.channels {
            let path = images.join(format!("{id}_{c:04}{file_ending}"));
            let channel = Volume {
                data: volume
                    .channel(c)
                    .iter()
                    .map(|v| v.round().clamp(f32::from(i16::MIN), f32::from(i16::MAX)))
                    .collect(),
                shape: volume.shape,
                channels: 1,
                affine: volume.affine,
            };
            write_volume(&path, &channel, DataType::I16)?;
            written.push(path);
        }
        let path = labels.join(format!("{id}{file_ending}"));
        write_labels(&path, &label_map, DataType::U8)?;
        written.push(path);
    }
    let channel_names: serde_json::Map<String, serde_json::Value> = (0..spec.channels)
        .map(|c| {
            let name = match contrast {
                Contrast::Mri => format!("phantom_contrast_{c}"),
                Contrast::Ct => "CT".to_string(),
            };
            (c.to_string(), json!(name))
        })
        .collect();
    let label_names: serde_json::Map<String, serde_json::Value> =
        spec.label_space().classes.into_iter().map(|c| (c.name, json!(c.value))).collect();
    let dataset = json!({
        "name": "voxplan phantoms",
        "description": format!("synthetic phantoms, seed {}, spacing {:?} mm", spec.seed, spec.spacing),
        "channel_names": channel_names,
        "labels": label_names,
        "numTraining": cases,
        "file_ending": file_ending,
    });
    let json_path = dir.join("dataset.json");
    let text = serde_json::to_string_pretty(&dataset).map_err(|e| VolumeError::Dataset {
        path: json_path.clone(),
        problem: format!("cannot encode dataset.json: {e}"),
    })?;
    std::fs::write(&json_path, text).map_err(|e| VolumeError::io(&json_path, e))?;
    written.push(json_path);
    Ok(written)
}
