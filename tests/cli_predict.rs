//! End-to-end `voxplan predict`: train a tiny model, segment a volume with an oblique, offset affine, and
//! read the result back.

mod common;

use common::voxplan_quiet as voxplan;
use std::path::Path;

use voxplan_volumes::nifti::{DataType, read_labels, read_volume, write_volume};
use voxplan_volumes::phantom::{PhantomSpec, generate};

const TINY_EXPERIMENT: &str = r#"
name = "tiny-predict"
seed = 11

[network]
in_channels = 1
num_classes = 3
norm = { kind = "group", groups = 4 }
stages = [
  { features = 4, stride = [1, 1, 1] },
  { features = 8, stride = [2, 2, 2] },
]

[plan]
patch_size = [16, 16, 16]
target_effective_batch = 2
warmup_steps = 1

[data]
source = { kind = "phantom", cases = 4, shape = [24, 24, 24], structures = 2, seed = 5 }
validation_fraction = 0.25

[loader]
workers = 1
queue_length = 4

[train]
epochs = 1
steps_per_epoch = 2
"#;

fn assert_ok(out: &std::process::Output) {
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}

/// `voxplan predict` on the CPU with the checkpoint of `run`, `input` and `output`, plus `extra` flags.
fn predict(run: &Path, input: &Path, output: &Path, extra: &[&str]) -> std::process::Output {
    let (run, input, output) = (run.to_str().unwrap(), input.to_str().unwrap(), output.to_str().unwrap());
    let mut args = vec!["predict", "--checkpoint", run, "--input", input, "--output", output, "--device", "cpu"];
    args.extend_from_slice(extra);
    voxplan(&args)
}

fn train_tiny(dir: &Path) -> std::path::PathBuf {
    let config = dir.join("tiny.toml");
    std::fs::write(&config, TINY_EXPERIMENT).unwrap();
    let run = dir.join("run");
    assert_ok(&voxplan(&[
        "train",
        "--config",
        config.to_str().unwrap(),
        "--device",
        "cpu",
        "--run-dir",
        run.to_str().unwrap(),
    ]));
    run
}

#[test]
fn predicts_labels_and_probabilities_on_the_input_grid() {
    let tmp = tempfile::tempdir().unwrap();
    let run = train_tiny(tmp.path());

    // A volume whose shape is not a multiple of the patch and whose affine is anisotropic and offset.
    let spec = PhantomSpec { shape: [20, 26, 18], spacing: [0.8, 1.2, 2.5], structures: 2, channels: 1, seed: 99 };
    let (mut volume, _) = generate(&spec, 0);
    volume.affine[0][3] = -40.5;
    volume.affine[1][3] = 12.25;
    volume.affine[2][3] = 7.0;
    let inputs = tmp.path().join("in");
    std::fs::create_dir_all(&inputs).unwrap();
    let input = inputs.join("case_a.nii.gz");
    write_volume(&input, &volume, DataType::F32).unwrap();
    let output = tmp.path().join("out");

    let out = predict(&run, &inputs, &output, &["--probabilities"]);
    assert_ok(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("windows") && stdout.contains("per pass"), "{stdout}");
    // The planner counted the stitching accumulator exactly as the aggregator allocated it.
    let figures = stdout
        .split_once("accumulator ")
        .and_then(|(_, rest)| rest.split_once(" (planned "))
        .and_then(|(measured, rest)| Some((measured, rest.split_once(')')?.0)));
    let (measured, planned) = figures.unwrap_or_else(|| panic!("no accumulator figures in {stdout}"));
    assert_eq!(measured, planned, "{stdout}");

    let labels = read_labels(&output.join("case_a.nii.gz")).unwrap();
    assert_eq!(labels.shape, volume.shape);
    for r in 0..4 {
        for c in 0..4 {
            assert!((labels.affine[r][c] - volume.affine[r][c]).abs() < 1e-4, "{:?}", labels.affine);
        }
    }
    assert!(labels.data.iter().all(|&l| l < 3));

    let probs = read_volume(&output.join("case_a_probabilities.nii.gz")).unwrap();
    assert_eq!((probs.shape, probs.channels), (volume.shape, 3));
    let n = volume.voxels();
    for v in (0..n).step_by(97) {
        let sum: f32 = (0..3).map(|c| probs.data[c * n + v]).sum();
        assert!((sum - 1.0).abs() < 1e-3, "voxel {v}: probabilities sum to {sum}");
        // The label map is the argmax of the probabilities.
        let best = (0..3).max_by(|&a, &b| probs.data[a * n + v].total_cmp(&probs.data[b * n + v])).unwrap();
        assert_eq!(labels.data[v] as usize, best, "voxel {v}");
    }
}

#[test]
fn wrong_channel_count_empty_input_and_non_finite_voxels_are_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let run = train_tiny(tmp.path());
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let out = predict(&run, &empty, &tmp.path().join("o"), &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no .nii"), "{}", String::from_utf8_lossy(&out.stderr));

    let spec = PhantomSpec { shape: [16, 16, 16], spacing: [1.0; 3], structures: 2, channels: 2, seed: 1 };
    let (volume, _) = generate(&spec, 0);
    let two = tmp.path().join("two.nii");
    write_volume(&two, &volume, DataType::F32).unwrap();
    let out = predict(&run, &two, &tmp.path().join("o"), &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("2 channels") && err.contains("two.nii"), "{err}");

    let spec = PhantomSpec { shape: [16, 16, 16], spacing: [1.0; 3], structures: 2, channels: 1, seed: 1 };
    let (mut volume, _) = generate(&spec, 0);
    volume.data[100] = f32::NAN;
    volume.data[200] = f32::INFINITY;
    let nan = tmp.path().join("nan.nii");
    write_volume(&nan, &volume, DataType::F32).unwrap();
    let out_dir = tmp.path().join("nan-out");
    let out = predict(&run, &nan, &out_dir, &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nan.nii") && err.contains("2 of 4096 voxels are NaN or infinite"), "{err}");
    assert!(!out_dir.join("nan.nii").exists(), "no all-background label map is written");
}
