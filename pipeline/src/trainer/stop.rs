//! Stopping a run at a safe point: a batch job's SIGTERM (a reboot, a preemption, Slurm's time limit), its
//! SIGUSR1 (Slurm's warning before the limit), a queue's cancel. The run finishes the optimizer step in
//! progress, writes its checkpoint and ends with [`PipelineError::Interrupted`](crate::PipelineError), so the
//! same command resumes it. The binary's signal handlers set the flag (`signal_hook::flag::register`, which is
//! async-signal-safe); the library never installs handlers of its own.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// A shared "stop at the next safe point" flag.
#[derive(Debug, Clone, Default)]
pub struct StopRequest(Arc<AtomicBool>);

impl StopRequest {
    pub fn new() -> Self {
        Self::default()
    }

    /// The flag itself, for signal handlers to set.
    pub fn flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.0)
    }

    /// Asks the run to stop (what a signal does).
    pub fn request(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn is_requested(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}
