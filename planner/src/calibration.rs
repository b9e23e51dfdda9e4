//! Fits the backend constants to measured steps.
//!
//! How to use: run real training steps (different patches and batches) on the device, record the
//! measured peak (flex: heap growth during the step; CUDA: `MemoryUsage::bytes_reserved` after sync, or NVML
//! used bytes), and pair each with the planner's [`Components`] for the same configuration
//! (`simulate(...).peak_components`). `fit` solves `measured ≈ a·activations + b·workspace + fixed` in
//! least squares (model state, batch and allocator slack are taken as exact) and returns
//! `activation_scale = a`, a workspace factor multiplier `b` and `fixed_overhead_bytes`; write them into
//! `configs/devices/backends.toml` (multiply the current workspace factors by `b`).

use serde::{Deserialize, Serialize};

use crate::device::{BackendModel, CalibrationRecord, PerThreadScratch, ProfileFile};
use crate::error::PlanError;
use crate::timeline::Components;

/// One measured step.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub components: Components,
    pub measured_bytes: u64,
}

/// Fitted constants.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FittedConstants {
    pub activation_scale: f64,
    /// Multiplier on the current conv workspace factors.
    pub workspace_factor_scale: f64,
    pub fixed_overhead_bytes: u64,
    /// Root-mean-square relative error of the fit over the samples.
    pub rms_relative_error: f64,
}

/// Least-squares fit of the three constants; needs at least three samples that vary independently.
pub fn fit(samples: &[Sample]) -> Result<FittedConstants, PlanError> {
    if samples.len() < 3 {
        return Err(PlanError::Calibration(format!("need at least 3 samples, got {}", samples.len())));
    }
    // Rows [activation + temporaries, workspace, 1] → measured − exactly known parts.
    let rows: Vec<([f64; 3], f64)> = samples
        .iter()
        .map(|s| {
            let c = &s.components;
            let known = (c.model_state_bytes + c.batch_bytes + c.allocator_slack_bytes) as f64;
            (
                [(c.activation_bytes + c.temporary_bytes) as f64, c.workspace_bytes as f64, 1.0],
                s.measured_bytes as f64 - known,
            )
        })
        .collect();
    let mut ata = [[0.0f64; 3]; 3];
    let mut atb = [0.0f64; 3];
    for (x, y) in &rows {
        for i in 0..3 {
            atb[i] += x[i] * y;
            for j in 0..3 {
                ata[i][j] += x[i] * x[j];
            }
        }
    }
    // A column that is all zero (e.g. no workspace on CUDA) is pinned to 1 (scale) and left out.
    let mut active: Vec<usize> = (0..3).filter(|&i| ata[i][i] > 0.0).collect();
    if !active.contains(&2) {
        active.push(2);
    }
    let sol = solve(&ata, &atb, &active)
        .ok_or_else(|| PlanError::Calibration("samples do not vary independently (singular system)".into()))?;
    let a = if active.contains(&0) { sol[0] } else { 1.0 };
    let b = if active.contains(&1) { sol[1] } else { 1.0 };
    let fixed = sol[2].max(0.0);
    let mut se = 0.0;
    for (s, (x, y)) in samples.iter().zip(&rows) {
        let pred = a * x[0] + b * x[1] + fixed;
        let known = s.measured_bytes as f64 - y;
        se += (((pred + known) - s.measured_bytes as f64) / s.measured_bytes.max(1) as f64).powi(2);
    }
    Ok(FittedConstants {
        activation_scale: a,
        workspace_factor_scale: b,
        fixed_overhead_bytes: fixed.round() as u64,
        rms_relative_error: (se / samples.len() as f64).sqrt(),
    })
}

/// The backend model with fitted constants applied to `base` (the constants the samples' components were
/// simulated with): activation scale and workspace factors multiplied, the intercept as the step overhead.
/// The fixed (non-heap, non-pool) overhead is not fitted: the measurements cannot see it.
pub fn calibrated_backend(base: &BackendModel, fit: &FittedConstants, source: String) -> BackendModel {
    BackendModel {
        activation_scale: base.activation_scale * fit.activation_scale,
        conv_backward_workspace_factor: base.conv_backward_workspace_factor * fit.workspace_factor_scale,
        conv_forward_workspace_factor: base.conv_forward_workspace_factor * fit.workspace_factor_scale,
        // The fitted intercept already holds this machine's per-thread scratch.
        step_overhead_bytes: fit.fixed_overhead_bytes,
        per_thread_scratch: PerThreadScratch::None,
        source,
        ..base.clone()
    }
}

/// The profile file's text: a comment saying what it is, then the TOML of `profile`.
pub fn profile_toml(profile: &ProfileFile) -> Result<String, PlanError> {
    let body = toml::to_string(profile).map_err(|e| PlanError::Calibration(format!("serialising the profile: {e}")))?;
    Ok(format!(
        "# A calibrated device profile written by `voxplan calibrate` (see [calibration] for how it was obtained).\n\
         # Use it with `voxplan bench planner --profile FILE`, or for every plan of a process by setting\n\
         # {}=FILE (voxplan plan / train).\n\n{body}",
        crate::device::PROFILE_ENV
    ))
}

/// Builds the profile file from a fit.
pub fn profile_file(base: &BackendModel, fit: &FittedConstants, record: CalibrationRecord) -> ProfileFile {
    let source = format!(
        "voxplan calibrate on {} at {}: {} samples, fit residual {:.2} % rms",
        record.machine,
        record.date,
        record.samples,
        100.0 * record.rms_relative_error
    );
    ProfileFile { backend: calibrated_backend(base, fit, source), calibration: record }
}

/// Gaussian elimination on the `active` sub-system.
fn solve(a: &[[f64; 3]; 3], b: &[f64; 3], active: &[usize]) -> Option<[f64; 3]> {
    let k = active.len();
    let mut m: Vec<Vec<f64>> =
        active.iter().map(|&i| active.iter().map(|&j| a[i][j]).chain([b[i]]).collect()).collect();
    for col in 0..k {
        let piv = (col..k).max_by(|&x, &y| m[x][col].abs().total_cmp(&m[y][col].abs()))?;
        if m[piv][col].abs() < 1e-9 * m[piv].iter().map(|v| v.abs()).fold(1.0, f64::max) {
            return None;
        }
        m.swap(col, piv);
        for r in 0..k {
            if r != col {
                let f = m[r][col] / m[col][col];
                let pivot_row = m[col].clone();
                for (dst, src) in m[r].iter_mut().zip(&pivot_row).skip(col) {
                    *dst -= f * src;
                }
            }
        }
    }
    let mut out = [0.0; 3];
    for (r, &i) in active.iter().enumerate() {
        out[i] = m[r][k] / m[r][r];
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(act: u64, work: u64, a: f64, b: f64, fixed: u64) -> Sample {
        let components =
            Components { activation_bytes: act, workspace_bytes: work, model_state_bytes: 1000, ..Default::default() };
        Sample { components, measured_bytes: (a * act as f64 + b * work as f64) as u64 + fixed + 1000 }
    }

    #[test]
    fn recovers_known_constants() {
        let s: Vec<Sample> =
            [(100 << 20, 30 << 20), (200 << 20, 30 << 20), (150 << 20, 90 << 20), (400 << 20, 10 << 20)]
                .iter()
                .map(|&(x, w)| sample(x, w, 1.1, 0.9, 64 << 20))
                .collect();
        let f = fit(&s).unwrap();
        assert!((f.activation_scale - 1.1).abs() < 1e-6, "{f:?}");
        assert!((f.workspace_factor_scale - 0.9).abs() < 1e-6, "{f:?}");
        assert!((f.fixed_overhead_bytes as i64 - (64 << 20)).abs() < 16, "{f:?}");
        assert!(f.rms_relative_error < 1e-6);
    }

    #[test]
    fn too_few_or_degenerate_samples_are_errors() {
        assert!(fit(&[sample(1, 1, 1.0, 1.0, 0)]).is_err());
        let same = sample(100, 10, 1.0, 1.0, 5);
        assert!(fit(&[same, same, same]).unwrap_err().to_string().contains("singular"));
    }
}
