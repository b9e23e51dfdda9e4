//! nnU-Net-style auto-configuration from a dataset fingerprint (median shape and spacing): patch shape
//! from 1/spacing scaled to 256³ and clipped to the median shape, pooling per axis while the bottleneck
//! edge stays ≥ 4 and the axis spacing is within 2× of the finest, kernel 1 on an axis until pooling makes
//! its spacing comparable, features 32 doubling to 320, and nnU-Net's own element-count shrink loop as the
//! first guess (the planner then fits the real device).

use crate::rules::{
    AUTO_ANISOTROPY_FACTOR, AUTO_BASE_FEATURES, AUTO_MAX_FEATURES, AUTO_MAX_STAGES, AUTO_MIN_BOTTLENECK_EDGE,
    AUTO_PATCH_TARGET_VOXELS, NNUNET_REFERENCE_ELEMENTS_3D,
};
use crate::spec::{ActivationKind, BlockKind, NetworkSpec, NormKind, StageSpec};

/// Pooling topology for a patch: per-stage strides and kernels, and what every edge must divide by.
struct Topology {
    strides: Vec<[usize; 3]>,
    kernels: Vec<[usize; 3]>,
    divisible_by: [usize; 3],
}

/// nnU-Net's `get_pool_and_conv_props`.
fn pool_and_conv(spacing: [f64; 3], patch: [usize; 3]) -> Topology {
    let mut sp = spacing;
    let mut size = patch.map(|v| v as f64);
    let mut kernel = [1usize; 3];
    let mut strides = vec![[1usize; 3]];
    let mut kernels = Vec::new();
    let mut pools = [0u32; 3];
    while strides.len() < AUTO_MAX_STAGES {
        let valid: Vec<usize> = (0..3).filter(|&a| size[a] >= 2.0 * AUTO_MIN_BOTTLENECK_EDGE as f64).collect();
        if valid.is_empty() {
            break;
        }
        let min_valid = valid.iter().map(|&a| sp[a]).fold(f64::INFINITY, f64::min);
        let valid: Vec<usize> = valid.into_iter().filter(|&a| sp[a] / min_valid < AUTO_ANISOTROPY_FACTOR).collect();
        if valid.len() == 1 && size[valid[0]] < 3.0 * AUTO_MIN_BOTTLENECK_EDGE as f64 {
            break;
        }
        if valid.is_empty() {
            break;
        }
        let min_all = sp.iter().copied().fold(f64::INFINITY, f64::min);
        for a in 0..3 {
            if kernel[a] != 3 && sp[a] / min_all < AUTO_ANISOTROPY_FACTOR {
                kernel[a] = 3;
            }
        }
        let mut stride = [1usize; 3];
        for &a in &valid {
            stride[a] = 2;
            pools[a] += 1;
            sp[a] *= 2.0;
            size[a] = (size[a] / 2.0).ceil();
        }
        strides.push(stride);
        kernels.push(kernel);
    }
    kernels.push([3; 3]);
    Topology { strides, kernels, divisible_by: pools.map(|p| 1usize << p) }
}

fn features(stage: usize) -> usize {
    (AUTO_BASE_FEATURES << stage.min(16)).min(AUTO_MAX_FEATURES)
}

fn network(t: &Topology, in_channels: usize, num_classes: usize) -> NetworkSpec {
    NetworkSpec {
        in_channels,
        num_classes,
        stages: t
            .strides
            .iter()
            .zip(&t.kernels)
            .enumerate()
            .map(|(s, (&stride, &kernel))| StageSpec {
                features: features(s),
                stride,
                kernel,
                encoder_convs: 2,
                decoder_convs: 2,
            })
            .collect(),
        block: BlockKind::Plain,
        norm: NormKind::Instance,
        activation: ActivationKind::LeakyRelu { negative_slope: 0.01 },
        deep_supervision: true,
    }
}

/// nnU-Net's `compute_conv_feature_map_size` for one sample: every conv and transposed-conv output plus
/// the segmentation outputs (elements, not bytes).
pub fn nnunet_feature_map_elements(net: &NetworkSpec, patch: [usize; 3]) -> f64 {
    let vox = |s: usize| net.stage_shape(patch, s).iter().map(|&v| v as f64).product::<f64>();
    let mut total = 0.0;
    for (s, st) in net.stages.iter().enumerate() {
        total += st.encoder_convs as f64 * st.features as f64 * vox(s);
    }
    for s in 0..net.stages.len().saturating_sub(1) {
        let st = &net.stages[s];
        total += st.features as f64 * vox(s) * (1.0 + st.decoder_convs as f64);
        total += net.num_classes as f64 * vox(s);
    }
    total
}

fn pad_to(patch: [usize; 3], div: [usize; 3]) -> [usize; 3] {
    [0, 1, 2].map(|a| patch[a].div_ceil(div[a]) * div[a])
}

/// Network and patch `(x, y, z)` for a dataset with the given median shape and spacing (both `(x, y, z)`).
pub fn auto_configure(
    fingerprint_median_shape: [usize; 3],
    median_spacing: [f64; 3],
    in_channels: usize,
    num_classes: usize,
) -> (NetworkSpec, [usize; 3]) {
    let median = fingerprint_median_shape.map(|v| v.max(1));
    let spacing = median_spacing.map(|s| if s.is_finite() && s > 0.0 { s } else { 1.0 });
    let inv = spacing.map(|s| 1.0 / s);
    let scale = (AUTO_PATCH_TARGET_VOXELS / inv.iter().product::<f64>()).cbrt();
    let mut patch = [0, 1, 2].map(|a| ((inv[a] * scale).round() as usize).min(median[a]).max(1));
    let mut topo = pool_and_conv(spacing, patch);
    patch = pad_to(patch, topo.divisible_by);
    let mut net = network(&topo, in_channels, num_classes);
    // nnU-Net's first guess: shrink the axis with the largest patch/median ratio while the feature maps
    // exceed its reference for the 8 GB target.
    while nnunet_feature_map_elements(&net, patch) > NNUNET_REFERENCE_ELEMENTS_3D {
        let ratio = |a: usize| patch[a] as f64 / median[a] as f64;
        let axis = (0..3).max_by(|&a, &b| ratio(a).total_cmp(&ratio(b)).then(b.cmp(&a))).unwrap_or(0);
        let mut tmp = patch;
        tmp[axis] = tmp[axis].saturating_sub(topo.divisible_by[axis]).max(1);
        let step = pool_and_conv(spacing, tmp).divisible_by[axis];
        if patch[axis] <= step {
            break;
        }
        patch[axis] -= step;
        topo = pool_and_conv(spacing, patch);
        patch = pad_to(patch, topo.divisible_by);
        net = network(&topo, in_channels, num_classes);
    }
    (net, patch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn brats_like_brain_gets_nnunets_128_cube_and_six_stages() {
        // MSD Task01 BrainTumour after nnU-Net's cropping: median shape ≈ 138×169×138 at 1 mm; nnU-Net v2
        // plans 3d_fullres with patch 128×128×128 and 6 stages.
        let (net, patch) = auto_configure([138, 169, 138], [1.0; 3], 4, 4);
        assert_eq!(patch, [128, 128, 128]);
        assert_eq!(net.stages.len(), 6);
        assert_eq!(net.stages.iter().map(|s| s.features).collect::<Vec<_>>(), [32, 64, 128, 256, 320, 320]);
        assert!(net.validate().is_ok() && net.validate_patch(patch).is_ok());
    }

    #[test]
    fn isotropic_volume_patch_is_clipped_to_median_and_divisible() {
        let (net, patch) = auto_configure([96, 96, 96], [1.0; 3], 1, 2);
        assert_eq!(patch, [96, 96, 96]);
        // 96 → 48 → 24 → 12 → 6: four poolings keep the bottleneck edge ≥ 4.
        assert_eq!(net.stages.len(), 5);
        assert!(net.validate_patch(patch).is_ok());
    }

    #[test]
    fn msd_prostate_matches_nnunets_published_plan() {
        // MSD Task05 Prostate: median shape (z, y, x) 20×320×319 at 3.6×0.625×0.625 mm. nnU-Net v2 plans
        // 3d_fullres patch (z, y, x) 20×320×256, pooling [1,2,2],[1,2,2],[2,2,2],[2,2,2],[1,2,2],[1,2,2]
        // and kernels [1,3,3] ×2 then [3,3,3]. In voxplan's (x, y, z) order:
        let (net, patch) = auto_configure([319, 320, 20], [0.625, 0.625, 3.6], 2, 3);
        assert_eq!(patch, [256, 320, 20]);
        let strides: Vec<[usize; 3]> = net.stages.iter().skip(1).map(|s| s.stride).collect();
        assert_eq!(strides, [[2, 2, 1], [2, 2, 1], [2, 2, 2], [2, 2, 2], [2, 2, 1], [2, 2, 1]]);
        let kernels: Vec<[usize; 3]> = net.stages.iter().map(|s| s.kernel).collect();
        assert_eq!(kernels[..3], [[3, 3, 1], [3, 3, 1], [3, 3, 3]]);
    }

    #[test]
    fn anisotropic_prostate_keeps_z_unpooled_and_2d_kernels_first() {
        // 0.6×0.6×3.6 mm: z is 6× coarser, so early stages pool only x, y with kernel 1 along z.
        let (net, patch) = auto_configure([320, 320, 20], [0.6, 0.6, 3.6], 2, 3);
        assert_eq!(net.stages[0].kernel, [3, 3, 1]);
        assert_eq!(net.stages[1].stride, [2, 2, 1]);
        assert!(patch[2] <= 20 && patch[0] > 4 * patch[2], "{patch:?}");
        let total = net.total_stride();
        assert!(total[0] > total[2], "{total:?}");
        assert!(net.validate_patch(patch).is_ok());
    }
}
