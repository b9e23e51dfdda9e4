//! Data-parallel training on CPU peers (`--devices cpu:2`, the same code path as several GPUs): 2 peers ×
//! batch 1 train like 1 device × batch 2 and like 1 device × batch 1 × accumulation 2, for per-sample norms,
//! and the replicas stay bit-identical (the run checks their fingerprints when it ends). Also: a stop
//! requested on a 2-peer run checkpoints and the same run resumes exactly, on 2 peers or on 1.

mod train_support;

use train_support::{cpu_options, max_weight_difference, one_training_at_a_time, steps, tiny_experiment};
use voxplan_pipeline::job_plan::PlanInputs;
use voxplan_pipeline::{DevicesRequest, Experiment, PipelineError, TrainOptions, train};
use voxplan_planner::{DeviceSelector, NormKind};

/// Losses and weights agree to this (f32 sums in another order, through a few SGD steps).
const TOLERANCE: f64 = 1e-5;

/// The tiny experiment with `norm`, two epochs of 3 steps at effective batch 2; half of each global batch
/// forced to contain foreground (1 of 2 patches: the same patches whether one loader draws 2 per batch or 1).
fn experiment(norm: NormKind) -> Experiment {
    let mut exp = tiny_experiment(2, "", "", None);
    exp.network.norm = norm;
    exp.loader.foreground_fraction = 0.5;
    exp
}

fn peers(run: &std::path::Path, n: usize) -> TrainOptions {
    TrainOptions { devices: Some(DevicesRequest::CpuPeers(n)), ..cpu_options(run) }
}

/// The budget just below what batch 2 needs on one device: the planner then takes batch 1 × accumulation 2.
fn batch_1_budget(exp: &Experiment) -> u64 {
    let inputs = PlanInputs::read(exp).unwrap();
    let profile = voxplan_pipeline::device::run_profile(&DeviceSelector::Cpu).unwrap();
    let batch = |b: u64| inputs.plan(&profile, Some(b)).map(|r| r.training.batch_size).unwrap_or(0);
    let (mut lo, mut hi) = (1u64 << 16, 1u64 << 36);
    assert_eq!(batch(hi), 2);
    while hi - lo > 4096 {
        let mid = lo + (hi - lo) / 2;
        if batch(mid) >= 2 { hi = mid } else { lo = mid }
    }
    assert_eq!(batch(lo), 1);
    lo
}

fn losses(run: &std::path::Path) -> Vec<f64> {
    steps(run).iter().map(|s| s["loss"].as_f64().unwrap()).collect()
}

fn assert_same_training(a: &std::path::Path, b: &std::path::Path, what: &str) {
    let (la, lb) = (losses(a), losses(b));
    assert_eq!(la.len(), 6, "{what}");
    assert_eq!(la.len(), lb.len(), "{what}");
    for (x, y) in la.iter().zip(&lb) {
        assert!((x - y).abs() <= TOLERANCE * x.abs().max(1.0), "{what}: loss {x} vs {y} ({la:?} vs {lb:?})");
    }
    let diff = max_weight_difference(a, b);
    assert!(f64::from(diff) <= TOLERANCE, "{what}: weights differ by up to {diff}");
}

fn three_ways(norm: NormKind) {
    let _serial = one_training_at_a_time();
    let exp = experiment(norm);
    let tmp = tempfile::tempdir().unwrap();
    let (two, batch2, accumulated) = (tmp.path().join("two"), tmp.path().join("b2"), tmp.path().join("acc"));

    let p = train(&exp, &peers(&two, 2)).unwrap();
    assert_eq!((p.plan.devices, p.plan.batch_size, p.plan.accumulation_steps, p.plan.effective_batch), (2, 1, 1, 2));
    let b = train(&exp, &cpu_options(&batch2)).unwrap();
    assert_eq!((b.plan.devices, b.plan.batch_size, b.plan.accumulation_steps), (1, 2, 1));
    let budget = batch_1_budget(&exp);
    let a = train(&exp, &TrainOptions { budget_bytes: Some(budget), ..cpu_options(&accumulated) }).unwrap();
    assert_eq!((a.plan.devices, a.plan.batch_size, a.plan.accumulation_steps), (1, 1, 2));

    assert_same_training(&two, &batch2, "2 peers × 1 vs 1 × batch 2");
    assert_same_training(&two, &accumulated, "2 peers × 1 vs 1 × batch 1 × accumulation 2");
    // Validation is sharded over the peers and gathered: the same Dice as one device on (nearly) the same weights.
    let (dp, db) = (p.best_dice.unwrap(), b.best_dice.unwrap());
    assert!((dp - db).abs() <= 1e-4, "validation Dice {dp} vs {db}");
}

#[test]
fn two_peers_train_like_one_device_with_group_norm() {
    three_ways(NormKind::Group { groups: 4 });
}

#[test]
fn two_peers_train_like_one_device_with_instance_norm() {
    three_ways(NormKind::Instance);
}

/// SIGTERM's flag set mid-run on 2 peers: every rank stops at the same step, rank 0 writes the checkpoint,
/// and the same command continues to exactly the weights of an uninterrupted run; continuing on 1 device
/// re-plans for it with the same effective batch.
#[test]
fn a_stopped_two_peer_run_resumes_exactly_on_two_or_on_one() {
    let _serial = one_training_at_a_time();
    let exp = experiment(NormKind::Group { groups: 4 });
    let tmp = tempfile::tempdir().unwrap();
    let whole = tmp.path().join("whole");
    train(&exp, &peers(&whole, 2)).unwrap();

    for resume_on in [2, 1] {
        let run = tmp.path().join(format!("stopped-{resume_on}"));
        let options = peers(&run, 2);
        let stop = options.stop.clone();
        // Stop after the first epoch's steps: the flag is set before training, so the run stops after its
        // first optimizer step, with a mid-epoch checkpoint.
        stop.request();
        let stopped = train(&exp, &options).unwrap_err();
        assert!(matches!(stopped, PipelineError::Interrupted { step: 1, .. }), "{stopped}");
        let again = if resume_on == 2 { peers(&run, 2) } else { cpu_options(&run) };
        let done = train(&exp, &again).unwrap();
        assert_eq!((done.plan.devices, done.plan.effective_batch), (resume_on, 2));
        assert_eq!(done.optimizer_steps, 6);
        assert_same_training(&whole, &run, &format!("stopped on 2 peers, resumed on {resume_on}"));
    }
}
