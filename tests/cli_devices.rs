//! Several devices from the command line (issue 13): `voxplan plan --devices N` plans per device for N
//! devices with the same effective batch, and `voxplan train --devices cpu:2` trains two peers in one
//! process to a finished run directory that rank 0 alone wrote.

mod common;

use common::{voxplan_quiet, voxplan_text};

fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out).expect("the plan is JSON")
}

#[test]
fn plan_for_several_devices_keeps_the_effective_batch_and_says_so() {
    let (ok, one, err) = voxplan_text(&["plan", "--gpu", "H100", "--format", "json"]);
    assert!(ok, "{err}");
    let one = json(&one)["training"].clone();
    for devices in [2usize, 4] {
        let n = devices.to_string();
        let (ok, out, err) = voxplan_text(&["plan", "--gpu", "H100", "--devices", &n, "--format", "json"]);
        assert!(ok, "{err}");
        let report = json(&out);
        let t = &report["training"];
        let (b, a, e) = (
            t["batch_size"].as_u64().unwrap(),
            t["accumulation_steps"].as_u64().unwrap(),
            t["effective_batch"].as_u64().unwrap(),
        );
        assert_eq!(t["devices"].as_u64(), Some(devices as u64));
        assert_eq!(b * devices as u64 * a, e, "{t}");
        let decisions = report["decisions"].as_array().unwrap();
        let said = decisions.iter().find(|d| d["topic"] == "devices").expect("a devices decision");
        let target = one["effective_batch"].as_u64().unwrap();
        if target.is_multiple_of(devices as u64) {
            assert_eq!(e, target, "{devices} devices keep the effective batch");
            assert_eq!(t["learning_rate"], one["learning_rate"], "and so the learning rate");
        } else {
            // The default experiment's target is 2: 4 devices cannot make less than 4, and say so.
            assert_eq!((b, a, e), (1, 1, devices as u64), "{t}");
            assert!(said["reason"].as_str().unwrap().contains("nearest to the target"), "{said}");
        }
        let (ok, text, _) = voxplan_text(&["plan", "--gpu", "H100", "--devices", &n]);
        assert!(ok && text.contains(&format!("{b} × {devices} × {a} = {e}")), "{text}");
    }
    let (ok, _, err) = voxplan_text(&["plan", "--devices", "0"]);
    assert!(!ok && err.contains("--devices"), "{err}");
}

#[test]
fn train_on_two_cpu_peers_finishes_a_run_that_rank_0_wrote() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("tiny.toml");
    std::fs::write(
        &config,
        r#"
name = "tiny-peers"
seed = 4
[network]
in_channels = 1
num_classes = 3
norm = { kind = "group", groups = 4 }
stages = [{ features = 4, stride = [1, 1, 1] }, { features = 8, stride = [2, 2, 2] }]
[plan]
patch_size = [16, 16, 16]
target_effective_batch = 2
optimizer = "sgd"
warmup_steps = 1
[data]
source = { kind = "phantom", cases = 4, shape = [24, 24, 24], structures = 2, seed = 5 }
validation_fraction = 0.5
[loader]
workers = 1
queue_length = 4
samples_per_volume = 2
[train]
epochs = 1
steps_per_epoch = 3
"#,
    )
    .unwrap();
    let run = tmp.path().join("run");
    let (config, run_dir) = (config.to_str().unwrap(), run.to_str().unwrap());
    let out = voxplan_quiet(&["train", "--config", config, "--run-dir", run_dir, "--devices", "cpu:2"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("2 × cpu") && stdout.contains("per device × 2 devices"), "{stdout}");
    let plan = json(&std::fs::read_to_string(run.join("plan.json")).unwrap());
    assert_eq!(plan["training"]["devices"], 2);
    let steps = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let steps: Vec<&str> = steps.lines().filter(|l| l.contains(r#""kind":"step""#)).collect();
    assert_eq!(steps.len(), 3, "one record per step, written once (by rank 0): {steps:?}");
    assert!(run.join("checkpoints").is_dir() && run.join("weights.safetensors").is_file());

    let both = voxplan_quiet(&["train", "--config", config, "--device", "cpu", "--devices", "cpu:2"]);
    assert_eq!(both.status.code(), Some(2), "--device and --devices exclude each other");
    let bad = voxplan_quiet(&["train", "--config", config, "--run-dir", run_dir, "--devices", "cuda:0,cuda:0"]);
    assert_eq!(bad.status.code(), Some(2), "{}", String::from_utf8_lossy(&bad.stderr));
}

/// A dataset on disk (`voxplan phantoms`) whose first two cases `spoil` edits, and a 2-peer experiment on it.
fn spoiled_dataset(dir: &std::path::Path, spoil: impl Fn(&std::path::Path)) -> String {
    let data = dir.join("data");
    let out =
        voxplan_quiet(&["phantoms", "--out", data.to_str().unwrap(), "--cases", "4", "--shape", "24", "24", "24"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut images: Vec<_> = std::fs::read_dir(data.join("imagesTr")).unwrap().map(|e| e.unwrap().path()).collect();
    images.sort();
    images.iter().take(2).for_each(|p| spoil(p));
    let config = dir.join("spoiled.toml");
    std::fs::write(
        &config,
        format!(
            r#"
name = "spoiled"
seed = 4
[network]
in_channels = 1
num_classes = 4
norm = {{ kind = "group", groups = 4 }}
stages = [{{ features = 4, stride = [1, 1, 1] }}, {{ features = 8, stride = [2, 2, 2] }}]
[plan]
patch_size = [16, 16, 16]
target_effective_batch = 2
optimizer = "sgd"
[data]
source = {{ kind = "msd", root = {:?} }}
validation_fraction = 0.25
[loader]
workers = 1
queue_length = 4
samples_per_volume = 1
[train]
epochs = 2
steps_per_epoch = 4
"#,
            data.to_string_lossy()
        ),
    )
    .unwrap();
    config.to_string_lossy().into_owned()
}

/// Runs `voxplan train --devices cpu:2` and fails the test if it has not ended within a minute: a rank that
/// fails must stop the others, never leave them waiting in an all-reduce.
fn train_two_peers(config: &str, run: &std::path::Path) -> (Option<i32>, String) {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_voxplan"))
        .args(["train", "--config", config, "--run-dir", run.to_str().unwrap(), "--devices", "cpu:2"])
        .env("RAYON_NUM_THREADS", common::TEST_THREADS)
        .env("VOXPLAN_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("a 2-peer run with a failing rank did not end within 60 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn a_rank_that_fails_stops_every_rank_with_its_error() {
    let tmp = tempfile::tempdir().unwrap();
    // Cut in half: the rank that opens such a case fails reading it (bad input, exit 2), the other leaves.
    let config = spoiled_dataset(&tmp.path().join("cut"), |p| {
        let bytes = std::fs::read(p).unwrap();
        std::fs::write(p, &bytes[..bytes.len() / 2]).unwrap();
    });
    let (code, err) = train_two_peers(&config, &tmp.path().join("cut-run"));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("imagesTr") && err.lines().any(|l| l.starts_with("error")), "{err}");
    assert!(!err.contains("rank 1: averaging") && !err.contains("another rank failed"), "the cause is reported: {err}");
    // All NaN: only the ranks that draw such a case see a NaN loss; the step's vote stops both (exit 4).
    let config = spoiled_dataset(&tmp.path().join("nan"), |p| {
        let mut v = voxplan_volumes::nifti::read_volume(p).unwrap();
        v.data.iter_mut().for_each(|x| *x = f32::NAN);
        voxplan_volumes::nifti::write_volume(p, &v, voxplan_volumes::nifti::DataType::F32).unwrap();
    });
    let (code, err) = train_two_peers(&config, &tmp.path().join("nan-run"));
    assert_eq!(code, Some(4), "{err}");
    assert!(err.contains("non-finite loss"), "{err}");
}
