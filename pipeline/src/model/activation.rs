//! The nonlinearity after each norm, from the spec's `ActivationKind`.

use burn::tensor::Tensor;
use burn::tensor::activation::{leaky_relu, relu};
use burn::tensor::backend::Backend;
use voxplan_planner::ActivationKind;

/// Applies the spec's activation (LeakyReLU with its slope, or ReLU).
pub fn activate<B: Backend>(x: Tensor<B, 5>, kind: ActivationKind) -> Tensor<B, 5> {
    match kind {
        ActivationKind::LeakyRelu { negative_slope } => leaky_relu(x, negative_slope),
        ActivationKind::Relu => relu(x),
    }
}
