//! On-disk datasets through real NIfTI files: MSD / nnU-Net v2 layouts, folders, header checks, the
//! streamed `.nii` path, fingerprinting and resampling.

use std::path::Path;

use serde_json::json;
use voxplan_volumes::dataset::{Dataset, DatasetSource};
use voxplan_volumes::nifti::{DataType, write_labels, write_volume};
use voxplan_volumes::phantom::{PhantomSpec, generate};
use voxplan_volumes::phantom_msd::write_msd;
use voxplan_volumes::{
    AugmentConfig, CaseSource, DataConfig, DataSource, LoaderConfig, Modality, PatchLoader, VolumeError, fingerprint,
    open_source,
};

fn spec(channels: usize) -> PhantomSpec {
    PhantomSpec { shape: [24, 20, 12], spacing: [1.0, 1.0, 2.5], structures: 3, channels, seed: 21 }
}

fn msd_cfg(root: &Path) -> DataConfig {
    DataConfig {
        source: DataSource::Msd { root: root.to_path_buf() },
        modality: Modality::Mri,
        target_spacing: None,
        validation_fraction: 0.25,
        folds: None,
        fold: 0,
        split_seed: 0,
        labels: None,
        orientation: Default::default(),
    }
}

#[test]
fn nnunet_layout_round_trips_the_phantoms() {
    let dir = tempfile::tempdir().unwrap();
    write_msd(dir.path(), &spec(2), 3, ".nii.gz").unwrap();
    let ds = Dataset::open_msd(dir.path()).unwrap();
    assert_eq!(ds.channel_names.len(), 2);
    assert_eq!(ds.labels.as_ref().map(|l| l.len()), Some(4));
    let raw = DatasetSource::new(ds).unwrap();
    assert_eq!(raw.len(), 3);
    assert_eq!(raw.case_id(1), "phantom_001");
    let (v, l) = raw.load(1).unwrap();
    let (gv, gl) = generate(&spec(2), 1);
    assert_eq!(l.data, gl.data, "labels read back exactly");
    assert_eq!(v.channels, 2);
    assert!(v.data.iter().zip(&gv.data).all(|(a, b)| (a - b.round()).abs() < 1e-6), "int16 intensities");
    assert_eq!(v.spacing(), [1.0, 1.0, 2.5]);
    // Through open_source: normalised per volume.
    let src = open_source(&msd_cfg(dir.path())).unwrap();
    let (nv, _) = src.load(1).unwrap();
    let mean = nv.channel(0).iter().map(|&x| f64::from(x)).sum::<f64>() / nv.voxels() as f64;
    assert!(mean.abs() < 1e-4);
}

#[test]
fn original_msd_layout_with_four_d_images() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("imagesTr")).unwrap();
    std::fs::create_dir_all(dir.path().join("labelsTr")).unwrap();
    let mut training = Vec::new();
    for i in 0..2 {
        let (mut v, l) = generate(&spec(3), i);
        v.data.iter_mut().for_each(|x| *x = x.round());
        write_volume(&dir.path().join(format!("imagesTr/BRATS_{i:03}.nii.gz")), &v, DataType::I16).unwrap();
        write_labels(&dir.path().join(format!("labelsTr/BRATS_{i:03}.nii.gz")), &l, DataType::U8).unwrap();
        training.push(json!({"image": format!("./imagesTr/BRATS_{i:03}.nii.gz"), "label": format!("./labelsTr/BRATS_{i:03}.nii.gz")}));
    }
    let meta = json!({
        "modality": {"0": "FLAIR", "1": "T1w", "2": "T2w"},
        "labels": {"0": "background", "1": "edema", "2": "non-enhancing", "3": "enhancing"},
        "numTraining": 2, "training": training,
    });
    std::fs::write(dir.path().join("dataset.json"), meta.to_string()).unwrap();
    let ds = Dataset::open_msd(dir.path()).unwrap();
    assert_eq!(ds.channel_names, ["FLAIR", "T1w", "T2w"]);
    let labels = ds.labels.clone().unwrap();
    assert_eq!((labels.value_of(3), labels.name_of(3)), (Some(3), "enhancing".to_string()));
    assert_eq!(ds.cases[1].id, "BRATS_001");
    let src = DatasetSource::new(ds).unwrap();
    assert_eq!(src.geometry(0).unwrap().channels, 3);
    let (v, l) = src.load(0).unwrap();
    assert_eq!((v.channels, v.shape), (3, [24, 20, 12]));
    assert_eq!(l.data, generate(&spec(3), 0).1.data);
}

#[test]
fn a_label_on_another_grid_is_a_mismatch_naming_both_files() {
    let dir = tempfile::tempdir().unwrap();
    write_msd(dir.path(), &spec(1), 2, ".nii.gz").unwrap();
    let label = dir.path().join("labelsTr/phantom_001.nii.gz");
    let (_, mut l) = generate(&PhantomSpec { shape: [24, 20, 11], ..spec(1) }, 1);
    write_labels(&label, &l, DataType::U8).unwrap();
    let err = DatasetSource::new(Dataset::open_msd(dir.path()).unwrap()).err().unwrap();
    let text = err.to_string();
    assert!(matches!(err, VolumeError::Mismatch { .. }), "{text}");
    assert!(text.contains("phantom_001_0000.nii.gz") && text.contains("labelsTr/phantom_001.nii.gz"), "{text}");
    // Same shape, shifted origin: the affine check catches it.
    l = generate(&spec(1), 1).1;
    l.affine[0][3] = 5.0;
    write_labels(&label, &l, DataType::U8).unwrap();
    let err = DatasetSource::new(Dataset::open_msd(dir.path()).unwrap()).err().unwrap();
    assert!(err.to_string().contains("affines differ"), "{err}");
}

#[test]
fn missing_files_and_wrong_counts_are_dataset_errors() {
    let dir = tempfile::tempdir().unwrap();
    write_msd(dir.path(), &spec(2), 2, ".nii.gz").unwrap();
    std::fs::remove_file(dir.path().join("imagesTr/phantom_001_0001.nii.gz")).unwrap();
    let err = Dataset::open_msd(dir.path()).unwrap_err().to_string();
    assert!(err.contains("missing file") && err.contains("phantom_001_0001.nii.gz"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    write_msd(dir.path(), &spec(1), 2, ".nii.gz").unwrap();
    std::fs::remove_file(dir.path().join("labelsTr/phantom_000.nii.gz")).unwrap();
    let err = Dataset::open_msd(dir.path()).unwrap_err().to_string();
    assert!(err.contains("numTraining is 2 but 1"), "{err}");
}

#[test]
fn folder_of_pairs_matched_by_pattern() {
    let dir = tempfile::tempdir().unwrap();
    let (imgs, labs) = (dir.path().join("img"), dir.path().join("seg"));
    std::fs::create_dir_all(&imgs).unwrap();
    std::fs::create_dir_all(&labs).unwrap();
    for i in 0..3 {
        let (mut v, l) = generate(&spec(1), i);
        v.data.iter_mut().for_each(|x| *x = x.round());
        write_volume(&imgs.join(format!("sub{i}_t1.nii.gz")), &v, DataType::F32).unwrap();
        write_labels(&labs.join(format!("sub{i}_mask.nii.gz")), &l, DataType::U8).unwrap();
    }
    std::fs::write(imgs.join("notes.txt"), "not an image").unwrap();
    let cfg = DataConfig {
        source: DataSource::Folder {
            images: imgs.clone(),
            labels: labs.clone(),
            image_pattern: "*_t1.nii.gz".into(),
            label_pattern: "*_mask.nii.gz".into(),
        },
        ..msd_cfg(dir.path())
    };
    let src = open_source(&cfg).unwrap();
    assert_eq!(src.len(), 3);
    assert_eq!(src.case_id(2), "sub2");
    assert_eq!(src.load(2).unwrap().1.data, generate(&spec(1), 2).1.data);

    std::fs::remove_file(labs.join("sub1_mask.nii.gz")).unwrap();
    let err = open_source(&cfg).err().unwrap().to_string();
    assert!(err.contains("sub1_t1.nii.gz"), "{err}");
}

#[test]
fn streamed_nii_patches_match_decoded_patches() {
    let dir = tempfile::tempdir().unwrap();
    write_msd(dir.path(), &spec(2), 3, ".nii").unwrap();
    let src = open_source(&msd_cfg(dir.path())).unwrap();
    let streamed_view = src.open_case(0, true).unwrap();
    let decoded_view = src.open_case(0, false).unwrap();
    assert_eq!(streamed_view.resident_bytes(), 24 * 20 * 12 * 2, "only the label map is resident");
    // Decoded, the two int16 channels stay int16 (the stored-type view): labels + 2 × 2 bytes per voxel.
    assert!(decoded_view.resident_bytes() >= 3 * streamed_view.resident_bytes());
    let run = |stream: bool| {
        let cfg =
            LoaderConfig { workers: 2, samples_per_volume: 2, stream_uncompressed: stream, ..LoaderConfig::default() };
        let mut loader =
            PatchLoader::start(src.clone(), vec![0, 1, 2], &cfg, &AugmentConfig::default(), [16, 16, 8], 2, 4, 9, 1)
                .unwrap();
        let mut out = Vec::new();
        while let Some(b) = loader.next_batch() {
            out.push(b.unwrap());
        }
        out
    };
    let (a, b) = (run(true), run(false));
    assert_eq!(a.len(), 4);
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.labels, y.labels);
        let worst = x.images.iter().zip(&y.images).map(|(p, q)| (p - q).abs()).fold(0.0, f32::max);
        assert!(worst < 1e-4, "streamed and decoded patches differ by {worst}");
    }
}

#[test]
fn fingerprint_reads_geometry_from_headers_and_intensities_in_one_pass() {
    let dir = tempfile::tempdir().unwrap();
    write_msd(dir.path(), &spec(1), 4, ".nii.gz").unwrap();
    let raw = DatasetSource::new(Dataset::open_msd(dir.path()).unwrap()).unwrap();
    let fp = fingerprint(&raw).unwrap();
    assert_eq!((fp.cases, fp.channels, fp.median_shape), (4, 1, [24, 20, 12]));
    assert_eq!(fp.median_spacing, [1.0, 1.0, 2.5]);
    assert_eq!(fp.num_classes(), 4);
    assert!((fp.class_frequencies.iter().sum::<f64>() - 1.0).abs() < 1e-12);
    let s = fp.intensity[0];
    // Foreground classes 1..3 have means 180, 260, 340 (channel 0): the foreground mean lies between.
    assert!(s.mean > 180.0 && s.mean < 340.0, "{s:?}");
    assert!(s.p0_5 < 180.0 && s.p99_5 > 340.0 && s.p0_5 < s.p99_5, "{s:?}");
}

#[test]
fn target_spacing_resamples_images_and_labels_on_load() {
    let dir = tempfile::tempdir().unwrap();
    write_msd(dir.path(), &spec(1), 2, ".nii.gz").unwrap();
    let cfg = DataConfig { target_spacing: Some([1.0, 1.0, 1.25]), modality: Modality::Ct, ..msd_cfg(dir.path()) };
    let src = open_source(&cfg).unwrap();
    let (v, l) = src.load(0).unwrap();
    assert_eq!(v.shape, [24, 20, 24]);
    assert_eq!(l.shape, v.shape);
    assert_eq!(v.spacing(), [1.0, 1.0, 1.25]);
    assert!(l.data.iter().all(|&c| c <= 3));
    assert_eq!(src.geometry(0).unwrap().shape, [24, 20, 24]);
}
