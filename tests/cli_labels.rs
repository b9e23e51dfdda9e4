//! Label maps as they come from the field (issue 14): non-consecutive values (spine codes 21–23, BraTS
//! 0/1/2/4), 0/255 masks, undeclared values, a `num_classes` that disagrees with the dataset, nnU-Net regions,
//! and cases whose axes point different ways. No input panics; every refusal is a one-line error naming the
//! file or field, and predictions come back in the declared values on the input's grid, affine and codes.

mod common;

use std::path::{Path, PathBuf};

use common::voxplan_quiet as voxplan;
use voxplan_volumes::nifti::{
    AxisCodes, DataType, Reorientation, XformCodes, read_header, read_labels, read_volume, write_labels,
    write_labels_with_codes, write_volume, write_volume_with_codes,
};
use voxplan_volumes::phantom::{PhantomSpec, generate};
use voxplan_volumes::{Labels, Volume};

const SPEC: PhantomSpec =
    PhantomSpec { shape: [24, 24, 24], spacing: [1.0, 1.0, 1.0], structures: 3, channels: 1, seed: 5 };

/// A tiny experiment on `data` (the `[data]` body) with `classes` outputs.
fn experiment(dir: &Path, classes: usize, data: &str) -> String {
    let text = format!(
        r#"
name = "labels"
seed = 3
[network]
in_channels = 1
num_classes = {classes}
norm = {{ kind = "group", groups = 4 }}
stages = [{{ features = 4, stride = [1, 1, 1] }}, {{ features = 8, stride = [2, 2, 2] }}]
[plan]
patch_size = [16, 16, 16]
target_effective_batch = 2
warmup_steps = 1
[data]
{data}
validation_fraction = 0.25
[loader]
workers = 1
queue_length = 4
samples_per_volume = 2
[train]
epochs = 1
steps_per_epoch = 2
max_validation_cases = 1
"#
    );
    let path = dir.join(format!("exp-{classes}-{}.toml", text.len()));
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

fn msd_source(root: &Path) -> String {
    format!("source = {{ kind = \"msd\", root = {:?} }}", root.to_string_lossy().replace('\\', "/"))
}

/// Phantom case `i` with class `k` stored as `values[k]`, in the orientation `codes` (its RAS grid permuted
/// and flipped into it).
fn case(i: usize, values: &[u16], codes: AxisCodes) -> (Volume, Labels) {
    let (mut v, mut l) = generate(&SPEC, i);
    v.data.iter_mut().for_each(|x| *x = x.round());
    for x in &mut l.data {
        *x = values[usize::from(*x)];
    }
    match Reorientation::to(&v.affine, v.shape, codes) {
        Some(r) => (r.apply_volume(&v), r.apply_labels(&l)),
        None => (v, l),
    }
}

/// An nnU-Net v2 dataset of `cases` phantoms: `labels_json` is dataset.json's `labels`; case `i` is written
/// by `write(i)` as (image, label map); images declare `codes`.
fn nnunet_dataset(
    root: &Path,
    cases: usize,
    labels_json: serde_json::Value,
    codes: XformCodes,
    write: impl Fn(usize) -> (Volume, Labels),
) -> PathBuf {
    std::fs::create_dir_all(root.join("imagesTr")).unwrap();
    std::fs::create_dir_all(root.join("labelsTr")).unwrap();
    for i in 0..cases {
        let (v, l) = write(i);
        write_volume_with_codes(&root.join(format!("imagesTr/case_{i:03}_0000.nii.gz")), &v, DataType::I16, codes)
            .unwrap();
        write_labels_with_codes(&root.join(format!("labelsTr/case_{i:03}.nii.gz")), &l, DataType::U8, codes).unwrap();
    }
    let json = serde_json::json!({
        "channel_names": {"0": "T1"}, "labels": labels_json, "numTraining": cases, "file_ending": ".nii.gz"
    });
    std::fs::write(root.join("dataset.json"), json.to_string()).unwrap();
    root.to_path_buf()
}

fn spine_labels() -> serde_json::Value {
    serde_json::json!({"background": 0, "L1": 21, "L2": 22, "L3": 23})
}

fn text(out: &std::process::Output) -> (String, String) {
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn assert_ok(out: &std::process::Output) {
    let (o, e) = text(out);
    assert!(out.status.success(), "{o}\n{e}");
}

/// A refusal: non-zero exit, one `error:` line that contains every needle, and no panic.
fn assert_refused(out: &std::process::Output, needles: &[&str]) {
    let (o, e) = text(out);
    assert!(!out.status.success(), "{o}\n{e}");
    assert!(!e.contains("panicked"), "{e}");
    let line = e.lines().find(|l| l.starts_with("error:")).unwrap_or_else(|| panic!("no error line: {e}"));
    for n in needles {
        assert!(line.contains(n), "{n:?} not in {line}");
    }
}

fn train(config: &str, run: &Path) -> std::process::Output {
    voxplan(&["train", "--config", config, "--device", "cpu", "--run-dir", run.to_str().unwrap()])
}

fn predict(run: &Path, input: &Path, output: &Path) -> std::process::Output {
    let (run, input, output) = (run.to_str().unwrap(), input.to_str().unwrap(), output.to_str().unwrap());
    voxplan(&[
        "predict",
        "--checkpoint",
        run,
        "--input",
        input,
        "--output",
        output,
        "--device",
        "cpu",
        "--probabilities",
    ])
}

fn distinct(values: &[u16]) -> Vec<u16> {
    let mut v = values.to_vec();
    v.sort_unstable();
    v.dedup();
    v
}

#[test]
fn spine_codes_train_as_classes_and_come_back_as_codes_with_the_inputs_xform_codes() {
    let tmp = tempfile::tempdir().unwrap();
    // qform 0, sform 2 (aligned), as the spine CT of the issue.
    let codes = XformCodes { qform: 0, sform: 2 };
    let root = nnunet_dataset(&tmp.path().join("Spine"), 4, spine_labels(), codes, |i| {
        case(i, &[0, 21, 22, 23], AxisCodes::RAS)
    });
    let config = experiment(tmp.path(), 4, &msd_source(&root));

    let out = voxplan(&["plan", "--config", &config]);
    assert_ok(&out);
    let (plan, _) = text(&out);
    assert!(plan.contains("4 classes: 0 background, 21 L1, 22 L2, 23 L3"), "{plan}");
    assert!(plan.contains("21→1, 22→2, 23→3"), "{plan}");

    let run = tmp.path().join("run");
    assert_ok(&train(&config, &run));
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let validation: serde_json::Value = metrics
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|r| r["kind"] == "validation")
        .unwrap();
    let names: Vec<&String> = validation["dice_per_class"].as_object().unwrap().keys().collect();
    assert_eq!(names, ["L1", "L2", "L3"], "Dice per class by declared name: {validation}");

    let input = root.join("imagesTr/case_000_0000.nii.gz");
    let out_dir = tmp.path().join("pred");
    assert_ok(&predict(&run, &input, &out_dir));
    let written = out_dir.join("case_000_0000.nii.gz");
    let labels = read_labels(&written).unwrap();
    let values = distinct(&labels.data);
    assert!(values.iter().all(|v| [0, 21, 22, 23].contains(v)), "only declared values: {values:?}");
    let (header, source) = (read_header(&written).unwrap(), read_header(&input).unwrap());
    assert_eq!((header.qform_code, header.sform_code), (0, 2), "the input's codes, not 1/1");
    assert_eq!(header.datatype, DataType::U8);
    assert_eq!(header.affine(), source.affine());
    // The label map is the argmax of the probabilities, channel i standing for the value the sidecar names.
    let sidecar: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("case_000_0000_probabilities.json")).unwrap())
            .unwrap();
    let channel_values: Vec<u16> =
        sidecar["channels"].as_array().unwrap().iter().map(|c| c["value"].as_u64().unwrap() as u16).collect();
    assert_eq!(channel_values, [0, 21, 22, 23]);
    assert_eq!(sidecar["channels"][1]["name"], "L1");
    let probs = read_volume(&out_dir.join("case_000_0000_probabilities.nii.gz")).unwrap();
    assert_eq!(probs.channels, 4);
    let n = probs.voxels();
    for (voxel, &label) in labels.data.iter().enumerate() {
        let best = (0..4).max_by(|&a, &b| probs.data[a * n + voxel].total_cmp(&probs.data[b * n + voxel])).unwrap();
        assert_eq!(label, channel_values[best], "voxel {voxel}");
    }
}

#[test]
fn a_num_classes_that_disagrees_with_the_dataset_is_refused_by_plan_and_train() {
    let tmp = tempfile::tempdir().unwrap();
    let root = nnunet_dataset(&tmp.path().join("Spine"), 3, spine_labels(), XformCodes::default(), |i| {
        case(i, &[0, 21, 22, 23], AxisCodes::RAS)
    });
    // The issue's crash: num_classes = 4 would be right, but a user who counts the foreground gives 3.
    let config = experiment(tmp.path(), 3, &msd_source(&root));
    let needles = ["network.num_classes", "is 3", "4 classes", "21 L1"];
    assert_refused(&voxplan(&["plan", "--config", &config]), &needles);
    let run = tmp.path().join("run");
    assert_refused(&train(&config, &run), &needles);
    assert!(!run.join("checkpoints").exists(), "nothing trained");
}

#[test]
fn an_undeclared_value_fails_the_run_naming_the_file_the_value_and_its_voxels() {
    let tmp = tempfile::tempdir().unwrap();
    // Every mask also holds a few voxels of 5, which dataset.json does not declare.
    let root = nnunet_dataset(&tmp.path().join("Spine"), 3, spine_labels(), XformCodes::default(), |i| {
        let (v, mut l) = case(i, &[0, 21, 22, 23], AxisCodes::RAS);
        l.data[..7].iter_mut().for_each(|x| *x = 5);
        (v, l)
    });
    let config = experiment(tmp.path(), 4, &msd_source(&root));
    let out = train(&config, &tmp.path().join("run"));
    assert_refused(&out, &["labelsTr/case_00", "value 5 in 7 voxels", "0, 21, 22, 23"]);
}

#[test]
fn masks_of_0_and_255_train_as_two_classes_named_from_the_data_or_the_experiment() {
    let tmp = tempfile::tempdir().unwrap();
    let (images, masks) = (tmp.path().join("images"), tmp.path().join("masks"));
    std::fs::create_dir_all(&images).unwrap();
    std::fs::create_dir_all(&masks).unwrap();
    let one = PhantomSpec { structures: 1, ..SPEC };
    for i in 0..4 {
        let (mut v, mut l) = generate(&one, i);
        v.data.iter_mut().for_each(|x| *x = x.round());
        l.data.iter_mut().for_each(|x| *x *= 255);
        write_volume(&images.join(format!("sub{i}_t1.nii.gz")), &v, DataType::I16).unwrap();
        write_labels(&masks.join(format!("sub{i}_mask.nii.gz")), &l, DataType::U8).unwrap();
    }
    let folder = format!(
        "source = {{ kind = \"folder\", images = {:?}, labels = {:?}, image_pattern = \"*_t1.nii.gz\", \
         label_pattern = \"*_mask.nii.gz\" }}",
        images.to_string_lossy().replace('\\', "/"),
        masks.to_string_lossy().replace('\\', "/")
    );
    let found = experiment(tmp.path(), 2, &folder);
    let out = voxplan(&["plan", "--config", &found]);
    assert_ok(&out);
    assert!(text(&out).0.contains("2 classes: 0 background, 255 label_255"), "{}", text(&out).0);
    let named = experiment(tmp.path(), 2, &format!("{folder}\nlabels = {{ background = 0, lesion = 255 }}"));
    let out = voxplan(&["plan", "--config", &named]);
    assert_ok(&out);
    assert!(text(&out).0.contains("2 classes: 0 background, 255 lesion"), "{}", text(&out).0);

    let run = tmp.path().join("run");
    assert_ok(&train(&named, &run));
    let out_dir = tmp.path().join("pred");
    assert_ok(&predict(&run, &images.join("sub0_t1.nii.gz"), &out_dir));
    let values = distinct(&read_labels(&out_dir.join("sub0_t1.nii.gz")).unwrap().data);
    assert!(values.iter().all(|v| [0, 255].contains(v)), "{values:?}");
    // A table that misses a value the masks hold names it when the run reads that mask.
    let partial = experiment(tmp.path(), 2, &format!("{folder}\nlabels = {{ background = 0, lesion = 1 }}"));
    assert_refused(&train(&partial, &tmp.path().join("run2")), &["masks/sub", "value 255 in"]);
}

#[test]
fn brats_values_0_1_2_4_in_the_original_msd_layout_train() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("Task01_BrainTumour");
    std::fs::create_dir_all(root.join("imagesTr")).unwrap();
    std::fs::create_dir_all(root.join("labelsTr")).unwrap();
    let mut training = Vec::new();
    for i in 0..4 {
        let (v, l) = case(i, &[0, 1, 2, 4], AxisCodes::RAS);
        let (image, label) = (format!("imagesTr/BRATS_{i:03}.nii.gz"), format!("labelsTr/BRATS_{i:03}.nii.gz"));
        write_volume(&root.join(&image), &v, DataType::I16).unwrap();
        write_labels(&root.join(&label), &l, DataType::U8).unwrap();
        training.push(serde_json::json!({"image": format!("./{image}"), "label": format!("./{label}")}));
    }
    let json = serde_json::json!({
        "modality": {"0": "FLAIR"},
        "labels": {"0": "background", "1": "edema", "2": "non-enhancing tumor", "4": "enhancing tumour"},
        "numTraining": 4, "training": training,
    });
    std::fs::write(root.join("dataset.json"), json.to_string()).unwrap();
    let config = experiment(tmp.path(), 4, &msd_source(&root));
    let run = tmp.path().join("run");
    assert_ok(&train(&config, &run));
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("checkpoints/last/state.json")).unwrap()).unwrap();
    let recorded: Vec<u64> =
        state["labels"]["classes"].as_array().unwrap().iter().map(|c| c["value"].as_u64().unwrap()).collect();
    assert_eq!(recorded, [0, 1, 2, 4], "the checkpoint records the label space");
}

#[test]
fn nnunet_regions_are_refused_with_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let regions = serde_json::json!({"background": 0, "whole tumour": [1, 2, 3], "core": [2, 3]});
    let root = nnunet_dataset(&tmp.path().join("Regions"), 2, regions, XformCodes::default(), |i| {
        case(i, &[0, 1, 2, 3], AxisCodes::RAS)
    });
    let config = experiment(tmp.path(), 3, &msd_source(&root));
    assert_refused(&voxplan(&["plan", "--config", &config]), &["dataset.json", "region", "not supported"]);
}

#[test]
fn mixed_orientations_are_refused_unless_reoriented_and_predictions_keep_the_inputs_orientation() {
    let tmp = tempfile::tempdir().unwrap();
    let pir = AxisCodes(['P', 'I', 'R']);
    // Case 0 is stored PIR (as the spine CT), the others RAS.
    let root = nnunet_dataset(&tmp.path().join("Mixed"), 4, spine_labels(), XformCodes::default(), |i| {
        case(i, &[0, 21, 22, 23], if i == 0 { pir } else { AxisCodes::RAS })
    });
    let as_stored = experiment(tmp.path(), 4, &msd_source(&root));
    let out = voxplan(&["plan", "--config", &as_stored]);
    assert_refused(&out, &["RAS in 3 case(s)", "PIR in 1 case(s)", "case_000", "orientation = \"ras\""]);
    assert_refused(&train(&as_stored, &tmp.path().join("refused")), &["orientation = \"ras\""]);

    let reoriented = experiment(tmp.path(), 4, &format!("{}\norientation = \"ras\"", msd_source(&root)));
    let run = tmp.path().join("run");
    assert_ok(&train(&reoriented, &run));
    let input = root.join("imagesTr/case_000_0000.nii.gz");
    let out_dir = tmp.path().join("pred");
    assert_ok(&predict(&run, &input, &out_dir));
    let (written, source) = (read_header(&out_dir.join("case_000_0000.nii.gz")).unwrap(), read_header(&input).unwrap());
    assert_eq!(written.shape, source.shape, "the input's grid, not the RAS one");
    assert_eq!(written.affine(), source.affine());
    assert_eq!(AxisCodes::of(&written.affine()), pir);
}
