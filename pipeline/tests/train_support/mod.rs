//! Tiny experiments and run-directory readers shared by the tests that call `train()` itself.
//! Kept tiny (16³ patches, 4–8 features, a few steps): burn's CPU conv3d is slow and the suite must stay quick.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;

use voxplan_pipeline::{DeviceRequest, Experiment, TrainOptions};

/// Compute threads of the tests that train in this process: the project's machines have 2.
pub const TEST_THREADS: usize = 2;

/// A two-stage U-Net on 16³ patches of small in-memory phantoms, `epochs` × 3 steps; `plan_extra` and
/// `train_extra` are TOML lines appended to `[plan]` and `[train]`, `data` replaces the `[data]` body.
pub fn tiny_experiment(epochs: usize, plan_extra: &str, train_extra: &str, data: Option<&str>) -> Experiment {
    let default_data = r#"source = { kind = "phantom", cases = 4, shape = [24, 24, 24], structures = 2, seed = 5 }
validation_fraction = 0.25"#;
    let text = format!(
        r#"
name = "tiny-train-paths"
seed = 3

[network]
in_channels = 1
num_classes = 3
norm = {{ kind = "group", groups = 4 }}
stages = [
  {{ features = 4, stride = [1, 1, 1] }},
  {{ features = 8, stride = [2, 2, 2] }},
]

[plan]
patch_size = [16, 16, 16]
target_effective_batch = 2
optimizer = "sgd"
warmup_steps = 1
{plan_extra}

[data]
{data}

[loader]
workers = 1
queue_length = 4
samples_per_volume = 2

[train]
epochs = {epochs}
steps_per_epoch = 3
validate_every = 1
max_validation_cases = 1
{train_extra}
"#,
        data = data.unwrap_or(default_data)
    );
    Experiment::parse(&text, Path::new("tiny.toml")).expect("the tiny experiment parses")
}

pub fn cpu_options(run_dir: &Path) -> TrainOptions {
    TrainOptions {
        device: DeviceRequest::Cpu,
        devices: None,
        resume: None,
        run_dir: run_dir.to_path_buf(),
        budget_bytes: None,
        stop_after_epochs: None,
        stop: voxplan_pipeline::trainer::StopRequest::new(),
        wait_for_run_dir: std::time::Duration::ZERO,
    }
}

/// Every record of `run/metrics.jsonl`.
pub fn metrics(run: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .expect("metrics.jsonl exists")
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect()
}

/// The step records of a run, in order.
pub fn steps(run: &Path) -> Vec<serde_json::Value> {
    metrics(run).into_iter().filter(|r| r["kind"] == "step").collect()
}

/// Every tensor of `run/weights.safetensors` as f32 values, by name.
pub fn weights(run: &Path) -> BTreeMap<String, Vec<f32>> {
    let bytes = std::fs::read(run.join("weights.safetensors")).expect("weights.safetensors exists");
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

/// Largest absolute difference between two runs' weights, tensor by tensor (same names required).
pub fn max_weight_difference(a: &Path, b: &Path) -> f32 {
    let (wa, wb) = (weights(a), weights(b));
    assert_eq!(wa.keys().collect::<Vec<_>>(), wb.keys().collect::<Vec<_>>());
    wa.iter().flat_map(|(name, x)| x.iter().zip(&wb[name]).map(|(p, q)| (p - q).abs())).fold(0.0, f32::max)
}

/// burn-flex seeds one process-wide RNG (`Backend::seed` → a static `FlexRng`), so trainings on parallel
/// test threads draw each other's initial weights. Tests whose runs are compared, and every test that trains
/// beside them in the same binary, hold this lock while they train.
///
/// The first call also pins rayon's global pool, which flex computes on and the trainer plans for, to
/// [`TEST_THREADS`]: the memory these tests compare is then the same step on any host (every thread holds
/// gemm's L2 slab and a conv gather buffer). Should the pool already exist, the trainer still plans for its
/// real size, so plan and measurement agree either way.
pub fn one_training_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    static PIN: std::sync::Once = std::sync::Once::new();
    PIN.call_once(|| {
        let _ = rayon::ThreadPoolBuilder::new().num_threads(TEST_THREADS).build_global();
    });
    LOCK.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
