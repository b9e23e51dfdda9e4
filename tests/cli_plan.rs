//! End-to-end `voxplan plan`: the default experiment on this CPU, every output format, a GPU from the
//! table, and bad input failing with a message that names the field.

mod common;

use common::voxplan_text as voxplan;

fn write_config(dir: &tempfile::TempDir, from: &str, to: &str) -> String {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/configs/default.toml")).unwrap();
    assert!(text.contains(from), "default.toml no longer contains {from:?}");
    let path = dir.path().join("exp.toml");
    std::fs::write(&path, text.replace(from, to)).unwrap();
    path.to_string_lossy().into_owned()
}

#[test]
fn no_arguments_plans_the_default_experiment_on_this_cpu() {
    let (ok, out, err) = voxplan(&["plan"]);
    assert!(ok, "{err}");
    assert!(out.contains("Decisions") && out.contains("because") && out.contains("Memory versus batch"), "{out}");
    // The default asks for BatchNorm at a small batch: the planner swaps it and says why.
    assert!(out.contains("group(8) instead of batch"), "{out}");
}

#[test]
fn json_report_parses_and_fits_the_budget() {
    let (ok, out, err) = voxplan(&["plan", "--gpu", "T4", "--format", "json"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["training"]["precision"], "f16_mixed");
    assert!(v["training"]["predicted_peak_bytes"].as_u64().unwrap() <= v["budget"]["usable_bytes"].as_u64().unwrap());
    for f in ["markdown", "html"] {
        let (ok, out, err) = voxplan(&["plan", "--gpu", "H100", "--format", f]);
        assert!(ok && !out.is_empty(), "{f}: {err}");
    }
    let (ok, out, err) = voxplan(&["plan", "--gpu", "a100", "--mode", "inference", "--volume-shape", "200,200,120"]);
    assert!(ok && out.contains("windows"), "{err}");
}

#[test]
fn bad_input_fails_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (vec!["plan", "--gpu", "GTX-480"], "GTX-480"),
        (vec!["plan", "--budget", "lots"], "--budget"),
        (vec!["plan", "--budget", "1MiB"], "a budget of at least"),
    ];
    for (args, needle) in cases {
        let (ok, _, err) = voxplan(&args);
        assert!(!ok && err.contains(needle), "{args:?}: {err}");
    }
    let files = [
        ("patch_size = [32, 32, 32]", "patch_size = [32, 30, 32]", "patch_size"),
        ("in_channels = 1", "in_channels = 0", "network.in_channels"),
        ("norm = { kind = \"batch\" }", "norm = { kind = \"group\", groups = 3 }", "network.norm.groups"),
        ("features = 8,", "features = 0,", "features"),
    ];
    for (from, to, needle) in files {
        let cfg = write_config(&dir, from, to);
        let (ok, _, err) = voxplan(&["plan", "--config", &cfg]);
        assert!(!ok && err.contains(needle), "{to}: {err}");
    }
}

#[test]
fn an_on_disk_dataset_is_planned_from_its_median_shape_read_from_headers() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("Task01_Thin");
    let data_str = data.to_string_lossy().into_owned();
    // Thick slices: 40×40×12 voxels at 1×1×3 mm; resampled to 1.5 mm in z the median grid is 40×40×24.
    let (ok, _, err) = voxplan(&[
        "phantoms",
        "--out",
        &data_str,
        "--cases",
        "4",
        "--shape",
        "40",
        "40",
        "12",
        "--spacing",
        "1",
        "1",
        "3",
    ]);
    assert!(ok, "{err}");
    let source = format!(
        "source = {{ kind = \"msd\", root = {:?} }}\ntarget_spacing = [1.0, 1.0, 1.5]",
        data_str.replace('\\', "/")
    );
    let config = write_config(
        &dir,
        "source = { kind = \"phantom\", cases = 24, shape = [48, 48, 48], structures = 3, seed = 7 }",
        &source,
    );
    let (ok, out, err) = voxplan(&["plan", "--config", &config, "--mode", "inference"]);
    assert!(ok, "{err}");
    assert!(out.contains("volume           [40, 40, 24]"), "the inference plan covers the median case: {out}");
    // Just below the smallest budget that still plans the whole 32³ patch (found from the plans themselves,
    // so the test holds whatever the host's cache and thread count make a step cost), the planner shrinks the
    // axis with the largest patch/median ratio: z.
    let plan_at = |budget: u64| -> [u64; 3] {
        let (ok, out, err) =
            voxplan(&["plan", "--config", &config, "--budget", &budget.to_string(), "--format", "json"]);
        if !ok {
            assert!(err.contains("nothing fits"), "{err}");
            return [0; 3];
        }
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let patch = v["training"]["patch_size"].as_array().unwrap();
        [0, 1, 2].map(|i| patch[i].as_u64().unwrap())
    };
    let whole = |budget| plan_at(budget) == [32, 32, 32];
    let (mut lo, mut hi) = (1u64 << 20, 1u64 << 40);
    assert!(whole(hi) && !whole(lo));
    while hi - lo > hi / 200 {
        let mid = lo + (hi - lo) / 2;
        if whole(mid) { hi = mid } else { lo = mid }
    }
    let patch = plan_at(lo);
    assert!(patch[2] < 32 && patch[2] > 0 && patch[0] == 32 && patch[1] == 32, "shrinks z first at {lo} B: {patch:?}");
}

/// `voxplan plan` for a CPU other than this one: the stated L2 share and thread count replace the machine's,
/// the report says so, and the step grows with the threads (each holds gemm's slab and a conv gather).
#[test]
fn a_stated_cpu_is_planned_for_and_named_and_a_bad_statement_is_an_error() {
    let plan_json = |env: &[(&str, &str)]| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_voxplan"));
        command.args(["plan", "--format", "json"]).env_remove("VOXPLAN_CPU_L2").env_remove("VOXPLAN_CPU_THREADS");
        let out = command.envs(env.iter().copied()).output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let peak = |text: &str| -> (u64, serde_json::Value) {
        let v: serde_json::Value = serde_json::from_str(text).unwrap();
        (v["training"]["predicted_peak_bytes"].as_u64().unwrap(), v["device"]["cpu"].clone())
    };
    let (ok, small, err) = plan_json(&[("VOXPLAN_CPU_L2", "1MiB"), ("VOXPLAN_CPU_THREADS", "2")]);
    assert!(ok, "{err}");
    let (ok, large, err) = plan_json(&[("VOXPLAN_CPU_L2", "2MiB"), ("VOXPLAN_CPU_THREADS", "16")]);
    assert!(ok, "{err}");
    let ((small, small_cpu), (large, large_cpu)) = (peak(&small), peak(&large));
    assert_eq!(small_cpu["l2_bytes_per_core"], 1 << 20);
    assert_eq!(large_cpu["compute_threads"], 16);
    assert_eq!(
        (large_cpu["l2_source"].as_str(), large_cpu["threads_source"].as_str()),
        (Some("stated"), Some("stated"))
    );
    // gemm's slabs alone: 16 × 2 MiB instead of 2 × 1 MiB; 14 more conv gathers in flight come on top.
    let slabs = (16 * 2 - 2) << 20;
    assert!(large >= small + slabs, "{small} → {large}");
    let (ok, _, err) = plan_json(&[("VOXPLAN_CPU_THREADS", "zero")]);
    assert!(!ok && err.contains("VOXPLAN_CPU_THREADS") && err.contains("zero"), "{err}");
    let (ok, _, err) = plan_json(&[("VOXPLAN_CPU_L2", "big")]);
    assert!(!ok && err.contains("VOXPLAN_CPU_L2"), "{err}");
}
