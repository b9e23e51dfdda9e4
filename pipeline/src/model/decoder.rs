//! The decoder: from the deepest-but-one stage up to full resolution, each stage upsamples, concatenates
//! the encoder's skip (skip first), runs plain conv layers, and may emit logits through a 1×1×1 head.

use burn::config::Config;
use burn::module::Module;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use voxplan_planner::{NetworkSpec, Precision};

use crate::model::conv::{MixedConv3d, MixedConv3dConfig};
use crate::model::conv_block::{ConvBlock, ConvBlockConfig};
use crate::model::up_conv::{MixedConvTranspose3d, MixedConvTranspose3dConfig};

#[derive(Config, Debug)]
pub struct DecoderConfig {
    pub spec: NetworkSpec,
    pub precision: Precision,
}

/// The decoder stage at the resolution of encoder stage `level`.
#[derive(Module, Debug)]
pub struct DecoderStage<B: Backend> {
    /// Encoder stage whose resolution and skip this stage uses.
    pub level: usize,
    pub up: MixedConvTranspose3d<B>,
    pub convs: Vec<ConvBlock<B>>,
    /// Logits head: always on level 0; with deep supervision on every level but the lowest-resolution
    /// decoder stage, whose output nnU-Net weights 0 and therefore is not built.
    pub head: Option<MixedConv3d<B>>,
}

#[derive(Module, Debug)]
pub struct Decoder<B: Backend> {
    /// Deepest-but-one level first, level 0 last.
    pub stages: Vec<DecoderStage<B>>,
    /// A one-stage spec has no decoder stage; its head sits directly on the encoder output.
    pub single_stage_head: Option<MixedConv3d<B>>,
}

impl DecoderConfig {
    pub fn init<B: Backend>(&self, device: &B::Device) -> Decoder<B> {
        let spec = &self.spec;
        let Some(deepest_decoder) = spec.stages.len().checked_sub(2) else {
            let features = spec.stages.first().map_or(spec.in_channels, |s| s.features);
            let head = MixedConv3dConfig::new(features, spec.num_classes, [1, 1, 1], self.precision).init(device);
            return Decoder { stages: Vec::new(), single_stage_head: Some(head) };
        };
        let stages = (0..=deepest_decoder)
            .rev()
            .map(|level| {
                let here = &spec.stages[level];
                let below = &spec.stages[level + 1];
                let convs = (0..here.decoder_convs)
                    .map(|i| {
                        // The first conv sees the concatenation: skip channels + upsampled channels.
                        let cin = if i == 0 { 2 * here.features } else { here.features };
                        ConvBlockConfig::new(
                            cin,
                            here.features,
                            here.kernel,
                            [1, 1, 1],
                            spec.norm,
                            spec.activation,
                            self.precision,
                        )
                        .init(device)
                    })
                    .collect();
                let has_head = level == 0 || (spec.deep_supervision && level < deepest_decoder);
                DecoderStage {
                    level,
                    up: MixedConvTranspose3dConfig::new(below.features, here.features, below.stride, self.precision)
                        .init(device),
                    convs,
                    head: has_head.then(|| {
                        MixedConv3dConfig::new(here.features, spec.num_classes, [1, 1, 1], self.precision).init(device)
                    }),
                }
            })
            .collect();
        Decoder { stages, single_stage_head: None }
    }
}

impl<B: Backend> Decoder<B> {
    /// `skips` are the encoder outputs (full resolution first, bottleneck last). Returns the logits of every
    /// head, full resolution first.
    pub fn forward(&self, mut skips: Vec<Tensor<B, 5>>) -> Vec<Tensor<B, 5>> {
        let mut outputs = Vec::new();
        let Some(mut x) = skips.pop() else {
            return outputs;
        };
        if let Some(head) = &self.single_stage_head {
            outputs.push(head.forward(x.clone()));
        }
        for stage in &self.stages {
            // Stages run deepest first, so the skip of `stage.level` is always the last one left.
            let Some(skip) = skips.pop() else {
                break;
            };
            x = Tensor::cat(vec![skip, stage.up.forward(x)], 1);
            x = stage.convs.iter().fold(x, |x, c| c.forward(x));
            if let Some(head) = &stage.head {
                outputs.push(head.forward(x.clone()));
            }
        }
        outputs.reverse();
        outputs
    }
}
