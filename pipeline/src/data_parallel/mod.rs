//! Data-parallel training: one rank per device, each with its own replica of the model and its own share of
//! every global batch; gradients are averaged across the ranks before each optimizer step, so every replica
//! takes the same step and the replicas stay bit-identical (tested, `pipeline/tests/data_parallel.rs`).
//!
//! A step on rank `r` of `W`, with `b` per device and `a` micro-batches:
//! 1. `a` micro-batches of the rank's `b` patches (positions `r·b..` of each global batch of `b·W`,
//!    [`voxplan_volumes::Shard`]), each loss divided by `a`, gradients summed;
//! 2. one small all-reduce of the step's vote: the loss, whether the loss was finite, whether a stop was
//!    requested, whether the rank failed. Every rank then decides alike: stop with a checkpoint, report the
//!    non-finite loss, or go on; no rank waits in a collective that another has left;
//! 3. the gradients averaged over the `W` ranks ([`Peer::average_gradients`]): the mean of `W` sums of
//!    `a` micro-batch gradients each divided by `a`, that is the gradient of the mean loss over the
//!    effective batch `b·W·a`, what one device at `b·W` with `a` micro-batches computes;
//! 4. the optimizer step on every replica with the same gradients.
//!
//! Rank 0 writes checkpoints, metrics and the progress bar; validation is sharded (rank `r` scores cases
//! `r, r+W, …`) and the per-case Dice is gathered, so every rank reports the single-device figure.
//!
//! The all-reduce is burn-collective 0.21's, behind [`collective`]: that crate is gone from burn's main
//! branch after 0.21, so a later engine (or NCCL) is a change in that one file.

mod collective;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use burn::optim::GradientsParams;
use burn::tensor::backend::AutodiffBackend;

use crate::error::PipelineError;
use crate::model::UNet;

/// This thread's place in a data-parallel run, and its handle on the collective.
#[derive(Debug, Clone)]
pub struct Peer {
    pub rank: usize,
    pub world: usize,
    /// Set by the supervisor when a rank has failed: the others leave at their next collective call.
    abandoned: Arc<AtomicBool>,
}

/// What every rank learns at the end of a step's micro-batches ([`Peer::vote`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepVote {
    /// Mean over the ranks of their step loss (each the mean of its micro-batch losses).
    pub loss: f64,
    /// Some rank's loss was not finite.
    pub non_finite: bool,
    /// Some rank was asked to stop (a signal, a queue's cancel).
    pub stop: bool,
}

impl Peer {
    /// A run on one device: every collective operation is the identity.
    pub fn single() -> Self {
        Self { rank: 0, world: 1, abandoned: Arc::new(AtomicBool::new(false)) }
    }

    /// The ranks of one process's data-parallel run, sharing one abandon flag.
    pub fn group(world: usize) -> Vec<Self> {
        let abandoned = Arc::new(AtomicBool::new(false));
        (0..world).map(|rank| Self { rank, world, abandoned: abandoned.clone() }).collect()
    }

    pub fn is_single(&self) -> bool {
        self.world == 1
    }

    /// Whether this rank writes what the run leaves behind (checkpoints, metrics, weights, the progress).
    pub fn writes(&self) -> bool {
        self.rank == 0
    }

    /// Joins the collective on `device`; a no-op on one device.
    pub fn register<B: AutodiffBackend>(&self, device: &B::Device) -> Result<(), PipelineError> {
        if self.is_single() {
            return Ok(());
        }
        collective::register::<B::InnerBackend>(self.rank, self.world, device.clone())
            .map_err(|problem| self.failed("joining the collective", problem))
    }

    /// Leaves the collective (at the end of a run, or before an error is returned).
    pub fn finish<B: AutodiffBackend>(&self) {
        if !self.is_single() {
            collective::finish::<B::InnerBackend>(self.rank);
        }
    }

    /// Forgets every registration and operation of the collective in this process (before a new group).
    pub fn reset_process<B: AutodiffBackend>() {
        collective::reset::<B::InnerBackend>();
    }

    /// Marks the run as failed and wakes every rank waiting in a collective, so each returns an error
    /// instead of waiting for a peer that will never come.
    pub fn abandon<B: AutodiffBackend>(&self) {
        if !self.abandoned.swap(true, Ordering::SeqCst) {
            collective::reset::<B::InnerBackend>();
        }
    }

    /// `grads` (this rank's sum over its micro-batches) averaged over every rank, in the module's parameter
    /// order (the same on every rank, whatever the parameters' ids).
    pub fn average_gradients<B: AutodiffBackend>(
        &self,
        model: &UNet<B>,
        grads: GradientsParams,
    ) -> Result<GradientsParams, PipelineError> {
        if self.is_single() {
            return Ok(grads);
        }
        self.check_abandoned()?;
        collective::average_gradients::<B>(self.rank, model, grads)
            .map_err(|problem| self.failed("averaging the gradients", problem))
    }

    /// The step's vote: `loss` this rank's step loss (NaN when not finite), `stop` whether it was asked to.
    pub fn vote<B: AutodiffBackend>(
        &self,
        loss: f64,
        stop: bool,
        device: &B::Device,
    ) -> Result<StepVote, PipelineError> {
        if self.is_single() {
            return Ok(StepVote { loss, non_finite: !loss.is_finite(), stop });
        }
        let finite = loss.is_finite();
        let summed = self.sum::<B>(&[if finite { loss } else { 0.0 }, f64::from(!finite), f64::from(stop)], device)?;
        Ok(StepVote { loss: summed[0] / self.world as f64, non_finite: summed[1] > 0.0, stop: summed[2] > 0.0 })
    }

    /// Element-wise sum of `values` over the ranks, every rank getting the result. Each value travels as
    /// two `f32`s (its `f32` rounding and the rest), so a gather, where all ranks but one send zeros,
    /// returns the sender's `f64` to about 1e-14.
    pub fn sum<B: AutodiffBackend>(&self, values: &[f64], device: &B::Device) -> Result<Vec<f64>, PipelineError> {
        if self.is_single() {
            return Ok(values.to_vec());
        }
        self.check_abandoned()?;
        let split: Vec<f32> = values
            .iter()
            .flat_map(|&v| {
                let hi = v as f32;
                [hi, (v - f64::from(hi)) as f32]
            })
            .collect();
        let summed = collective::sum_f32::<B::InnerBackend>(self.rank, split, device)
            .map_err(|problem| self.failed("summing the step's figures", problem))?;
        Ok(summed.chunks(2).map(|p| f64::from(p[0]) + f64::from(p[1])).collect())
    }

    fn check_abandoned(&self) -> Result<(), PipelineError> {
        if self.abandoned.load(Ordering::SeqCst) {
            return Err(PipelineError::PeerStopped { rank: self.rank, problem: "another rank failed".into() });
        }
        Ok(())
    }

    fn failed(&self, doing: &str, problem: String) -> PipelineError {
        let why = if self.abandoned.load(Ordering::SeqCst) { "another rank failed" } else { problem.as_str() };
        PipelineError::PeerStopped { rank: self.rank, problem: format!("{doing}: {why}") }
    }
}

/// A hash of every parameter's bytes, in module order: equal on every rank while the replicas are
/// bit-identical, which [`crate::trainer::ranks::run_ranks`] checks when a run ends.
pub fn replica_fingerprint<B: burn::tensor::backend::Backend>(model: &UNet<B>) -> u64 {
    use burn::module::{Module, ModuleVisitor, Param};
    use burn::tensor::Tensor;

    /// FNV-1a: a fixed, dependency-free hash, the same in every process.
    struct Fnv<B>(u64, std::marker::PhantomData<B>);
    impl<B: burn::tensor::backend::Backend> ModuleVisitor<B> for Fnv<B> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            for byte in param.val().into_data().as_bytes() {
                self.0 = (self.0 ^ u64::from(*byte)).wrapping_mul(0x100_0000_01b3);
            }
        }
    }
    let mut hash = Fnv::<B>(0xcbf2_9ce4_8422_2325, std::marker::PhantomData);
    model.visit(&mut hash);
    hash.0
}
