//! The encoder: one stage per spec stage, the first conv of each carrying the stage's stride
//! (strided-conv downsampling, no pooling).

use burn::config::Config;
use burn::module::Module;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use voxplan_planner::{BlockKind, NetworkSpec, Precision};

use crate::model::conv_block::{ConvBlock, ConvBlockConfig};
use crate::model::residual_block::{ResidualBlock, ResidualBlockConfig};

#[derive(Config, Debug)]
pub struct EncoderConfig {
    pub spec: NetworkSpec,
    pub precision: Precision,
}

/// One resolution level: `encoder_convs` plain layers or residual blocks.
#[derive(Module, Debug)]
pub enum EncoderStage<B: Backend> {
    Plain(Vec<ConvBlock<B>>),
    Residual(Vec<ResidualBlock<B>>),
}

#[derive(Module, Debug)]
pub struct Encoder<B: Backend> {
    pub stages: Vec<EncoderStage<B>>,
}

impl EncoderConfig {
    pub fn init<B: Backend>(&self, device: &B::Device) -> Encoder<B> {
        let spec = &self.spec;
        let mut in_channels = spec.in_channels;
        let mut stages = Vec::with_capacity(spec.stages.len());
        for stage in &spec.stages {
            // Only the stage's first layer changes channels and resolution.
            let layers: Vec<(usize, [usize; 3])> = (0..stage.encoder_convs)
                .map(|i| if i == 0 { (in_channels, stage.stride) } else { (stage.features, [1, 1, 1]) })
                .collect();
            let (cout, kernel, norm, act, precision) =
                (stage.features, stage.kernel, spec.norm, spec.activation, self.precision);
            stages.push(match spec.block {
                BlockKind::Plain => EncoderStage::Plain(
                    layers
                        .iter()
                        .map(|&(cin, stride)| {
                            ConvBlockConfig::new(cin, cout, kernel, stride, norm, act, precision).init(device)
                        })
                        .collect(),
                ),
                BlockKind::Residual => EncoderStage::Residual(
                    layers
                        .iter()
                        .map(|&(cin, stride)| {
                            ResidualBlockConfig::new(cin, cout, kernel, stride, norm, act, precision).init(device)
                        })
                        .collect(),
                ),
            });
            in_channels = stage.features;
        }
        Encoder { stages }
    }
}

impl<B: Backend> EncoderStage<B> {
    pub fn forward(&self, x: Tensor<B, 5>) -> Tensor<B, 5> {
        match self {
            EncoderStage::Plain(layers) => layers.iter().fold(x, |x, l| l.forward(x)),
            EncoderStage::Residual(blocks) => blocks.iter().fold(x, |x, b| b.forward(x)),
        }
    }
}

impl<B: Backend> Encoder<B> {
    /// Every stage's output, full resolution first; the last one is the bottleneck.
    pub fn forward(&self, x: Tensor<B, 5>) -> Vec<Tensor<B, 5>> {
        let mut outputs: Vec<Tensor<B, 5>> = Vec::with_capacity(self.stages.len());
        let mut x = x;
        for stage in &self.stages {
            x = stage.forward(x);
            outputs.push(x.clone());
        }
        outputs
    }
}
