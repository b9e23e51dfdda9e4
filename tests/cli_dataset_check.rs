//! `voxplan dataset check`: a clean dataset passes (exit 0) with its summary; a dataset with a dozen kinds
//! of problem at once gets every one of them reported, each on its case and file, and a non-zero exit.

mod common;

use std::path::Path;

use common::voxplan_text as voxplan;
use voxplan_volumes::nifti::{AxisCodes, DataType, Reorientation, write_labels, write_volume};
use voxplan_volumes::phantom::{PhantomSpec, generate};

const SPEC: PhantomSpec =
    PhantomSpec { shape: [20, 18, 16], spacing: [1.0, 1.0, 1.0], structures: 2, channels: 1, seed: 9 };

/// Writes case `i` as `case_<i>` (image channel 0, label) into an nnU-Net v2 dataset under `root`; `edit`
/// may change the image and label map before they are written.
fn write_case(root: &Path, i: usize, edit: impl FnOnce(&mut voxplan_volumes::Volume, &mut voxplan_volumes::Labels)) {
    let (mut v, mut l) = generate(&SPEC, i);
    v.data.iter_mut().for_each(|x| *x = x.round());
    edit(&mut v, &mut l);
    let dtype = if v.data.iter().all(|x| x.is_finite()) { DataType::I16 } else { DataType::F32 };
    write_volume(&root.join(format!("imagesTr/case_{i}_0000.nii.gz")), &v, dtype).unwrap();
    write_labels(&root.join(format!("labelsTr/case_{i}.nii.gz")), &l, DataType::U8).unwrap();
}

fn dataset_json(root: &Path, cases: usize) {
    let json = serde_json::json!({
        "channel_names": {"0": "T2"},
        "labels": {"background": 0, "ellipsoid": 1, "tube": 2},
        "numTraining": cases, "file_ending": ".nii.gz"
    });
    std::fs::write(root.join("dataset.json"), json.to_string()).unwrap();
}

fn layout(root: &Path) {
    std::fs::create_dir_all(root.join("imagesTr")).unwrap();
    std::fs::create_dir_all(root.join("labelsTr")).unwrap();
}

fn check_json(args: &[&str]) -> (bool, serde_json::Value, String) {
    let (ok, out, err) = voxplan(args);
    assert!(!err.contains("panicked"), "{err}");
    let report = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}\n{err}"));
    (ok, report, err)
}

/// The problems of `case` as "severity: message" lines.
fn problems_of(report: &serde_json::Value, case: Option<&str>) -> Vec<String> {
    report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["case"].as_str() == case)
        .map(|p| format!("{}: {} {}", p["severity"].as_str().unwrap(), p["path"].as_str().unwrap_or(""), p["message"]))
        .collect()
}

fn has(lines: &[String], needles: &[&str]) -> bool {
    lines.iter().any(|l| needles.iter().all(|n| l.contains(n)))
}

#[test]
fn a_clean_dataset_passes_with_its_summary() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("Clean");
    layout(&root);
    for i in 0..5 {
        write_case(&root, i, |_, _| {});
    }
    dataset_json(&root, 5);
    let (ok, text, err) = voxplan(&["dataset", "check", root.to_str().unwrap()]);
    assert!(ok, "{text}\n{err}");
    assert!(text.contains("no problems found") && text.contains("result: clean"), "{text}");
    let (ok, report, _) = check_json(&["dataset", "check", root.to_str().unwrap(), "--format", "json"]);
    assert!(ok);
    let s = &report["summary"];
    assert_eq!(s["cases"], 5);
    assert_eq!(s["median_shape"], serde_json::json!([20, 18, 16]));
    assert_eq!(s["orientations"], serde_json::json!([["RAS", 5]]));
    let shares: Vec<f64> = s["classes"].as_array().unwrap().iter().map(|c| c["share"].as_f64().unwrap()).collect();
    assert_eq!(shares.len(), 3);
    assert!((shares.iter().sum::<f64>() - 1.0).abs() < 1e-9 && shares[0] > 0.5, "{shares:?}");
    let p = &s["intensity"][0]["percentiles"];
    assert!(p[0][1].as_f64().unwrap() < p[2][1].as_f64().unwrap(), "{p}");
}

#[test]
fn every_problem_of_a_broken_dataset_is_reported_on_its_case() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("Broken");
    layout(&root);
    write_case(&root, 0, |_, _| {});
    write_case(&root, 1, |_, l| l.data[..9].iter_mut().for_each(|x| *x = 7)); // undeclared value 7
    write_case(&root, 2, |v, _| v.data[3] = f32::NAN); // one NaN voxel
    write_case(&root, 3, |v, _| v.affine[0][3] += 2.0); // image shifted 2 mm from its label
    write_case(&root, 4, |v, l| {
        // Stored PIR: the whole case permuted and flipped (a mixed orientation, not an error of the case).
        let pir = AxisCodes(['P', 'I', 'R']);
        let r = Reorientation::to(&v.affine, v.shape, pir).unwrap();
        (*v, *l) = (r.apply_volume(v), r.apply_labels(l));
    });
    write_case(&root, 5, |v, l| {
        // 5 mm slices: a spacing outlier.
        v.affine[2][2] = 5.0;
        l.affine[2][2] = 5.0;
    });
    write_case(&root, 6, |_, _| {});
    std::fs::remove_file(root.join("imagesTr/case_6_0000.nii.gz")).unwrap(); // missing channel file
    write_case(&root, 7, |_, _| {});
    let truncated = root.join("imagesTr/case_7_0000.nii.gz");
    let bytes = std::fs::read(&truncated).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap(); // cut in half
    // An image nobody labelled, and a numTraining that counts it.
    let (v, _) = generate(&SPEC, 8);
    let v = voxplan_volumes::Volume { data: v.data.iter().map(|x| x.round()).collect(), ..v };
    write_volume(&root.join("imagesTr/case_8_0000.nii.gz"), &v, DataType::I16).unwrap();
    dataset_json(&root, 9);

    let (ok, report, err) = check_json(&["dataset", "check", root.to_str().unwrap(), "--format", "json"]);
    assert!(!ok, "errors make a non-zero exit: {report}");
    assert!(err.contains("error(s) in"), "{err}");
    let case = |i: usize| problems_of(&report, Some(&format!("case_{i}")));
    assert!(case(0).is_empty(), "{:?}", case(0));
    assert!(has(&case(1), &["error", "labelsTr/case_1.nii.gz", "value 7 in 9 voxels"]), "{:?}", case(1));
    assert!(has(&case(2), &["error", "case_2_0000", "1 of 5760 voxels are NaN or infinite"]), "{:?}", case(2));
    assert!(has(&case(3), &["error", "case_3_0000", "affine differs", "2.0000 mm"]), "{:?}", case(3));
    assert!(has(&case(4), &["warning", "oriented PIR, most cases RAS"]), "{:?}", case(4));
    assert!(has(&case(5), &["warning", "spacing", "5.00× the median", "along z"]), "{:?}", case(5));
    assert!(has(&case(6), &["error", "missing file", "case_6_0000.nii.gz"]), "{:?}", case(6));
    assert!(has(&case(7), &["error", "case_7_0000.nii.gz"]), "{:?}", case(7));
    assert!(has(&case(8), &["warning", "image without a label file"]), "{:?}", case(8));
    let dataset = problems_of(&report, None);
    assert!(has(&dataset, &["error", "numTraining is 9 but 8 cases were found"]), "{dataset:?}");
    assert!(
        has(&dataset, &["error", "RAS in 6 case(s), PIR in 1 case(s)", "orientation = \\\"ras\\\""]),
        "{dataset:?}"
    );
    assert_eq!(report["summary"]["cases"], 7, "the 7 cases with every file present are read");
    assert_eq!(report["summary"]["cases_with_errors"], 5);

    // The text report lists the same, errors first.
    let (ok, text, _) = voxplan(&["dataset", "check", root.to_str().unwrap()]);
    assert!(!ok);
    let first_warning = text.find("  warning").unwrap();
    assert!(text.rfind("  error").unwrap() < first_warning, "{text}");
}

#[test]
fn an_experiment_is_checked_against_its_num_classes_and_orientation_policy() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("Mixed");
    layout(&root);
    for i in 0..3 {
        write_case(&root, i, |v, l| {
            if i == 0 {
                let r = Reorientation::to(&v.affine, v.shape, AxisCodes(['L', 'P', 'S'])).unwrap();
                (*v, *l) = (r.apply_volume(v), r.apply_labels(l));
            }
        });
    }
    dataset_json(&root, 3);
    let config = |classes: usize, extra: &str| {
        let default = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/configs/default.toml")).unwrap();
        let phantom = default.lines().find(|l| l.starts_with("source = ")).unwrap().to_string();
        let text = default
            .replace(&phantom, &format!("source = {{ kind = \"msd\", root = {:?} }}\n{extra}", root.to_string_lossy()))
            .replace("num_classes = 4", &format!("num_classes = {classes}"));
        let path = tmp.path().join(format!("exp-{classes}.toml"));
        std::fs::write(&path, text).unwrap();
        path.to_string_lossy().into_owned()
    };
    let (ok, report, _) = check_json(&["dataset", "check", "--config", &config(4, ""), "--format", "json"]);
    assert!(!ok);
    let dataset = problems_of(&report, None);
    assert!(has(&dataset, &["error", "network.num_classes", "is 4", "3 classes"]), "{dataset:?}");
    assert!(has(&dataset, &["error", "LPS in 1 case(s)"]), "{dataset:?}");
    let (ok, report, err) =
        check_json(&["dataset", "check", "--config", &config(3, "orientation = \"ras\""), "--format", "json"]);
    assert!(ok, "reoriented at load, the mixed orientation is only a warning: {report}\n{err}");
    assert!(has(&problems_of(&report, None), &["warning", "reorients them at load"]), "{report}");
}

#[test]
fn a_dataset_that_cannot_be_listed_is_one_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("dataset.json"), "{ not json").unwrap();
    let (ok, report, err) = check_json(&["dataset", "check", tmp.path().to_str().unwrap(), "--format", "json"]);
    assert!(!ok && err.contains("1 error(s)"), "{err}");
    assert!(has(&problems_of(&report, None), &["error", "invalid JSON"]), "{report}");
    let (ok, _, err) = voxplan(&["dataset", "check", tmp.path().join("missing").to_str().unwrap()]);
    assert!(!ok && err.contains("missing") && !err.contains("panicked"), "{err}");
}
