//! Optimizers and the learning-rate schedule.
//!
//! Default (nnU-Net): SGD, Nesterov momentum 0.99 without dampening, L2 weight decay (nnU-Net: 3e-5), and a
//! polynomial decay `(1 − t)^0.9`. Added here: a linear warm-up, because the planner scales the peak rate
//! with the effective batch and large rates diverge in the first steps otherwise (Goyal et al., 2017).
//! AdamW is the alternative for short runs. burn has no polynomial scheduler (reference §6), and
//! [`LrSchedule`] is a pure function of the optimizer step, so resuming only needs the step counter.

use std::path::Path;

use burn::module::AutodiffModule;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{AdamW, AdamWConfig, GradientsParams, Optimizer, Sgd, SgdConfig};
use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder, Recorder};
use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};
use voxplan_planner::OptimizerKind;

use crate::error::PipelineError;

/// nnU-Net's SGD momentum: high, because its batches are tiny (2 patches) and gradients noisy.
pub const SGD_MOMENTUM: f64 = 0.99;
/// nnU-Net's polynomial decay exponent.
pub const POLY_EXPONENT: f64 = 0.9;

/// The run's optimizer: SGD-Nesterov or AdamW over the model's f32 parameters.
pub enum TrainOptimizer<B: AutodiffBackend, M: AutodiffModule<B>> {
    Sgd(OptimizerAdaptor<Sgd<B::InnerBackend>, M, B>),
    AdamW(OptimizerAdaptor<AdamW, M, B>),
}

/// Builds the optimizer the plan names; `weight_decay` is L2 for SGD and decoupled for AdamW.
pub fn build_optimizer<B: AutodiffBackend, M: AutodiffModule<B>>(
    kind: OptimizerKind,
    weight_decay: f64,
) -> TrainOptimizer<B, M> {
    match kind {
        OptimizerKind::Sgd => {
            let momentum = MomentumConfig::new().with_momentum(SGD_MOMENTUM).with_dampening(0.0).with_nesterov(true);
            let decay = (weight_decay > 0.0).then(|| WeightDecayConfig::new(weight_decay as f32));
            TrainOptimizer::Sgd(SgdConfig::new().with_momentum(Some(momentum)).with_weight_decay(decay).init())
        }
        OptimizerKind::Adamw => TrainOptimizer::AdamW(AdamWConfig::new().with_weight_decay(weight_decay as f32).init()),
    }
}

impl<B: AutodiffBackend, M: AutodiffModule<B>> TrainOptimizer<B, M> {
    /// One update of `model` with `grads` at learning rate `lr`.
    pub fn step(&mut self, lr: f64, model: M, grads: GradientsParams) -> M {
        match self {
            TrainOptimizer::Sgd(o) => o.step(lr, model, grads),
            TrainOptimizer::AdamW(o) => o.step(lr, model, grads),
        }
    }

    /// Writes the optimizer state (momentum buffers) to `path` (`.mpk` is appended), full precision.
    pub fn save(&self, path: &Path) -> Result<(), PipelineError> {
        let recorder = NamedMpkFileRecorder::<FullPrecisionSettings>::new();
        let result = match self {
            TrainOptimizer::Sgd(o) => Recorder::<B>::record(&recorder, o.to_record(), path.to_path_buf()),
            TrainOptimizer::AdamW(o) => Recorder::<B>::record(&recorder, o.to_record(), path.to_path_buf()),
        };
        result.map_err(|e| PipelineError::Checkpoint { path: path.to_path_buf(), problem: e.to_string() })
    }

    /// Restores the state written by [`save`](Self::save) into an optimizer of the same kind.
    pub fn load(self, path: &Path, device: &B::Device) -> Result<Self, PipelineError> {
        let recorder = NamedMpkFileRecorder::<FullPrecisionSettings>::new();
        let err = |e: burn::record::RecorderError| PipelineError::Checkpoint {
            path: path.to_path_buf(),
            problem: format!("optimizer state: {e}"),
        };
        Ok(match self {
            TrainOptimizer::Sgd(o) => TrainOptimizer::Sgd(
                o.load_record(Recorder::<B>::load(&recorder, path.to_path_buf(), device).map_err(err)?),
            ),
            TrainOptimizer::AdamW(o) => TrainOptimizer::AdamW(
                o.load_record(Recorder::<B>::load(&recorder, path.to_path_buf(), device).map_err(err)?),
            ),
        })
    }
}

/// Linear warm-up to `peak_lr`, then polynomial decay to 0 at `total_steps`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LrSchedule {
    pub peak_lr: f64,
    /// Optimizer steps of linear warm-up (0 = none).
    pub warmup_steps: usize,
    /// Optimizer steps of the whole run, warm-up included.
    pub total_steps: usize,
    pub exponent: f64,
}

impl LrSchedule {
    /// nnU-Net's schedule (exponent 0.9) with a warm-up.
    pub fn poly(peak_lr: f64, warmup_steps: usize, total_steps: usize) -> Self {
        Self { peak_lr, warmup_steps, total_steps, exponent: POLY_EXPONENT }
    }

    /// The rate for optimizer step `step` (0-based). Warm-up reaches the peak at its last step; decay then
    /// runs over the remaining steps. Past `total_steps` the rate is 0.
    pub fn lr(&self, step: usize) -> f64 {
        if step < self.warmup_steps {
            return self.peak_lr * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let decay_steps = self.total_steps.saturating_sub(self.warmup_steps).max(1);
        let progress = ((step - self.warmup_steps) as f64 / decay_steps as f64).min(1.0);
        self.peak_lr * (1.0 - progress).powf(self.exponent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_is_linear_and_reaches_the_peak() {
        let s = LrSchedule::poly(0.01, 4, 100);
        let lrs: Vec<f64> = (0..4).map(|t| s.lr(t)).collect();
        for (i, lr) in lrs.iter().enumerate() {
            assert!((lr - 0.01 * (i + 1) as f64 / 4.0).abs() < 1e-15);
        }
        assert_eq!(s.lr(4), 0.01, "first decay step is the peak");
    }

    #[test]
    fn poly_decay_matches_nnunet_formula_and_ends_at_zero() {
        let s = LrSchedule::poly(0.01, 0, 1000);
        assert!((s.lr(500) - 0.01 * 0.5f64.powf(0.9)).abs() < 1e-15);
        assert!(s.lr(999) > 0.0);
        assert_eq!(s.lr(1000), 0.0);
        assert_eq!(s.lr(5000), 0.0);
        let mut previous = f64::INFINITY;
        for t in 0..1000 {
            assert!(s.lr(t) <= previous);
            previous = s.lr(t);
        }
    }

    #[test]
    fn schedule_round_trips_for_resume() {
        let s = LrSchedule::poly(0.02, 10, 200);
        let back: LrSchedule = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back.lr(57), s.lr(57));
    }
}
