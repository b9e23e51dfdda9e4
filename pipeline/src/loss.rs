//! nnU-Net's training loss: soft Dice + cross-entropy, weighted 1:1, summed over deep-supervision outputs.
//!
//! - Cross-entropy: mean over the voxels that are not `ignore_label`.
//! - Dice: per sample and per class (batch dice off), foreground classes only, smooth 1e-5 in numerator and
//!   denominator, ignored voxels masked out of prediction and target. nnU-Net adds `-mean(dice)` (minimum
//!   -1); this adds `1 - mean(dice)` so that a perfect prediction scores ≈ 0. The gradients are identical.
//! - Deep supervision: output `i` (0 = full resolution) has weight 1/2^i, normalised to sum 1; labels are
//!   downsampled to each output by nearest neighbour (strided slicing), as nnU-Net does for its targets.

use burn::tensor::activation::log_softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Slice, Tensor};

/// nnU-Net's Dice smoothing: keeps the ratio finite when a class is absent in both prediction and target.
pub const DICE_SMOOTH: f64 = 1e-5;

/// Dice + CE with optional ignore label; see the module docs.
#[derive(Debug, Clone, PartialEq)]
pub struct DiceCeLoss {
    /// Classes including background (class 0, excluded from the Dice term).
    pub num_classes: usize,
    /// Label value whose voxels contribute nothing (e.g. unannotated regions).
    pub ignore_label: Option<u16>,
}

/// Deep-supervision weights for `outputs` heads: 1/2^i normalised to sum 1 (nnU-Net's scheme, whose
/// zero-weighted lowest-resolution output is never built).
pub fn deep_supervision_weights(outputs: usize) -> Vec<f64> {
    let raw: Vec<f64> = (0..outputs).map(|i| 0.5f64.powi(i as i32)).collect();
    let total: f64 = raw.iter().sum();
    raw.into_iter().map(|w| w / total).collect()
}

/// Nearest-neighbour downsampling of `[N, z, y, x]` labels to `target` `[z', y', x']` by taking every
/// `z / z'`-th voxel per axis starting at 0. Each factor is an integer because patch edges are multiples of
/// the network's total stride.
pub fn downsample_labels<B: Backend>(labels: Tensor<B, 4, Int>, target: [usize; 3]) -> Tensor<B, 4, Int> {
    let [_, z, y, x] = labels.dims();
    if [z, y, x] == target {
        return labels;
    }
    let step = |full: usize, small: usize| (full / small.max(1)).max(1) as isize;
    labels.slice([
        Slice::new(0, None, 1),
        Slice::new(0, None, step(z, target[0])),
        Slice::new(0, None, step(y, target[1])),
        Slice::new(0, None, step(x, target[2])),
    ])
}

impl DiceCeLoss {
    pub fn new(num_classes: usize, ignore_label: Option<u16>) -> Self {
        Self { num_classes, ignore_label }
    }

    /// `outputs`: logits `[N, C, z, y, x]`, full resolution first. `labels`: `[N, z, y, x]` class indices.
    /// Returns the weighted loss, shape `[1]`.
    pub fn forward<B: Backend>(&self, outputs: &[Tensor<B, 5>], labels: Tensor<B, 4, Int>) -> Tensor<B, 1> {
        let weights = deep_supervision_weights(outputs.len());
        let mut total: Option<Tensor<B, 1>> = None;
        for (logits, w) in outputs.iter().zip(weights) {
            let [_, _, z, y, x] = logits.dims();
            let target = downsample_labels(labels.clone(), [z, y, x]);
            let term = self.single(logits.clone(), target).mul_scalar(w);
            total = Some(match total {
                Some(t) => t + term,
                None => term,
            });
        }
        match total {
            Some(t) => t,
            None => Tensor::zeros([1], &labels.device()),
        }
    }

    /// Dice + CE of one output against labels of the same spatial shape.
    fn single<B: Backend>(&self, logits: Tensor<B, 5>, labels: Tensor<B, 4, Int>) -> Tensor<B, 1> {
        let [n, c, z, y, x] = logits.dims();
        // 1 where the voxel counts, 0 where it carries the ignore label; ignored labels become 0 so that
        // one-hot encoding stays in range (the mask removes them from both terms).
        let (labels, valid) = match self.ignore_label {
            Some(ignore) => {
                let ignored = labels.clone().equal_elem(ignore as i64);
                (labels.mask_fill(ignored.clone(), 0), ignored.bool_not().float())
            }
            None => (labels.clone(), Tensor::<B, 4>::ones([n, z, y, x], &labels.device())),
        };
        let valid = valid.unsqueeze_dim::<5>(1); // [N, 1, z, y, x]
        let one_hot: Tensor<B, 5> = labels.one_hot_fill::<5>(c, 1.0, 0.0, 1).float();

        let log_p = log_softmax(logits, 1);
        let valid_voxels = valid.clone().sum().clamp_min(1.0);
        let ce = (log_p.clone() * one_hot.clone() * valid.clone()).sum().neg() / valid_voxels;

        let p = log_p.exp() * valid.clone();
        let one_hot = one_hot * valid;
        let flat = |t: Tensor<B, 5>| t.reshape([n as i32, c as i32, -1]);
        let intersection = flat(p.clone() * one_hot.clone()).sum_dim(2); // [N, C, 1]
        let denominator = flat(p).sum_dim(2) + flat(one_hot).sum_dim(2);
        let dice = (intersection.mul_scalar(2.0).add_scalar(DICE_SMOOTH)) / denominator.add_scalar(DICE_SMOOTH);
        let foreground_dice = dice.slice([Slice::new(0, None, 1), Slice::new(1, None, 1), Slice::new(0, None, 1)]);
        let dice_loss = foreground_dice.mean().neg().add_scalar(1.0);
        ce + dice_loss
    }
}
