//! Inference sizing: how many sliding windows one forward pass can take. No autodiff state is kept, so
//! each tensor dies after its last reader; the stitched output (C × voxels f32 logits sum plus a voxels f32
//! weight map) and the input volume stay for the whole volume.

use serde::{Deserialize, Serialize};

use crate::device::DeviceProfile;
use crate::error::PlanError;
use crate::graph::LossKind;
use crate::plan::Precision;
use crate::rules::{F32_BYTES, INFERENCE_WINDOW_STEP_FRACTION, SAFETY_MARGIN_FRACTION};
use crate::settings::OptimizerKind;
use crate::spec::NetworkSpec;
use crate::timeline::{SimRequest, simulate_with};
use crate::units::format_bytes;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InferencePlan {
    /// Windows batched into one forward pass.
    pub windows_per_pass: usize,
    /// Windows needed to cover the volume at half-patch steps.
    pub total_windows: usize,
    /// Peak device memory at `windows_per_pass`, accumulator and input volume included.
    pub predicted_peak_bytes: u64,
    /// The stitched output: per-voxel class sums and weight sum, plus the patch-sized blending weights, f32.
    pub output_accumulator_bytes: u64,
    /// The budget after the safety margin.
    pub budget_bytes: u64,
    /// Op at which the forward pass peaks.
    pub peak_op: String,
}

/// Windows along one axis: half-patch steps, the last one flush with the end.
fn windows_along(volume: usize, patch: usize) -> usize {
    if volume <= patch {
        return 1;
    }
    let step = ((patch as f64 * INFERENCE_WINDOW_STEP_FRACTION).floor() as usize).max(1);
    (volume - patch).div_ceil(step) + 1
}

/// Plans sliding-window inference of a `volume_shape` volume with `patch` windows.
pub fn plan_inference(
    network: &NetworkSpec,
    patch: [usize; 3],
    volume_shape: [usize; 3],
    precision: Precision,
    device: &DeviceProfile,
    budget_bytes: Option<u64>,
) -> Result<InferencePlan, PlanError> {
    network.validate()?;
    network.validate_patch(patch)?;
    if volume_shape.contains(&0) {
        return Err(PlanError::InvalidSpec {
            field: "volume_shape".into(),
            problem: format!("{volume_shape:?} has an empty axis"),
        });
    }
    let raw = budget_bytes.unwrap_or(device.free_bytes);
    let usable = (raw as f64 * (1.0 - SAFETY_MARGIN_FRACTION)) as u64;
    // A volume whose bytes do not fit 64 bits fits no device: say so instead of overflowing.
    let too_large = || PlanError::InvalidSpec {
        field: "volume_shape".into(),
        problem: format!("{volume_shape:?} is too large to count its bytes in 64 bits"),
    };
    let total_windows = (0..3)
        .try_fold(1usize, |w, a| w.checked_mul(windows_along(volume_shape[a], patch[a])))
        .ok_or_else(too_large)?;
    let voxels = volume_shape.iter().try_fold(1u64, |v, &a| v.checked_mul(a as u64)).ok_or_else(too_large)?;
    // Class sums and the weight sum per voxel, plus the one patch-sized gaussian the windows are blended by.
    let patch_voxels: u64 = patch.iter().map(|&v| v as u64).product();
    let accumulator = (network.num_classes as u64 + 1)
        .checked_mul(voxels)
        .and_then(|b| b.checked_add(patch_voxels))
        .and_then(|b| b.checked_mul(F32_BYTES))
        .ok_or_else(too_large)?;
    let input_volume = (network.in_channels as u64)
        .checked_mul(voxels)
        .and_then(|b| b.checked_mul(F32_BYTES))
        .ok_or_else(too_large)?;
    let peak = |w: usize| {
        let t = simulate_with(&SimRequest {
            network,
            patch,
            batch: w,
            precision,
            checkpointing: false,
            optimizer: OptimizerKind::Sgd,
            accumulation: 1,
            loss: LossKind::DiceCe,
            device,
            training: false,
        });
        let fits = t.oversized_allocation_bytes.is_none();
        (t.peak_bytes.saturating_add(accumulator).saturating_add(input_volume), fits, t.peak_op)
    };
    let fits = |w: usize| {
        let (p, ok, _) = peak(w);
        ok && p <= usable
    };
    if !fits(1) {
        let (p, _, _) = peak(1);
        return Err(PlanError::DoesNotFit {
            budget: format_bytes(usable),
            patch,
            how: format!("inference, {precision:?}, output accumulator {}", format_bytes(accumulator)),
            needed: format_bytes(p),
            needed_budget: format_bytes((p as f64 / (1.0 - SAFETY_MARGIN_FRACTION)).ceil() as u64),
        });
    }
    let (mut lo, mut hi) = (1usize, total_windows + 1);
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if fits(mid) { lo = mid } else { hi = mid }
    }
    let (predicted, _, peak_op) = peak(lo);
    Ok(InferencePlan {
        windows_per_pass: lo,
        total_windows,
        predicted_peak_bytes: predicted,
        output_accumulator_bytes: accumulator,
        budget_bytes: usable,
        peak_op,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_cover_with_half_overlap() {
        assert_eq!(windows_along(64, 64), 1);
        assert_eq!(windows_along(40, 64), 1);
        assert_eq!(windows_along(96, 64), 2);
        assert_eq!(windows_along(100, 64), 3);
    }
}
