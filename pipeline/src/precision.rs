//! Mixed precision: which dtype the convolutions compute in, the dynamic loss scaler f16 needs, and the
//! gradient unscale + finite check that decides whether an optimizer step may run.
//!
//! The scheme (burn has no AMP helper, reference §5): parameters stay f32 ("master weights"); each conv
//! casts its input, weight and bias to the compute dtype and its output back to f32, so norms, activations
//! and the loss run in f32. `Tensor::cast` is differentiable, so gradients arrive at the f32 parameters
//! in f32. bf16 has f32's exponent range and needs no loss scaling; f16 underflows small gradients, so its
//! loss is multiplied by a scale before backward and the gradients divided by it afterwards, and a step whose
//! gradients overflowed is skipped (PyTorch's `GradScaler` policy).

use burn::module::{AutodiffModule, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{ElementConversion, FloatDType, Tensor};
use serde::{Deserialize, Serialize};
use voxplan_planner::Precision;

/// The dtype convolutions compute in, or `None` when everything runs in the backend's f32.
pub fn compute_dtype(precision: Precision) -> Option<FloatDType> {
    match precision {
        Precision::F32 => None,
        Precision::Bf16Mixed => Some(FloatDType::BF16),
        Precision::F16Mixed => Some(FloatDType::F16),
    }
}

/// First scale: 2^16, PyTorch `GradScaler`'s default; large enough that f16 gradients of a freshly
/// initialised net do not underflow, and the first overflow halves it within a step or two.
pub const INITIAL_LOSS_SCALE: f32 = 65_536.0;
/// Finite steps in a row after which the scale doubles (PyTorch's `growth_interval`).
pub const GROWTH_INTERVAL: usize = 2000;
/// The scale never drops below 1: below that scaling would shrink gradients instead of protecting them.
pub const MIN_LOSS_SCALE: f32 = 1.0;
/// Upper bound so that a long run of finite steps cannot grow the scale itself to infinity in f32.
pub const MAX_LOSS_SCALE: f32 = 16_777_216.0; // 2^24

/// What the trainer does with the optimizer step after [`LossScaler::update`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScaledStep {
    /// Gradients were finite: run the optimizer step.
    Apply,
    /// Gradients overflowed: skip the step (the scale has been halved).
    Skip,
}

/// Dynamic loss scaling for f16 training; a no-op (scale 1, never changes) for f32 and bf16.
///
/// Serializable so that a resumed run continues with the scale it had reached.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LossScaler {
    enabled: bool,
    scale: f32,
    finite_steps: usize,
    skipped_steps: usize,
}

impl LossScaler {
    /// The scaler a run at `precision` needs: dynamic for f16, disabled otherwise.
    pub fn for_precision(precision: Precision) -> Self {
        match precision {
            Precision::F16Mixed => Self::dynamic(INITIAL_LOSS_SCALE),
            Precision::F32 | Precision::Bf16Mixed => {
                Self { enabled: false, scale: 1.0, finite_steps: 0, skipped_steps: 0 }
            }
        }
    }

    /// A dynamic scaler starting at `initial_scale` (tests use a huge one to force an overflow).
    pub fn dynamic(initial_scale: f32) -> Self {
        Self { enabled: true, scale: initial_scale, finite_steps: 0, skipped_steps: 0 }
    }

    /// Multiply the loss by this before `backward`, and pass it to [`unscale_and_check`].
    pub fn scale(&self) -> f32 {
        self.scale
    }

    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// Optimizer steps skipped so far because of non-finite gradients.
    pub fn skipped_steps(&self) -> usize {
        self.skipped_steps
    }

    /// Records one step's outcome and adjusts the scale: halve and skip on overflow, double after
    /// [`GROWTH_INTERVAL`] finite steps in a row. With the scaler disabled a non-finite step is still
    /// reported as `Skip` (the caller decides whether that is fatal), but the scale stays 1.
    pub fn update(&mut self, grads_finite: bool) -> ScaledStep {
        if !grads_finite {
            self.skipped_steps += 1;
            self.finite_steps = 0;
            if self.enabled {
                let old = self.scale;
                self.scale = (self.scale / 2.0).max(MIN_LOSS_SCALE);
                tracing::warn!(
                    old_scale = old,
                    new_scale = self.scale,
                    "non-finite gradients: step skipped, loss scale halved"
                );
            }
            return ScaledStep::Skip;
        }
        self.finite_steps += 1;
        if self.enabled && self.finite_steps >= GROWTH_INTERVAL {
            self.finite_steps = 0;
            let old = self.scale;
            self.scale = (self.scale * 2.0).min(MAX_LOSS_SCALE);
            tracing::info!(
                old_scale = old,
                new_scale = self.scale,
                "loss scale grown after {GROWTH_INTERVAL} finite steps"
            );
        }
        ScaledStep::Apply
    }
}

/// Divides every parameter's gradient by `scale` and reports whether all of them are finite.
///
/// The check costs one device sync: each gradient's sum is added into one scalar, and a single NaN or
/// infinity anywhere makes that scalar non-finite (inf + -inf is NaN, still caught).
pub fn unscale_and_check<B: AutodiffBackend, M: AutodiffModule<B>>(
    model: &M,
    grads: GradientsParams,
    scale: f32,
) -> (GradientsParams, bool) {
    let mut visitor = Unscale::<B> { source: grads, unscaled: GradientsParams::new(), inverse: 1.0 / scale, sum: None };
    model.visit(&mut visitor);
    let finite = match visitor.sum {
        Some(s) => s.into_scalar().elem::<f32>().is_finite(),
        None => true,
    };
    (visitor.unscaled, finite)
}

/// Moves gradients from `source` to `unscaled`, multiplied by `inverse`, summing them as it goes.
struct Unscale<B: AutodiffBackend> {
    source: GradientsParams,
    unscaled: GradientsParams,
    inverse: f32,
    sum: Option<Tensor<B::InnerBackend, 1>>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Unscale<B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let Some(grad) = self.source.remove::<B::InnerBackend, D>(param.id) else {
            return;
        };
        let grad = if self.inverse == 1.0 { grad } else { grad.mul_scalar(self.inverse) };
        let s = grad.clone().sum();
        self.sum = Some(match self.sum.take() {
            Some(acc) => acc + s,
            None => s,
        });
        self.unscaled.register::<B::InnerBackend, D>(param.id, grad);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflow_halves_and_skips_and_growth_doubles() {
        let mut s = LossScaler::for_precision(Precision::F16Mixed);
        assert_eq!(s.scale(), INITIAL_LOSS_SCALE);
        assert_eq!(s.update(false), ScaledStep::Skip);
        assert_eq!(s.scale(), INITIAL_LOSS_SCALE / 2.0);
        for _ in 0..GROWTH_INTERVAL - 1 {
            assert_eq!(s.update(true), ScaledStep::Apply);
        }
        assert_eq!(s.scale(), INITIAL_LOSS_SCALE / 2.0, "no growth before the interval");
        s.update(true);
        assert_eq!(s.scale(), INITIAL_LOSS_SCALE);
        assert_eq!(s.skipped_steps(), 1);
    }

    #[test]
    fn scale_stays_within_bounds() {
        let mut s = LossScaler::dynamic(2.0);
        for _ in 0..5 {
            s.update(false);
        }
        assert_eq!(s.scale(), MIN_LOSS_SCALE);
        let mut s = LossScaler::dynamic(MAX_LOSS_SCALE);
        for _ in 0..GROWTH_INTERVAL {
            s.update(true);
        }
        assert_eq!(s.scale(), MAX_LOSS_SCALE);
    }

    #[test]
    fn bf16_and_f32_never_scale() {
        for p in [Precision::F32, Precision::Bf16Mixed] {
            let mut s = LossScaler::for_precision(p);
            assert!(!s.is_enabled());
            assert_eq!(s.update(false), ScaledStep::Skip);
            assert_eq!(s.scale(), 1.0);
        }
    }

    #[test]
    fn scaler_state_round_trips_for_resume() {
        let mut s = LossScaler::for_precision(Precision::F16Mixed);
        s.update(false);
        s.update(true);
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<LossScaler>(&json).unwrap(), s);
    }
}
