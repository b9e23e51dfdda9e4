//! Every constant the planner's decisions and memory model rest on, each with the reason for its value.
//!
//! Device- and backend-specific constants that had to be measured (allocator overheads, workspace
//! factors) live in `configs/devices/*.toml` instead, next to how they were obtained; see [`crate::device`].

/// Fraction of the budget kept free. nnU-Net's element-count estimate overshot its target by up to 13.8 %
/// on an A100 (ResEnc M); voxplan counts bytes and models the allocator, so it keeps a smaller margin for
/// what it cannot see (driver, fragmentation inside pages, autotune candidates, other processes).
pub const SAFETY_MARGIN_FRACTION: f64 = 0.10;

/// Per-device batch from which BatchNorm is kept. Wu & He (ECCV 2018): at 2 images per GPU BatchNorm had
/// 34.7 % error versus GroupNorm's 24.1 %; at 32 they were on par. 8 is where BN's statistics become
/// usable in 3D segmentation practice; the experiment can override it (`plan.batch_norm_min_batch`).
pub const DEFAULT_BATCH_NORM_MIN_BATCH: usize = 8;

/// Largest GroupNorm group count considered when BatchNorm is swapped out (Wu & He's default, G = 32).
pub const MAX_GROUPNORM_GROUPS: usize = 32;

/// Largest per-device batch the search tries. Far above any 3D segmentation batch; bounds the search.
pub const MAX_BATCH_SEARCH: usize = 4096;

/// Points of the memory-versus-batch curve in reports (1, 2, 3, ... up to this or the first misfit + 1).
pub const BATCH_CURVE_POINTS: usize = 12;

/// nnU-Net's 3D target volume of the initial patch, 256³ voxels, shaped by 1/spacing.
pub const AUTO_PATCH_TARGET_VOXELS: f64 = 256.0 * 256.0 * 256.0;

/// nnU-Net: pool an axis only while its feature map stays ≥ this edge at the bottleneck.
pub const AUTO_MIN_BOTTLENECK_EDGE: usize = 4;

/// nnU-Net: an axis is pooled (and gets a 3-wide kernel) only when its spacing is within this factor of
/// the finest spacing.
pub const AUTO_ANISOTROPY_FACTOR: f64 = 2.0;

/// nnU-Net: features of the first stage; doubled per stage.
pub const AUTO_BASE_FEATURES: usize = 32;

/// nnU-Net: cap on features per stage for 3D networks.
pub const AUTO_MAX_FEATURES: usize = 320;

/// nnU-Net v2 `UNet_reference_val_3d`: feature-map elements (one sample) that fit its 8 GB target at batch
/// 2. Used only by [`crate::autoconfig`] to reproduce nnU-Net's first guess; the real fit is the planner's.
pub const NNUNET_REFERENCE_ELEMENTS_3D: f64 = 560_000_000.0;

/// nnU-Net v2 `UNet_featuremap_min_edge_length` and stage limit: it never builds more than this many
/// stages in 3D (`max_numpool` is effectively unbounded, so this only guards absurd inputs).
pub const AUTO_MAX_STAGES: usize = 8;

/// Inference windows overlap by half a patch (nnU-Net's `tile_step_size = 0.5`).
pub const INFERENCE_WINDOW_STEP_FRACTION: f64 = 0.5;

/// Bytes of one f32 element.
pub const F32_BYTES: u64 = 4;
/// Bytes of one bf16/f16 element.
pub const HALF_BYTES: u64 = 2;
/// Bytes of one integer label (burn's default int element on flex and CUDA is i32).
pub const LABEL_BYTES: u64 = 4;
/// Bytes of one bool (LeakyReLU's saved mask): flex and CUDA store bools as u8.
pub const BOOL_BYTES: u64 = 1;

/// GroupNorm/InstanceNorm keep `x − μ` and `x̂` for backward (burn 0.21 composes GN from primitive ops).
pub const GROUP_NORM_SAVED_ACTIVATIONS: u64 = 2;
/// BatchNorm (training) keeps `x − μ` twice plus `x̂`.
pub const BATCH_NORM_SAVED_ACTIVATIONS: u64 = 3;
/// Temporaries of a norm's backward (grad of x̂, of x − μ), in activations.
pub const NORM_BACKWARD_TEMPORARIES: u64 = 2;
/// Dice + CE keeps `exp` of the stable logits, the softmax and the one-hot target (3 × C × voxels f32)
/// without checkpointing.
pub const LOSS_SAVED_LOGIT_SIZES: u64 = 3;
/// With balanced checkpointing the loss's memory-bound ops are recomputed from the logits; the one-hot
/// target (an untracked operand) is still saved: logits + one-hot.
pub const LOSS_SAVED_LOGIT_SIZES_CHECKPOINTED: u64 = 2;
/// Loss forward temporaries alive at once (stable logits, log-softmax, a product), in logit sizes.
pub const LOSS_FORWARD_TEMPORARIES: u64 = 2;
/// Loss backward temporaries (grads of p, log p and the stable logits), in logit sizes.
pub const LOSS_BACKWARD_TEMPORARIES: u64 = 3;
/// Per-parameter temporaries of one optimizer step (new state and new value of the largest tensor).
pub const OPTIMIZER_STEP_TEMPORARIES: u64 = 2;
/// SGD with momentum keeps one state tensor per parameter.
pub const SGD_STATE_PER_PARAM: u64 = 1;
/// AdamW keeps first and second moments.
pub const ADAMW_STATE_PER_PARAM: u64 = 2;
