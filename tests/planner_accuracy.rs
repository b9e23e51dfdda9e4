//! The planner against real flex steps measured with the counting allocator (the trainer's own step, via the
//! step probe): the predicted peak within 10 % on tiny configurations, and the batch picked for a budget set
//! between measured peaks runs within that budget while the next larger batch would not (or nearly not).
//!
//! Every probe runs in a fresh `voxplan probe-step` child, as `voxplan bench planner` runs them: the counting
//! allocator is process-wide, and thread-local state a step leaves behind (gemm's per-thread packing slab)
//! would otherwise be below the next probe's baseline in the same process, and other tests' allocations
//! inside its window.

use std::path::Path;

use voxplan_pipeline::ComputeDevice;
use voxplan_pipeline::step_probe::{ProbeRequest, probe_in_child};
use voxplan_planner::accuracy::{MeasuredStep, predict, relative_error};
use voxplan_planner::rules::SAFETY_MARGIN_FRACTION;
use voxplan_planner::zoo::{ZooConfig, parse_zoo};
use voxplan_planner::{
    CheckpointingRequest, CpuHost, DeviceProfile, DeviceSelector, NormKind, OptimizerKind, PlanRequest, PlanSettings,
    Precision, PrecisionRequest, device_profile_with_cpu, plan,
};

/// The largest |relative error| accepted on these tiny configurations (issue 5's worst-case target).
const MAX_ERROR: f64 = 0.10;
/// Compute threads of every probe and of the predictions it is compared with: pinned, so that the same
/// configurations are measured on any host (each thread holds gemm's L2 slab and a conv gather buffer, so a
/// 64-core host would otherwise run a different step), and no more than the project's machines have, since
/// threads that outnumber the cores do not all hold their buffers at once (+9 to +16 % over-prediction
/// measured with 4 threads on 2 cores).
const MEASURING_THREADS: usize = 2;

/// A 3-stage [8, 16, 32] GroupNorm(4) U-Net, f32, SGD, at a cubic patch; tests change fields from here.
fn tiny(name: &str, patch: usize, batch: usize) -> ZooConfig {
    let text = format!(
        r#"[[config]]
        name = "{name}"
        half = "holdout"
        patch = [{patch}, {patch}, {patch}]
        batch = {batch}
        precision = "f32"
        optimizer = "sgd"
        features = [8, 16, 32]
        norm = {{ kind = "group", groups = 4 }}"#
    );
    parse_zoo(&text, name).unwrap().remove(0)
}

fn measure(cfg: &ZooConfig) -> MeasuredStep {
    let req = ProbeRequest {
        warmup_steps: 1,
        measured_steps: 1,
        compute_threads: Some(MEASURING_THREADS),
        ..ProbeRequest::new(cfg.clone(), ComputeDevice::Cpu)
    };
    probe_in_child(Path::new(env!("CARGO_BIN_EXE_voxplan")), &req).unwrap()
}

fn cpu() -> DeviceProfile {
    // Predictions are compared with steps measured on this machine: never a CPU stated for `plan`.
    let here = CpuHost { compute_threads: MEASURING_THREADS, ..CpuHost::this_machine() };
    device_profile_with_cpu(&DeviceSelector::Cpu, here).unwrap()
}

#[test]
fn predicted_peak_is_within_ten_percent_on_tiny_configs() {
    let dev = cpu();
    let configs = [
        tiny("gn-32", 32, 1),
        ZooConfig {
            norm: NormKind::Instance,
            deep_supervision: true,
            optimizer: OptimizerKind::Adamw,
            ..tiny("in-ds-adamw-32", 32, 2)
        },
        ZooConfig { checkpointing: true, precision: Precision::Bf16Mixed, ..tiny("ckpt-bf16-24", 24, 2) },
    ];
    for cfg in configs {
        let p = predict(&cfg, &dev).unwrap();
        let m = measure(&cfg);
        let err = relative_error(p.peak_bytes, m.peak_bytes);
        println!("{}: predicted {} measured {} ({:+.1} %)", cfg.name, p.peak_bytes, m.peak_bytes, 100.0 * err);
        assert!(
            err.abs() <= MAX_ERROR,
            "{}: predicted {} vs measured {} ({:+.1} %)",
            cfg.name,
            p.peak_bytes,
            m.peak_bytes,
            100.0 * err
        );
    }
}

/// Measures batches 1..=4, then for each budget between consecutive measured peaks asks the planner for a
/// batch and checks that it is safe and uses the memory.
fn check_budgets_between_measured_peaks(base: ZooConfig) {
    let dev = cpu();
    let fixed = dev.backend.fixed_overhead_bytes;
    let peaks: Vec<u64> = (1..=4).map(|b| measure(&ZooConfig { batch: b, ..base.clone() }).peak_bytes).collect();
    println!("{}: measured peaks at batch 1..4: {peaks:?}", base.name);
    for b in 1..4 {
        // A heap budget halfway between batch b and b + 1; the planner's budget covers the process's fixed
        // overhead too and keeps its safety margin, so the raw budget handed to it is scaled back up.
        let heap_budget = (peaks[b - 1] + peaks[b]) / 2;
        let raw = ((heap_budget + fixed) as f64 / (1.0 - SAFETY_MARGIN_FRACTION)).floor() as u64;
        let settings = PlanSettings {
            patch_size: base.patch,
            target_effective_batch: 64,
            precision: PrecisionRequest::F32,
            optimizer: base.optimizer,
            checkpointing: if base.checkpointing { CheckpointingRequest::Always } else { CheckpointingRequest::Never },
            ..PlanSettings::default()
        };
        let report = plan(&PlanRequest {
            network: base.network().unwrap(),
            settings,
            device: dev.clone(),
            budget_bytes: Some(raw),
            median_shape: None,
            devices: 1,
        })
        .unwrap();
        let chosen = report.training.batch_size;
        assert!((1..=4).contains(&chosen), "{}: budget {heap_budget}: batch {chosen}", base.name);
        let used = peaks[chosen - 1];
        assert!(used <= heap_budget, "{}: batch {chosen} measured {used} > budget {heap_budget}", base.name);
        if chosen < 4 {
            let next = peaks[chosen];
            assert!(
                next > heap_budget || (heap_budget - next) as f64 <= MAX_ERROR * heap_budget as f64,
                "{}: budget {heap_budget}: chose {chosen}, but batch {} ({next}) fits with more than 10 % to spare",
                base.name,
                chosen + 1
            );
        }
    }
}

#[test]
fn batch_chosen_for_a_budget_between_measured_peaks_fits_and_uses_it() {
    check_budgets_between_measured_peaks(tiny("budget-gn-24", 24, 1));
    check_budgets_between_measured_peaks(ZooConfig {
        checkpointing: true,
        norm: NormKind::Instance,
        ..tiny("budget-in-ckpt-16", 16, 1)
    });
}
