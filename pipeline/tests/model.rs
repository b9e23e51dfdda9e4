//! The U-Net built from a spec: output shapes for every topology variant, a hand-counted parameter total,
//! and real SGD steps on burn's CPU backend reducing the loss.

mod model_support;

use burn::tensor::Tensor;
use model_support::{Cpu, SEED, Train, batch, seeded_init, spec};
use voxplan_pipeline::loss::DiceCeLoss;
use voxplan_pipeline::model::{UNet, UNetConfig, burn_axes, parameter_count};
use voxplan_pipeline::optim::build_optimizer;
use voxplan_planner::{BlockKind, NormKind, OptimizerKind, Precision};

fn shapes(outputs: &[Tensor<Cpu, 5>]) -> Vec<[usize; 5]> {
    outputs.iter().map(|o| o.dims()).collect()
}

fn input(n: usize, patch_xyz: [usize; 3]) -> Tensor<Cpu, 5> {
    let [z, y, x] = burn_axes(patch_xyz);
    Tensor::ones([n, 1, z, y, x], &Default::default())
}

#[test]
fn isotropic_unet_returns_full_resolution_logits() {
    let s = spec(&[4, 8, 16], NormKind::Instance);
    let net: UNet<Cpu> = seeded_init(SEED, || UNetConfig::new(s, Precision::F32).init(&Default::default()));
    let out = net.forward(input(2, [16, 16, 16]));
    assert_eq!(shapes(&out), vec![[2, 3, 16, 16, 16]]);
}

#[test]
fn anisotropic_strides_and_kernels_follow_xyz_order() {
    // Thick slices along z: stage 1 halves x and y only and convolves in-plane only.
    let mut s = spec(&[4, 8, 8], NormKind::Group { groups: 2 });
    s.stages[1].stride = [2, 2, 1];
    s.stages[1].kernel = [3, 3, 1];
    let patch = [16, 16, 4];
    s.validate_patch(patch).unwrap();
    let net: UNet<Cpu> = seeded_init(SEED, || UNetConfig::new(s.clone(), Precision::F32).init(&Default::default()));
    let skips = net.encoder.forward(input(1, patch));
    for (stage, skip) in skips.iter().enumerate() {
        let [_, c, z, y, x] = skip.dims();
        assert_eq!(c, s.stages[stage].features);
        assert_eq!([z, y, x], burn_axes(s.stage_shape(patch, stage)), "stage {stage}");
    }
    // The in-plane kernel is stored [out, in, kz, ky, kx] = [.., .., 1, 3, 3].
    let [_, _, kz, ky, kx] = net.encoder_stage_kernel(1);
    assert_eq!([kz, ky, kx], [1, 3, 3]);
    assert_eq!(shapes(&net.forward(input(1, patch))), vec![[1, 3, 4, 16, 16]]);
}

/// Reads the weight shape of an encoder stage's first conv.
trait StageKernel {
    fn encoder_stage_kernel(&self, stage: usize) -> [usize; 5];
}

impl StageKernel for UNet<Cpu> {
    fn encoder_stage_kernel(&self, stage: usize) -> [usize; 5] {
        match &self.encoder.stages[stage] {
            voxplan_pipeline::model::EncoderStage::Plain(layers) => layers[0].conv.conv.weight.dims(),
            voxplan_pipeline::model::EncoderStage::Residual(blocks) => blocks[0].first.conv.conv.weight.dims(),
        }
    }
}

#[test]
fn residual_unet_keeps_shapes_and_projects_shortcuts() {
    let mut s = spec(&[4, 8, 16], NormKind::Group { groups: 4 });
    s.block = BlockKind::Residual;
    s.stages[1].encoder_convs = 2;
    let net: UNet<Cpu> = seeded_init(SEED, || UNetConfig::new(s, Precision::F32).init(&Default::default()));
    let voxplan_pipeline::model::EncoderStage::Residual(blocks) = &net.encoder.stages[1] else {
        panic!("residual spec built plain stages");
    };
    assert!(blocks[0].shortcut.is_some(), "stride 2 and 4→8 channels need a projection");
    assert!(blocks[1].shortcut.is_none(), "same shape and channels: identity shortcut");
    assert_eq!(shapes(&net.forward(input(1, [16, 16, 16]))), vec![[1, 3, 16, 16, 16]]);
}

#[test]
fn deep_supervision_adds_heads_except_the_lowest_decoder_stage() {
    let mut s = spec(&[4, 8, 8, 8], NormKind::Instance);
    s.deep_supervision = true;
    let net: UNet<Cpu> = seeded_init(SEED, || UNetConfig::new(s.clone(), Precision::F32).init(&Default::default()));
    // Decoder stages at levels 2, 1, 0: level 2 is the lowest-resolution one and has no head.
    assert_eq!(shapes(&net.forward(input(1, [16, 16, 16]))), vec![[1, 3, 16, 16, 16], [1, 3, 8, 8, 8]]);
    s.deep_supervision = false;
    let plain: UNet<Cpu> = seeded_init(SEED, || UNetConfig::new(s, Precision::F32).init(&Default::default()));
    assert_eq!(plain.forward(input(1, [16, 16, 16])).len(), 1);
}

#[test]
fn parameter_count_equals_a_hand_count() {
    // in 1, classes 3, stages [4 (stride 1), 8 (stride 2)], 3×3×3 kernels, one conv per stage, GroupNorm(2).
    let net: UNet<Cpu> = seeded_init(SEED, || {
        UNetConfig::new(spec(&[4, 8], NormKind::Group { groups: 2 }), Precision::F32).init(&Default::default())
    });
    let encoder0 = (4 * 27 + 4) + 2 * 4; // conv 1→4 + bias, norm γ β
    let encoder1 = (8 * 4 * 27 + 8) + 2 * 8; // conv 4→8
    let up = 8 * 4 * 8 + 4; // transposed conv 8→4, kernel 2×2×2
    let decoder0 = (4 * 8 * 27 + 4) + 2 * 4; // conv on the 4+4 concatenation
    let head = 3 * 4 + 3; // 1×1×1 conv 4→3
    assert_eq!(parameter_count(&net), encoder0 + encoder1 + up + decoder0 + head);
    assert_eq!(parameter_count(&net), 2159);
}

#[test]
fn sgd_steps_on_flex_reduce_the_loss_on_a_fixed_batch() {
    let device = Default::default();
    let mut net: UNet<Train> = seeded_init(SEED, || {
        UNetConfig::new(spec(&[4, 8], NormKind::Group { groups: 2 }), Precision::F32).init(&device)
    });
    let (x, y) = batch::<Train>(2, [16, 16, 16], &device);
    let loss_fn = DiceCeLoss::new(3, None);
    let mut optimizer = build_optimizer::<Train, UNet<Train>>(OptimizerKind::Sgd, 3e-5);
    let mut losses = Vec::new();
    for _ in 0..6 {
        let loss = loss_fn.forward(&net.forward(x.clone()), y.clone());
        losses.push(loss.clone().into_scalar());
        let grads = burn::optim::GradientsParams::from_grads(loss.backward(), &net);
        net = optimizer.step(0.01, net, grads);
    }
    assert!(losses.iter().all(|l| l.is_finite()), "{losses:?}");
    assert!(losses[5] < 0.95 * losses[0], "SGD did not reduce the loss: {losses:?}");
}

#[test]
fn a_record_loads_into_a_net_of_another_precision() {
    // Checkpoints trained in bf16 are loaded for f32 inference: the weights must transfer, the precision stay.
    use burn::module::Module;
    let device = Default::default();
    let s = spec(&[4, 8], NormKind::Instance);
    let trained: UNet<Cpu> = seeded_init(SEED, || UNetConfig::new(s.clone(), Precision::Bf16Mixed).init(&device));
    let fresh: UNet<Cpu> = seeded_init(SEED + 1, || UNetConfig::new(s.clone(), Precision::F32).init(&device));
    let loaded = fresh.load_record(trained.clone().into_record());
    let w = |n: &UNet<Cpu>| n.decoder.stages[0].convs[0].conv.conv.weight.val().into_data().to_vec::<f32>().unwrap();
    assert_eq!(w(&loaded), w(&trained));
    assert_eq!(loaded.decoder.stages[0].convs[0].conv.precision, Precision::F32);
    let reference: UNet<Cpu> =
        seeded_init(SEED, || UNetConfig::new(s, Precision::F32).init(&device)).load_record(trained.into_record());
    let x = input(1, [16, 16, 16]);
    let (a, b) = (loaded.forward(x.clone()).remove(0), reference.forward(x).remove(0));
    assert_eq!(a.into_data().to_vec::<f32>().unwrap(), b.into_data().to_vec::<f32>().unwrap());
}
