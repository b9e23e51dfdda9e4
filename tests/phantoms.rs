//! `voxplan phantoms` end to end: the binary writes an MSD-layout dataset that the library opens again.

use std::process::Command;

use voxplan_volumes::dataset::{Dataset, DatasetSource};
use voxplan_volumes::{CaseSource, nifti};

fn voxplan() -> Command {
    Command::new(env!("CARGO_BIN_EXE_voxplan"))
}

#[test]
fn phantoms_writes_a_dataset_the_loader_can_open() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("Dataset001_Phantoms");
    let status = voxplan()
        .args(["phantoms", "--out"])
        .arg(&out)
        .args([
            "--cases",
            "3",
            "--shape",
            "20",
            "18",
            "10",
            "--spacing",
            "1",
            "1",
            "2.5",
            "--channels",
            "2",
            "--seed",
            "4",
        ])
        .output()
        .unwrap();
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("dataset.json")).unwrap()).unwrap();
    assert_eq!(json["numTraining"], 3);
    assert_eq!(json["file_ending"], ".nii.gz");
    assert_eq!(json["labels"]["background"], 0);
    let header = nifti::read_header(&out.join("imagesTr/phantom_002_0001.nii.gz")).unwrap();
    assert_eq!(header.shape, [20, 18, 10]);
    assert_eq!(header.spacing(), [1.0, 1.0, 2.5]);
    let src = DatasetSource::new(Dataset::open_msd(&out).unwrap()).unwrap();
    let (v, l) = src.load(2).unwrap();
    assert_eq!((v.channels, l.shape), (2, [20, 18, 10]));
    assert!(l.data.contains(&3), "every structure is labelled");
}

#[test]
fn same_seed_writes_identical_bytes_and_bad_arguments_fail_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["a", "b"] {
        let ok = voxplan()
            .args(["phantoms", "--cases", "1", "--shape", "12", "12", "12", "--uncompressed", "--out"])
            .arg(dir.path().join(name))
            .status()
            .unwrap();
        assert!(ok.success());
    }
    let read = |n: &str| std::fs::read(dir.path().join(n).join("imagesTr/phantom_000_0000.nii")).unwrap();
    assert_eq!(read("a"), read("b"));
    let bad = voxplan()
        .args(["phantoms", "--cases", "1", "--shape", "0", "4", "4", "--out"])
        .arg(dir.path().join("c"))
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--shape must be positive"));
}
