//! The ranks of a data-parallel run in this process: one thread per device, each running the training loop
//! as its rank, and one outcome for the run. A rank that fails (an error, a panic) wakes the others out of
//! the collective ([`Peer::abandon`]), so the run ends with that rank's error and never hangs waiting for
//! it; the checkpoint rank 0 wrote last stays as it was.

use std::panic::{AssertUnwindSafe, catch_unwind};

use burn::tensor::backend::AutodiffBackend;

use crate::data_parallel::Peer;
use crate::error::PipelineError;
use crate::memory::MemoryMeter;
use crate::trainer::train_loop::{LoopOutcome, RunContext, run};

/// Trains `ctx.plan` on `devices`, one rank each; the outcome is rank 0's, or the first failure in rank
/// order that is a rank's own (not its leaving because another failed).
pub fn run_ranks<B: AutodiffBackend>(
    ctx: &RunContext,
    devices: Vec<B::Device>,
    meter_for: impl Fn(&B::Device) -> MemoryMeter + Sync,
) -> Result<LoopOutcome, PipelineError> {
    let peers = Peer::group(devices.len());
    // A run before this one in the process (a re-plan, a test) leaves nothing registered behind.
    Peer::reset_process::<B>();
    let outcomes: Vec<Result<LoopOutcome, PipelineError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = peers
            .iter()
            .zip(devices)
            .map(|(peer, device)| {
                let meter_for = &meter_for;
                let thread = std::thread::Builder::new().name(format!("voxplan-rank-{}", peer.rank));
                thread.spawn_scoped(scope, move || {
                    let mut meter = meter_for(&device);
                    let outcome = catch_unwind(AssertUnwindSafe(|| run::<B>(ctx, &device, &mut meter, peer)))
                        .unwrap_or_else(|payload| {
                            Err(PipelineError::Device {
                                requested: format!("rank {}", peer.rank),
                                problem: format!("panicked: {}", panic_message(payload.as_ref())),
                            })
                        });
                    if outcome.is_err() {
                        peer.abandon::<B>();
                    }
                    outcome
                })
            })
            .collect();
        handles
            .into_iter()
            .enumerate()
            .map(|(rank, spawned)| match spawned {
                Ok(handle) => handle.join().unwrap_or_else(|_| {
                    Err(PipelineError::PeerStopped { rank, problem: "its thread ended without a result".into() })
                }),
                Err(e) => Err(PipelineError::PeerStopped { rank, problem: format!("cannot start its thread: {e}") }),
            })
            .collect()
    });
    let mut first_error = None;
    let mut rank0: Option<LoopOutcome> = None;
    for (rank, outcome) in outcomes.into_iter().enumerate() {
        match outcome {
            Ok(done) => match &rank0 {
                // Same gradients, same optimizer, same start: the replicas must end bit for bit alike.
                Some(first) if first.replica_fingerprint != done.replica_fingerprint && first_error.is_none() => {
                    first_error = Some((
                        true,
                        PipelineError::PeerStopped {
                            rank,
                            problem: "its weights ended different from rank 0's (the replicas diverged)".into(),
                        },
                    ))
                }
                Some(_) => {}
                None => rank0 = Some(done),
            },
            Err(PipelineError::PeerStopped { .. }) if first_error.is_some() => {}
            Err(e @ PipelineError::PeerStopped { .. }) => first_error = Some((false, e)),
            Err(e) => match &first_error {
                Some((true, _)) => {}
                _ => first_error = Some((true, e)),
            },
        }
    }
    match (first_error, rank0) {
        (Some((_, e)), _) => Err(e),
        (None, Some(done)) => Ok(done),
        (None, None) => Err(PipelineError::PeerStopped { rank: 0, problem: "no rank ran".into() }),
    }
}

/// The text of a caught panic.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown panic".into())
}
