//! The shipped zoos parse, every network is valid for its patch, and the CPU zoo spans what issue 5 asks:
//! ≥ 16 configurations, depth 3–6, base features 8–32, batch 1–4, f32 and bf16, the three norms,
//! checkpointing and deep supervision on and off, SGD and AdamW, an anisotropic patch, and a hold-out half
//! at least as large as the calibration half.

use std::collections::HashSet;
use std::path::Path;

use voxplan_planner::zoo::{ZooConfig, ZooHalf, load_zoo};
use voxplan_planner::{NormKind, OptimizerKind, Precision};

fn zoo(file: &str) -> Vec<ZooConfig> {
    load_zoo(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/zoo").join(file)).unwrap()
}

fn check_span(z: &[ZooConfig], min_edge: usize, max_edge: usize) {
    assert!(z.len() >= 16, "{} configurations", z.len());
    let holdout = z.iter().filter(|c| c.half == ZooHalf::Holdout).count();
    assert!(2 * holdout >= z.len(), "hold-out {holdout} of {}", z.len());
    let depths: HashSet<usize> = z.iter().map(|c| c.features.len()).collect();
    assert!((3..=6).all(|d| depths.contains(&d)), "{depths:?}");
    let bases: Vec<usize> = z.iter().map(|c| c.features[0]).collect();
    assert!(bases.contains(&8) && bases.iter().any(|&b| b >= 32), "{bases:?}");
    let batches: HashSet<usize> = z.iter().map(|c| c.batch).collect();
    assert!(batches.contains(&1) && batches.contains(&4), "{batches:?}");
    for p in [Precision::F32, Precision::Bf16Mixed] {
        assert!(z.iter().any(|c| c.precision == p), "{p:?}");
    }
    assert!(z.iter().any(|c| c.norm == NormKind::Batch));
    assert!(z.iter().any(|c| c.norm == NormKind::Instance));
    assert!(z.iter().any(|c| matches!(c.norm, NormKind::Group { .. })));
    for flag in [true, false] {
        assert!(z.iter().any(|c| c.checkpointing == flag));
        assert!(z.iter().any(|c| c.deep_supervision == flag));
    }
    assert!(z.iter().any(|c| c.optimizer == OptimizerKind::Sgd));
    assert!(z.iter().any(|c| c.optimizer == OptimizerKind::Adamw));
    assert!(z.iter().any(|c| c.patch[2] * 4 == c.patch[0]), "an anisotropic patch with a thick z axis");
    let edges: Vec<usize> = z.iter().flat_map(|c| c.patch).collect();
    assert!(edges.iter().all(|&e| e >= min_edge.min(16) && e <= max_edge), "{edges:?}");
    assert!(edges.contains(&max_edge));
}

#[test]
fn cpu_zoo_spans_the_issue_and_stays_affordable() {
    check_span(&zoo("cpu.toml"), 16, 64);
}

#[test]
fn cuda_zoo_reaches_the_patches_users_train() {
    let z = zoo("cuda.toml");
    check_span(&z, 32, 160);
    assert!(z.iter().any(|c| c.patch == [128; 3] && c.features[0] >= 32));
    assert!(z.iter().any(|c| c.patch == [128, 128, 32]));
}
