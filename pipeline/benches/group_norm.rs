//! GroupNorm forward + backward on burn flex: burn-nn's `GroupNorm::forward` against voxplan's
//! `model::group_norm` on the same module, input and loss, at the default experiment's three U-Net levels.
//!
//! `cargo bench -p voxplan-pipeline --bench group_norm`; figures in docs/benchmarks.md.

use std::time::Instant;

use burn::backend::{Autodiff, Flex};
use burn::nn::{GroupNorm, GroupNormConfig};
use burn::tensor::{Distribution, Tensor};
use voxplan_pipeline::model::group_norm::group_norm;

type B = Autodiff<Flex>;

/// Timed forward + backward passes per case (after one warm-up pass of each).
const REPEATS: usize = 30;
/// The default experiment's norm inputs at batch 2: `[B, C, z, y, x]` of levels 1–3, eight groups.
const CASES: [[usize; 5]; 3] = [[2, 8, 32, 32, 32], [2, 16, 16, 16, 16], [2, 32, 8, 8, 8]];
const GROUPS: usize = 8;

/// Milliseconds per forward + backward, median over `REPEATS`.
fn time(norm: &GroupNorm<B>, x: &Tensor<B, 5>, weights: &Tensor<B, 5>, ours: bool) -> f64 {
    let pass = || {
        let y = if ours {
            let (gamma, beta) = (norm.gamma.as_ref().map(|p| p.val()), norm.beta.as_ref().map(|p| p.val()));
            group_norm(x.clone(), gamma, beta, norm.num_groups, norm.epsilon)
        } else {
            norm.forward(x.clone())
        };
        let grads = (y * weights.clone()).sum().backward();
        x.grad(&grads).map(|g| g.into_data())
    };
    pass();
    let mut ms: Vec<f64> = (0..REPEATS)
        .map(|_| {
            let start = Instant::now();
            pass();
            start.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    ms.sort_by(f64::total_cmp);
    ms[REPEATS / 2]
}

fn main() {
    let device = Default::default();
    println!("| input [B, C, z, y, x] | burn-nn GroupNorm | voxplan group_norm | speed-up |");
    println!("| --- | --- | --- | --- |");
    for dims in CASES {
        let norm = GroupNormConfig::new(GROUPS, dims[1]).init::<B>(&device);
        let x = Tensor::<B, 5>::random(dims, Distribution::Normal(0.0, 1.0), &device).require_grad();
        let weights = Tensor::<B, 5>::random(dims, Distribution::Normal(0.0, 1.0), &device);
        let theirs = time(&norm, &x, &weights, false);
        let ours = time(&norm, &x, &weights, true);
        println!("| {dims:?} | {theirs:.2} ms | {ours:.2} ms | {:.1}× |", theirs / ours);
    }
}
