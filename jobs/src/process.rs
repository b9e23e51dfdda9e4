//! Job processes: started so that they stop (with a checkpoint) when their runner dies, and recognised
//! later by more than their pid, which the kernel reuses.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command};

/// Starts `command` as a child that receives SIGTERM when the runner dies, however it dies (SIGKILL, a
/// crash): `voxplan train` then checkpoints and exits 75, and the next runner resumes it instead of finding
/// an orphan it cannot watch. If the runner died between the fork and the request, the child exits at once.
pub fn spawn_tied_to_runner(command: &mut Command) -> std::io::Result<Child> {
    // SAFETY: getpid is async-signal-safe; it runs in the parent.
    let runner = unsafe { libc::getpid() };
    // SAFETY: the closure runs in the forked child before exec and calls only async-signal-safe functions
    // (prctl, getppid, _exit).
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() != runner {
                libc::_exit(75);
            }
            Ok(())
        });
    }
    command.spawn()
}

/// What identifies a process beyond its pid: the boot it belongs to and its start time in clock ticks
/// since that boot (`/proc/PID/stat`, field 22). `None` when the process does not exist.
pub fn identity(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: fields are counted after its last ')'.
    let after_name = &stat[stat.rfind(')')? + 1..];
    let start_ticks = after_name.split_whitespace().nth(19)?;
    Some(format!("{}:{start_ticks}", boot_id()))
}

/// Whether process `pid` is still the one recorded as `recorded` (same boot, same start time).
pub fn is_alive(pid: u32, recorded: &str) -> bool {
    identity(pid).is_some_and(|now| now == recorded) && !is_zombie(pid)
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rfind(')').map(|i| s[i + 1..].trim_start().starts_with('Z')))
        .unwrap_or(false)
}

/// This boot's id (changes on every reboot), so that no process of an earlier boot is taken for alive.
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id").map(|s| s.trim().to_string()).unwrap_or_default()
}

/// Sends SIGTERM: `voxplan train` finishes its step, checkpoints and exits 75.
pub fn terminate(pid: u32) {
    if let Ok(pid) = i32::try_from(pid) {
        // SAFETY: kill has no memory effects; a pid that has gone is an ESRCH error, ignored.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_is_recognised_by_its_identity_and_gone_when_it_ends() {
        let mut child = spawn_tied_to_runner(Command::new("sleep").arg("30")).unwrap();
        let id = identity(child.id()).unwrap();
        assert!(id.starts_with(&boot_id()));
        assert!(is_alive(child.id(), &id));
        assert!(!is_alive(child.id(), "another-boot:1"), "a recorded identity from another boot is not this process");
        terminate(child.id());
        let status = child.wait().unwrap();
        assert!(!status.success());
        assert!(!is_alive(child.id(), &id));
        assert_eq!(identity(u32::MAX), None);
    }
}
