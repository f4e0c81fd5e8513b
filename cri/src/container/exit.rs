//! Exit watching: a container init is our child once libcontainer's intermediate
//! process exits (we are a subreaper), so a thread `waitpid`s it for the exit code.
//! Adopted containers (after a restart) are not our children: poll for their end
//! and take their status from the kernel's taskstats exit notifications
//! (`taskstats`); when it is missing (a container that ended while r8s-cri was
//! down, or no taskstats) report exit code 255 with reason `Unknown`, as
//! containerd's CRI does for a container whose status it lost
//! (`unknownExitCode`, `unknownExitReason`).
//!
//! Keeping real exit codes across restarts needs a process that is the init's
//! parent and outlives the runtime, as containerd's shim and CRI-O's conmon are:
//! a per-container monitor (`PR_SET_CHILD_SUBREAPER`, started before
//! libcontainer's create so the init reparents to it) that waits for the init,
//! writes `{exit_code, finished_at, oom}` atomically to `<state>/containers/<id>/exit.json`
//! and, for tty containers, holds the console master (the runtime takes a copy
//! with `pidfd_getfd` after a restart; today the console dies with the runtime).
//! `Runtime::load` then reads `exit.json` for containers that ended while it
//! was down, and `watch` waits on the monitor (pidfd) instead of polling.
use std::time::Duration;

use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::Pid;
use tokio::sync::oneshot;

use super::taskstats;

/// Resolves with the exit code (None if it cannot be known) when `pid` ends.
pub fn watch(pid: i32) -> oneshot::Receiver<Option<i32>> {
    let (tx, rx) = oneshot::channel();
    // A plain thread, not spawn_blocking: it may outlive the runtime's shutdown.
    let spawned = std::thread::Builder::new()
        .name(format!("wait-{pid}"))
        .spawn(move || {
            let code = loop {
                match waitpid(Pid::from_raw(pid), None) {
                    Ok(WaitStatus::Exited(_, code)) => break Some(code),
                    Ok(WaitStatus::Signaled(_, sig, _)) => break Some(128 + sig as i32),
                    Ok(_) | Err(nix::Error::EINTR) => continue,
                    Err(_) => break None,
                }
            };
            match code {
                Some(code) => {
                    let _ = tx.send(Some(code));
                }
                _ => {
                    // Not our child (adopted after a restart): poll, and ask
                    // taskstats for the status the kernel reports at exit.
                    let asked = taskstats::want(pid);
                    poll_until_gone(pid);
                    let _ = tx.send(asked.then(|| status_from_taskstats(pid)).flatten());
                }
            }
        });
    if let Err(err) = spawned {
        tracing::error!(pid, ?err, "cannot spawn exit watcher");
    }
    rx
}

/// Whether `pid` runs (exists and is not a zombie).
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // State is the field after the parenthesised command name; Z = zombie.
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_none_or(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
    }
}

/// The taskstats exit status of `pid`, which is gone: its notification was
/// queued before it went, so it arrives within moments or never.
fn status_from_taskstats(pid: i32) -> Option<i32> {
    for _ in 0..20 {
        if let Some(status) = taskstats::take(pid) {
            return Some(taskstats::exit_code(status));
        }
        // This thread exists only to wait; nothing else runs on it.
        #[allow(clippy::disallowed_methods)]
        std::thread::sleep(Duration::from_millis(50));
    }
    taskstats::forget(pid);
    None
}

fn poll_until_gone(pid: i32) {
    let interval = Duration::from_millis(250);
    while alive(pid) {
        // This thread exists only to wait; nothing else runs on it.
        #[allow(clippy::disallowed_methods)]
        std::thread::sleep(interval);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The children are reaped by `watch` itself.
    #[allow(clippy::zombie_processes)]
    #[tokio::test]
    async fn exit_code_of_a_child_is_reported() {
        let child = std::process::Command::new("sh")
            .args(["-c", "exit 7"])
            .spawn()
            .unwrap();
        let pid = i32::try_from(child.id()).unwrap();
        assert_eq!(watch(pid).await.unwrap(), Some(7));
    }

    #[allow(clippy::zombie_processes)]
    #[tokio::test]
    async fn signal_death_maps_to_128_plus_signal() {
        let child = std::process::Command::new("sh")
            .args(["-c", "kill -9 $$"])
            .spawn()
            .unwrap();
        let pid = i32::try_from(child.id()).unwrap();
        assert_eq!(watch(pid).await.unwrap(), Some(137));
    }
}
