//! nnU-Net ResEnc's basic block: conv→norm→act→conv→norm, plus a shortcut, then the activation.
//!
//! The shortcut is the identity when shape and channels are unchanged, else a 1×1×1 conv with the block's
//! stride followed by a norm, so that it can be added to the main path.

use burn::config::Config;
use burn::module::Module;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use voxplan_planner::{ActivationKind, NormKind, Precision};

use crate::model::activation::activate;
use crate::model::conv::{MixedConv3d, MixedConv3dConfig};
use crate::model::conv_block::{ConvBlock, ConvBlockConfig};
use crate::model::norm::{Norm, NormConfig};

#[derive(Config, Debug)]
pub struct ResidualBlockConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    /// Kernel per axis `(x, y, z)` of both main-path convs.
    pub kernel: [usize; 3],
    /// Stride per axis `(x, y, z)` of the first conv and of the shortcut.
    pub stride: [usize; 3],
    pub norm: NormKind,
    pub activation: ActivationKind,
    pub precision: Precision,
}

/// The projection used when the shortcut cannot be the identity.
#[derive(Module, Debug)]
pub struct Projection<B: Backend> {
    pub conv: MixedConv3d<B>,
    pub norm: Norm<B>,
}

#[derive(Module, Debug)]
pub struct ResidualBlock<B: Backend> {
    /// conv → norm → act (carries the stride).
    pub first: ConvBlock<B>,
    /// The second conv and its norm; the activation comes after the sum.
    pub second_conv: MixedConv3d<B>,
    pub second_norm: Norm<B>,
    pub shortcut: Option<Projection<B>>,
    pub activation: ActivationKind,
}

impl ResidualBlockConfig {
    pub fn init<B: Backend>(&self, device: &B::Device) -> ResidualBlock<B> {
        let needs_projection = self.in_channels != self.out_channels || self.stride != [1, 1, 1];
        let shortcut = needs_projection.then(|| Projection {
            conv: MixedConv3dConfig::new(self.in_channels, self.out_channels, [1, 1, 1], self.precision)
                .with_stride(self.stride)
                .init(device),
            norm: NormConfig::new(self.norm, self.out_channels).init(device),
        });
        ResidualBlock {
            first: ConvBlockConfig::new(
                self.in_channels,
                self.out_channels,
                self.kernel,
                self.stride,
                self.norm,
                self.activation,
                self.precision,
            )
            .init(device),
            second_conv: MixedConv3dConfig::new(self.out_channels, self.out_channels, self.kernel, self.precision)
                .init(device),
            second_norm: NormConfig::new(self.norm, self.out_channels).init(device),
            shortcut,
            activation: self.activation,
        }
    }
}

impl<B: Backend> ResidualBlock<B> {
    pub fn forward(&self, x: Tensor<B, 5>) -> Tensor<B, 5> {
        let identity = match &self.shortcut {
            Some(p) => p.norm.forward(p.conv.forward(x.clone())),
            None => x.clone(),
        };
        let y = self.second_norm.forward(self.second_conv.forward(self.first.forward(x)));
        activate(y + identity, self.activation)
    }
}
