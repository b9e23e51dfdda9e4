//! `voxplan inspect` end to end: the real binary on files written by the library.

use std::path::Path;
use std::process::Command;

use voxplan_volumes::nifti::{self, DataType};
use voxplan_volumes::{Affine, Volume};

const LPS: Affine = [[-2.0, 0.0, 0.0, 10.0], [0.0, -2.0, 0.0, 20.0], [0.0, 0.0, 3.0, -5.0], [0.0, 0.0, 0.0, 1.0]];

fn inspect(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_voxplan")).arg("inspect").args(args).output().expect("run voxplan")
}

fn json_of(path: &Path) -> serde_json::Value {
    let out = inspect(&["--json", path.to_str().expect("utf-8 path")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("valid JSON")
}

#[test]
fn json_reports_geometry_scaling_and_stats_over_non_nan_voxels() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut v = Volume::zeros([4, 3, 2], 1, LPS);
    for (i, x) in v.data.iter_mut().enumerate() {
        *x = i as f32 - 5.0;
    }
    v.data[7] = f32::NAN;
    let path = dir.path().join("lps.nii.gz");
    nifti::write_volume(&path, &v, DataType::F32).expect("write");
    let j = json_of(&path);
    assert_eq!(j["shape"], serde_json::json!([4, 3, 2]));
    assert_eq!(j["datatype"], "float32");
    assert_eq!(j["orientation"], "LPS");
    assert_eq!(j["spacing"], serde_json::json!([2.0, 2.0, 3.0]));
    assert_eq!(j["affine"][0], serde_json::json!([-2.0, 0.0, 0.0, 10.0]));
    assert_eq!((j["scl_slope"].as_f64(), j["scl_inter"].as_f64()), (Some(1.0), Some(0.0)));
    // Values -5..=18 without voxel 7 (value 2): 23 voxels, sum 156 - 2.
    assert_eq!(j["nan_count"], 1);
    assert_eq!(j["min"].as_f64(), Some(-5.0));
    assert_eq!(j["max"].as_f64(), Some(18.0));
    assert_eq!(j["sum"].as_f64(), Some(154.0));
    assert!((j["mean"].as_f64().expect("mean") - 154.0 / 23.0).abs() < 1e-9);
}

#[test]
fn readable_summary_names_the_essentials() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("four.nii");
    nifti::write_volume(&path, &Volume::zeros([5, 4, 3], 2, LPS), DataType::I16).expect("write");
    let out = inspect(&[path.to_str().expect("utf-8")]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in ["NIfTI-1", "int16", "[5, 4, 3, 2]", "2 channels", "LPS", "min 0", "max 0"] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
}

#[test]
fn bad_file_exits_non_zero_with_one_line_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("junk.nii");
    std::fs::write(&path, b"definitely not a NIfTI header").expect("write");
    for args in [vec!["--json", path.to_str().expect("utf-8")], vec![path.to_str().expect("utf-8")]] {
        let out = inspect(&args);
        assert!(!out.status.success());
        assert!(out.stdout.is_empty(), "nothing on stdout for a bad file");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
        assert!(err.contains("junk.nii"), "{err}");
    }
    let out = inspect(&["/nonexistent/missing.nii.gz"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.nii.gz"));
}
