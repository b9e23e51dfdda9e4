//! The planned 3D U-Net, built exactly per the topology in `voxplan_planner::spec` (one module per file).
//!
//! Spec axis lists are NIfTI `(x, y, z)`; burn tensors are `[N, C, z, y, x]`, so every kernel and stride is
//! reversed once, by [`burn_axes`], where a layer is built.

pub mod activation;
pub mod conv;
pub mod conv_block;
pub mod decoder;
pub mod encoder;
pub mod group_norm;
pub mod norm;
pub mod residual_block;
pub mod unet;
pub mod up_conv;

pub use conv::{MixedConv3d, MixedConv3dConfig};
pub use conv_block::{ConvBlock, ConvBlockConfig};
pub use decoder::{Decoder, DecoderConfig, DecoderStage};
pub use encoder::{Encoder, EncoderConfig, EncoderStage};
pub use norm::{Norm, NormConfig};
pub use residual_block::{ResidualBlock, ResidualBlockConfig};
pub use unet::{UNet, UNetConfig, parameter_count};
pub use up_conv::{MixedConvTranspose3d, MixedConvTranspose3dConfig};

/// Reverses a spec list `(x, y, z)` into burn's spatial order `(z, y, x)`.
pub fn burn_axes(xyz: [usize; 3]) -> [usize; 3] {
    [xyz[2], xyz[1], xyz[0]]
}
