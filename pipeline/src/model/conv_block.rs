//! conv → norm → activation: the plain layer of encoder and decoder stages.

use burn::config::Config;
use burn::module::Module;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use voxplan_planner::{ActivationKind, NormKind, Precision};

use crate::model::activation::activate;
use crate::model::conv::{MixedConv3d, MixedConv3dConfig};
use crate::model::norm::{Norm, NormConfig};

#[derive(Config, Debug)]
pub struct ConvBlockConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    /// Kernel per axis `(x, y, z)`.
    pub kernel: [usize; 3],
    /// Stride per axis `(x, y, z)`.
    pub stride: [usize; 3],
    pub norm: NormKind,
    pub activation: ActivationKind,
    pub precision: Precision,
}

#[derive(Module, Debug)]
pub struct ConvBlock<B: Backend> {
    pub conv: MixedConv3d<B>,
    pub norm: Norm<B>,
    pub activation: ActivationKind,
}

impl ConvBlockConfig {
    pub fn init<B: Backend>(&self, device: &B::Device) -> ConvBlock<B> {
        ConvBlock {
            conv: MixedConv3dConfig::new(self.in_channels, self.out_channels, self.kernel, self.precision)
                .with_stride(self.stride)
                .init(device),
            norm: NormConfig::new(self.norm, self.out_channels).init(device),
            activation: self.activation,
        }
    }
}

impl<B: Backend> ConvBlock<B> {
    pub fn forward(&self, x: Tensor<B, 5>) -> Tensor<B, 5> {
        activate(self.norm.forward(self.conv.forward(x)), self.activation)
    }
}
