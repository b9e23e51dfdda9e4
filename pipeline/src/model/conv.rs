//! A 3D convolution that computes in the run's precision while its parameters stay f32.
//!
//! Under mixed precision the input, weight and bias are cast to bf16/f16 for the convolution and the
//! result is cast back to f32, so the norm and activation that follow run in f32 (flex panics on mixed-dtype
//! ops, and norms in half precision lose accuracy, reference §3 and §5). The casts are differentiable, so
//! the f32 weights receive f32 gradients.

use burn::config::Config;
use burn::module::Module;
use burn::nn::PaddingConfig3d;
use burn::nn::conv::{Conv3d, Conv3dConfig};
use burn::tensor::backend::Backend;
use burn::tensor::module::conv3d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{FloatDType, Tensor};
use voxplan_planner::Precision;

use crate::model::burn_axes;
use crate::precision::compute_dtype;

/// A conv with kernel `k` along an axis pads `k / 2` on both sides, so a stride-1 conv keeps the shape and
/// a stride-2 conv halves an even edge exactly (burn's `Same` panics on the latter, reference §2).
fn half_kernel_padding(kernel: [usize; 3]) -> [usize; 3] {
    kernel.map(|k| k / 2)
}

#[derive(Config, Debug)]
pub struct MixedConv3dConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    /// Kernel per axis in spec order `(x, y, z)`.
    pub kernel: [usize; 3],
    /// Stride per axis in spec order `(x, y, z)`.
    #[config(default = "[1, 1, 1]")]
    pub stride: [usize; 3],
    pub precision: Precision,
}

/// Conv3d (kernel padded by `kernel / 2`, with bias) computing in the configured precision.
#[derive(Module, Debug)]
pub struct MixedConv3d<B: Backend> {
    /// burn's layer: holds the f32 weight `[out, in, kz, ky, kx]` and bias, initialised like PyTorch's.
    pub conv: Conv3d<B>,
    pub precision: Precision,
}

impl MixedConv3dConfig {
    pub fn init<B: Backend>(&self, device: &B::Device) -> MixedConv3d<B> {
        let kernel = burn_axes(self.kernel);
        let [pz, py, px] = half_kernel_padding(kernel);
        let conv = Conv3dConfig::new([self.in_channels, self.out_channels], kernel)
            .with_stride(burn_axes(self.stride))
            .with_padding(PaddingConfig3d::Explicit(pz, py, px))
            .with_bias(true)
            .init(device);
        MixedConv3d { conv, precision: self.precision }
    }
}

impl<B: Backend> MixedConv3d<B> {
    /// `[N, C_in, z, y, x]` f32 → `[N, C_out, z', y', x']` f32.
    pub fn forward(&self, x: Tensor<B, 5>) -> Tensor<B, 5> {
        let options = ConvOptions::new(
            self.conv.stride,
            half_kernel_padding(self.conv.kernel_size),
            self.conv.dilation,
            self.conv.groups,
        );
        let weight = self.conv.weight.val();
        let bias = self.conv.bias.as_ref().map(|b| b.val());
        match compute_dtype(self.precision) {
            None => conv3d(x, weight, bias, options),
            Some(dtype) => {
                conv3d(x.cast(dtype), weight.cast(dtype), bias.map(|b| b.cast(dtype)), options).cast(FloatDType::F32)
            }
        }
    }
}
