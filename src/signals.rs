//! What SIGTERM, SIGINT and SIGUSR1 do to `train` and `predict`: the first sets the run's stop request (it
//! finishes the optimizer step in progress, or the file, writes its checkpoint and exits 75); a second exits
//! at once with 75, leaving the last checkpoint as it was (checkpoints are swapped in by renames, so it is
//! whole). SIGUSR1 is what Slurm sends before a time limit (`--signal=B:USR1@...`).

use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1};
use voxplan_pipeline::trainer::StopRequest;

use crate::exit::INTERRUPTED;

/// Installs the handlers; the returned request is set by the first signal.
pub fn stop_on_signals() -> anyhow::Result<StopRequest> {
    let stop = StopRequest::new();
    let flag = stop.flag();
    for signal in [SIGTERM, SIGINT, SIGUSR1] {
        // Registered first: when a signal arrives with the flag already set, the process exits at once.
        signal_hook::flag::register_conditional_shutdown(signal, i32::from(INTERRUPTED), flag.clone())?;
        signal_hook::flag::register(signal, flag.clone())?;
    }
    Ok(stop)
}
