//! A case kept in its stored type gives the same patches and batches as the `f32` path, to float rounding:
//! every flip and quarter turn, MRI and CT normalisation, per-channel `scl_slope`/`scl_inter`, big-endian
//! files, 4-D and one-file-per-channel cases, and every kept type. The files are hand-made bytes
//! (`nifti_common`), independent of the library's writer.

mod nifti_common;

use std::path::Path;
use std::sync::Arc;

use nifti_common::{Spec, code_of, encode, gzip, put};
use voxplan_volumes::augment::{Geometry, PatchTransform};
use voxplan_volumes::case_view::CaseView;
use voxplan_volumes::dataset::{Dataset, DatasetSource};
use voxplan_volumes::phantom::PhantomSpec;
use voxplan_volumes::phantom_msd::write_msd;
use voxplan_volumes::preprocess::{Normalization, Preprocessing};
use voxplan_volumes::source::{CaseSource, DecodeAsF32, PreprocessedSource};
use voxplan_volumes::{AugmentConfig, IntensityStats, LoaderConfig, PatchBatch, PatchLoader, VolumeError};

/// `(x, y, z)` of the hand-made cases: not square, so rotated patches run along both axes of the volume.
const SHAPE: [usize; 3] = [12, 10, 7];
const VOXELS: usize = 12 * 10 * 7;

/// The same raw source opened both ways under `normalization`: (stored-type path, f32 path).
fn both_ways(raw: Arc<dyn CaseSource>, normalization: Normalization) -> (Arc<dyn CaseSource>, Arc<dyn CaseSource>) {
    let preprocessing = Preprocessing { normalization, target_spacing: None, orientation: None };
    let stored = PreprocessedSource { inner: raw.clone(), preprocessing: preprocessing.clone() };
    let f32_only = PreprocessedSource { inner: Arc::new(DecodeAsF32(raw)), preprocessing };
    (Arc::new(stored), Arc::new(f32_only))
}

/// Stored values for channel `c` of type `name`: a ramp with the type's extremes mixed in.
fn values(name: &str, c: usize) -> Vec<f64> {
    let (lo, hi) = match name {
        "uint8" => (0.0, 255.0),
        "int8" => (-128.0, 127.0),
        "uint16" => (0.0, 65535.0),
        _ => (-32768.0, 32767.0),
    };
    (0..VOXELS)
        .map(|i| match (i * 7 + c * 3) % 53 {
            0 => lo,
            1 => hi,
            k => (lo + (hi - lo) * (k as f64 / 53.0) * (1.0 + 0.1 * c as f64)).round().clamp(lo, hi),
        })
        .collect()
}

/// One gzipped NIfTI file of `channels` channels of type `name`.
fn image_bytes(name: &str, channels: usize, first_channel: usize, big: bool, slope: f64, inter: f64) -> Vec<u8> {
    let (datatype, bitpix) = code_of(name);
    let mut dim = vec![3, SHAPE[0] as i64, SHAPE[1] as i64, SHAPE[2] as i64];
    if channels > 1 {
        dim[0] = 4;
        dim.push(channels as i64);
    }
    let spec = Spec { big_endian: big, dim, datatype, bitpix, scl_slope: slope, scl_inter: inter, ..Spec::default() };
    let all: Vec<f64> = (0..channels).flat_map(|c| values(name, first_channel + c)).collect();
    gzip(&spec.single_file(&encode(name, &all, big)))
}

/// A uint8 label map with classes 0–2.
fn label_bytes() -> Vec<u8> {
    let (datatype, bitpix) = code_of("uint8");
    let spec =
        Spec { dim: vec![3, SHAPE[0] as i64, SHAPE[1] as i64, SHAPE[2] as i64], datatype, bitpix, ..Spec::default() };
    let labels: Vec<f64> = (0..VOXELS).map(|i| ((i / 13) % 3) as f64).collect();
    gzip(&spec.single_file(&encode("uint8", &labels, false)))
}

/// An nnU-Net layout case with one file per channel: each file `(type, big endian, slope, inter)`.
fn per_channel_dataset(dir: &Path, files: &[(&str, bool, f64, f64)]) -> Arc<dyn CaseSource> {
    std::fs::create_dir_all(dir.join("imagesTr")).unwrap();
    std::fs::create_dir_all(dir.join("labelsTr")).unwrap();
    for (c, &(name, big, slope, inter)) in files.iter().enumerate() {
        put(&dir.join("imagesTr"), &format!("case_{c:04}.nii.gz"), &image_bytes(name, 1, c, big, slope, inter));
    }
    put(&dir.join("labelsTr"), "case.nii.gz", &label_bytes());
    let names: serde_json::Map<String, serde_json::Value> =
        (0..files.len()).map(|c| (c.to_string(), serde_json::json!(format!("ch{c}")))).collect();
    let json = serde_json::json!({
        "channel_names": names, "labels": {"background": 0, "a": 1, "b": 2},
        "numTraining": 1, "file_ending": ".nii.gz",
    });
    std::fs::write(dir.join("dataset.json"), json.to_string()).unwrap();
    Arc::new(DatasetSource::new(Dataset::open_msd(dir).unwrap()).unwrap())
}

/// A folder case whose image is one 4-D file.
fn four_d_dataset(dir: &Path, name: &str, channels: usize, big: bool, slope: f64, inter: f64) -> Arc<dyn CaseSource> {
    let (images, labels) = (dir.join("images"), dir.join("labels"));
    std::fs::create_dir_all(&images).unwrap();
    std::fs::create_dir_all(&labels).unwrap();
    put(&images, "c1.nii.gz", &image_bytes(name, channels, 0, big, slope, inter));
    put(&labels, "c1.nii.gz", &label_bytes());
    Arc::new(DatasetSource::new(Dataset::open_folder(&images, &labels, "*.nii.gz", "*.nii.gz").unwrap()).unwrap())
}

/// CT statistics whose percentiles fall inside every channel's range, so clipping changes values.
fn ct(channels: usize, scale: f64) -> Normalization {
    let one = |c: usize| IntensityStats {
        mean: 40.0 * scale + c as f64,
        std: 90.0 * scale,
        p0_5: -60.0 * scale,
        p99_5: 150.0 * scale,
    };
    Normalization::DatasetClipZScore((0..channels).map(one).collect())
}

/// Every geometry (4 quarter turns × 8 flip sets) with and without intensity augmentation, at origins inside,
/// overhanging and past the volume: the stored-type view's patch equals the f32 view's to float rounding.
fn assert_same_patches(stored: &mut dyn CaseView, reference: &mut dyn CaseView, what: &str) {
    let size = [6, 6, 5];
    let n = size.iter().product::<usize>() * reference.channels();
    for turns in 0..4u8 {
        for f in 0..8u8 {
            let geometry = Geometry { flips: [f & 1 != 0, f & 2 != 0, f & 4 != 0], quarter_turns: turns };
            for intensity in [None, Some((1.15f32, -0.3f32))] {
                let t = PatchTransform { geometry, intensity };
                for origin in [[0, 0, 0], [3, 2, 1], [-2, 6, 4], [9, -3, -2], [20, 0, 0]] {
                    let (mut a, mut b) = (vec![f32::NAN; n], vec![f32::NAN; n]);
                    stored.augmented_patch(origin, size, &t, &mut a).unwrap();
                    reference.augmented_patch(origin, size, &t, &mut b).unwrap();
                    for (k, (x, y)) in a.iter().zip(&b).enumerate() {
                        assert!(
                            (x - y).abs() <= 1e-4 * y.abs().max(1.0),
                            "{what}, {t:?} at {origin:?}: [{k}] {x} vs {y}"
                        );
                    }
                }
            }
        }
    }
    assert_eq!(stored.image_patch([1, 1, 1], size).unwrap().len(), n);
}

/// Opens case 0 both ways, checks the stored view is really the lighter one, and compares patches.
fn check(raw: Arc<dyn CaseSource>, normalization: Normalization, stored_width: u64, what: &str) {
    let (stored_source, f32_source) = both_ways(raw, normalization);
    let mut stored = stored_source.open_case(0, false).unwrap();
    let mut reference = f32_source.open_case(0, false).unwrap();
    let channels = reference.channels() as u64;
    let label_bytes = VOXELS as u64 * 2;
    assert_eq!(reference.resident_bytes(), VOXELS as u64 * 4 * channels + label_bytes, "{what}: f32 view");
    let image = stored.resident_bytes() - label_bytes;
    // The stored bytes plus each file's header lead and alignment (a few hundred bytes).
    assert!(
        image >= VOXELS as u64 * stored_width * channels && image < VOXELS as u64 * stored_width * channels + 2048,
        "{what}: the stored view holds {image} image bytes"
    );
    assert_eq!(stored_source.case_bytes(0, false).unwrap(), stored.resident_bytes(), "{what}: bound = resident");
    assert_eq!(stored.labels().data, reference.labels().data, "{what}: labels");
    assert_same_patches(stored.as_mut(), reference.as_mut(), what);
}

#[test]
fn big_endian_scaled_per_channel_files_match_the_f32_path_for_mri_and_ct() {
    // Channel 0 big-endian with a negative slope, channel 1 little-endian with its own slope/intercept,
    // channel 2 unscaled: the scaling is per channel, as it is per file.
    let files = [("int16", true, -0.25, 100.0), ("int16", false, 0.5, -7.0), ("int16", true, 1.0, 0.0)];
    let dir = tempfile::tempdir().unwrap();
    let raw = per_channel_dataset(dir.path(), &files);
    check(raw.clone(), Normalization::PerVolumeZScore, 2, "int16 files, MRI");
    check(raw.clone(), ct(3, 10.0), 2, "int16 files, CT");
    check(raw, Normalization::None, 2, "int16 files, unnormalised");
}

#[test]
fn four_d_files_of_every_kept_type_match_the_f32_path() {
    for (name, width, big) in [("uint8", 1, false), ("int8", 1, true), ("uint16", 2, true), ("int16", 2, false)] {
        let dir = tempfile::tempdir().unwrap();
        let raw = four_d_dataset(dir.path(), name, 2, big, 1.5, -20.0);
        check(raw.clone(), Normalization::PerVolumeZScore, width, &format!("4-D {name}, MRI"));
        check(raw, ct(2, 1.0), width, &format!("4-D {name}, CT"));
    }
}

#[test]
fn wide_and_float_types_stay_on_the_f32_path() {
    let dir = tempfile::tempdir().unwrap();
    let raw = four_d_dataset(dir.path(), "float32", 2, false, 1.0, 0.0);
    let (stored_source, _) = both_ways(raw.clone(), Normalization::PerVolumeZScore);
    assert!(raw.load_stored(0, false).unwrap().is_none());
    let view = stored_source.open_case(0, false).unwrap();
    assert_eq!(view.resident_bytes(), VOXELS as u64 * (4 * 2 + 2), "decoded as f32");
}

#[test]
fn mixed_stored_types_in_one_case_take_the_f32_path() {
    let dir = tempfile::tempdir().unwrap();
    let raw = per_channel_dataset(dir.path(), &[("int16", false, 1.0, 0.0), ("uint8", false, 1.0, 0.0)]);
    assert!(raw.load_stored(0, false).unwrap().is_none());
    assert_eq!(raw.stored_bytes(0, false), None);
}

#[test]
fn a_truncated_channel_file_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let raw = per_channel_dataset(dir.path(), &[("int16", false, 1.0, 0.0), ("int16", false, 1.0, 0.0)]);
    let victim = dir.path().join("imagesTr").join("case_0001.nii.gz");
    let bytes = std::fs::read(&victim).unwrap();
    std::fs::write(&victim, &bytes[..bytes.len() / 2]).unwrap();
    let (stored_source, _) = both_ways(raw, Normalization::PerVolumeZScore);
    let err = stored_source.open_case(0, false).err().unwrap();
    assert!(
        matches!(&err, VolumeError::Truncated { path, .. } | VolumeError::CorruptGzip { path, .. } if path == &victim),
        "{err}"
    );
}

fn batches(source: Arc<dyn CaseSource>, workers: usize) -> (Vec<PatchBatch>, u64) {
    let cfg = LoaderConfig { workers, queue_length: 4, samples_per_volume: 3, ..LoaderConfig::default() };
    let aug = AugmentConfig { noise_probability: 0.5, ..AugmentConfig::default() };
    let cases: Vec<usize> = (0..source.len()).collect();
    let mut loader = PatchLoader::start(source, cases, &cfg, &aug, [16, 16, 12], 2, 6, 7, 1).unwrap();
    let bound = loader.memory_bound_bytes();
    let mut out = Vec::new();
    while let Some(b) = loader.next_batch() {
        out.push(b.unwrap());
    }
    (out, bound)
}

#[test]
fn the_loader_gives_the_same_batches_from_stored_and_f32_cases_in_less_memory() {
    let dir = tempfile::tempdir().unwrap();
    let spec = PhantomSpec { shape: [28, 24, 18], spacing: [1.0; 3], structures: 2, channels: 2, seed: 4 };
    write_msd(dir.path(), &spec, 3, ".nii.gz").unwrap();
    let raw: Arc<dyn CaseSource> = Arc::new(DatasetSource::new(Dataset::open_msd(dir.path()).unwrap()).unwrap());
    for normalization in [Normalization::PerVolumeZScore, ct(2, 1.0)] {
        let (stored_source, f32_source) = both_ways(raw.clone(), normalization);
        for workers in [1, 2] {
            let (a, bound_stored) = batches(stored_source.clone(), workers);
            let (b, bound_f32) = batches(f32_source.clone(), workers);
            assert_eq!(a.len(), b.len());
            for (x, y) in a.iter().zip(&b) {
                assert_eq!(x.labels, y.labels, "{workers} workers: same patches, same labels");
                let worst = x.images.iter().zip(&y.images).map(|(p, q)| (p - q).abs()).fold(0.0, f32::max);
                assert!(worst < 1e-4, "{workers} workers: images differ by {worst}");
            }
            // int16 images: the case term of the bound counts 2 bytes per image voxel instead of 4, less each
            // file's header lead (352 bytes).
            let saved = (bound_f32 - bound_stored) / workers as u64;
            let f32_images = 28 * 24 * 18 * 4 * 2;
            assert!(saved <= f32_images / 2 && saved + 2048 > f32_images / 2, "{workers} workers: saved {saved}");
        }
    }
}
