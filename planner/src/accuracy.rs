//! Predicted against measured: what the planner says one step of a zoo configuration needs, what a real
//! step used, and where the two disagree most.
//!
//! What is compared (apples to apples): the planner's peak minus the backend's `fixed_overhead_bytes`. That
//! constant is the part of the process that is not a tensor of the step (CPU: the binary, thread stacks and
//! allocator arenas; CUDA: the context and compiled kernels), which neither the counting allocator nor
//! cubecl's pools see. Everything else the planner counts (parameters, gradients, optimizer state, the
//! batch, activations, workspace, allocator slack, the calibrated step overhead) is on the heap (CPU) or in
//! cubecl's reserved pages (CUDA), which is what the probe measures. The driver's figure (CUDA) is compared
//! with the full peak, context included.

use serde::{Deserialize, Serialize};

use crate::device::DeviceProfile;
use crate::error::PlanError;
use crate::graph::LossKind;
use crate::timeline::{Components, Phase, SimRequest, Timeline, simulate_with};
use crate::zoo::{ZooConfig, ZooHalf};

/// What a real step used (filled by the pipeline's step probe). All figures are bytes above the heap (or
/// pool) that was live before the model was built.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct MeasuredStep {
    /// Highest use during the step.
    pub peak_bytes: u64,
    /// Live at the end of forward + loss, minus what was live before the batch was made (model state):
    /// the batch and what autodiff keeps for backward.
    pub retained_after_forward_bytes: u64,
    /// Highest use during forward + loss.
    pub forward_peak_bytes: u64,
    /// Highest use during backward (and the accumulation of its gradients).
    pub backward_peak_bytes: u64,
    /// Highest use during the optimizer update.
    pub optimizer_peak_bytes: u64,
    /// CUDA: the driver's used memory (total − free) at the highest poll, context included.
    pub driver_used_bytes: Option<u64>,
    /// Median wall time of the measured steps, seconds (memory is the figure of interest; time is context).
    pub step_seconds: f64,
}

/// The planner's figures for the same step, on the same footing as [`MeasuredStep`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PredictedStep {
    pub peak_bytes: u64,
    pub retained_after_forward_bytes: u64,
    pub forward_peak_bytes: u64,
    pub backward_peak_bytes: u64,
    pub optimizer_peak_bytes: u64,
    /// The full planned peak including the fixed overhead (what `voxplan plan` prints).
    pub planned_peak_bytes: u64,
    pub peak_op: String,
    pub peak_phase: Phase,
    /// Op at which each phase peaks: forward, backward, optimizer.
    pub phase_peak_ops: [String; 3],
    pub components: Components,
}

/// Runs the planner's simulation for a zoo entry at its batch.
pub fn simulate_config(cfg: &ZooConfig, batch: usize, device: &DeviceProfile) -> Result<Timeline, PlanError> {
    let net = cfg.network()?;
    Ok(simulate_with(&SimRequest {
        network: &net,
        patch: cfg.patch,
        batch,
        precision: cfg.precision,
        checkpointing: cfg.checkpointing,
        optimizer: cfg.optimizer,
        accumulation: 1,
        loss: LossKind::DiceCe,
        device,
        training: true,
    }))
}

/// The planner's prediction for a zoo entry, comparable with a [`MeasuredStep`].
pub fn predict(cfg: &ZooConfig, device: &DeviceProfile) -> Result<PredictedStep, PlanError> {
    let t = simulate_config(cfg, cfg.batch, device)?;
    Ok(prediction_from(&t, device))
}

/// Reads the comparable figures off a timeline.
pub fn prediction_from(t: &Timeline, device: &DeviceProfile) -> PredictedStep {
    let fixed = device.backend.fixed_overhead_bytes;
    let phase_peak = |phases: &[Phase]| {
        t.events
            .iter()
            .filter(|e| phases.contains(&e.phase))
            .max_by_key(|e| e.device_bytes)
            .map_or((0, String::new()), |e| (e.device_bytes.saturating_sub(fixed), e.op.clone()))
    };
    let (fwd, fwd_op) = phase_peak(&[Phase::Setup, Phase::Forward]);
    let (bwd, bwd_op) = phase_peak(&[Phase::Backward]);
    let (opt, opt_op) = phase_peak(&[Phase::Optimizer]);
    PredictedStep {
        peak_bytes: t.peak_bytes.saturating_sub(fixed),
        retained_after_forward_bytes: t.forward_retained_bytes,
        forward_peak_bytes: fwd,
        backward_peak_bytes: bwd,
        optimizer_peak_bytes: opt,
        planned_peak_bytes: t.peak_bytes,
        peak_op: t.peak_op.clone(),
        peak_phase: t.peak_phase,
        phase_peak_ops: [fwd_op, bwd_op, opt_op],
        components: t.peak_components,
    }
}

/// `(predicted − measured) / measured`; positive = the planner over-estimates (safe side).
pub fn relative_error(predicted: u64, measured: u64) -> f64 {
    (predicted as f64 - measured as f64) / measured.max(1) as f64
}

/// One figure of one configuration where prediction and measurement can be set side by side.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseDiff {
    /// `retained after forward`, `forward peak`, `backward peak`, `optimizer peak`.
    pub what: String,
    /// The planner's op at that point.
    pub op: String,
    pub predicted_bytes: u64,
    pub measured_bytes: u64,
    pub relative_error: f64,
}

/// One configuration's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    pub name: String,
    pub half: ZooHalf,
    pub summary: String,
    pub patch: [usize; 3],
    pub batch: usize,
    pub predicted: PredictedStep,
    pub measured: MeasuredStep,
    /// Of the step peak.
    pub relative_error: f64,
    /// The phase figure with the largest absolute relative error: where the model is most wrong.
    pub worst_phase: PhaseDiff,
    /// The zoo entry measured, so that a later run can tell whether a stored measurement still applies.
    #[serde(default)]
    pub config: Option<ZooConfig>,
}

/// Sets a prediction beside a measurement.
pub fn compare(cfg: &ZooConfig, predicted: PredictedStep, measured: MeasuredStep) -> Comparison {
    let p = &predicted;
    let m = &measured;
    let diffs = [
        ("retained after forward", "end of forward", p.retained_after_forward_bytes, m.retained_after_forward_bytes),
        ("forward peak", p.phase_peak_ops[0].as_str(), p.forward_peak_bytes, m.forward_peak_bytes),
        ("backward peak", p.phase_peak_ops[1].as_str(), p.backward_peak_bytes, m.backward_peak_bytes),
        ("optimizer peak", p.phase_peak_ops[2].as_str(), p.optimizer_peak_bytes, m.optimizer_peak_bytes),
    ];
    let worst_phase = diffs
        .iter()
        .filter(|d| d.3 > 0)
        .map(|&(what, op, pb, mb)| PhaseDiff {
            what: what.into(),
            op: op.into(),
            predicted_bytes: pb,
            measured_bytes: mb,
            relative_error: relative_error(pb, mb),
        })
        .max_by(|a, b| a.relative_error.abs().total_cmp(&b.relative_error.abs()))
        .unwrap_or(PhaseDiff {
            what: "none measured".into(),
            op: String::new(),
            predicted_bytes: 0,
            measured_bytes: 0,
            relative_error: 0.0,
        });
    Comparison {
        name: cfg.name.clone(),
        half: cfg.half,
        summary: cfg.summary(),
        patch: cfg.patch,
        batch: cfg.batch,
        relative_error: relative_error(p.peak_bytes, m.peak_bytes),
        predicted,
        measured,
        worst_phase,
        config: Some(cfg.clone()),
    }
}

/// Median and worst absolute relative error of one half.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ErrorSummary {
    pub count: usize,
    pub median_abs: f64,
    pub worst_abs: f64,
}

/// [`ErrorSummary`] over the comparisons of `half` (None when it has none).
pub fn summarize(results: &[Comparison], half: ZooHalf) -> Option<ErrorSummary> {
    let mut errs: Vec<f64> = results.iter().filter(|c| c.half == half).map(|c| c.relative_error.abs()).collect();
    if errs.is_empty() {
        return None;
    }
    errs.sort_by(f64::total_cmp);
    let n = errs.len();
    let median = if n % 2 == 1 { errs[n / 2] } else { (errs[n / 2 - 1] + errs[n / 2]) / 2.0 };
    Some(ErrorSummary { count: n, median_abs: median, worst_abs: errs[n - 1] })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zoo::parse_zoo;

    fn cfg() -> ZooConfig {
        parse_zoo(
            r#"[[config]]
            name = "t"
            half = "holdout"
            patch = [16, 16, 16]
            batch = 1
            precision = "f32"
            optimizer = "sgd"
            features = [4, 8]
            norm = { kind = "instance" }"#,
            "t",
        )
        .unwrap()
        .remove(0)
    }

    #[test]
    fn relative_error_is_signed_against_the_measurement() {
        assert!((relative_error(110, 100) - 0.1).abs() < 1e-12);
        assert!((relative_error(90, 100) + 0.1).abs() < 1e-12);
    }

    #[test]
    fn the_worst_phase_is_the_largest_disagreement() {
        let dev = crate::device::device_profile(&crate::device::DeviceSelector::Cpu).unwrap();
        let p = predict(&cfg(), &dev).unwrap();
        assert!(p.peak_bytes >= p.forward_peak_bytes && p.peak_bytes >= p.backward_peak_bytes);
        let m = MeasuredStep {
            peak_bytes: p.peak_bytes,
            retained_after_forward_bytes: p.retained_after_forward_bytes,
            forward_peak_bytes: p.forward_peak_bytes,
            backward_peak_bytes: p.backward_peak_bytes,
            optimizer_peak_bytes: p.optimizer_peak_bytes * 2,
            ..Default::default()
        };
        let c = compare(&cfg(), p, m);
        assert_eq!(c.relative_error, 0.0);
        assert_eq!(c.worst_phase.what, "optimizer peak");
        assert!((c.worst_phase.relative_error + 0.5).abs() < 1e-9);
    }

    #[test]
    fn summary_takes_median_and_worst_of_one_half() {
        let dev = crate::device::device_profile(&crate::device::DeviceSelector::Cpu).unwrap();
        let mut results = Vec::new();
        for (half, scale) in [(ZooHalf::Holdout, 1.02), (ZooHalf::Holdout, 0.9), (ZooHalf::Holdout, 1.05)] {
            let p = predict(&cfg(), &dev).unwrap();
            let m = MeasuredStep { peak_bytes: (p.peak_bytes as f64 / scale) as u64, ..Default::default() };
            let mut c = compare(&cfg(), p, m);
            c.half = half;
            results.push(c);
        }
        let s = summarize(&results, ZooHalf::Holdout).unwrap();
        assert_eq!(s.count, 3);
        assert!(s.worst_abs > 0.09 && s.worst_abs < 0.12, "{s:?}");
        assert!(s.median_abs > 0.04 && s.median_abs < 0.06, "{s:?}");
        assert!(summarize(&results, ZooHalf::Calibration).is_none());
    }
}
