//! The liveness timeline on networks small enough to count by hand, and against the steps measured on
//! this project's machines (docs: measured-here.md, burn-0.21.md §4).

use voxplan_planner::{
    BackendKind, DeviceKind, DeviceProfile, LossKind, NetworkSpec, NormKind, OptimizerKind, Precision, SimRequest,
    device::{ConvWorkspace, backend_model},
    simulate, simulate_with,
};

const MIB: f64 = 1024.0 * 1024.0;

fn exact_cpu() -> DeviceProfile {
    let mut backend = backend_model(BackendKind::Flex).unwrap();
    backend.conv_backward_workspace_factor = 0.0;
    backend.conv_forward_workspace_factor = 0.0;
    backend.fixed_overhead_bytes = 0;
    backend.step_overhead_bytes = 0;
    DeviceProfile {
        name: "test cpu".into(),
        kind: DeviceKind::Cpu,
        total_bytes: 1 << 40,
        free_bytes: 1 << 40,
        bf16: false,
        fp16_fast: false,
        backend,
        source: "test".into(),
        cpu: None,
    }
}

fn flex_cpu() -> DeviceProfile {
    DeviceProfile { backend: backend_model(BackendKind::Flex).unwrap(), ..exact_cpu() }
}

fn unet(features: &[usize], norm: NormKind, classes: usize) -> NetworkSpec {
    NetworkSpec::plain_unet(1, classes, features, norm)
}

fn one_conv() -> NetworkSpec {
    let mut n = unet(&[4], NormKind::Instance, 2);
    n.stages[0].encoder_convs = 1;
    n
}

#[test]
fn one_conv_network_counts_exact_bytes() {
    // 8³ patch, batch 1, f32: A(1 ch) = 512 voxels × 4 B = 2048 B.
    let t = simulate(&one_conv(), [8; 3], 1, Precision::F32, false, OptimizerKind::Sgd, &exact_cpu());
    // conv 27·1·4 + 4, instance norm 2·4, head 4·2 + 2.
    assert_eq!(t.param_count, 130);
    // Kept after forward: input 2048 + labels 2048, norm x−μ and x̂ 2·4·2048, LReLU mask 4·512,
    // LReLU output (kept by the head conv) 4·2048, loss state 4 logit sizes (4·2·2048) + 5 B per voxel.
    let loss_kept = 4 * 4096 + 5 * 512;
    assert_eq!(t.forward_retained_bytes, 4096 + 16384 + 2048 + 8192 + loss_kept);
    // Peak in the loss's forward: the above + params and SGD momentum 2·520 + the logits 2·2048 + forward
    // temporaries of 2 logit sizes and 4 B per voxel.
    assert_eq!(t.peak_op, "loss");
    assert_eq!(t.peak_bytes, 1040 + 4096 + 16384 + 2048 + 8192 + loss_kept + 4096 + 2 * 4096 + 4 * 512);
    // The loss backward: the kept bytes + the logits' gradient + 1 logit size of temporaries.
    let backward = t.events.iter().find(|e| e.op == "loss backward").unwrap();
    assert_eq!(backward.in_use_bytes, 1040 + 4096 + 16384 + 2048 + 8192 + loss_kept + 4096 + 4096);
    let names: Vec<&str> = t.events.iter().map(|e| e.op.as_str()).collect();
    assert_eq!(names[..6], ["batch loaded", "enc0.conv0", "enc0.conv0.norm", "enc0.conv0.act", "head", "loss"]);
    assert_eq!(names.last(), Some(&"optimizer step"));
}

#[test]
fn adamw_adds_one_more_state_per_parameter() {
    let n = one_conv();
    let sgd = simulate(&n, [8; 3], 1, Precision::F32, false, OptimizerKind::Sgd, &exact_cpu());
    let adam = simulate(&n, [8; 3], 1, Precision::F32, false, OptimizerKind::Adamw, &exact_cpu());
    assert_eq!(adam.peak_bytes - sgd.peak_bytes, 130 * 4);
}

#[test]
fn batchnorm_keeps_one_more_activation_than_groupnorm() {
    let gn = simulate(&one_conv(), [8; 3], 1, Precision::F32, false, OptimizerKind::Sgd, &exact_cpu());
    let mut n = one_conv();
    n.norm = NormKind::Batch;
    let bn = simulate(&n, [8; 3], 1, Precision::F32, false, OptimizerKind::Sgd, &exact_cpu());
    // One more 4-channel activation (8192 B) kept + running stats 2·4 floats.
    assert_eq!(bn.forward_retained_bytes - gn.forward_retained_bytes, 8192);
}

fn measured_unet_step(patch: usize, batch: usize, ck: bool, device: &DeviceProfile) -> voxplan_planner::Timeline {
    let net = unet(&[16, 32, 64, 128], NormKind::Group { groups: 8 }, 3);
    simulate_with(&SimRequest {
        network: &net,
        patch: [patch; 3],
        batch,
        precision: Precision::F32,
        checkpointing: ck,
        optimizer: OptimizerKind::Adamw,
        accumulation: 1,
        loss: LossKind::Mse,
        device,
        training: true,
    })
}

#[test]
fn retained_after_forward_matches_the_measured_unet() {
    // burn-0.21.md §4: [16,32,64,128] GN+LReLU U-Net at 1×1×64³ with MSE keeps 319.7 MiB (no checkpointing)
    // and 235.3 MiB (balanced) after forward.
    let no = measured_unet_step(64, 1, false, &exact_cpu()).forward_retained_bytes as f64 / MIB;
    let ck = measured_unet_step(64, 1, true, &exact_cpu()).forward_retained_bytes as f64 / MIB;
    println!("retained: {no:.1} MiB / {ck:.1} MiB");
    assert!((no - 319.7).abs() / 319.7 < 0.02, "{no}");
    assert!((ck - 235.3).abs() / 235.3 < 0.02, "{ck}");
}

/// flex 0.21 as published, before voxplan's tiled conv kernels (vendor/burn-flex): one whole-sample im2col.
fn released_flex_cpu() -> DeviceProfile {
    let mut dev = flex_cpu();
    dev.backend.conv_workspace = ConvWorkspace::WholeSample;
    dev
}

#[test]
fn flex_step_peak_tracks_the_measured_heap_peaks() {
    // measured-here.md, on flex 0.21 as published: heap growth during a steady-state step (model state
    // already allocated): 32³ b1 141 MiB, 64³ b1 1125 MiB, 64³ b2 1386 MiB. The patched kernels are checked
    // against measured steps by tests/planner_accuracy.rs and `voxplan bench planner`.
    for (patch, batch, measured) in [(32, 1, 141.0), (64, 1, 1125.0), (64, 2, 1386.0)] {
        let t = measured_unet_step(patch, batch, false, &released_flex_cpu());
        let c = t.peak_components;
        let step = (t.peak_bytes - c.model_state_bytes - c.fixed_bytes) as f64 / MIB;
        println!("{patch}³ b{batch}: predicted {step:.1} MiB at {} vs measured {measured}", t.peak_op);
        assert!((step - measured).abs() / measured < 0.02, "{patch}³ b{batch}: {step:.1} vs {measured}");
    }
}

#[test]
fn mixed_precision_keeps_half_copies_of_conv_inputs_and_weights() {
    let t = simulate(&one_conv(), [8; 3], 1, Precision::Bf16Mixed, false, OptimizerKind::Sgd, &exact_cpu());
    // batch 4096; bf16 copy of the input 512·2 and of the conv weights (27·4 + 4)·2; norm 16384 and mask
    // 2048 in f32; the head reads a bf16 copy 4·512·2 (the f32 activation dies after the cast) plus its
    // weights (8 + 2)·2; the loss state stays f32 (4·2·2048 + 5·512).
    assert_eq!(t.forward_retained_bytes, 4096 + 1024 + 224 + 16384 + 2048 + 4096 + 20 + 4 * 4096 + 5 * 512);
}

#[test]
fn balanced_checkpointing_keeps_conv_outputs_instead_of_norm_intermediates() {
    let t = simulate(&one_conv(), [8; 3], 1, Precision::F32, true, OptimizerKind::Sgd, &exact_cpu());
    // batch 4096, conv output 8192 (kept for the norm's recomputation), mask 2048, head input 8192, the
    // logits 4096 (kept to recompute the loss from) and the loss's own 4·2·2048 + 5·512.
    assert_eq!(t.forward_retained_bytes, 4096 + 8192 + 2048 + 8192 + 4096 + 4 * 4096 + 5 * 512);
}

#[test]
fn cuda_pool_reserves_pages_above_what_is_in_use() {
    let mut dev = exact_cpu();
    dev.backend = backend_model(BackendKind::Cuda).unwrap();
    dev.total_bytes = 16 << 30;
    let net = unet(&[16, 32, 64, 128], NormKind::Group { groups: 8 }, 3);
    let t = simulate(&net, [64; 3], 1, Precision::F32, false, OptimizerKind::Sgd, &dev);
    let c = t.peak_components;
    assert!(c.allocator_slack_bytes > 0);
    assert_eq!(c.fixed_bytes, dev.backend.fixed_overhead_bytes);
    assert_eq!(c.workspace_bytes, 0, "implicit-GEMM convs need no im2col buffer");
    let sum = c.model_state_bytes
        + c.batch_bytes
        + c.activation_bytes
        + c.temporary_bytes
        + c.workspace_bytes
        + c.allocator_slack_bytes
        + c.fixed_bytes;
    assert_eq!(sum, t.peak_bytes);
    assert!(t.events.iter().all(|e| e.device_bytes >= e.in_use_bytes));
}

#[test]
fn flex_computes_half_convs_via_f32_so_their_workspace_is_f32_sized_plus_copies() {
    // burn-flex 0.21 `bf16_via_f32`: a bf16 conv converts input and weight to f32, runs the f32 im2col conv
    // and converts back, so its workspace is the f32 one plus f32 copies of input and output.
    let dev = flex_cpu();
    assert!(dev.backend.half_conv_via_f32);
    let f32_step = simulate(&one_conv(), [8; 3], 1, Precision::F32, false, OptimizerKind::Sgd, &dev);
    let bf16_step = simulate(&one_conv(), [8; 3], 1, Precision::Bf16Mixed, false, OptimizerKind::Sgd, &dev);
    let conv = |t: &voxplan_planner::Timeline| t.events.iter().find(|e| e.op == "enc0.conv0").unwrap().transient_bytes;
    // 8³ voxels, 1 input and 4 output channels: f32 copies (1 + 4)·512·4 B on top of the f32 im2col.
    assert_eq!(conv(&bf16_step), conv(&f32_step) + 5 * 512 * 4);
    let mut no_via = dev.clone();
    no_via.backend.half_conv_via_f32 = false;
    let native = simulate(&one_conv(), [8; 3], 1, Precision::Bf16Mixed, false, OptimizerKind::Sgd, &no_via);
    assert_eq!(conv(&native) * 2, conv(&f32_step), "a native bf16 im2col is half the f32 one");
}

#[test]
fn tiled_flex_convs_hold_one_gather_tile_per_thread_whatever_the_volume() {
    // vendor/burn-flex/src/ops/conv3d_tiled.rs: each of the threads gathers [C_in · 27, 1024] for a tile.
    let mut dev = flex_cpu();
    dev.backend.conv_workspace = ConvWorkspace::Tiled { tile_voxels: 1024, tiles_in_flight: 2, packing: None };
    let event = |t: &voxplan_planner::Timeline, op: &str| t.events.iter().find(|e| e.op == op).unwrap().transient_bytes;
    for patch in [32, 64] {
        let t = simulate(&one_conv(), [patch; 3], 1, Precision::F32, false, OptimizerKind::Sgd, &dev);
        // 1 input channel, 4 outputs, 27 taps, f32.
        assert_eq!(event(&t, "enc0.conv0"), 2 * 27 * 1024 * 4, "{patch}³ forward");
        // Input gradient: [4 · 27, 1024] per thread plus the transposed weights (108), larger than the
        // weight gradient's [27, 1024] per thread plus a 108-weight partial sum per thread.
        assert_eq!(event(&t, "enc0.conv0 backward"), (2 * 108 * 1024 + 108) * 4, "{patch}³ backward");
    }
    // A volume smaller than one tile at batch 1 is one task: one buffer of its own size.
    let small = simulate(&one_conv(), [8; 3], 1, Precision::F32, false, OptimizerKind::Sgd, &dev);
    assert_eq!(event(&small, "enc0.conv0"), 27 * 512 * 4);
}

/// One plain stage of `features` channels with two convs: the second conv maps features → features.
fn two_conv_stage(features: usize) -> NetworkSpec {
    unet(&[features], NormKind::Instance, 2)
}

#[test]
fn gemm_prepacks_small_weight_gradient_gathers_and_the_model_counts_the_copy() {
    // Traced on the Intel Xeon (vendor gemm-common 0.19, f32 fma kernels), 16³, batch 1, two threads:
    // the weight gradient of an 8 → 8 3³ conv gathers [216, 1024] per thread (864 KiB) and gemm packs it
    // into [224 (216 rounded to 16), 1024] (896 KiB) per thread while it multiplies; with 16 channels the
    // 432 gathered rows are above gemm's 256 and it packs nothing.
    let mut dev = flex_cpu();
    let ConvWorkspace::Tiled { tiles_in_flight, packing, .. } = &mut dev.backend.conv_workspace else {
        panic!("flex runs the tiled kernels")
    };
    *tiles_in_flight = 2;
    let packing = packing.expect("the embedded flex model has gemm's packing rule");
    let event = |t: &voxplan_planner::Timeline, op: &str| t.events.iter().find(|e| e.op == op).unwrap().transient_bytes;
    let t = simulate(&two_conv_stage(8), [16; 3], 1, Precision::F32, false, OptimizerKind::Sgd, &dev);
    let gather = 2 * 216 * 1024 * 4;
    let weights = 8 * 8 * 27 * 4;
    assert_eq!(event(&t, "enc0.conv1 backward"), gather + 2 * 224 * 1024 * 4 + 2 * weights);
    // A full tile of 1024 voxels is a multiple of the SIMD width: the forward gather is not packed.
    assert_eq!(event(&t, "enc0.conv1"), gather);
    let t16 = simulate(&two_conv_stage(16), [16; 3], 1, Precision::F32, false, OptimizerKind::Sgd, &dev);
    let gather16 = 2 * 432 * 1024 * 4;
    assert_eq!(event(&t16, "enc0.conv1 backward"), gather16 + 16 * 16 * 27 * 4 * 2);

    // The rule against the other traced calls (m × n · k after gemm's operand swap).
    let w_grad = |rows: u64, out: u64, len: u64| packing.prepacked_elements(rows, out, len, false, true);
    let tile = |len: u64, out: u64, rows: u64| packing.prepacked_elements(len, out, rows, true, false);
    assert_eq!(w_grad(243, 8, 1024), 256 * 1024, "9 → 8 channels: 243 rows, padded to 256");
    assert_eq!(w_grad(270, 8, 1024), 0, "10 → 8 channels: 270 rows, above 256");
    assert_eq!(w_grad(27, 8, 1024), 0, "1 → 8: 27 · 8 ≤ 16 · 16, gemm's horizontal kernel");
    assert_eq!(w_grad(54, 8, 1024), 64 * 512, "2 → 8: the small path blocks k at 512");
    assert_eq!(w_grad(64, 64, 1024), 64 * 512, "64 → 64 pointwise");
    assert_eq!(w_grad(216, 8, 832), 224 * 832, "the last tile of a 20³ volume");
    assert_eq!(tile(216, 8, 216), 0, "a 6³ tile: 216 voxels, a multiple of 8");
    assert_eq!(tile(125, 8, 216), 128 * 216, "a 5³ tile is packed");
    assert_eq!(tile(1024, 8, 216), 0, "full tiles never are");
}
