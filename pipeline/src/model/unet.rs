//! The whole network: encoder, decoder and heads, built from the planned spec and precision.

use burn::config::Config;
use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use voxplan_planner::{NetworkSpec, Precision};

use crate::model::decoder::{Decoder, DecoderConfig};
use crate::model::encoder::{Encoder, EncoderConfig};

#[derive(Config, Debug)]
pub struct UNetConfig {
    /// The planned network (validated by the planner; group counts and strides are already checked).
    pub spec: NetworkSpec,
    pub precision: Precision,
}

#[derive(Module, Debug)]
pub struct UNet<B: Backend> {
    pub encoder: Encoder<B>,
    pub decoder: Decoder<B>,
}

impl UNetConfig {
    /// Builds the network with every parameter initialised now. burn initialises parameters lazily, and a
    /// clone of a not-yet-initialised module draws its own random values (burn-core `Param::clone`), so a
    /// model cloned before its first forward (for a checkpoint, an EMA copy, `valid()`) would silently
    /// differ from the original. Materialising here makes every clone the same network.
    pub fn init<B: Backend>(&self, device: &B::Device) -> UNet<B> {
        let net = UNet {
            encoder: EncoderConfig::new(self.spec.clone(), self.precision).init(device),
            decoder: DecoderConfig::new(self.spec.clone(), self.precision).init(device),
        };
        net.visit(&mut Materialize);
        net
    }
}

/// Forces each lazily initialised parameter to take its value.
struct Materialize;

impl<B: Backend> ModuleVisitor<B> for Materialize {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let _ = param.val();
    }
}

impl<B: Backend> UNet<B> {
    /// `x`: `[N, in_channels, z, y, x]`, each edge a multiple of the spec's total stride on that axis.
    /// Returns f32 logits `[N, num_classes, ...]`: `[0]` at full resolution, then the deep-supervision
    /// outputs at decreasing resolution (only `[0]` without deep supervision).
    pub fn forward(&self, x: Tensor<B, 5>) -> Vec<Tensor<B, 5>> {
        self.decoder.forward(self.encoder.forward(x))
    }
}

/// Trainable scalars (weights, biases, norm affines; not BatchNorm running statistics), what the planner
/// counts as the network's parameters. burn's `num_params` also counts the running mean and variance, which
/// get no gradient and no optimizer state.
pub fn parameter_count<B: Backend>(model: &UNet<B>) -> usize {
    let mut count = TrainableCount::default();
    model.visit(&mut count);
    count.scalars
}

/// Sums the float parameters outside BatchNorm's running statistics; `path` is the visitor's field stack.
#[derive(Default)]
struct TrainableCount {
    path: Vec<(String, String)>,
    scalars: usize,
}

impl<B: Backend> ModuleVisitor<B> for TrainableCount {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.push((name.to_string(), container_type.to_string()));
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let running_statistic = self.path.last().is_some_and(|(name, container)| {
            container == "Struct:BatchNorm" && matches!(name.as_str(), "running_mean" | "running_var")
        });
        if !running_statistic {
            self.scalars += param.val().shape().num_elements();
        }
    }
}
