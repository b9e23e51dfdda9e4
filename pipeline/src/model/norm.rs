//! The normalization after every conv, as the (already planned) spec says: Batch, Group or Instance.
//!
//! Norms always run in f32: the conv before them casts its output back (see `conv.rs`).

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::{BatchNorm, BatchNormConfig, GroupNorm, GroupNormConfig, InstanceNorm, InstanceNormConfig};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use voxplan_planner::NormKind;

use super::group_norm::group_norm;

/// Added to the variance before the square root, as PyTorch and nnU-Net do.
const NORM_EPSILON: f64 = 1e-5;

#[derive(Config, Debug)]
pub struct NormConfig {
    pub kind: NormKind,
    pub channels: usize,
}

/// One of burn's norms, all with learnable affine parameters.
///
/// BatchNorm uses batch statistics under an autodiff backend and its running statistics after
/// `model.valid()` (burn has no train/eval flag, reference §3).
#[derive(Module, Debug)]
pub enum Norm<B: Backend> {
    Batch(BatchNorm<B>),
    Group(GroupNorm<B>),
    Instance(InstanceNorm<B>),
}

impl NormConfig {
    /// Group counts are checked by `NetworkSpec::validate`; burn asserts divisibility again at init.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Norm<B> {
        match self.kind {
            NormKind::Batch => Norm::Batch(BatchNormConfig::new(self.channels).with_epsilon(NORM_EPSILON).init(device)),
            NormKind::Group { groups } => {
                Norm::Group(GroupNormConfig::new(groups, self.channels).with_epsilon(NORM_EPSILON).init(device))
            }
            NormKind::Instance => {
                Norm::Instance(InstanceNormConfig::new(self.channels).with_epsilon(NORM_EPSILON).init(device))
            }
        }
    }
}

impl<B: Backend> Norm<B> {
    pub fn forward(&self, x: Tensor<B, 5>) -> Tensor<B, 5> {
        match self {
            Norm::Batch(n) => n.forward(x),
            Norm::Group(n) => group_norm(x, affine(&n.gamma), affine(&n.beta), n.num_groups, n.epsilon),
            Norm::Instance(n) => group_norm(x, affine(&n.gamma), affine(&n.beta), n.num_channels, n.epsilon),
        }
    }
}

/// A norm's learnable scale or shift, when it has one.
fn affine<B: Backend>(parameter: &Option<Param<Tensor<B, 1>>>) -> Option<Tensor<B, 1>> {
    parameter.as_ref().map(Param::val)
}
