//! Mixed precision on `Autodiff<Flex>`: bf16 and f16 convs train with f32 master weights and f32
//! gradients, the f16 loss scaler's unscale + finite check passes good steps and catches an overflow.

mod model_support;

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::{DType, Tensor};
use model_support::{Cpu, SEED, Train, batch, gradients_of, seeded_init, spec};
use voxplan_pipeline::loss::DiceCeLoss;
use voxplan_pipeline::model::{MixedConv3d, MixedConv3dConfig, UNet, UNetConfig};
use voxplan_pipeline::optim::build_optimizer;
use voxplan_pipeline::precision::{LossScaler, ScaledStep, unscale_and_check};
use voxplan_planner::{NormKind, OptimizerKind, Precision};

/// Dtypes of every parameter of a model.
fn parameter_dtypes<M: Module<Train>>(model: &M) -> Vec<DType> {
    struct Dtypes(Vec<DType>);
    impl ModuleVisitor<Train> for Dtypes {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<Train, D>>) {
            self.0.push(param.val().dtype());
        }
    }
    let mut d = Dtypes(Vec::new());
    model.visit(&mut d);
    d.0
}

/// Trains a few steps at `precision` with the scaler that precision needs; returns the losses.
fn train(precision: Precision, steps: usize) -> Vec<f32> {
    let device = Default::default();
    let mut net: UNet<Train> =
        seeded_init(SEED, || UNetConfig::new(spec(&[4, 8], NormKind::Group { groups: 2 }), precision).init(&device));
    let (x, y) = batch::<Train>(2, [16, 16, 16], &device);
    let loss_fn = DiceCeLoss::new(3, None);
    let mut optimizer = build_optimizer::<Train, UNet<Train>>(OptimizerKind::Adamw, 1e-4);
    let mut scaler = LossScaler::for_precision(precision);
    let mut losses = Vec::new();
    for _ in 0..steps {
        let outputs = net.forward(x.clone());
        assert!(outputs.iter().all(|o| o.dtype() == DType::F32), "logits must come back in f32");
        let loss = loss_fn.forward(&outputs, y.clone());
        losses.push(loss.clone().into_scalar());
        let grads = GradientsParams::from_grads(loss.mul_scalar(scaler.scale()).backward(), &net);
        let (grads, finite) = unscale_and_check::<Train, _>(&net, grads, scaler.scale());
        for (_, g) in gradients_of(&net, &grads) {
            assert!(g.iter().all(|v| v.is_finite()), "non-finite gradient at {precision:?}");
        }
        assert!(finite);
        assert_eq!(scaler.update(finite), ScaledStep::Apply);
        net = optimizer.step(1e-2, net, grads);
    }
    assert!(parameter_dtypes(&net).iter().all(|d| *d == DType::F32), "master weights left f32");
    println!("{precision:?}: losses {losses:?}");
    losses
}

#[test]
fn bf16_training_steps_decrease_the_loss() {
    let losses = train(Precision::Bf16Mixed, 5);
    assert!(losses[4] < 0.95 * losses[0], "{losses:?}");
}

#[test]
fn f16_training_with_loss_scaling_decreases_the_loss() {
    let losses = train(Precision::F16Mixed, 5);
    assert!(losses[4] < 0.95 * losses[0], "{losses:?}");
}

#[test]
fn gradients_arrive_in_f32_on_f32_parameters() {
    let device = Default::default();
    let net: UNet<Train> =
        seeded_init(SEED, || UNetConfig::new(spec(&[4, 8], NormKind::Instance), Precision::Bf16Mixed).init(&device));
    let (x, y) = batch::<Train>(1, [16, 16, 16], &device);
    let loss = DiceCeLoss::new(3, None).forward(&net.forward(x), y);
    let grads = GradientsParams::from_grads(loss.backward(), &net);
    let conv = &net.decoder.stages[0].convs[0].conv.conv;
    let g = grads.get::<Cpu, 5>(conv.weight.id).expect("decoder conv weight has a gradient");
    assert_eq!(g.dtype(), DType::F32);
    assert_eq!(conv.weight.val().dtype(), DType::F32);
}

#[test]
fn low_precision_convs_really_compute_in_low_precision() {
    // The same conv weights computing in f32, bf16 and f16: outputs differ by rounding only.
    let device = Default::default();
    let f32_conv: MixedConv3d<Cpu> =
        seeded_init(SEED, || MixedConv3dConfig::new(1, 8, [3, 3, 3], Precision::F32).init(&device));
    let (x, _) = batch::<Cpu>(1, [16, 16, 16], &device);
    let reference = f32_conv.forward(x.clone()).into_data().to_vec::<f32>().unwrap();
    let scale = reference.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    for (precision, max_relative) in [(Precision::Bf16Mixed, 2e-2), (Precision::F16Mixed, 2e-3)] {
        let conv = MixedConv3d { conv: f32_conv.conv.clone(), precision };
        let out = conv.forward(x.clone());
        assert_eq!(out.dtype(), DType::F32, "{precision:?} output must be cast back to f32");
        let out = out.into_data().to_vec::<f32>().unwrap();
        let diff = reference.iter().zip(&out).fold(0.0f32, |m, (p, q)| m.max((p - q).abs()));
        assert!(diff > 0.0, "{precision:?} computed exactly like f32: the cast is not happening");
        assert!(diff < max_relative * scale, "{precision:?} deviates too much: {diff} vs scale {scale}");
    }
}

#[test]
fn an_f16_overflow_is_detected_and_the_step_skipped() {
    let device = Default::default();
    let net: UNet<Train> = seeded_init(SEED, || {
        UNetConfig::new(spec(&[4, 8], NormKind::Group { groups: 2 }), Precision::F16Mixed).init(&device)
    });
    let (x, y) = batch::<Train>(1, [16, 16, 16], &device);
    // 2^40 times the loss: far beyond f16's range (65504) once the gradient reaches the f16 convs.
    let mut scaler = LossScaler::dynamic(2f32.powi(40));
    let loss = DiceCeLoss::new(3, None).forward(&net.forward(x), y);
    let grads = GradientsParams::from_grads(loss.mul_scalar(scaler.scale()).backward(), &net);
    let (_, finite) = unscale_and_check::<Train, _>(&net, grads, scaler.scale());
    assert!(!finite, "overflowed f16 gradients were reported finite");
    assert_eq!(scaler.update(finite), ScaledStep::Skip);
    assert_eq!(scaler.scale(), 2f32.powi(39));
    assert_eq!(scaler.skipped_steps(), 1);
}

#[test]
fn an_injected_nan_is_detected() {
    let device = Default::default();
    let net: UNet<Train> =
        seeded_init(SEED, || UNetConfig::new(spec(&[4, 8], NormKind::Instance), Precision::Bf16Mixed).init(&device));
    let (x, y) = batch::<Train>(1, [16, 16, 16], &device);
    let loss = DiceCeLoss::new(3, None).forward(&net.forward(x), y);
    let mut grads = GradientsParams::from_grads(loss.backward(), &net);
    let head = net.decoder.stages[0].head.as_ref().expect("level 0 has a head");
    let g: Tensor<Cpu, 5> = grads.remove(head.conv.weight.id).expect("head weight gradient");
    grads.register(head.conv.weight.id, g.add_scalar(f32::NAN));
    let (_, finite) = unscale_and_check::<Train, _>(&net, grads, 1.0);
    assert!(!finite);
}
