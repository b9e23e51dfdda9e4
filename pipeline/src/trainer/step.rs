//! One training step, shared by the training loop and the planner's step probe, so that what the planner is
//! checked against is exactly what training runs: forward, Dice + CE (deep supervision included), the loss
//! scaled by `loss scale / accumulation`, backward, gradients summed into the accumulator, then (on several
//! devices) averaged across the ranks, unscale, finite check and the optimizer update.

use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{ElementConversion, Int, Tensor};

use crate::data_parallel::Peer;
use crate::error::PipelineError;
use crate::loss::DiceCeLoss;
use crate::model::UNet;
use crate::optim::TrainOptimizer;
use crate::precision::{LossScaler, ScaledStep, unscale_and_check};

/// Points inside a step where a caller may read memory (the CUDA meter polls; the probe records phases).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepPoint {
    /// Forward and loss done, the loss value read: what autodiff keeps for backward is live.
    AfterForward,
    /// Backward done and its gradients summed into the accumulator.
    AfterBackward,
    /// The optimizer update done (or skipped).
    AfterOptimizer,
}

/// What one micro-batch's forward and backward gave.
pub enum MicroOutcome {
    /// The unscaled loss value; gradients were added to the accumulator.
    Accumulated { loss: f64 },
    /// The loss was not finite; nothing was accumulated (the caller decides how to report it).
    NonFiniteLoss { loss: f64 },
}

/// Forward, loss and backward of one micro-batch; its gradients are added to `accumulator`.
/// `accumulation` divides the loss so that the summed gradients are those of the whole effective batch.
#[allow(clippy::too_many_arguments)]
pub fn micro_batch<B: AutodiffBackend>(
    model: &UNet<B>,
    loss_fn: &DiceCeLoss,
    images: Tensor<B, 5>,
    labels: Tensor<B, 4, Int>,
    loss_scale: f32,
    accumulation: usize,
    accumulator: &mut GradientsAccumulator<UNet<B>>,
    on_point: &mut dyn FnMut(StepPoint),
) -> MicroOutcome {
    let outputs = model.forward(images);
    let loss = loss_fn.forward(&outputs, labels);
    drop(outputs);
    let value: f64 = loss.clone().into_scalar().elem();
    on_point(StepPoint::AfterForward);
    if !value.is_finite() {
        return MicroOutcome::NonFiniteLoss { loss: value };
    }
    let scaled = loss.mul_scalar(loss_scale as f64 / accumulation.max(1) as f64);
    let grads = GradientsParams::from_grads(scaled.backward(), model);
    accumulator.accumulate(model, grads);
    on_point(StepPoint::AfterBackward);
    MicroOutcome::Accumulated { loss: value }
}

/// Averages the accumulated gradients over `peer`'s ranks, unscales and checks them, and applies the
/// optimizer at `lr` unless the loss scaler skips the step. Returns the (possibly updated) model and whether
/// the step was skipped. Every rank sees the same averaged gradients, so all skip or step alike.
#[allow(clippy::too_many_arguments)] // the step's state, each a separate concern
pub fn optimizer_update<B: AutodiffBackend>(
    model: UNet<B>,
    optimizer: &mut TrainOptimizer<B, UNet<B>>,
    scaler: &mut LossScaler,
    accumulator: &mut GradientsAccumulator<UNet<B>>,
    lr: f64,
    peer: &Peer,
    on_point: &mut dyn FnMut(StepPoint),
) -> Result<(UNet<B>, bool), PipelineError> {
    let grads = peer.average_gradients(&model, accumulator.grads())?;
    let (grads, finite) = unscale_and_check(&model, grads, scaler.scale());
    let skipped = scaler.update(finite) == ScaledStep::Skip;
    let model = if skipped { model } else { optimizer.step(lr, model, grads) };
    on_point(StepPoint::AfterOptimizer);
    Ok((model, skipped))
}
