//! The shipped zoos parse, every network is valid for its patch, and the CPU zoo spans what issue 5 asks:
//! ≥ 16 configurations, depth 3–6, base features 8–32, batch 1–4, f32 and bf16, the three norms,
//! checkpointing and deep supervision on and off, SGD and AdamW, an anisotropic patch, and a hold-out half
//! at least as large as the calibration half.

use std::collections::HashSet;
use std::path::Path;

use voxplan_planner::zoo::{ZooConfig, ZooHalf, load_zoo};
use voxplan_planner::{BlockKind, NormKind, OptimizerKind, Precision};

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

#[test]
fn unusual_cpu_zoo_covers_the_corners_of_the_family() {
    // configs/zoo/cpu-unusual.toml: shapes no other zoo uses, each network valid for its patch.
    let z = zoo("cpu-unusual.toml");
    assert!(z.len() >= 12, "{} configurations", z.len());
    let nets: Vec<_> = z.iter().map(|c| c.network().unwrap()).collect();
    let depths: HashSet<usize> = nets.iter().map(|n| n.stages.len()).collect();
    assert!([1, 2, 7].iter().all(|d| depths.contains(d)), "{depths:?}");
    let has = |f: &dyn Fn(&voxplan_planner::NetworkSpec) -> bool| nets.iter().any(f);
    for convs in [1, 3] {
        assert!(has(&|n| n.stages.iter().any(|s| s.encoder_convs == convs)), "encoder_convs {convs}");
        assert!(has(&|n| n.stages.len() > 1 && n.stages[0].decoder_convs == convs), "decoder_convs {convs}");
    }
    assert!(has(&|n| n.block == BlockKind::Residual && n.stages.iter().all(|s| s.encoder_convs == 1)));
    assert!(has(&|n| n.stages.iter().skip(1).any(|s| s.stride == [1, 1, 1])), "a late stage that keeps resolution");
    assert!(has(&|n| n
        .stages
        .iter()
        .any(|s| s.kernel.contains(&1) && s.stride.iter().zip(s.kernel).any(|(&st, k)| st == 2 && k == 1))));
    for depth in [2, 5] {
        assert!(has(&|n| n.deep_supervision && n.stages.len() == depth), "deep supervision at depth {depth}");
    }
    assert!(has(&|n| n.in_channels == 3));
    assert!(has(&|n| n.num_classes == 2) && has(&|n| n.num_classes == 6));
    assert!(z.iter().any(|c| c.norm == NormKind::Batch && c.batch >= 8), "BatchNorm at a batch it is kept at");
    assert!(z.iter().any(|c| c.precision == Precision::F16Mixed));
    assert!(z.iter().any(|c| c.patch == [32, 32, 8]), "an 8 × 32 × 32 (z, y, x) patch");
    assert!(z.iter().flat_map(|c| c.patch).all(|e| e <= 32), "affordable on 2 cores");
}
