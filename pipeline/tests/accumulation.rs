//! Gradient accumulation is exact for per-sample norms: k micro-batches, each loss divided by k and summed
//! by burn's `GradientsAccumulator`, give the gradients of one batch holding the same samples.
//!
//! Why it holds: the CE term is a mean over voxels and the Dice term a mean over (sample, class) pairs, so
//! the batch loss is the mean of the micro-batch losses when the micro-batches are equal-sized; GroupNorm and
//! InstanceNorm normalise each sample on its own, so no term couples samples of different micro-batches.
//! BatchNorm couples them through batch statistics, which the negative control below shows.

mod model_support;

use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::Tensor;
use model_support::{HostGradients, Train, batch, gradients_of, max_relative_difference, spec};
use voxplan_pipeline::loss::DiceCeLoss;
use voxplan_pipeline::model::{UNet, UNetConfig};
use voxplan_planner::{NormKind, Precision};

const SAMPLES: usize = 4;
const MICRO_BATCHES: usize = 2;
/// f32 sums in a different order: differences of a few ulps relative to each tensor's largest gradient.
const TOLERANCE: f32 = 1e-4;

/// (one-batch gradients, accumulated gradients) for the same model and samples.
fn both_ways(norm: NormKind) -> (HostGradients, HostGradients) {
    let device = Default::default();
    let net: UNet<Train> = UNetConfig::new(spec(&[4, 8], norm), Precision::F32).init(&device);
    let (x, y) = batch::<Train>(SAMPLES, [16, 16, 16], &device);
    let loss_fn = DiceCeLoss::new(3, None);

    let whole = loss_fn.forward(&net.forward(x.clone()), y.clone());
    let whole_grads = GradientsParams::from_grads(whole.backward(), &net);

    let mut accumulator = GradientsAccumulator::<UNet<Train>>::new();
    let per = SAMPLES / MICRO_BATCHES;
    for m in 0..MICRO_BATCHES {
        let xs: Tensor<Train, 5> = x.clone().narrow(0, m * per, per);
        let ys = y.clone().narrow(0, m * per, per);
        let loss = loss_fn.forward(&net.forward(xs), ys).div_scalar(MICRO_BATCHES as f32);
        accumulator.accumulate(&net, GradientsParams::from_grads(loss.backward(), &net));
    }
    let accumulated = accumulator.grads();
    (gradients_of(&net, &whole_grads), gradients_of(&net, &accumulated))
}

#[test]
fn group_norm_accumulation_matches_one_batch() {
    let (whole, accumulated) = both_ways(NormKind::Group { groups: 2 });
    let diff = max_relative_difference(&accumulated, &whole);
    assert!(diff < TOLERANCE, "GroupNorm: worst relative gradient difference {diff}");
}

#[test]
fn instance_norm_accumulation_matches_one_batch() {
    let (whole, accumulated) = both_ways(NormKind::Instance);
    let diff = max_relative_difference(&accumulated, &whole);
    assert!(diff < TOLERANCE, "InstanceNorm: worst relative gradient difference {diff}");
}

/// Negative control: the comparison is sensitive enough to see BatchNorm's cross-sample coupling.
#[test]
fn batch_norm_accumulation_differs_as_expected() {
    let (whole, accumulated) = both_ways(NormKind::Batch);
    let diff = max_relative_difference(&accumulated, &whole);
    assert!(diff > 100.0 * TOLERANCE, "BatchNorm unexpectedly matched: {diff}");
}
