//! What SIGTERM, SIGINT and SIGUSR1 do to `train`, `predict` and `queue run`: the first sets the run's stop
//! request (it finishes the optimizer step in progress, or the file, writes its checkpoint and exits 75); a
//! second one, more than [`SAME_STOP_WINDOW`] later, exits at once with 75, leaving the last checkpoint as
//! it was (checkpoints are swapped in by renames, so it is whole). SIGUSR1 is what Slurm sends before a time
//! limit (`--signal=B:USR1@...`).
//!
//! Signals that arrive within the window count as one: Slurm stops a job by signalling every process of it
//! while the batch shell passes the same signal on (a requeue delivers SIGTERM twice within milliseconds),
//! and a double delivery must not turn a graceful stop into an abrupt one.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1};

use crate::exit::INTERRUPTED;

/// Signals this close to the first one are the same stop.
pub const SAME_STOP_WINDOW: Duration = Duration::from_secs(1);

/// Monotonic nanoseconds of the first stop signal (0: none yet).
static FIRST_STOP_NS: AtomicU64 = AtomicU64::new(0);

/// Installs the handlers on `flag`, which the first signal sets.
pub fn stop_flag_on_signals(flag: Arc<AtomicBool>) -> anyhow::Result<()> {
    for signal in [SIGTERM, SIGINT, SIGUSR1] {
        let flag = flag.clone();
        // SAFETY: the handler only touches atomics and calls clock_gettime and _exit, which are
        // async-signal-safe; it allocates nothing and takes no lock.
        unsafe {
            signal_hook::low_level::register(signal, move || {
                let now = monotonic_ns().max(1);
                match FIRST_STOP_NS.compare_exchange(0, now, Ordering::SeqCst, Ordering::SeqCst) {
                    Ok(_) => flag.store(true, Ordering::SeqCst),
                    Err(first) if now.saturating_sub(first) > SAME_STOP_WINDOW.as_nanos() as u64 => {
                        libc::_exit(i32::from(INTERRUPTED))
                    }
                    Err(_) => {}
                }
            })?;
        }
    }
    Ok(())
}

/// A stop request for `train` or `predict`, set by the first signal.
pub fn stop_on_signals() -> anyhow::Result<voxplan_pipeline::trainer::StopRequest> {
    let stop = voxplan_pipeline::trainer::StopRequest::new();
    stop_flag_on_signals(stop.flag())?;
    Ok(stop)
}

fn monotonic_ns() -> u64 {
    let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes only into `t`.
    unsafe {
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t);
    }
    (t.tv_sec as u64).saturating_mul(1_000_000_000).saturating_add(t.tv_nsec as u64)
}
