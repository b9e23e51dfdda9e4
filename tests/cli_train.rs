//! End-to-end `voxplan train` on the CPU: a tiny network on small phantoms, a few real burn steps.

mod common;

use common::voxplan_quiet as voxplan;
use std::path::Path;

/// A network and data small enough that a 2-core CPU trains two short epochs in seconds.
const TINY_EXPERIMENT: &str = r#"
name = "tiny"
seed = 3

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
optimizer = "sgd"
warmup_steps = 2

[data]
source = { kind = "phantom", cases = 4, shape = [24, 24, 24], structures = 2, seed = 5 }
validation_fraction = 0.25

[loader]
workers = 1
queue_length = 4
samples_per_volume = 2

[train]
epochs = 2
steps_per_epoch = 3
validate_every = 1
"#;

fn write_config(dir: &Path, text: &str) -> String {
    let path = dir.join("tiny.toml");
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

fn metrics(run: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn step_losses(run: &Path) -> Vec<(u64, f64)> {
    metrics(run)
        .iter()
        .filter(|r| r["kind"] == "step")
        .map(|r| (r["step"].as_u64().unwrap(), r["loss"].as_f64().unwrap()))
        .collect()
}

#[test]
fn trains_validates_checkpoints_and_logs_every_step() {
    let tmp = tempfile::tempdir().unwrap();
    let config = write_config(tmp.path(), TINY_EXPERIMENT);
    let run = tmp.path().join("run");
    let out = voxplan(&["train", "--config", &config, "--device", "cpu", "--run-dir", run.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("best Dice"), "{stdout}");

    let records = metrics(&run);
    let steps: Vec<_> = records.iter().filter(|r| r["kind"] == "step").collect();
    assert_eq!(steps.len(), 6, "2 epochs × 3 steps");
    for s in &steps {
        assert!(s["loss"].as_f64().unwrap().is_finite());
        assert!(s["lr"].as_f64().unwrap() > 0.0);
        assert!(s["samples_per_s"].as_f64().unwrap() > 0.0);
        assert!(s["waited_for_data_s"].as_f64().unwrap() >= 0.0);
        // The counting allocator saw at least the network's activations, and the plan is logged beside it.
        assert!(s["peak_memory_measured_bytes"].as_u64().unwrap() > 100_000, "{s}");
        assert!(s["peak_memory_planned_bytes"].as_u64().unwrap() > 0);
    }
    let validations: Vec<_> = records.iter().filter(|r| r["kind"] == "validation").collect();
    assert_eq!(validations.len(), 2);
    let dice = validations[1]["dice"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&dice), "{dice}");

    for slot in ["last", "best"] {
        let dir = run.join("checkpoints").join(slot);
        for f in ["model.mpk", "optimizer.mpk", "state.json"] {
            assert!(dir.join(f).is_file(), "{}", dir.join(f).display());
        }
    }
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("checkpoints/last/state.json")).unwrap()).unwrap();
    assert_eq!(state["epochs_done"], 2);
    assert_eq!(state["optimizer_steps"], 6);
    assert!(run.join("plan.json").is_file());
    // No temporary checkpoint directories are left behind.
    let leftovers: Vec<_> = std::fs::read_dir(run.join("checkpoints"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.') || n.ends_with(".old"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // The exported safetensors file is a valid safetensors file holding every parameter as f32.
    let bytes = std::fs::read(run.join("weights.safetensors")).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
    let tensors: Vec<_> = header.as_object().unwrap().iter().filter(|(k, _)| *k != "__metadata__").collect();
    assert!(tensors.len() >= 10, "{header}");
    let mut end_max = 0;
    for (name, t) in &tensors {
        assert_eq!(t["dtype"], "F32", "{name}");
        let shape: usize = t["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).product();
        let off = t["data_offsets"].as_array().unwrap();
        let (a, b) = (off[0].as_u64().unwrap() as usize, off[1].as_u64().unwrap() as usize);
        assert_eq!(b - a, shape * 4, "{name}");
        end_max = end_max.max(b);
    }
    assert_eq!(8 + header_len + end_max, bytes.len());
    assert!(header["__metadata__"]["voxplan_plan"].as_str().unwrap().contains("patch_size"));
}

#[test]
fn one_epoch_plus_resume_equals_two_epochs() {
    let tmp = tempfile::tempdir().unwrap();
    let config = write_config(tmp.path(), TINY_EXPERIMENT);
    let whole = tmp.path().join("whole");
    let split = tmp.path().join("split");
    let ok = |o: std::process::Output| {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    ok(voxplan(&["train", "--config", &config, "--device", "cpu", "--run-dir", whole.to_str().unwrap()]));
    ok(voxplan(&[
        "train",
        "--config",
        &config,
        "--device",
        "cpu",
        "--run-dir",
        split.to_str().unwrap(),
        "--stop-after-epochs",
        "1",
    ]));
    let half: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(split.join("checkpoints/last/state.json")).unwrap()).unwrap();
    assert_eq!(half["epochs_done"], 1);
    ok(voxplan(&["train", "--config", &config, "--device", "cpu", "--resume", split.to_str().unwrap()]));

    let (a, b) = (step_losses(&whole), step_losses(&split));
    assert_eq!(a.len(), 6);
    assert_eq!(b.len(), 6, "the resumed run appends to the same metrics file");
    for ((sa, la), (sb, lb)) in a.iter().zip(&b) {
        assert_eq!(sa, sb);
        assert!((la - lb).abs() <= 1e-6 * la.abs().max(1.0), "step {sa}: {la} vs {lb}");
    }
    // The exported weights agree too, tensor by tensor (`model.mpk` files differ in their random parameter
    // ids, so they are not compared byte for byte).
    let (ta, tb) = (safetensors_tensors(&whole), safetensors_tensors(&split));
    assert!(!ta.is_empty());
    assert_eq!(ta.keys().collect::<Vec<_>>(), tb.keys().collect::<Vec<_>>());
    for (name, a) in &ta {
        let b = &tb[name];
        assert_eq!(a.len(), b.len(), "{name}");
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() <= 1e-6, "{name}: {x} vs {y}");
        }
    }
}

/// Every tensor of `run/weights.safetensors` as f32 values, by name.
fn safetensors_tensors(run: &Path) -> std::collections::BTreeMap<String, Vec<f32>> {
    let bytes = std::fs::read(run.join("weights.safetensors")).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
    let data = &bytes[8 + header_len..];
    header
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| *k != "__metadata__")
        .map(|(k, t)| {
            let off = t["data_offsets"].as_array().unwrap();
            let (a, b) = (off[0].as_u64().unwrap() as usize, off[1].as_u64().unwrap() as usize);
            let values = data[a..b].chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
            (k.clone(), values)
        })
        .collect()
}

#[test]
fn bad_device_and_missing_checkpoint_fail_with_a_clear_message() {
    let out = voxplan(&["train", "--device", "tpu"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("tpu"));
    let tmp = tempfile::tempdir().unwrap();
    let out = voxplan(&["train", "--device", "cpu", "--resume", tmp.path().to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no checkpoint") && err.contains(tmp.path().to_str().unwrap()), "{err}");
}
