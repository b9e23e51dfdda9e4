//! Small specs, fixed batches and gradient readers shared by the model, accumulation and precision tests.
//! Kept tiny (≤ 16³ patches, ≤ 16 features): burn's CPU conv3d is slow and the suite must stay quick.
#![allow(dead_code)]

use burn::backend::{Autodiff, Flex};
use burn::module::{ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use voxplan_planner::{NetworkSpec, NormKind};

pub type Cpu = Flex;
pub type Train = Autodiff<Flex>;
/// Every parameter's gradient as host floats, with the parameter's id, in visiting order.
pub type HostGradients = Vec<(ParamId, Vec<f32>)>;

/// Builds a model from a fixed seed, one test thread at a time. burn-flex draws every initialisation from one
/// process-wide RNG, so a model built while another test thread builds one got different weights on each
/// run, and an assertion on a few training steps passed or failed with the interleaving (seen: a bf16 run
/// whose loss fell 4 % instead of 5 %).
pub fn seeded_init<T>(seed: u64, build: impl FnOnce() -> T) -> T {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = LOCK.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    Train::seed(&Default::default(), seed);
    build()
}

/// The seed the tests' models are built from; a model that must differ from another takes `SEED + 1`.
pub const SEED: u64 = 7;

/// A U-Net spec with stage 0 at stride 1 and every later stage at stride 2, 3×3×3 kernels, one conv per
/// encoder and decoder stage (enough to exercise every layer kind).
pub fn spec(features: &[usize], norm: NormKind) -> NetworkSpec {
    let mut spec = NetworkSpec::plain_unet(1, 3, features, norm);
    for stage in &mut spec.stages {
        stage.encoder_convs = 1;
        stage.decoder_convs = 1;
    }
    spec
}

/// A fixed batch `[n, 1, z, y, x]` and its labels `[n, z, y, x]`: a class-1 slab and a class-2 box whose
/// positions differ per sample, image = label intensity plus a deterministic ripple.
pub fn batch<B: Backend>(n: usize, zyx: [usize; 3], device: &B::Device) -> (Tensor<B, 5>, Tensor<B, 4, Int>) {
    let [z, y, x] = zyx;
    let mut image = Vec::with_capacity(n * z * y * x);
    let mut labels = Vec::with_capacity(n * z * y * x);
    for s in 0..n {
        for k in 0..z {
            for j in 0..y {
                for i in 0..x {
                    let class = if i >= x / 2 + s % 3 && j < y / 2 {
                        2
                    } else if k >= (z / 4 + s) % z && k < (z / 4 + s) % z + z / 3 {
                        1
                    } else {
                        0
                    };
                    labels.push(class as i64);
                    let ripple = 0.1 * ((i * 7 + j * 3 + k * 5 + s) % 11) as f32 / 11.0;
                    image.push(class as f32 * 0.8 + ripple);
                }
            }
        }
    }
    (
        Tensor::from_data(TensorData::new(image, [n, 1, z, y, x]), device),
        Tensor::from_data(TensorData::new(labels, [n, z, y, x]).convert::<B::IntElem>(), device),
    )
}

/// Every parameter's gradient as host floats, in visiting order, with the parameter's id.
pub fn gradients_of<M: burn::module::Module<Train>>(model: &M, grads: &GradientsParams) -> HostGradients {
    struct Read<'a> {
        grads: &'a GradientsParams,
        out: HostGradients,
    }
    impl ModuleVisitor<Train> for Read<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<Train, D>>) {
            if let Some(g) = self.grads.get::<Flex, D>(param.id) {
                let values = g.cast(burn::tensor::FloatDType::F32).into_data().to_vec::<f32>().expect("f32 grad");
                self.out.push((param.id, values));
            }
        }
    }
    let mut r = Read { grads, out: Vec::new() };
    model.visit(&mut r);
    r.out
}

/// Largest `|a − b| / scale` over matching gradients, per tensor, where `scale` is the tensor's largest
/// `|b|` but at least 1e-3 of the largest `|b|` in the whole model. The floor matters for conv biases
/// followed by InstanceNorm: the norm subtracts them out, so their true gradient is 0 and what is computed
/// is f32 round-off, whose relative difference means nothing. Also checks both cover the same parameters.
pub fn max_relative_difference(a: &[(ParamId, Vec<f32>)], b: &[(ParamId, Vec<f32>)]) -> f32 {
    assert_eq!(a.len(), b.len(), "different parameter sets have gradients");
    let largest = |g: &[f32]| g.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let model_scale = b.iter().fold(0.0f32, |m, (_, g)| m.max(largest(g)));
    let mut worst = 0.0f32;
    for ((ia, ga), (ib, gb)) in a.iter().zip(b) {
        assert_eq!(ia, ib);
        assert_eq!(ga.len(), gb.len());
        let scale = largest(gb).max(1e-3 * model_scale) + 1e-12;
        let diff = ga.iter().zip(gb).fold(0.0f32, |m, (x, y)| m.max((x - y).abs()));
        worst = worst.max(diff / scale);
    }
    worst
}
