//! One training process per run directory. A requeued Slurm job, a repeated command or a queue that lost
//! track of a child can start `voxplan train --run-dir D` while another process still trains into D or
//! still writes its checkpoint; two writers would interleave `metrics.jsonl` and swap checkpoints under
//! each other. The first process holds an exclusive lock on [`RUN_LOCK_FILE`] until it exits (the kernel
//! releases it even after SIGKILL); a second one waits for it, bounded, then gives up without touching D.
//!
//! The lock is `flock(2)` through `std::fs::File::lock`: it works on local disks and on NFS (where Linux
//! maps it onto NFS byte-range locks). A file system without locks (Lustre mounted without `flock`) is
//! warned about and the run goes on unlocked, as it would have without this file.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::PipelineError;
use crate::trainer::StopRequest;

/// The lock file in a run directory; it holds who took it last (`pid P on HOST since T`), for messages.
pub const RUN_LOCK_FILE: &str = "run.lock";

/// How long `train` waits by default for another process to let go of its run directory (`--wait-for-run-
/// dir`): long enough for a signalled run to finish its step and checkpoint (16 s measured for a 128³ CPU
/// step, docs/jobs.md), short enough that a second copy started by mistake fails within minutes.
pub const DEFAULT_RUN_DIR_WAIT: Duration = Duration::from_secs(300);

/// How often a waiting process tries the lock again, and how often it says that it still waits.
const RETRY_EVERY: Duration = Duration::from_millis(200);
const REPORT_EVERY: Duration = Duration::from_secs(15);

/// Held while a process trains into a run directory; dropping it (or exiting) lets go.
#[derive(Debug)]
pub struct RunLock {
    _file: Option<File>,
}

/// Takes the lock of `run_dir`, waiting up to `wait` for a process that holds it. A stop request while
/// waiting gives up at once. Fails with [`PipelineError::RunDirBusy`], having changed nothing in the
/// directory but the lock file's existence.
pub fn lock_run_dir(run_dir: &Path, wait: Duration, stop: &StopRequest) -> Result<RunLock, PipelineError> {
    let path = run_dir.join(RUN_LOCK_FILE);
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|source| PipelineError::Io { path: path.clone(), source })?;
    let started = Instant::now();
    let mut reported: Option<Instant> = None;
    loop {
        match file.try_lock() {
            Ok(()) => break,
            Err(TryLockError::WouldBlock) => {}
            Err(TryLockError::Error(e)) if is_unsupported(&e) => {
                tracing::warn!(
                    "{}: this file system does not support file locks ({e}); training without the run \
                     directory lock, so make sure no other process trains into {}",
                    path.display(),
                    run_dir.display()
                );
                return Ok(RunLock { _file: None });
            }
            Err(TryLockError::Error(source)) => return Err(PipelineError::Io { path, source }),
        }
        if started.elapsed() >= wait || stop.is_requested() {
            let holder = holder(&path);
            return Err(PipelineError::RunDirBusy { path: run_dir.to_path_buf(), holder, waited: started.elapsed() });
        }
        if reported.is_none_or(|t| t.elapsed() >= REPORT_EVERY) {
            tracing::warn!(
                "{} is in use by another voxplan process ({}); waiting up to {} s for it to finish",
                run_dir.display(),
                holder(&path),
                wait.saturating_sub(started.elapsed()).as_secs()
            );
            reported = Some(Instant::now());
        }
        std::thread::sleep(RETRY_EVERY);
    }
    if reported.is_some() {
        tracing::info!("{} is free after {:.1} s", run_dir.display(), started.elapsed().as_secs_f64());
    }
    // Who holds it, for a process that waits on it; failing to write it changes nothing about the lock.
    let _ = file.set_len(0).and_then(|()| write!(file, "{}", describe_this_process()));
    Ok(RunLock { _file: Some(file) })
}

/// The lock file's own account of its holder, or that it has none.
fn holder(path: &Path) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) if !text.trim().is_empty() => text.trim().to_string(),
        _ => "a process that has not said who it is".to_string(),
    }
}

fn describe_this_process() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "an unnamed host".into());
    let since =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default();
    format!("pid {} on {host} since {since} (Unix time)", std::process::id())
}

/// Linux's errno values for "this file system cannot lock" (std maps only ENOSYS to `Unsupported`).
const ENOLCK: i32 = 37;
const ENOSYS: i32 = 38;
const EOPNOTSUPP: i32 = 95;

/// The file system cannot lock, which is not a busy run directory.
fn is_unsupported(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::Unsupported || matches!(e.raw_os_error(), Some(ENOLCK | ENOSYS | EOPNOTSUPP))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_waits_then_fails_naming_the_holder_and_succeeds_once_it_is_let_go() {
        let dir = tempfile::tempdir().unwrap();
        let stop = StopRequest::new();
        let first = lock_run_dir(dir.path(), Duration::ZERO, &stop).unwrap();
        let started = Instant::now();
        let busy = lock_run_dir(dir.path(), Duration::from_millis(500), &stop).unwrap_err();
        assert!(started.elapsed() >= Duration::from_millis(500), "it waited");
        let message = busy.to_string();
        assert!(message.contains(&format!("pid {}", std::process::id())), "{message}");
        assert!(message.contains(&dir.path().display().to_string()), "{message}");

        // Let go while the second one waits: it takes over.
        let releaser = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            drop(first);
        });
        lock_run_dir(dir.path(), Duration::from_secs(30), &stop).unwrap();
        releaser.join().unwrap();
    }

    #[test]
    fn a_stop_request_ends_the_wait_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let _first = lock_run_dir(dir.path(), Duration::ZERO, &StopRequest::new()).unwrap();
        let stop = StopRequest::new();
        stop.request();
        let started = Instant::now();
        assert!(matches!(
            lock_run_dir(dir.path(), Duration::from_secs(60), &stop),
            Err(PipelineError::RunDirBusy { .. })
        ));
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
