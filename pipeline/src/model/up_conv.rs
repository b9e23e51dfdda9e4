//! The decoder's upsampling: a transposed conv with kernel = stride, in the run's precision.
//!
//! Kernel = stride makes every output voxel come from exactly one input voxel and one kernel tap (no
//! overlap, no checkerboard), and it inverts the encoder's strided conv shape for any stride of 1 or 2 per
//! axis, anisotropic ones included.

use burn::config::Config;
use burn::module::Module;
use burn::nn::conv::{ConvTranspose3d, ConvTranspose3dConfig};
use burn::tensor::backend::Backend;
use burn::tensor::module::conv_transpose3d;
use burn::tensor::ops::ConvTransposeOptions;
use burn::tensor::{FloatDType, Tensor};
use voxplan_planner::Precision;

use crate::model::burn_axes;
use crate::precision::compute_dtype;

#[derive(Config, Debug)]
pub struct MixedConvTranspose3dConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    /// Upsampling factor per axis in spec order `(x, y, z)`: both kernel and stride.
    pub stride: [usize; 3],
    pub precision: Precision,
}

/// ConvTranspose3d (kernel = stride, no padding, with bias) computing in the configured precision.
#[derive(Module, Debug)]
pub struct MixedConvTranspose3d<B: Backend> {
    /// burn's layer: holds the f32 weight `[in, out, kz, ky, kx]` and bias.
    pub conv: ConvTranspose3d<B>,
    pub precision: Precision,
}

impl MixedConvTranspose3dConfig {
    pub fn init<B: Backend>(&self, device: &B::Device) -> MixedConvTranspose3d<B> {
        let stride = burn_axes(self.stride);
        let conv = ConvTranspose3dConfig::new([self.in_channels, self.out_channels], stride)
            .with_stride(stride)
            .with_bias(true)
            .init(device);
        MixedConvTranspose3d { conv, precision: self.precision }
    }
}

impl<B: Backend> MixedConvTranspose3d<B> {
    /// `[N, C_in, z, y, x]` f32 → `[N, C_out, z·sz, y·sy, x·sx]` f32.
    pub fn forward(&self, x: Tensor<B, 5>) -> Tensor<B, 5> {
        let options = ConvTransposeOptions::new(
            self.conv.stride,
            self.conv.padding,
            self.conv.padding_out,
            self.conv.dilation,
            self.conv.groups,
        );
        let weight = self.conv.weight.val();
        let bias = self.conv.bias.as_ref().map(|b| b.val());
        match compute_dtype(self.precision) {
            None => conv_transpose3d(x, weight, bias, options),
            Some(dtype) => conv_transpose3d(x.cast(dtype), weight.cast(dtype), bias.map(|b| b.cast(dtype)), options)
                .cast(FloatDType::F32),
        }
    }
}
