//! `predict` preprocesses exactly as training did: a CT dataset of real NIfTI files (Hounsfield units,
//! air outside the body) is trained for a couple of steps, with and without resampling to a target
//! spacing, and a case is predicted from its raw file.

mod train_support;

use std::path::Path;

use train_support::{cpu_options, tiny_experiment};
use voxplan_pipeline::predict::network_input;
use voxplan_pipeline::trainer::checkpoint::{load_state, resolve_inference_dir};
use voxplan_pipeline::{DeviceRequest, PredictOptions, predict, train};
use voxplan_volumes::IntensityStats;
use voxplan_volumes::nifti::{read_labels, read_volume};
use voxplan_volumes::phantom::{Contrast, PhantomSpec};
use voxplan_volumes::phantom_msd::write_msd_with_contrast;
use voxplan_volumes::preprocess::Normalization;
use voxplan_volumes::source::open_raw_source;
use voxplan_volumes::{fingerprint, open_source};

/// Thick-slice CT phantoms: 2 mm slices, so a 1.5 mm target spacing changes every axis's voxel count.
const CT_SPEC: PhantomSpec =
    PhantomSpec { shape: [24, 24, 16], spacing: [1.0, 1.0, 2.0], structures: 2, channels: 1, seed: 9 };
const CASES: usize = 4;
/// The case predicted; any case works, the network never has to be good for this test.
const CASE: usize = 1;

fn ct_data(root: &Path, target_spacing: Option<[f64; 3]>) -> String {
    let spacing = target_spacing.map(|t| format!("target_spacing = {t:?}")).unwrap_or_default();
    format!(
        "source = {{ kind = \"msd\", root = {:?} }}\nmodality = \"ct\"\nvalidation_fraction = 0.25\n{spacing}",
        root.display().to_string()
    )
}

fn stats_of(state: &voxplan_pipeline::trainer::checkpoint::TrainState) -> Vec<IntensityStats> {
    match &state.preprocessing.normalization {
        Normalization::DatasetClipZScore(stats) => stats.clone(),
        other => panic!("CT training must record dataset statistics, got {other:?}"),
    }
}

fn check(target_spacing: Option<[f64; 3]>) {
    let tmp = tempfile::tempdir().unwrap();
    let dataset = tmp.path().join("Dataset002_CtPhantoms");
    write_msd_with_contrast(&dataset, &CT_SPEC, CASES, ".nii.gz", Contrast::Ct).unwrap();
    let exp = tiny_experiment(1, "", "", Some(&ct_data(&dataset, target_spacing)));
    let run = tmp.path().join("run");
    train(&exp, &cpu_options(&run)).unwrap();

    // The checkpoint records the dataset's CT statistics and the target spacing.
    let state = load_state(&resolve_inference_dir(&run).unwrap()).unwrap();
    let raw_source = open_raw_source(&exp.data).unwrap();
    let stats = fingerprint(raw_source.as_ref()).unwrap().intensity;
    assert_eq!(state.preprocessing.normalization, Normalization::DatasetClipZScore(stats));
    assert_eq!(state.preprocessing.target_spacing, target_spacing);

    // What predict feeds the network equals what training fed it for the same case.
    let image = dataset.join(format!("imagesTr/phantom_{CASE:03}_0000.nii.gz"));
    let raw = read_volume(&image).unwrap();
    let input = network_input(&state, raw.clone(), &image).unwrap();
    let (trained_on, _) = open_source(&exp.data).unwrap().load(CASE).unwrap();
    assert_eq!((input.shape, input.channels), (trained_on.shape, trained_on.channels));
    for (k, (a, b)) in input.data.iter().zip(&trained_on.data).enumerate() {
        assert!((a - b).abs() <= 1e-6 * b.abs().max(1.0), "voxel {k}: {a} vs {b}");
    }
    for (a, b) in input.affine.iter().flatten().zip(trained_on.affine.iter().flatten()) {
        assert!((a - b).abs() < 1e-9, "{:?} vs {:?}", input.affine, trained_on.affine);
    }
    // Clipped with the dataset's statistics: air (-1000 HU, in the corners) sits exactly at the clipped
    // 0.5th foreground percentile, where a per-volume z-score would leave it far below everything else.
    let s = &stats_of(&state)[0];
    let clipped_air = ((s.p0_5 - s.mean) / s.std) as f32;
    let min = input.data.iter().cloned().fold(f32::INFINITY, f32::min);
    assert!((min - clipped_air).abs() < 1e-5, "lowest input {min} vs clipped air {clipped_air}");
    assert!(raw.channel(0).iter().any(|&v| f64::from(v) < s.p0_5 - 500.0), "the raw case has air to clip");
    match target_spacing {
        Some(t) => {
            assert_ne!(input.shape, raw.shape, "resampled to {t:?}");
            assert_eq!(input.spacing(), t);
        }
        None => assert_eq!(input.shape, raw.shape),
    }

    // The written prediction lies on the input's grid.
    let output = tmp.path().join("out");
    let files = predict(&PredictOptions {
        checkpoint: run.clone(),
        input: image.clone(),
        output: output.clone(),
        probabilities: true,
        device: DeviceRequest::Cpu,
        budget_bytes: None,
        skip_existing: false,
        stop: voxplan_pipeline::trainer::StopRequest::new(),
    })
    .unwrap();
    assert_eq!(files.len(), 1);
    assert_eq!((files[0].shape, files[0].network_shape), (raw.shape, input.shape));
    let labels = read_labels(&files[0].labels).unwrap();
    assert_eq!(labels.shape, raw.shape);
    assert!(labels.data.iter().all(|&l| l < 3));
    let probs = read_volume(files[0].probabilities.as_ref().unwrap()).unwrap();
    assert_eq!((probs.shape, probs.channels), (raw.shape, 3));
    for (a, b) in [labels.affine, probs.affine].iter().flat_map(|m| m.iter().flatten().zip(raw.affine.iter().flatten()))
    {
        assert!((a - b).abs() < 1e-4, "output affine {:?} vs input {:?}", labels.affine, raw.affine);
    }
    let n = raw.voxels();
    for v in (0..n).step_by(53) {
        let sum: f32 = (0..3).map(|c| probs.data[c * n + v]).sum();
        assert!((sum - 1.0).abs() < 1e-3, "voxel {v}: interpolated probabilities still sum to 1, got {sum}");
    }
}

#[test]
fn ct_prediction_normalises_like_training_and_writes_on_the_input_grid() {
    check(None);
}

#[test]
fn ct_prediction_with_a_target_spacing_resamples_in_and_back_out() {
    check(Some([1.5, 1.5, 1.5]));
}
