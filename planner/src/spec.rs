//! The architecture spec of the 3D U-Net family: the single source of truth for the network.
//!
//! The planner simulates exactly this network and the pipeline builds exactly this network, so what is
//! planned is what is trained. Axis lists (`stride`, `kernel`) are in NIfTI voxel order `(x, y, z)`, like
//! patch sizes; burn tensors are `[N, C, z, y, x]` and the pipeline reverses the lists.
//!
//! The topology, stated once so that planner and pipeline agree:
//! - Encoder stage `s` runs `encoder_convs` conv→norm→activation layers (`Plain`) or `encoder_convs`
//!   residual blocks (`Residual`). The first conv of stage `s` has stride `stages[s].stride` (strided-conv
//!   downsampling; stage 0 has stride 1, so that the logits are at the patch's resolution). Every conv has kernel `stages[s].kernel` with padding
//!   `kernel / 2` and a bias.
//! - A residual block is conv→norm→act→conv→norm, plus a shortcut (identity, or a 1×1×1 conv with the
//!   block's stride followed by a norm when shape or channels change), then the activation (nnU-Net ResEnc).
//! - Decoder stage `s` (from the deepest-but-one up to 0): a transposed conv from `stages[s+1].features` to
//!   `stages[s].features` with kernel = stride = `stages[s+1].stride`, concatenation with the encoder
//!   output of stage `s` (skip first, then the upsampled tensor), then `decoder_convs` plain layers.
//! - Head: a 1×1×1 conv to `num_classes` on decoder stage 0. With deep supervision, one more head on every
//!   decoder stage except the lowest-resolution one (nnU-Net gives that output weight 0, so it is not
//!   built); loss weights 1/2^i (i = 0 at full resolution), normalised to sum 1.

use serde::{Deserialize, Serialize};

use crate::error::PlanError;

/// How an encoder stage is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlockKind {
    /// `encoder_convs` × (conv → norm → activation).
    Plain,
    /// `encoder_convs` residual blocks of two convs each.
    Residual,
}

/// Normalization layer after each conv.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum NormKind {
    /// BatchNorm: batch statistics in training. The planner swaps it for GroupNorm below a batch threshold.
    Batch,
    /// GroupNorm with `groups` groups (must divide every stage's channels).
    Group { groups: usize },
    /// InstanceNorm (GroupNorm with one channel per group), nnU-Net's default.
    Instance,
}

/// Nonlinearity after each norm.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ActivationKind {
    /// LeakyReLU with the given negative slope (nnU-Net: 0.01).
    LeakyRelu {
        negative_slope: f64,
    },
    Relu,
}

/// One resolution level of the U-Net.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageSpec {
    /// Output channels of every conv in this stage.
    pub features: usize,
    /// Stride of the stage's first conv, per axis `(x, y, z)`; 1 or 2 (e.g. `[2, 2, 1]` for thick slices).
    pub stride: [usize; 3],
    /// Conv kernel per axis, 3 or 1 (1 along a coarse axis, as nnU-Net does for anisotropic data).
    #[serde(default = "default_kernel")]
    pub kernel: [usize; 3],
    /// Convs (plain) or residual blocks (residual) in the encoder stage.
    #[serde(default = "default_convs")]
    pub encoder_convs: usize,
    /// Plain convs in the decoder stage at this resolution (unused for the deepest stage).
    #[serde(default = "default_convs")]
    pub decoder_convs: usize,
}

fn default_kernel() -> [usize; 3] {
    [3, 3, 3]
}

fn default_convs() -> usize {
    2
}

/// A 3D U-Net of the family described in the module docs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkSpec {
    pub in_channels: usize,
    /// Output classes including background.
    pub num_classes: usize,
    /// Encoder stages from full resolution down to the bottleneck.
    pub stages: Vec<StageSpec>,
    #[serde(default = "default_block")]
    pub block: BlockKind,
    #[serde(default = "default_norm")]
    pub norm: NormKind,
    #[serde(default = "default_activation")]
    pub activation: ActivationKind,
    #[serde(default)]
    pub deep_supervision: bool,
}

fn default_block() -> BlockKind {
    BlockKind::Plain
}

fn default_norm() -> NormKind {
    NormKind::Instance
}

fn default_activation() -> ActivationKind {
    ActivationKind::LeakyRelu { negative_slope: 0.01 }
}

impl NetworkSpec {
    /// The classic isotropic U-Net: stage 0 at stride 1, every later stage at stride 2, 3×3×3 kernels, two
    /// convs per encoder and decoder stage, LeakyReLU(0.01), plain blocks, no deep supervision. The starting
    /// point that tests, examples and hand-written experiments adjust field by field.
    pub fn plain_unet(in_channels: usize, num_classes: usize, features: &[usize], norm: NormKind) -> Self {
        NetworkSpec {
            in_channels,
            num_classes,
            stages: features
                .iter()
                .enumerate()
                .map(|(i, &f)| StageSpec {
                    features: f,
                    stride: if i == 0 { [1; 3] } else { [2; 3] },
                    kernel: default_kernel(),
                    encoder_convs: default_convs(),
                    decoder_convs: default_convs(),
                })
                .collect(),
            block: BlockKind::Plain,
            norm,
            activation: default_activation(),
            deep_supervision: false,
        }
    }

    /// Product of the strides of stages `0..=s` per axis: the downsampling factor at stage `s`.
    pub fn cumulative_stride(&self, s: usize) -> [usize; 3] {
        let mut f = [1usize; 3];
        for st in &self.stages[..=s] {
            for (fa, sa) in f.iter_mut().zip(st.stride) {
                *fa *= sa;
            }
        }
        f
    }

    /// The total downsampling factor per axis: every patch edge must be a multiple of it.
    pub fn total_stride(&self) -> [usize; 3] {
        self.cumulative_stride(self.stages.len() - 1)
    }

    /// Checks the spec on its own (no patch). Errors name the offending field.
    pub fn validate(&self) -> Result<(), PlanError> {
        let bad = |field: String, problem: String| Err(PlanError::InvalidSpec { field, problem });
        if self.in_channels == 0 {
            return bad("network.in_channels".into(), "must be at least 1".into());
        }
        if self.num_classes < 2 {
            return bad("network.num_classes".into(), "must be at least 2 (background + one class)".into());
        }
        if self.stages.is_empty() {
            return bad("network.stages".into(), "needs at least one stage".into());
        }
        for (s, st) in self.stages.iter().enumerate() {
            let f = |name: &str| format!("network.stages[{s}].{name}");
            if st.features == 0 {
                return bad(f("features"), "must be at least 1".into());
            }
            if st.stride.iter().any(|&v| v != 1 && v != 2) {
                return bad(f("stride"), format!("{:?}: each axis must be 1 or 2", st.stride));
            }
            if s == 0 && st.stride != [1, 1, 1] {
                return bad(
                    f("stride"),
                    format!(
                        "{:?}: the first stage must keep full resolution ([1, 1, 1]): the logits come out at its \
                         resolution, and the loss and sliding-window inference need them at the patch's",
                        st.stride
                    ),
                );
            }
            if st.kernel.iter().any(|&v| v != 1 && v != 3) {
                return bad(f("kernel"), format!("{:?}: each axis must be 3 or 1", st.kernel));
            }
            if st.encoder_convs == 0 {
                return bad(f("encoder_convs"), "must be at least 1".into());
            }
            if s + 1 < self.stages.len() && st.decoder_convs == 0 {
                return bad(f("decoder_convs"), "must be at least 1".into());
            }
            match self.norm {
                NormKind::Group { groups } if groups == 0 || st.features % groups != 0 => {
                    return bad(
                        "network.norm.groups".into(),
                        format!("{groups} groups do not divide the {} channels of stage {s}", st.features),
                    );
                }
                _ => {}
            }
        }
        if let ActivationKind::LeakyRelu { negative_slope } = self.activation
            && !(negative_slope.is_finite() && negative_slope >= 0.0)
        {
            return bad(
                "network.activation.negative_slope".into(),
                format!("{negative_slope} is not a finite slope ≥ 0"),
            );
        }
        Ok(())
    }

    /// Checks that a patch `(x, y, z)` passes through every stride and its skip connections line up.
    pub fn validate_patch(&self, patch: [usize; 3]) -> Result<(), PlanError> {
        let total = self.total_stride();
        for a in 0..3 {
            if patch[a] == 0 || !patch[a].is_multiple_of(total[a]) {
                return Err(PlanError::InvalidSpec {
                    field: "patch_size".into(),
                    problem: format!(
                        "{:?}: axis {} ({}) is not a positive multiple of the network's total stride {} on that axis",
                        patch,
                        ["x", "y", "z"][a],
                        patch[a],
                        total[a]
                    ),
                });
            }
        }
        Ok(())
    }

    /// Spatial shape `(x, y, z)` of stage `s`'s feature maps for a given patch.
    pub fn stage_shape(&self, patch: [usize; 3], s: usize) -> [usize; 3] {
        let f = self.cumulative_stride(s);
        [patch[0] / f[0], patch[1] / f[1], patch[2] / f[2]]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unet(features: &[usize]) -> NetworkSpec {
        NetworkSpec::plain_unet(1, 3, features, NormKind::Group { groups: 8 })
    }

    #[test]
    fn total_stride_multiplies_stage_strides() {
        let mut n = unet(&[16, 32, 64, 128]);
        n.stages[1].stride = [2, 2, 1];
        assert_eq!(n.total_stride(), [8, 8, 4]);
        assert_eq!(n.stage_shape([64, 64, 32], 2), [16, 16, 16]);
    }

    #[test]
    fn groups_not_dividing_channels_names_the_field() {
        let mut n = unet(&[12, 24]);
        n.norm = NormKind::Group { groups: 8 };
        let e = n.validate().unwrap_err().to_string();
        assert!(e.contains("network.norm.groups"), "{e}");
    }

    #[test]
    fn a_strided_first_stage_is_rejected_with_the_field() {
        // Its logits would come out at half resolution: the trainer's loss would quietly subsample the labels
        // and sliding-window inference would fail on the window size, after training.
        for depth in [1, 3] {
            let mut n = unet(&[16, 32, 64][..depth]);
            n.stages[0].stride = [2, 2, 1];
            let e = n.validate().unwrap_err().to_string();
            assert!(e.contains("network.stages[0].stride") && e.contains("full resolution"), "{e}");
        }
    }

    #[test]
    fn patch_not_divisible_by_stride_is_rejected() {
        let n = unet(&[16, 32, 64]);
        assert!(n.validate_patch([32, 32, 32]).is_ok());
        let e = n.validate_patch([32, 30, 32]).unwrap_err().to_string();
        assert!(e.contains("patch_size") && e.contains("axis y"), "{e}");
    }

    #[test]
    fn spec_reads_from_toml_with_defaults() {
        let n: NetworkSpec = toml::from_str(
            r#"
            in_channels = 2
            num_classes = 4
            norm = { kind = "group", groups = 4 }
            stages = [ { features = 8, stride = [1,1,1] }, { features = 16, stride = [2,2,1], kernel = [3,3,1] } ]
            "#,
        )
        .unwrap();
        assert_eq!(n.stages[1].kernel, [3, 3, 1]);
        assert_eq!(n.stages[0].encoder_convs, 2);
        assert_eq!(n.block, BlockKind::Plain);
        assert!(n.validate().is_ok());
    }
}
